# Copyright 2026 The skyreels-diffusers authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Video Sparse Attention (VSA, arXiv 2505.13389) for the SkyReels-V4 Refiner (DESIGN.md §2 "Efficiency").

Video tokens of a `(T, H, W)` latent grid are grouped into `(4, 4, 4)` cubes of 64 tokens (a partial cube at a
grid edge is padded; padded keys are masked, padded queries dropped). Then:

1. coarse pass: attention over cube-mean-pooled q/k/v (the mean divides by the number of real tokens), its output
   broadcast back to each cube's tokens;
2. selection: the top-k key cubes of every query cube (per head) from the coarse scores,
   `topk = max(1, ceil((1 - sparsity) * num_cubes))`;
3. fine pass: attention over the tokens of the selected cubes only, plus every text token (text stays dense);
4. output: `fine + coarse * gate`, `gate` coming from a zero-initialised linear layer of the caller.

Text queries attend densely to all video and text tokens. Three implementations share steps 1-2 and 4:

- `"reference"`: dense attention under the boolean block mask of the selection: the test oracle;
- `"gather"`: gathers the selected cubes' keys/values for a few query cubes at a time, so the gathered data stays
  cache-sized, and runs 4-D SDPA on them; supports autograd; the default on CPU;
- `"flex"`: `flex_attention` with a `BlockMask` built from an explicit `mask_mod` (eager and compiled runs then
  agree); the default on CUDA. flex_attention has no backward pass on CPU: train on CPU with `"gather"`.
"""

import math

import torch
import torch.nn.functional as F


VSA_BACKENDS = ("auto", "reference", "gather", "flex")
CUBE = (4, 4, 4)
CUBE_TOKENS = CUBE[0] * CUBE[1] * CUBE[2]


def vsa_topk(num_cubes: int, sparsity: float) -> int:
    """Key cubes kept per query cube: `max(1, ceil((1 - sparsity) * num_cubes))`."""
    return max(1, math.ceil((1.0 - sparsity) * num_cubes))


def cube_layout(grid: tuple[int, int, int], device=None) -> tuple[tuple[int, int, int], torch.Tensor]:
    """Cubes per axis of the padded grid, and the `(num_cubes, 64)` mask of real (unpadded) tokens."""
    cubes = tuple(math.ceil(n / c) for n, c in zip(grid, CUBE))
    real = torch.zeros(*(n * c for n, c in zip(cubes, CUBE)), dtype=torch.bool, device=device)
    real[: grid[0], : grid[1], : grid[2]] = True
    return cubes, _to_cubes(real[None, ..., None, None], cubes)[0, 0, :, :, 0]


def _to_cubes(x: torch.Tensor, cubes: tuple[int, int, int]) -> torch.Tensor:
    """`(B, Tp, Hp, Wp, heads, D)` -> `(B, heads, num_cubes, 64, D)`, cubes in t-major order."""
    batch, _, _, _, heads, dim = x.shape
    x = x.reshape(batch, cubes[0], CUBE[0], cubes[1], CUBE[1], cubes[2], CUBE[2], heads, dim)
    x = x.permute(0, 7, 1, 3, 5, 2, 4, 6, 8)
    return x.reshape(batch, heads, cubes[0] * cubes[1] * cubes[2], CUBE_TOKENS, dim)


def _from_cubes(x: torch.Tensor, cubes: tuple[int, int, int], grid: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of `_to_cubes` followed by dropping the padding: -> `(B, T*H*W, heads, D)`."""
    batch, heads, _, _, dim = x.shape
    x = x.reshape(batch, heads, *cubes, *CUBE, dim).permute(0, 2, 5, 3, 6, 4, 7, 1, 8)
    x = x.reshape(batch, cubes[0] * CUBE[0], cubes[1] * CUBE[1], cubes[2] * CUBE[2], heads, dim)
    return x[:, : grid[0], : grid[1], : grid[2]].reshape(batch, -1, heads, dim)


