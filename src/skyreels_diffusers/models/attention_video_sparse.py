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
"""Video Sparse Attention (VSA, arXiv 2505.13389) for the SkyReels-V4 Refiner (docs/design.md, "High-resolution keyframes and the Refiner").

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
  cache-sized, and attends to them: with autograd by 4-D SDPA, without it by `bmm` -> in-place softmax -> `bmm`
  into reused buffers (faster); the default on CPU;
- `"flex"`: `flex_attention` with a `BlockMask` built from an explicit `mask_mod` (eager and compiled runs then
  agree); the default on CUDA. flex_attention has no backward pass on CPU: train on CPU with `"gather"`.
"""

import math
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import torch
import torch.nn.functional as F


VSA_BACKENDS = ("auto", "reference", "gather", "flex")
CUBE = (4, 4, 4)
CUBE_TOKENS = CUBE[0] * CUBE[1] * CUBE[2]
GATHER_BUDGET_BYTES = 4 * 2**20  # gathered keys + values per chunk, autograd path
MATMUL_BUDGET_BYTES = 2 * 2**20  # gathered keys (then values) + scores per chunk and thread, inference path


def vsa_topk(num_cubes: int, sparsity: float) -> int:
    """Key cubes kept per query cube: `max(1, ceil((1 - sparsity) * num_cubes))`."""
    return max(1, math.ceil((1.0 - sparsity) * num_cubes))


def cube_layout(grid: tuple[int, int, int], device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cube order of a `(T, H, W)` token grid.

    Returns `(order, real, inverse)`: `order` `(num_cubes * 64,)` gives the token at each cube-ordered slot (padded
    slots point at an extra zero token `T*H*W`), `real` `(num_cubes, 64)` marks the unpadded slots, and `inverse`
    `(T*H*W,)` gives each token's slot.
    """
    cubes = [math.ceil(n / c) for n, c in zip(grid, CUBE)]
    num_tokens = grid[0] * grid[1] * grid[2]
    ids = torch.full([n * c for n, c in zip(cubes, CUBE)], num_tokens, dtype=torch.long, device=device)
    ids[: grid[0], : grid[1], : grid[2]] = torch.arange(num_tokens, device=device).reshape(grid)
    order = ids.reshape(cubes[0], CUBE[0], cubes[1], CUBE[1], cubes[2], CUBE[2]).permute(0, 2, 4, 1, 3, 5).reshape(-1)
    real = order < num_tokens
    inverse = torch.empty(num_tokens, dtype=torch.long, device=device)
    inverse[order[real]] = torch.arange(order.numel(), device=device)[real]
    return order, real.reshape(-1, CUBE_TOKENS), inverse


def _to_cubes(x: torch.Tensor, order: torch.Tensor, extra_rows: int = 0) -> torch.Tensor:
    """`(B, T*H*W, heads, D)` -> head-major cube order `(B, heads, num_cubes * 64 + extra_rows, D)`.

    Padded slots repeat token 0 (callers mask them); `extra_rows` are left for the caller to fill (text). Without
    autograd each (batch, head) plane is gathered straight into one preallocated table: large fresh temporaries
    cost a page fault per 4 KiB here, more than the copies themselves.
    """
    batch, num_tokens, heads, dim = x.shape
    order = order.clamp(max=num_tokens - 1)
    if torch.is_grad_enabled() and x.requires_grad:
        table = x.transpose(1, 2).index_select(2, order)
        return F.pad(table, (0, 0, 0, extra_rows)) if extra_rows else table
    table = x.new_empty(batch, heads, order.numel() + extra_rows, dim)
    for b in range(batch):
        for head in range(heads):
            torch.index_select(x[b, :, head], 0, order, out=table[b, head, : order.numel()])
    return table


def _from_cubes(x: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """`(B, heads, num_cubes, 64, D)` -> `(B, T*H*W, heads, D)` (a transposed view), dropping the padding."""
    batch, heads, _, _, dim = x.shape
    return x.reshape(batch, heads, -1, dim).index_select(2, inverse).transpose(1, 2)


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
    chunk_size: int | None = None,
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
        chunk_size (`int`, *optional*): query cubes per gather step of the `"gather"` backend; by default as many
            as keep the gathered data within `GATHER_BUDGET_BYTES` (with autograd) or `MATMUL_BUDGET_BYTES` per
            thread (without).

    Returns:
        `(video_out (B, T*H*W, heads, D), text_out (B, S, heads, D) or None)`.
    """
    _check_inputs(
        query, key, value, video_grid, sparsity, backend, text_query, text_key, text_value, text_mask, chunk_size
    )
    if backend == "auto":
        backend = "flex" if query.is_cuda else "gather"
    has_text = text_key is not None
    batch, _, heads, dim = query.shape
    order, real, inverse = cube_layout(video_grid, query.device)
    num_cubes = real.shape[0]
    scale = 1.0 / math.sqrt(dim)

    num_slots = num_cubes * CUBE_TOKENS
    text_rows = (
        0 if text_key is None or backend != "gather" else math.ceil(text_key.shape[1] / CUBE_TOKENS) * CUBE_TOKENS
    )
    q = _to_cubes(query, order).view(batch, heads, num_cubes, CUBE_TOKENS, dim)
    k_table, v_table = (_to_cubes(x, order, text_rows) for x in (key, value))  # gather's tables hold the text too
    k, v = (t[:, :, :num_slots].view(batch, heads, num_cubes, CUBE_TOKENS, dim) for t in (k_table, v_table))

    # 1. Coarse pass over cube means, dividing by the number of real tokens (padded slots weigh 0).
    weights = real.to(q.dtype) / real.sum(-1, keepdim=True).to(q.dtype)  # (C, 64)
    # A broadcast (1 x 64) @ (64 x D) matmul per cube reads the tables in place (einsum would permute-copy them).
    q_mean, k_mean, v_mean = ((weights[:, None, :] @ x).squeeze(-2) for x in (q, k, v))  # (B, h, C, D)
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
        if text_rows:
            num_text = text_keys.shape[2]
            for table, text in ((k_table, text_keys), (v_table, text_values)):
                table[:, :, num_slots : num_slots + num_text] = text
                table[:, :, num_slots + num_text :] = 0  # masked, but must be finite: 0 * NaN is NaN
        num_text = 0 if text_keys is None else text_keys.shape[2]
        fine = _fine_gather(q, k_table, v_table, real, selected, text_key_mask, num_text, text_rows, scale, chunk_size)
    else:
        fine = _fine_flex(q, k, v, real, selected, text_keys, text_values, text_key_mask, scale)

    # 4. fine + coarse * gate (the coarse output broadcast over each cube's tokens), back in token order.
    if gate is not None:
        gate = _to_cubes(gate, order).view(batch, heads, num_cubes, CUBE_TOKENS, dim)
        # In place saves a large temporary at inference; autograd may still need `fine` (reference path).
        add = torch.addcmul if torch.is_grad_enabled() else torch.Tensor.addcmul_
        fine = add(fine, coarse[:, :, :, None], gate)
    video_out = _from_cubes(fine, inverse)

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


def _fine_gather(q, k_table, v_table, real, selected, text_key_mask, num_text, text_rows, scale, chunk_size):
    """Gather the selected cubes' keys/values for `chunk_size` query cubes at a time; 4-D SDPA per chunk (with
    autograd; without it `_fine_gather_matmul`).

    `k_table`/`v_table` `(B, h, C*64 + text_rows, D)` hold the video cubes followed by the text tokens padded to
    whole cubes, which every query cube selects. The gather's row order is `(batch, query cube, head, key cube)`,
    so one `index_select` per chunk yields SDPA's `(batch * chunk, heads, keys, D)` layout with no further copy.
    """
    batch, heads, num_cubes, tokens, dim = q.shape
    device = q.device
    row_real = real[None].expand(batch, -1, -1)  # (B, C, 64) real-token mask per table row
    selected = selected.transpose(1, 2)  # (B, C, h, k)
    if text_rows:
        text_cubes = text_rows // tokens
        text_real = torch.zeros(batch, text_rows, dtype=torch.bool, device=device)  # padding rows stay False
        text_real[:, :num_text] = True if text_key_mask is None else text_key_mask
        row_real = torch.cat([row_real, text_real.reshape(batch, text_cubes, tokens)], dim=1)
        text_ids = torch.arange(num_cubes, num_cubes + text_cubes, device=device)
        selected = torch.cat([selected, text_ids.expand(batch, num_cubes, heads, -1)], dim=-1)
    num_rows, keys_per_query = row_real.shape[1], selected.shape[-1] * tokens
    table_k, table_v = k_table.reshape(-1, tokens, dim), v_table.reshape(-1, tokens, dim)
    head_ids = torch.arange(heads, device=device)[:, None]
    batch_ids = torch.arange(batch, device=device)[:, None, None, None]
    rows = (batch_ids * heads + head_ids) * num_rows + selected  # (B, C, h, k') rows of the table
    needs_mask = not bool(row_real.all())
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, table_k, table_v))):
        return _fine_gather_matmul(q, table_k, table_v, row_real, selected, needs_mask, scale, chunk_size)
    if chunk_size is None:
        # Keep each chunk's gathered keys + values within a cache-sized budget (measured: bench_vsa.py).
        bytes_per_cube = 2 * batch * heads * keys_per_query * dim * table_k.element_size()
        chunk_size = max(1, GATHER_BUDGET_BYTES // bytes_per_cube)

    output = torch.empty_like(q)  # (B, h, C, 64, D)
    for start in range(0, num_cubes, chunk_size):
        stop = min(start + chunk_size, num_cubes)
        chunk_rows = rows[:, start:stop].reshape(-1)
        # index_select copies whole 64-token rows; several times faster than advanced indexing here.
        keys, values = table_k.index_select(0, chunk_rows), table_v.index_select(0, chunk_rows)
        keys = keys.reshape(-1, heads, keys_per_query, dim)
        values = values.reshape(-1, heads, keys_per_query, dim)
        mask = None
        if needs_mask:
            cube_ids = selected[:, start:stop]  # (B, c, h, k')
            mask = torch.gather(
                row_real[:, None, None].expand(-1, *cube_ids.shape[1:3], -1, -1),
                3,
                cube_ids[..., None].expand(-1, -1, -1, -1, tokens),
            ).reshape(-1, heads, 1, keys_per_query)
        queries = q[:, :, start:stop].transpose(1, 2).reshape(-1, heads, tokens, dim)
        out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, scale=scale)
        output[:, :, start:stop] = out.view(batch, stop - start, heads, tokens, dim).transpose(1, 2)
    return output