def _pad_grid(x: torch.Tensor, grid: tuple[int, int, int], cubes: tuple[int, int, int]) -> torch.Tensor:
    """`(B, T*H*W, heads, D)` -> `(B, Tp, Hp, Wp, heads, D)` zero-padded to whole cubes."""
    x = x.reshape(x.shape[0], *grid, *x.shape[2:])
    pad_t, pad_h, pad_w = (c * size - n for n, c, size in zip(grid, cubes, CUBE))
    return F.pad(x, (0, 0, 0, 0, 0, pad_w, 0, pad_h, 0, pad_t))


def video_sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    video_grid: tuple[int, int, int],
    gate: torch.Tensor | None = None,
    sparsity: float = 0.875,
    backend: str = "auto",
    text_query: torch.Tensor | None = None,
    text_key: torch.Tensor | None = None,
    text_value: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
    chunk_size: int = 8,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Video Sparse Attention over video tokens, with dense text tokens.

    Args:
        query, key, value (`torch.Tensor` of shape `(B, T*H*W, heads, D)`): video tokens in t-major grid order.
        video_grid (`tuple[int, int, int]`): the `(T, H, W)` token grid.
        gate (`torch.Tensor` of shape `(B, T*H*W, heads, D)`, *optional*): weights of the coarse branch; without
            it the output is the fine branch alone.
        sparsity (`float`): fraction of key cubes skipped, in [0, 1).
        backend (`str`): one of `VSA_BACKENDS`.
        text_query, text_key, text_value (`torch.Tensor` of shape `(B, S, heads, D)`, *optional*): text tokens.
        text_mask (`torch.Tensor` of shape `(B, S)`, *optional*): True for real text tokens.
        chunk_size (`int`): query cubes per gather step of the `"gather"` backend.

    Returns:
        `(video_out (B, T*H*W, heads, D), text_out (B, S, heads, D) or None)`.
    """
    _check_inputs(query, key, value, video_grid, sparsity, backend, text_query, text_key, text_value, text_mask)
    if backend == "auto":
        backend = "flex" if query.is_cuda else "gather"
    has_text = text_key is not None
    batch, _, heads, dim = query.shape
    cubes, real = cube_layout(video_grid, query.device)
    num_cubes = real.shape[0]
    scale = 1.0 / math.sqrt(dim)

    q, k, v = (_to_cubes(_pad_grid(x, video_grid, cubes), cubes) for x in (query, key, value))  # (B, h, C, 64, D)

    # 1. Coarse pass over cube means (dividing by the real token count; padded tokens are zeros).
    counts = real.sum(-1).to(q.dtype)[:, None]  # (C, 1)
    q_mean, k_mean, v_mean = (x.sum(3) / counts for x in (q, k, v))  # (B, h, C, D)
    scores = q_mean @ k_mean.transpose(-1, -2) * scale  # (B, h, C, C)
    coarse = torch.softmax(scores, dim=-1) @ v_mean  # (B, h, C, D)

    # 2. Selection of the top-k key cubes per query cube (no gradient flows through the choice).
    topk = vsa_topk(num_cubes, sparsity)
    selected = scores.detach().topk(topk, dim=-1).indices  # (B, h, C, k)

    # 3. Fine pass.
    text_keys = text_values = text_key_mask = None
    if has_text:
        text_keys, text_values = text_key.transpose(1, 2), text_value.transpose(1, 2)  # (B, h, S, D)
        text_key_mask = None if text_mask is None else text_mask.bool()
    if backend == "reference":
        fine = _fine_reference(q, k, v, real, selected, text_keys, text_values, text_key_mask, scale)
    elif backend == "gather":
        fine = _fine_gather(q, k, v, real, selected, text_keys, text_values, text_key_mask, scale, chunk_size)
    else:
        fine = _fine_flex(q, k, v, real, selected, text_keys, text_values, text_key_mask, scale)

    # 4. fine + coarse * gate, back in token order.
    video_out = _from_cubes(fine, cubes, video_grid)
    if gate is not None:
        coarse_tokens = coarse[:, :, :, None].expand(-1, -1, -1, CUBE_TOKENS, -1)
        video_out = video_out + _from_cubes(coarse_tokens, cubes, video_grid) * gate

    text_out = None
    if text_query is not None:
        # Text queries attend densely to every real video token and every (unmasked) text token.
        keys = torch.cat([key, text_key], dim=1).transpose(1, 2)
        values = torch.cat([value, text_value], dim=1).transpose(1, 2)
        mask = None
        if text_key_mask is not None:
            mask = F.pad(text_key_mask, (key.shape[1], 0), value=True)[:, None, None, :]
        text_out = F.scaled_dot_product_attention(text_query.transpose(1, 2), keys, values, attn_mask=mask)
        text_out = text_out.transpose(1, 2)
    return video_out, text_out


def _key_mask(real_keys: torch.Tensor, text_key_mask: torch.Tensor | None, batch: int, num_text: int):
    """`(B, ..., keys)` validity: real video tokens of the chosen cubes, then the text tokens."""
    if num_text == 0:
        return real_keys
    if text_key_mask is None:
        text_key_mask = torch.ones(batch, num_text, dtype=torch.bool, device=real_keys.device)
    shape = (*real_keys.shape[:-1], num_text)
    text_key_mask = text_key_mask.reshape(batch, *([1] * (real_keys.ndim - 2)), num_text).expand(shape)
    return torch.cat([real_keys, text_key_mask], dim=-1)


def _fine_reference(q, k, v, real, selected, text_keys, text_values, text_key_mask, scale):
    """Dense attention over all padded video tokens (+ text) under the selection's block mask."""
    batch, heads, num_cubes, tokens, dim = q.shape
    allowed = torch.zeros(batch, heads, num_cubes, num_cubes, dtype=torch.bool, device=q.device)
    allowed.scatter_(-1, selected, True)
    allowed = allowed[:, :, :, None, :, None] & real[None, None, None, None]  # (B, h, C, 1, C, 64)
    allowed = allowed.expand(-1, -1, -1, tokens, -1, -1).reshape(batch, heads, num_cubes * tokens, -1)
    keys, values = k.flatten(2, 3), v.flatten(2, 3)
    num_text = 0
    if text_keys is not None:
        keys, values = torch.cat([keys, text_keys], 2), torch.cat([values, text_values], 2)
        num_text = text_keys.shape[2]
    mask = _key_mask(allowed, text_key_mask, batch, num_text)
    out = F.scaled_dot_product_attention(q.flatten(2, 3), keys, values, attn_mask=mask, scale=scale)
    return out.reshape(batch, heads, num_cubes, tokens, dim)


def _fine_gather(q, k, v, real, selected, text_keys, text_values, text_key_mask, scale, chunk_size):
    """Gather the selected cubes' keys/values for `chunk_size` query cubes at a time; 4-D SDPA per chunk."""
    batch, heads, num_cubes, tokens, dim = q.shape
    topk = selected.shape[-1]
    flat_k, flat_v = k.reshape(-1, tokens, dim), v.reshape(-1, tokens, dim)  # (B*h*C, 64, D)
    offsets = torch.arange(batch * heads, device=q.device).reshape(batch, heads, 1, 1) * num_cubes
    flat_selected = selected + offsets  # (B, h, C, k) rows of flat_k
    any_padding = not bool(real.all())
    num_text = 0 if text_keys is None else text_keys.shape[2]
    outputs = []
    for start in range(0, num_cubes, chunk_size):
        stop = min(start + chunk_size, num_cubes)
        rows = flat_selected[:, :, start:stop]  # (B, h, c, k)
        chunk = stop - start
        keys = flat_k[rows].reshape(batch, heads, chunk, topk * tokens, dim)
        values = flat_v[rows].reshape(batch, heads, chunk, topk * tokens, dim)
        if num_text:
            keys = torch.cat([keys, text_keys[:, :, None].expand(-1, -1, chunk, -1, -1)], dim=3)
            values = torch.cat([values, text_values[:, :, None].expand(-1, -1, chunk, -1, -1)], dim=3)
        mask = None
        if any_padding or text_key_mask is not None:
            real_keys = real[selected[:, :, start:stop]].reshape(batch, heads, chunk, topk * tokens)
            mask = _key_mask(real_keys, text_key_mask, batch, num_text)
            mask = mask.transpose(1, 2).reshape(batch * chunk, heads, 1, -1)
        # 4-D SDPA: (B * chunk, heads, 64, D) queries against each query cube's own gathered keys.
        out = F.scaled_dot_product_attention(
            q[:, :, start:stop].transpose(1, 2).reshape(batch * chunk, heads, tokens, dim),
            keys.transpose(1, 2).reshape(batch * chunk, heads, -1, dim),
            values.transpose(1, 2).reshape(batch * chunk, heads, -1, dim),
            attn_mask=mask,
            scale=scale,
        )
        outputs.append(out.reshape(batch, chunk, heads, tokens, dim).transpose(1, 2))
    return torch.cat(outputs, dim=2)