def _fine_gather_matmul(q, table_k, table_v, row_real, selected, needs_mask, scale, chunk_size):
    """The inference path of `_fine_gather`: per chunk of query cubes (of all (batch, head) planes in turn), gather
    the selected cubes into reused buffers, then `bmm` -> in-place softmax -> `bmm` straight into the output.

    `selected` `(B, C, h, k')` indexes the cubes of each plane of `table_k`/`table_v` `(B*h*rows, 64, D)`. On 64-row
    query blocks this matmul attention is faster than SDPA's CPU kernel (measured: bench_vsa.py), the output's
    `(B, h, C)` row order needs no transposing copy, and the softmax divides the `(64, D)` output rather than the
    `(64, k'*64)` probabilities. With several CPU threads the chunks go to single-threaded workers (`_run_tasks`).
    """
    batch, heads, num_cubes, tokens, dim = q.shape
    num_rows = row_real.shape[1]
    cubes_per_query = selected.shape[-1]
    keys_per_query = cubes_per_query * tokens
    num_queries = batch * heads * num_cubes
    planes = torch.arange(batch * heads, device=q.device).view(batch, heads, 1, 1)
    rows = (selected.permute(0, 2, 1, 3) + planes * num_rows).reshape(num_queries, cubes_per_query)
    bias = None
    if needs_mask:  # additive key bias: 0 for real tokens, -inf for padding (each cube holds a real token)
        bias = torch.zeros(row_real.shape, dtype=q.dtype, device=q.device).masked_fill_(~row_real, -math.inf)
        bias = bias[:, None].expand(-1, heads, -1, -1).reshape(-1, tokens)
    slab = cubes_per_query  # key cubes gathered at a time
    if chunk_size is None:
        # Gathered keys (then values) + scores of a chunk within a cache-sized budget (measured: bench_vsa.py).
        score_bytes, cube_bytes = tokens * keys_per_query * q.element_size(), tokens * dim * q.element_size()
        chunk_size = MATMUL_BUDGET_BYTES // (score_bytes + cubes_per_query * cube_bytes)
        if chunk_size == 0:  # one query cube is over budget: gather its keys and values in slabs of key cubes
            chunk_size, slab = 1, max(min(16, cubes_per_query), (MATMUL_BUDGET_BYTES - score_bytes) // cube_bytes)
    chunk_size = min(chunk_size, num_queries)
    # Scaled, transposed queries: scores^T = keys @ queries^T reads the gathered keys untransposed, a faster GEMM.
    queries_t = (q.reshape(num_queries, tokens, dim) * scale).transpose(1, 2).contiguous()  # (Q, D, 64)
    output = q.new_empty(num_queries, tokens, dim)
    if slab < cubes_per_query:
        tasks = list(zip(rows, queries_t, output))
        worker = partial(_attend_in_slabs, table_k=table_k, table_v=table_v, bias=bias, slab=slab)
    else:
        row_chunks = rows.reshape(-1).split(chunk_size * cubes_per_query)
        tasks = list(zip(row_chunks, queries_t.split(chunk_size), output.split(chunk_size)))
        worker = partial(_attend_chunks, table_k=table_k, table_v=table_v, bias=bias, chunk_size=chunk_size)
    _run_tasks(worker, tasks, parallel=q.device.type == "cpu")
    return output.view(q.shape)


def _run_tasks(worker, tasks, parallel: bool):
    """`worker(tasks)` on this thread, or (`parallel`, N torch threads) on N single-threaded workers sharing them.

    Many small ops each split over N threads wait at a barrier per op (each op a few hundred microseconds): slow,
    and very slow where another process holds a core. Independent single-threaded workers need no barrier; the
    ops release the GIL. `torch.set_num_threads(1)` is per thread for OpenMP and MKL; restored after (it also
    sets the default for threads that torch starts later).
    """
    threads = torch.get_num_threads()
    if not parallel or threads == 1 or len(tasks) < 2:
        worker(tasks)
        return
    shared = iter(tasks)  # a list iterator hands out each task once, whichever worker asks
    inference = torch.is_inference_mode_enabled()  # thread-local, like grad mode: passed on to the workers

    def work():
        torch.set_num_threads(1)
        with torch.inference_mode(inference), torch.no_grad():
            worker(shared)

    try:
        with ThreadPoolExecutor(min(threads, len(tasks))) as pool:
            for future in [pool.submit(work) for _ in range(min(threads, len(tasks)))]:
                future.result()
    finally:
        torch.set_num_threads(threads)


def _attend_chunks(tasks, table_k, table_v, bias, chunk_size):
    """Attention of chunks `(rows (count*k',), queries^T (count, D, 64), out (count, 64, D))` of query cubes to
    their gathered key cubes (`_fine_gather_matmul`)."""
    tokens, dim = table_k.shape[1:]
    gather_buffer = score_buffer = None
    for chunk_rows, queries, out in tasks:
        count = len(queries)
        cubes_per_query = len(chunk_rows) // count
        keys_per_query = cubes_per_query * tokens
        if gather_buffer is None:
            # Reused buffers: a fresh multi-MB allocation per chunk costs page faults on every step.
            gather_buffer = table_k.new_empty(chunk_size * cubes_per_query, tokens, dim)
            score_buffer = table_k.new_empty(chunk_size, keys_per_query, tokens)  # transposed: (keys, queries)
        gathered = gather_buffer if count == chunk_size else gather_buffer[: len(chunk_rows)]
        scores = score_buffer if count == chunk_size else score_buffer[:count]
        keys = torch.index_select(table_k, 0, chunk_rows, out=gathered).view(count, keys_per_query, dim)
        torch.bmm(keys, queries, out=scores)
        if bias is not None:
            scores.add_(bias.index_select(0, chunk_rows).view(count, keys_per_query, 1))
        scores.sub_(scores.amax(1, keepdim=True)).exp_()
        # The values overwrite the keys: one buffer keeps the working set in L2 (faster, measured).
        values = torch.index_select(table_v, 0, chunk_rows, out=gathered).view(count, keys_per_query, dim)
        torch.bmm(scores.transpose(1, 2), values, out=out)
        out.div_(scores.sum(1).unsqueeze(-1))


def _attend_in_slabs(tasks, table_k, table_v, bias, slab):
    """`_attend_chunks` one query cube `(rows (k',), queries^T (D, 64), out (64, D))` at a time, gathering its keys,
    then values, `slab` cubes at a time: the scores `(k'*64, 64)` of the cube stay whole, so the softmax needs no
    rescaling."""
    tokens, dim = table_k.shape[1:]
    gather_buffer = table_k.new_empty(slab, tokens, dim)
    scores = None
    for cube_rows, queries, out in tasks:
        if scores is None:
            scores = table_k.new_empty(len(cube_rows) * tokens, tokens)
        slabs = cube_rows.split(slab)
        parts = scores.split(slab * tokens)
        for slab_rows, part in zip(slabs, parts):
            keys = torch.index_select(table_k, 0, slab_rows, out=gather_buffer[: len(slab_rows)])
            torch.mm(keys.view(-1, dim), queries, out=part)
        if bias is not None:
            scores.add_(bias.index_select(0, cube_rows).view(-1, 1))
        scores.sub_(scores.amax(0, keepdim=True)).exp_()
        for index, (slab_rows, part) in enumerate(zip(slabs, parts)):
            values = torch.index_select(table_v, 0, slab_rows, out=gather_buffer[: len(slab_rows)]).view(-1, dim)
            if index == 0:
                torch.mm(part.T, values, out=out)
            else:
                out.addmm_(part.T, values)
        out.div_(scores.sum(0).unsqueeze(-1))


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


def _check_inputs(query, key, value, grid, sparsity, backend, text_query, text_key, text_value, text_mask, chunk_size):
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"`chunk_size` must be None (automatic) or a positive int, got {chunk_size!r}.")
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