def _fine_flex(q, k, v, real, selected, text_keys, text_values, text_key_mask, scale):
    """flex_attention under a BlockMask of 64-token blocks (one per cube), text blocks always allowed."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    batch, heads, num_cubes, tokens, dim = q.shape
    num_video = num_cubes * tokens
    allowed = torch.zeros(batch, heads, num_cubes, num_cubes, dtype=torch.bool, device=q.device)
    allowed.scatter_(-1, selected, True)
    real_flat = real.reshape(-1)
    keys, values = k.flatten(2, 3), v.flatten(2, 3)
    num_text = 0
    if text_keys is not None:
        keys, values = torch.cat([keys, text_keys], 2), torch.cat([values, text_values], 2)
        num_text = text_keys.shape[2]
    text_valid = (
        torch.ones(batch, max(num_text, 1), dtype=torch.bool, device=q.device)
        if text_key_mask is None
        else text_key_mask
    )

    def mask_mod(b, h, q_idx, kv_idx):
        video_index = torch.clamp(kv_idx, max=num_video - 1)
        video_ok = allowed[b, h, q_idx // tokens, video_index // tokens] & real_flat[video_index]
        text_ok = text_valid[b, torch.clamp(kv_idx - num_video, min=0, max=text_valid.shape[1] - 1)]
        return torch.where(kv_idx < num_video, video_ok, text_ok)

    block_mask = create_block_mask(
        mask_mod, batch, heads, num_video, num_video + num_text, device=q.device, BLOCK_SIZE=tokens
    )
    out = flex_attention(q.flatten(2, 3), keys, values, block_mask=block_mask, scale=scale)
    return out.reshape(batch, heads, num_cubes, tokens, dim)


def _check_inputs(query, key, value, grid, sparsity, backend, text_query, text_key, text_value, text_mask):
    if backend not in VSA_BACKENDS:
        raise ValueError(f"`backend` must be one of {VSA_BACKENDS}, got {backend!r}.")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"`sparsity` must be a number in [0, 1), got {sparsity!r}.")
    if not (isinstance(grid, (tuple, list)) and len(grid) == 3 and all(isinstance(n, int) and n > 0 for n in grid)):
        raise ValueError(f"`video_grid` must be three positive ints (T, H, W), got {grid!r}.")
    for name, x in (("query", query), ("key", key), ("value", value)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"`{name}` must be a tensor of shape (B, T*H*W, heads, D), got {getattr(x, 'shape', x)}.")
        if x.shape != query.shape:
            raise ValueError(f"`{name}` shape {tuple(x.shape)} differs from `query` shape {tuple(query.shape)}.")
    if query.shape[1] != grid[0] * grid[1] * grid[2]:
        raise ValueError(
            f"`query` has {query.shape[1]} video tokens but `video_grid` {tuple(grid)} holds {grid[0] * grid[1] * grid[2]}."
        )
    if (text_key is None) != (text_value is None) or (text_query is not None and text_key is None):
        raise ValueError("`text_key` and `text_value` must be given together (and with any `text_query`).")
    if text_key is not None and (
        text_key.ndim != 4 or text_key.shape[0] != query.shape[0] or text_key.shape[2:] != query.shape[2:]
    ):
        raise ValueError(f"`text_key` must have shape (B, S, heads, D) matching `query`, got {tuple(text_key.shape)}.")
    if text_mask is not None and (text_key is None or tuple(text_mask.shape) != tuple(text_key.shape[:2])):
        raise ValueError(f"`text_mask` must have shape (B, S) of the text tokens, got {tuple(text_mask.shape)}.")
