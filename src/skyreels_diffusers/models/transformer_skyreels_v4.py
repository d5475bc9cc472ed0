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
"""The joint video-audio MMDiT of SkyReels-V4 (arXiv 2602.21818).

The model keeps its blocks in two flat, top-level lists, as Diffusers' LTX-2 and Flux do, so that Diffusers' hooks
(caches, group offloading, layerwise casting, context parallelism, regional compilation) address them as they are:

- ``transformer_blocks.{i}``: one dual-stream layer of both towers: ``.video`` (HunyuanVideo-1.5's block and
  parameter names), ``.audio`` (the same block with its own weights) and ``.cross_modal`` (the audio<->video
  exchange, zero-initialised);
- ``single_transformer_blocks.{i}``: one single-stream layer of both towers, laid out the same way.

The rest of the video tower sits at the top level under HunyuanVideo-1.5's names (``x_embedder``, ``time_embed``,
``context_embedder``, ``norm_out``), the audio tower's under the same names with an ``audio_`` prefix, and both
output heads in ``proj_out`` (``.video``, ``.audio``). "Towers" stay a concept: the video parameters are exactly
HunyuanVideo-1.5's (`conversion/` maps its keys), and a layer with no audio runs the video block alone, so a
converted model reproduces HunyuanVideo-1.5.

Inside the block lists, `hidden_states` is the joint token sequence ``[video ; audio]`` and `encoder_hidden_states`
the two towers' prompt tokens ``[video prompt ; audio prompt]``: every block updates both, and hooks that track one
`hidden_states` and one `encoder_hidden_states` per block (FirstBlockCache, MagCache) see the whole state.

Context parallelism (Ulysses) is described in `SkyReelsV4Transformer3DModel`'s class comment on `_cp_plan`.
"""

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ContextParallelConfig, ParallelConfig
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin, AttentionModuleMixin, FeedForward
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormContinuous, AdaLayerNormZero, AdaLayerNormZeroSingle
from diffusers.models.transformers.transformer_hunyuan_video15 import (
    HunyuanVideo15PatchEmbed,
    HunyuanVideo15TimeEmbedding,
    HunyuanVideo15TokenRefiner,
)
from diffusers.utils import apply_lora_scale
from diffusers.utils.torch_utils import maybe_allow_in_graph

from .diffusers_extension_points import (
    ContextParallelInput,
    ContextParallelOutput,
    register_attention_skip_output,
    register_block_outputs,
)


if dist.is_available():
    import torch.distributed._functional_collectives as funcol


@dataclass
class SkyReelsV4TransformerOutput(Transformer2DModelOutput):
    """
    A `Transformer2DModelOutput` (so hooks that read `sample`, such as FasterCache's, recognise it) with the audio and
    keyframe predictions beside the video's.

    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, num_frames, height, width)` or `None`):
            Video prediction (flow-matching velocity). `None` when no video was given (T2A).
        audio_sample (`torch.Tensor` of shape `(batch_size, audio_in_channels, audio_length)` or `None`):
            Audio prediction. `None` when no audio was given (T2V).
        keyframe_sample (`torch.Tensor` of shape `(batch_size, out_channels, num_keyframes, kf_height, kf_width)`):
            Prediction for the appended high-resolution keyframes, or `None` without keyframes.
    """

    sample: torch.Tensor | None = None
    audio_sample: torch.Tensor | None = None
    keyframe_sample: torch.Tensor | None = None


class SkyReelsV4AttnProcessor:
    """Attention processor for every attention layer of the model; attention runs through `dispatch_attention_fn`.

    Three layouts, chosen by the module:
    - self-attention (media tokens only, or media followed by text tokens that share the weights);
    - joint attention with separate text projections (`added_kv_proj_dim`, dual-stream blocks);
    - cross-attention (`cross_attention_dim`), with optional RoPE on queries and keys (audio<->video).

    `value_only=True` (self- and joint attention) returns each token's own value instead, as if the attention map were
    the identity: the perturbed pass of spatio-temporal guidance (STG).

    `attention_mask` is a boolean key mask (True = attend) over the last keys: the *text* keys `(batch, num_text)`,
    or, under context parallelism, all keys (media padding and duplicate text copies masked). Keys it does not cover
    are attended: it is left-padded with True up to the key length and broadcast over queries. RoPE is applied to the
    first `len(rotary_emb)` tokens: the media tokens.

    Under context parallelism, attention whose keys are sharded like the queries runs through Diffusers' Ulysses
    attention; attention to the prompt (`attn.replicated_context`), which every rank holds whole, stays local.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: "SkyReelsV4Attention",
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        encoder_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        value_only: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        is_cross = attn.is_cross_attention
        is_joint = encoder_hidden_states is not None and attn.added_kv_proj_dim is not None
        query, key, value = project_qkv(attn, hidden_states, encoder_hidden_states if is_cross else None)

        if image_rotary_emb is not None:
            query = _apply_rotary_emb_prefix(query, image_rotary_emb)
            if not is_cross:
                key = _apply_rotary_emb_prefix(key, image_rotary_emb)
        if is_cross and encoder_rotary_emb is not None:
            key = _apply_rotary_emb_prefix(key, encoder_rotary_emb)

        if is_joint:
            encoder_query, encoder_key, encoder_value = project_added_qkv(attn, encoder_hidden_states)
            query = torch.cat([query, encoder_query], dim=1)
            key = torch.cat([key, encoder_key], dim=1)
            value = torch.cat([value, encoder_value], dim=1)

        if attention_mask is not None:
            attention_mask = F.pad(attention_mask.bool(), (key.shape[1] - attention_mask.shape[1], 0), value=True)
            attention_mask = attention_mask[:, None, None, :]

        if value_only:  # spatio-temporal guidance's perturbed pass: an identity attention map, each token its value
            hidden_states = value.flatten(2, 3)
        else:
            hidden_states = _dispatch_attention(
                self, query, key, value, attention_mask, keys_sharded=not (is_cross and attn.replicated_context)
            )

        if is_joint:
            num_text = encoder_hidden_states.shape[1]
            hidden_states, encoder_hidden_states = hidden_states[:, :-num_text], hidden_states[:, -num_text:]
            hidden_states = attn.to_out[0](hidden_states)
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
            return hidden_states, encoder_hidden_states
        if attn.pre_only:
            return hidden_states
        return attn.to_out[0](hidden_states)


def project_qkv(
    attn: "SkyReelsV4Attention", hidden_states: torch.Tensor, context: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised queries and keys and the values `(B, L, heads, D)` of self-attention (`context=None`) or of
    cross-attention to `context`, through the separate or the fused (`fuse_qkv_projections`) projections."""
    if attn.fused_projections and context is None:
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
    elif attn.fused_projections:
        query = attn.to_q(hidden_states)
        key, value = attn.to_kv(context).chunk(2, dim=-1)
    else:
        kv_source = hidden_states if context is None else context
        query, key, value = attn.to_q(hidden_states), attn.to_k(kv_source), attn.to_v(kv_source)
    query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
    return attn.norm_q(query), attn.norm_k(key), value


def project_added_qkv(
    attn: "SkyReelsV4Attention", encoder_hidden_states: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The text tokens' own queries, keys and values of a dual-stream joint attention."""
    if attn.fused_projections:
        query, key, value = attn.to_added_qkv(encoder_hidden_states).chunk(3, dim=-1)
    else:
        projections = (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
        query, key, value = (projection(encoder_hidden_states) for projection in projections)
    query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
    return attn.norm_added_q(query), attn.norm_added_k(key), value


def _dispatch_attention(processor, query, key, value, attention_mask, keys_sharded: bool = True) -> torch.Tensor:
    """`(B, L, heads, D)` attention through Diffusers' dispatcher (so `set_attention_backend` and context parallelism
    apply), flattened back to `(B, L, heads * D)`.

    Under context parallelism, `keys_sharded=False` (keys replicated on every rank) runs local attention. Sharded keys
    go through Ulysses, except when gathering the keys is the better exchange: the heads do not divide among the
    ranks (Ulysses splits heads), or the keys are so much shorter than the queries that all-gathering them moves less
    data than Ulysses' four all-to-alls (video queries attending to audio keys). Then every rank's local queries
    attend to all keys; `attention_mask` `(B, 1, 1, local_keys)` is gathered with them."""
    parallel_config = processor._parallel_config if keys_sharded else None
    if parallel_config is not None:
        degree = parallel_config.context_parallel_config.ulysses_degree
        if query.shape[2] % degree or (degree - 1) * key.shape[1] < query.shape[1]:
            key, value = (gather_from_ranks(x, 1) for x in (key, value))
            if attention_mask is not None:
                attention_mask = gather_from_ranks(attention_mask, attention_mask.ndim - 1)
            parallel_config = None
    hidden_states = dispatch_attention_fn(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=0.0,
        is_causal=False,
        backend=processor._attention_backend,
        parallel_config=parallel_config,
    )
    return hidden_states.flatten(2, 3).to(query.dtype)


def gather_from_ranks(x: torch.Tensor, dim: int) -> torch.Tensor:
    """All ranks' shards of `x` concatenated along `dim` in rank order (the order of Diffusers' sequence split). The
    context-parallel group is the whole world (see `SkyReelsV4ContextParallelMixin`)."""
    gathered = funcol.all_gather_single(x.contiguous(), gather_dim=dim, group=dist.group.WORLD)
    return gathered.wait() if isinstance(gathered, funcol.AsyncCollectiveTensor) else gathered


def _apply_rotary_emb_prefix(x: torch.Tensor, rotary_emb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate the first `len(rotary_emb)` tokens of `x` (batch, tokens, heads, head_dim); leave the rest (text).

    The result is Diffusers' `apply_rotary_emb(x, rotary_emb, sequence_dim=1)` (interleaved pairs, computed in fp32
    and cast back to `x.dtype`): one complex multiplication of the pairs by `cos + i sin` rounds the same products and
    sums as Diffusers' `x * cos + rotate(x) * sin` (bit for bit on CPU; CUDA's complex kernel may fuse a
    multiply-add, a last-bit difference), with one temporary instead of five. The text suffix is copied once into the
    output rather than concatenated after the rotation. Under `torch.compile` (Inductor fuses the real formulation
    and generates no code for complex tensors) and on other devices, Diffusers' real formulation runs."""
    num_rotated = rotary_emb[0].shape[0]
    if torch.compiler.is_compiling() or x.device.type not in ("cpu", "cuda"):
        return _apply_rotary_emb_prefix_real(x, rotary_emb)
    freqs = _complex_rotary_table(*rotary_emb).to(x.device)
    if num_rotated == x.shape[1]:
        return torch.view_as_real(_complex_pairs(x.float()) * freqs).flatten(-2).to(x.dtype)
    pairs = _complex_pairs(x[:, :num_rotated].float())
    out = torch.empty_like(x)
    out[:, num_rotated:] = x[:, num_rotated:]
    differentiable = torch.is_grad_enabled() and (x.requires_grad or freqs.requires_grad)
    if out.dtype == torch.float32 and freqs.dtype == torch.complex64 and not differentiable:
        torch.mul(pairs, freqs, out=_complex_pairs(out[:, :num_rotated]))  # rotated straight into the output
    else:
        out[:, :num_rotated] = torch.view_as_real(pairs * freqs).flatten(-2)
    return out


def _apply_rotary_emb_prefix_real(x: torch.Tensor, rotary_emb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """`_apply_rotary_emb_prefix` through Diffusers' `apply_rotary_emb` (real arithmetic; used under compile)."""
    num_rotated = rotary_emb[0].shape[0]
    if num_rotated == x.shape[1]:
        return apply_rotary_emb(x, rotary_emb, sequence_dim=1)
    rotated = apply_rotary_emb(x[:, :num_rotated], rotary_emb, sequence_dim=1)
    return torch.cat([rotated, x[:, num_rotated:]], dim=1)


def _complex_rotary_table(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`cos + i sin` of interleaved RoPE tables `(N, D)` (each value repeated over its pair), as `(N, 1, D/2)`."""
    if cos.dtype not in (torch.float32, torch.float64):
        cos, sin = cos.float(), sin.float()
    return torch.complex(cos[:, None, 0::2], sin[:, None, 0::2])


def _complex_pairs(x: torch.Tensor) -> torch.Tensor:
    """A complex view `(..., D/2)` of the interleaved pairs of `x` `(..., D)` (a copy only if the layout forbids)."""
    pairs = x.unflatten(-1, (-1, 2))
    if pairs.stride(-1) != 1 or pairs.storage_offset() % 2 or any(stride % 2 for stride in pairs.stride()[:-1]):
        pairs = pairs.contiguous()
    return torch.view_as_complex(pairs)


class SkyReelsV4Attention(nn.Module, AttentionModuleMixin):
    """Multi-head attention with RMS-normalised queries and keys.

    Parameter names follow Diffusers' `Attention` (`to_q`, `add_q_proj`, `to_add_out`, ...), so weights of
    HunyuanVideo(-1.5) attention layers load unchanged.

    Args:
        query_dim: width of the query tokens (and of the output).
        heads, dim_head: attention heads and their width.
        cross_attention_dim: width of the key/value tokens for cross-attention; `None` for self-attention.
        added_kv_proj_dim: width of text tokens that get their own projections (dual-stream joint attention).
        pre_only: return the attention output without an output projection (single-stream blocks fuse it).
        zero_init_output: zero the output projection, so a new layer starts as an exact identity residual.
        replicated_context: the key/value tokens of this cross-attention (the prompt, or the Refiner's audio
            condition) are whole on every context-parallel rank, so it attends locally instead of exchanging them.
        sparse_gate: add the zero-initialised per-head gate `vsa_gate` of Video Sparse Attention's coarse branch
            (the Refiner's attention processor reads it).
    """

    _default_processor_cls = SkyReelsV4AttnProcessor
    _available_processors = [SkyReelsV4AttnProcessor]
    # Read by Diffusers' `fuse_qkv_projections`: every projection has a bias.
    use_bias = True
    added_proj_bias = True

    def __init__(
        self,
        query_dim: int,
        heads: int,
        dim_head: int,
        cross_attention_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        pre_only: bool = False,
        zero_init_output: bool = False,
        replicated_context: bool = False,
        sparse_gate: bool = False,
        eps: float = 1e-6,
        processor: SkyReelsV4AttnProcessor | None = None,
    ) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.head_dim = dim_head
        self.inner_dim = inner_dim
        self.is_cross_attention = cross_attention_dim is not None
        self.replicated_context = replicated_context
        self.added_kv_proj_dim = added_kv_proj_dim
        self.pre_only = pre_only
        kv_dim = cross_attention_dim or query_dim

        self.to_q = nn.Linear(query_dim, inner_dim)
        self.to_k = nn.Linear(kv_dim, inner_dim)
        self.to_v = nn.Linear(kv_dim, inner_dim)
        self.norm_q = nn.RMSNorm(dim_head, eps=eps)
        self.norm_k = nn.RMSNorm(dim_head, eps=eps)

        if not pre_only:
            self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim), nn.Dropout(0.0)])
            if zero_init_output:
                nn.init.zeros_(self.to_out[0].weight)
                nn.init.zeros_(self.to_out[0].bias)

        if added_kv_proj_dim is not None:
            self.add_q_proj = nn.Linear(added_kv_proj_dim, inner_dim)
            self.add_k_proj = nn.Linear(added_kv_proj_dim, inner_dim)
            self.add_v_proj = nn.Linear(added_kv_proj_dim, inner_dim)
            self.norm_added_q = nn.RMSNorm(dim_head, eps=eps)
            self.norm_added_k = nn.RMSNorm(dim_head, eps=eps)
            self.to_add_out = nn.Linear(inner_dim, added_kv_proj_dim)
        if sparse_gate:
            self.vsa_gate = nn.Linear(query_dim, inner_dim)
            nn.init.zeros_(self.vsa_gate.weight)
            nn.init.zeros_(self.vsa_gate.bias)

        self.set_processor(processor or self._default_processor_cls())

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        encoder_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        **processor_kwargs,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # `processor_kwargs` reach processors that take more (the Refiner's sparse attention takes its grid).
        return self.processor(
            self,
            hidden_states,
            encoder_hidden_states,
            attention_mask,
            image_rotary_emb,
            encoder_rotary_emb,
            **processor_kwargs,
        )


class SkyReelsV4TokenRefinerAttnProcessor:
    """Routes the attention of Diffusers' `HunyuanVideo15TokenRefiner` (which we reuse as is) through
    `dispatch_attention_fn`, so `set_attention_backend` reaches it. `attention_mask` is the refiner's boolean
    `(batch, 1, tokens, tokens)` mask. The prompt is whole on every context-parallel rank: attention stays local."""

    _attention_backend = None
    _parallel_config = None

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None):
        query = attn.to_q(hidden_states).unflatten(2, (attn.heads, -1))
        key = attn.to_k(hidden_states).unflatten(2, (attn.heads, -1))
        value = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        hidden_states = _dispatch_attention(self, query, key, value, attention_mask, keys_sharded=False)
        return attn.to_out[1](attn.to_out[0](hidden_states))


class SkyReelsV4RotaryPosEmbed(nn.Module):
    """Multi-axis RoPE from explicit (possibly fractional or negative) positions.

    Positions are explicit because tokens do not sit on one integer grid: references have negative temporal indices,
    keyframes share the low-res spatial frame, and audio lives on the video latent timeline. Frequencies are
    computed in fp32 whatever the model dtype.

    Args:
        axes_dim: RoPE channels per axis (sum = attention head dim), e.g. `(16, 56, 56)` for (t, h, w).
        theta: RoPE base.
    """

    def __init__(self, axes_dim: tuple[int, ...], theta: float) -> None:
        super().__init__()
        self.axes_dim = tuple(axes_dim)
        self.theta = theta

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions: `(num_tokens, len(axes_dim))`. Returns `(cos, sin)`, each `(num_tokens, sum(axes_dim))`."""
        positions = positions.float()
        cos, sin = zip(
            *(
                get_1d_rotary_pos_embed(dim, positions[:, axis], self.theta, use_real=True)
                for axis, dim in enumerate(self.axes_dim)
            )
        )
        return torch.cat(cos, dim=1), torch.cat(sin, dim=1)


def video_token_positions(
    num_frames: int,
    height: int,
    width: int,
    device: torch.device,
    temporal_positions: torch.Tensor | None = None,
    spatial_scale: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """(t, h, w) positions of a `num_frames x height x width` token grid in t-major order, shape `(F*H*W, 3)`.

    `temporal_positions` (shape `(num_frames,)`) overrides `0..num_frames-1`; `spatial_scale` multiplies h and w
    (low-res tokens scaled onto the keyframes' high-res coordinate frame)."""
    if temporal_positions is None:
        temporal_positions = torch.arange(num_frames, device=device, dtype=torch.float32)
    rows = torch.arange(height, device=device, dtype=torch.float32) * spatial_scale[0]
    cols = torch.arange(width, device=device, dtype=torch.float32) * spatial_scale[1]
    grid = torch.meshgrid(temporal_positions.to(device=device, dtype=torch.float32), rows, cols, indexing="ij")
    return torch.stack(grid, dim=-1).reshape(-1, 3)


@dataclass
class TokenTimeEmbedding:
    """A tower's timestep embedding when its tokens sit at different noise levels (a clean audio prefix at timestep
    0, the rest generated): `tokens` `(B, N, dim)` modulates each media token, `sample` `(B, dim)` (the embedding of
    the sample's noisiest timestep, the generated tokens') modulates the prompt tokens and refines the prompt."""

    sample: torch.Tensor
    tokens: torch.Tensor


def modulate_per_token(norm: nn.Module, hidden_states: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Diffusers' adaLN (`AdaLayerNormZero`, `AdaLayerNormZeroSingle`: shift, scale, gate chunks;
    `AdaLayerNormContinuous`: scale, shift) with one embedding per token, `temb` `(B, N, dim)`: returns the modulated
    `hidden_states` and the remaining chunks, each `(B, N, dim)`, as the modules return theirs per sample."""
    if isinstance(norm, AdaLayerNormContinuous):
        scale, shift = norm.linear(norm.silu(temb).to(hidden_states.dtype)).chunk(2, dim=-1)
        return norm.norm(hidden_states) * (1 + scale) + shift
    shift, scale, *rest = norm.linear(norm.silu(temb)).chunk(6 if isinstance(norm, AdaLayerNormZero) else 3, dim=-1)
    return (norm.norm(hidden_states) * (1 + scale) + shift, *rest)


@maybe_allow_in_graph
class SkyReelsV4TransformerBlock(nn.Module):
    """Dual-stream MMDiT block: media and text tokens keep separate adaLN, QKV and MLP weights and attend jointly.

    The computation and parameter names equal Diffusers' `HunyuanVideo15TransformerBlock`."""

    def __init__(
        self, num_attention_heads: int, attention_head_dim: int, mlp_ratio: float, sparse_attention: bool = False
    ) -> None:
        super().__init__()
        dim = num_attention_heads * attention_head_dim
        self.norm1 = AdaLayerNormZero(dim, norm_type="layer_norm")
        self.norm1_context = AdaLayerNormZero(dim, norm_type="layer_norm")
        self.attn = SkyReelsV4Attention(
            dim, num_attention_heads, attention_head_dim, added_kv_proj_dim=dim, sparse_gate=sparse_attention
        )
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim, mult=mlp_ratio, activation_fn="gelu-approximate")
        self.norm2_context = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff_context = FeedForward(dim, mult=mlp_ratio, activation_fn="gelu-approximate")

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        attention_kwargs: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(temb, TokenTimeEmbedding):  # per-token modulation of the media tokens
            norm_hidden, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulate_per_token(
                self.norm1, hidden_states, temb.tokens
            )
            temb = temb.sample
        else:
            norm_hidden, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(hidden_states, emb=temb)
            gate_msa, shift_mlp, scale_mlp, gate_mlp = (m[:, None] for m in (gate_msa, shift_mlp, scale_mlp, gate_mlp))
        norm_text, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(
            encoder_hidden_states, emb=temb
        )
        attn_output, text_attn_output = self.attn(
            norm_hidden,
            norm_text,
            attention_mask=attention_mask,
            image_rotary_emb=rotary_emb,
            **(attention_kwargs or {}),
        )
        hidden_states = hidden_states + attn_output * gate_msa
        encoder_hidden_states = encoder_hidden_states + text_attn_output * c_gate_msa.unsqueeze(1)

        norm_hidden = self.norm2(hidden_states) * (1 + scale_mlp) + shift_mlp
        norm_text = self.norm2_context(encoder_hidden_states) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
        hidden_states = hidden_states + gate_mlp * self.ff(norm_hidden)
        encoder_hidden_states = encoder_hidden_states + c_gate_mlp.unsqueeze(1) * self.ff_context(norm_text)
        return hidden_states, encoder_hidden_states


@maybe_allow_in_graph
class SkyReelsV4SingleTransformerBlock(nn.Module):
    """Single-stream block: media and text tokens are concatenated and share adaLN, QKV and MLP weights (attention
    and MLP in parallel, parameter names of Diffusers' `HunyuanVideoSingleTransformerBlock`), followed by an extra
    text cross-attention `x'' = x' + Attn(q=x', kv=text)` against the refined prompt tokens. The paper adds it to
    counter semantic dilution; its output projection starts at zero so a converted single-stream block is unchanged.

    `attention_mask` masks the keys of the joint attention, `text_context_mask` those of the text cross-attention
    (the prompt's own mask); they differ under context parallelism (see `SkyReelsV4SequencePadding`).
    """

    def __init__(
        self, num_attention_heads: int, attention_head_dim: int, mlp_ratio: float, sparse_attention: bool = False
    ) -> None:
        super().__init__()
        dim = num_attention_heads * attention_head_dim
        mlp_dim = int(dim * mlp_ratio)
        self.norm = AdaLayerNormZeroSingle(dim, norm_type="layer_norm")
        self.attn = SkyReelsV4Attention(
            dim, num_attention_heads, attention_head_dim, pre_only=True, sparse_gate=sparse_attention
        )
        self.proj_mlp = nn.Linear(dim, mlp_dim)
        self.act_mlp = nn.GELU(approximate="tanh")
        self.proj_out = nn.Linear(dim + mlp_dim, dim)
        self.norm_text_attn = nn.LayerNorm(dim, eps=1e-6)
        self.text_attn = SkyReelsV4Attention(
            dim,
            num_attention_heads,
            attention_head_dim,
            cross_attention_dim=dim,
            zero_init_output=True,
            replicated_context=True,
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        text_context: torch.Tensor,
        text_context_mask: torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        num_media = hidden_states.shape[1]
        residual = torch.cat([hidden_states, encoder_hidden_states], dim=1)
        if isinstance(temb, TokenTimeEmbedding):  # the media tokens per token, the prompt's at the sample's
            text_temb = temb.sample[:, None].expand(-1, encoder_hidden_states.shape[1], -1)
            norm_hidden, gate = modulate_per_token(self.norm, residual, torch.cat([temb.tokens, text_temb], dim=1))
        else:
            norm_hidden, gate = self.norm(residual, emb=temb)
            gate = gate.unsqueeze(1)
        mlp_hidden = self.act_mlp(self.proj_mlp(norm_hidden))
        attn_output = self.attn(
            norm_hidden, attention_mask=attention_mask, image_rotary_emb=rotary_emb, **(attention_kwargs or {})
        )
        hidden_states = residual + gate * self.proj_out(torch.cat([attn_output, mlp_hidden], dim=2))
        hidden_states, encoder_hidden_states = hidden_states[:, :num_media], hidden_states[:, num_media:]

        hidden_states = hidden_states + self.text_attn(
            self.norm_text_attn(hidden_states), text_context, attention_mask=text_context_mask
        )
        return hidden_states, encoder_hidden_states


@maybe_allow_in_graph
class SkyReelsV4CrossModalBlock(nn.Module):
    """Bidirectional audio<->video cross-attention, in the paper's order:

        a' = a + CrossAttn(q=a, kv=v)
        v' = v + CrossAttn(q=v, kv=a')      # video attends to the already updated audio

    Both sides use 1D RoPE on the shared video latent timeline, so attention can tell which audio belongs to which
    frame. Output projections start at zero: a freshly assembled joint model reproduces each tower exactly.
    `video_key_mask` `(B, N_v)` / `audio_key_mask` `(B, N_a)` mask padded tokens as keys (context parallelism).

    [ours] The exchange runs after each tower's block (not between its attention and MLP), so both towers keep
    whole, self-contained blocks: the standalone audio DiT uses the same block class and regional compilation sees
    whole blocks. [ours] The attention is narrower than the towers (`num_attention_heads` of the same head width,
    by default a quarter of the towers' heads): its projections run over every video token, and at full width this
    block alone cost 23% of a dual-stream block at 5-second proportions (benchmarks/bench_transformer.py).
    """

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int) -> None:
        super().__init__()
        self.norm_audio_query = nn.LayerNorm(dim, eps=1e-6)
        self.norm_video = nn.LayerNorm(dim, eps=1e-6)  # video is unchanged between the two attentions: one norm
        self.audio_attn = SkyReelsV4Attention(
            dim, num_attention_heads, attention_head_dim, cross_attention_dim=dim, zero_init_output=True
        )
        self.norm_audio_context = nn.LayerNorm(dim, eps=1e-6)
        self.video_attn = SkyReelsV4Attention(
            dim, num_attention_heads, attention_head_dim, cross_attention_dim=dim, zero_init_output=True
        )

    def forward(
        self,
        video_hidden_states: torch.Tensor,
        audio_hidden_states: torch.Tensor,
        video_time_rotary_emb: tuple[torch.Tensor, torch.Tensor],
        audio_time_rotary_emb: tuple[torch.Tensor, torch.Tensor],
        video_key_mask: torch.Tensor | None = None,
        audio_key_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        norm_video = self.norm_video(video_hidden_states)
        audio_hidden_states = audio_hidden_states + self.audio_attn(
            self.norm_audio_query(audio_hidden_states),
            norm_video,
            attention_mask=video_key_mask,
            image_rotary_emb=audio_time_rotary_emb,
            encoder_rotary_emb=video_time_rotary_emb,
        )
        video_hidden_states = video_hidden_states + self.video_attn(
            norm_video,
            self.norm_audio_context(audio_hidden_states),
            attention_mask=audio_key_mask,
            image_rotary_emb=video_time_rotary_emb,
            encoder_rotary_emb=audio_time_rotary_emb,
        )
        return video_hidden_states, audio_hidden_states


@maybe_allow_in_graph
class SkyReelsV4JointTransformerBlock(nn.Module):
    """One layer of both towers: the video block, the audio block (the same design with its own weights) and the
    audio<->video exchange after them.

    `hidden_states` is the joint token sequence `[video ; audio]` and `encoder_hidden_states` the prompt tokens of
    both towers `[video prompt ; audio prompt]` (each tower refines the prompt with its own weights). A modality
    whose RoPE table is `None` is absent: the block then runs the other tower's block alone, with no exchange, which
    is what makes a converted single-modality model exact.

    Args:
        single_stream: single-stream blocks (`SkyReelsV4SingleTransformerBlock`) instead of dual-stream ones.
        cross_modal_attention_heads: heads of the audio<->video exchange (see `SkyReelsV4CrossModalBlock`).
    """

    def __init__(
        self,
        num_attention_heads: int,
        attention_head_dim: int,
        mlp_ratio: float,
        cross_modal_attention_heads: int,
        single_stream: bool = False,
    ) -> None:
        super().__init__()
        block_class = SkyReelsV4SingleTransformerBlock if single_stream else SkyReelsV4TransformerBlock
        self.single_stream = single_stream
        self.video = block_class(num_attention_heads, attention_head_dim, mlp_ratio)
        self.audio = block_class(num_attention_heads, attention_head_dim, mlp_ratio)
        dim = num_attention_heads * attention_head_dim
        self.cross_modal = SkyReelsV4CrossModalBlock(dim, cross_modal_attention_heads, attention_head_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor | None,
        audio_temb: torch.Tensor | None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
        audio_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
        temporal_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        text_context: torch.Tensor | None = None,
        audio_text_context: torch.Tensor | None = None,
        text_context_mask: torch.Tensor | None = None,
        video_key_mask: torch.Tensor | None = None,
        audio_key_mask: torch.Tensor | None = None,
        isolate_modalities: bool = False,
        perturb_video: bool = False,
        perturb_audio: bool = False,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(B, N_v + N_a, dim)`): video tokens, then audio tokens.
            encoder_hidden_states (`torch.Tensor` of shape `(B, 2S, dim)` or `(B, S, dim)`): the towers' prompt
                tokens, video tower's first (only the present towers').
            temb, audio_temb (`torch.Tensor` of shape `(B, dim)`): each tower's timestep embedding.
            rotary_emb (`(cos, sin)` of shape `(N_v, head_dim)`): video 3D RoPE; `None` without video.
            audio_rotary_emb (`(cos, sin)` of shape `(N_a, head_dim)`): audio 1D RoPE on the video latent timeline
                (also the audio side of the exchange); `None` without audio.
            temporal_rotary_emb (`(cos, sin)` of shape `(N_v, head_dim)`): the video side of the exchange (each
                video token's latent frame on the shared timeline).
            attention_mask, audio_attention_mask (`torch.Tensor` of shape `(B, K)`): key masks of each tower's
                joint attention (see `SkyReelsV4AttnProcessor`).
            text_context, audio_text_context (`torch.Tensor` of shape `(B, S, dim)`): each tower's refined prompt,
                keys of the single-stream blocks' text cross-attention, masked by `text_context_mask` `(B, S)`.
            video_key_mask, audio_key_mask (`torch.Tensor` of shape `(B, N_v)` / `(B, N_a)`): real tokens as keys of
                the exchange (context-parallel padding is False).
            isolate_modalities (`bool`): skip the exchange, so each tower sees only itself (modality guidance's
                extra pass).
            perturb_video, perturb_audio (`bool`): that tower's self-attention returns its values (spatio-temporal
                guidance's perturbed pass, see `SkyReelsV4AttnProcessor`).
        """
        video_inputs = (temb, attention_mask, rotary_emb, text_context, text_context_mask)
        audio_inputs = (audio_temb, audio_attention_mask, audio_rotary_emb, audio_text_context, text_context_mask)
        video_attention = {**(attention_kwargs or {}), "value_only": True} if perturb_video else attention_kwargs
        audio_attention = {**(attention_kwargs or {}), "value_only": True} if perturb_audio else attention_kwargs
        if rotary_emb is None or audio_rotary_emb is None:  # one modality: its tower's block alone
            if rotary_emb is None:
                return self._run(self.audio, hidden_states, encoder_hidden_states, *audio_inputs, audio_attention)
            return self._run(self.video, hidden_states, encoder_hidden_states, *video_inputs, video_attention)

        num_video = rotary_emb[0].shape[0]
        video, audio = hidden_states[:, :num_video], hidden_states[:, num_video:]
        video_text, audio_text = encoder_hidden_states.chunk(2, dim=1)
        video, video_text = self._run(self.video, video, video_text, *video_inputs, video_attention)
        audio, audio_text = self._run(self.audio, audio, audio_text, *audio_inputs, audio_attention)
        if not isolate_modalities:
            video, audio = self.cross_modal(
                video, audio, temporal_rotary_emb, audio_rotary_emb, video_key_mask, audio_key_mask
            )
        return torch.cat([video, audio], dim=1), torch.cat([video_text, audio_text], dim=1)

    def _run(
        self,
        block: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        text_context: torch.Tensor | None,
        text_context_mask: torch.Tensor | None,
        attention_kwargs: dict[str, Any] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One tower's block; single-stream blocks also read their tower's refined prompt."""
        extra = {"text_context": text_context, "text_context_mask": text_context_mask} if self.single_stream else {}
        return block(
            hidden_states,
            encoder_hidden_states,
            temb,
            attention_mask,
            rotary_emb,
            attention_kwargs=attention_kwargs,
            **extra,
        )


@maybe_allow_in_graph
class SkyReelsV4SingleJointTransformerBlock(SkyReelsV4JointTransformerBlock):
    """`SkyReelsV4JointTransformerBlock` of single-stream blocks. A class with its own `forward` so that regional
    compilation (`compile_repeated_blocks`), which caches compiled code per function, compiles each kind of block
    once instead of recompiling as the two kinds alternate."""

    def __init__(
        self, num_attention_heads: int, attention_head_dim: int, mlp_ratio: float, cross_modal_attention_heads: int
    ) -> None:
        super().__init__(
            num_attention_heads, attention_head_dim, mlp_ratio, cross_modal_attention_heads, single_stream=True
        )

    def forward(
        self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The first two names are what Diffusers' block hooks (FirstBlockCache, MagCache, layer skip) look up
        return super().forward(hidden_states, encoder_hidden_states, *args, **kwargs)


class SkyReelsV4OutputProjection(nn.Module):
    """Both towers' output heads in one module: `video` maps a video token to its `p_t * p * p * C` latent values,
    `audio` an audio token to its `C_a` latent channels. As one module, Diffusers' hooks that stand in for a model's
    output projection (TaylorSeer's lite mode predicts `proj_out`) cover both modalities."""

    def __init__(self, dim: int, video_channels: int, audio_channels: int) -> None:
        super().__init__()
        self.video = nn.Linear(dim, video_channels)
        self.audio = nn.Linear(dim, audio_channels)

    def forward(self, hidden_states: torch.Tensor, audio_hidden_states: torch.Tensor):
        """`(B, N_v, dim)`, `(B, N_a, dim)` -> `(B, N_v, video_channels)`, `(B, N_a, audio_channels)`; an absent
        modality comes as zero tokens."""
        return self.video(hidden_states), self.audio(audio_hidden_states)


class SkyReelsV4SequencePadding(nn.Module):
    """Prepares one modality's token sequence for context parallelism; the model's `_cp_plan` then splits every
    output across the ranks (see `sequence_split_plan`). Without context parallelism it is not called.

    The sequence is padded at its end to a multiple of `num_shards`, so Diffusers' equal split takes any length;
    padded tokens are masked as keys everywhere and dropped when the output head gathers the sequence.

    The prompt tokens are not split: every rank keeps them whole (they are short, the token refiner and the text
    cross-attention need all of them, and a joint `[media ; text]` attention then needs no padding of the prompt).
    Ulysses' all-to-all concatenates every rank's `[media ; text]` keys, so the prompt arrives `num_shards` times;
    the joint key mask keeps rank 0's copy and masks the others, and each prompt token is attended once.

    Args:
        hidden_states (`torch.Tensor` of shape `(B, N, dim)`): the tokens.
        text_mask (`torch.Tensor` of shape `(B, S)`): True for real prompt tokens.
        num_shards (`int`): number of context-parallel ranks.
        per_token (`torch.Tensor`s of shape `(N, d)`): RoPE cos/sin tables, one row per token.

    Returns:
        `(hidden_states (B, N_pad, dim), joint_mask (B, num_shards * (N_pad / num_shards + S)),
        key_mask (B, N_pad), *per_token (N_pad, d))`. `joint_mask` is laid out rank after rank: rank `r`'s part
        masks its local `[media ; text]` keys; `key_mask` marks the real tokens.
    """

    def forward(
        self, hidden_states: torch.Tensor, text_mask: torch.Tensor, num_shards: int, *per_token: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        batch, num_tokens = hidden_states.shape[:2]
        num_padded = -(-num_tokens // num_shards) * num_shards
        padding = (0, 0, 0, num_padded - num_tokens)  # at the end of the token dim (dim -2)
        hidden_states = F.pad(hidden_states, padding)
        per_token = tuple(F.pad(table, padding) for table in per_token)
        key_mask = torch.arange(num_padded, device=hidden_states.device) < num_tokens
        key_mask = key_mask.expand(batch, -1).contiguous()
        text_copies = F.pad(text_mask.bool()[:, None], (0, 0, 0, num_shards - 1), value=False)  # (B, shards, S)
        joint_mask = torch.cat([key_mask.view(batch, num_shards, -1), text_copies], dim=2).flatten(1)
        return (hidden_states, joint_mask, key_mask, *per_token)


def sequence_split_plan(num_per_token: int) -> dict[int, ContextParallelInput]:
    """`_cp_plan` entry splitting the outputs of a `SkyReelsV4SequencePadding` with `num_per_token` RoPE tables."""
    return {
        0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True),  # tokens
        1: ContextParallelInput(split_dim=1, expected_dims=2, split_output=True),  # joint-attention key mask
        2: ContextParallelInput(split_dim=1, expected_dims=2, split_output=True),  # media key mask
        **{3 + i: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True) for i in range(num_per_token)},
    }


class SkyReelsV4ContextParallelMixin:
    """`enable_parallelism` for the SkyReels-V4 models: Ulysses context parallelism over all ranks.

    Each model pads its token sequences to a multiple of the number of ranks itself (see `SkyReelsV4SequencePadding`),
    so it records the context-parallel config it was given in `context_parallel_config`. Refused with the reason: ring
    attention (it applies one rank's key mask to every rank's keys, and the keys here carry per-rank masks: padding,
    duplicate prompt copies), the `*_anything` modes (the sequences are padded to equal shards already), and a
    Ulysses degree below the world size (attention that gathers keys instead of exchanging heads uses the whole
    world as its group).
    """

    context_parallel_config: ContextParallelConfig | None = None

    def enable_parallelism(self, *, config, cp_plan=None):
        cp_config = config if isinstance(config, ContextParallelConfig) else None
        if isinstance(config, ParallelConfig):
            cp_config = config.context_parallel_config
        if cp_config is not None:
            self.check_context_parallel_config(cp_config)
        super().enable_parallelism(config=config, cp_plan=cp_plan)
        self.context_parallel_config = cp_config

    def check_context_parallel_config(self, cp_config: ContextParallelConfig) -> None:
        if cp_config.ring_degree != 1:
            raise ValueError(
                f"`config.ring_degree` must be 1, got {cp_config.ring_degree}: {type(self).__name__} supports Ulysses "
                "context parallelism (`ContextParallelConfig(ulysses_degree=N)`) only, because ring attention would "
                "apply one rank's key mask to every rank's keys."
            )
        if cp_config.ulysses_anything or cp_config.ring_anything:
            raise ValueError(
                "`config.ulysses_anything` / `ring_anything` must be False: the model pads its sequences to equal "
                "shards itself."
            )
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else None
        if world_size is not None and cp_config.ulysses_degree != world_size:
            raise ValueError(
                f"`config.ulysses_degree` must equal the world size ({world_size}), got {cp_config.ulysses_degree}: "
                f"{type(self).__name__} splits its sequences over all ranks."
            )

    @property
    def context_parallel_shards(self) -> int:
        """Number of ranks the token sequences are split across; 1 without context parallelism."""
        return 1 if self.context_parallel_config is None else self.context_parallel_config.ulysses_degree


def call_block(model: ModelMixin, block: nn.Module, *args, **kwargs):
    """`block(*args, **kwargs)`, through `model`'s gradient checkpointing when it is on and gradients are needed."""
    if torch.is_grad_enabled() and model.gradient_checkpointing:
        return model._gradient_checkpointing_func(functools.partial(block, **kwargs), *args)
    return block(*args, **kwargs)


def expand_timestep(timestep: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """A scalar or `(B,)` timestep -> `(B,)` on `device`."""
    return timestep.to(device).expand(batch_size)


def embed_timestep_and_prompt(
    time_embed: HunyuanVideo15TimeEmbedding,
    context_embedder: HunyuanVideo15TokenRefiner,
    text_type_embedding: nn.Parameter,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor | None,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One tower's timestep embedding `(B, dim)` and refined prompt tokens `(B, S, dim)`.

    The sinusoids are computed from the fp32 timestep; the MLP runs in its own dtype: fp32 when loaded with a
    `dtype` (`_keep_in_fp32_modules`), the model's after a plain `.to(dtype)`. `text_type_embedding` is the learned
    offset marking MLLM text tokens (HunyuanVideo-1.5's text condition-type embedding)."""
    text = context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)
    return embed_timestep(time_embed, timestep, dtype), text + text_type_embedding.to(text.dtype)


def embed_timestep(
    time_embed: HunyuanVideo15TimeEmbedding, timestep: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """The timestep embedding `(*timestep.shape, dim)`: sinusoids of the fp32 timestep, then the MLP in its dtype."""
    embedder = time_embed.timestep_embedder
    sinusoids = time_embed.time_proj(timestep.float().flatten()).to(embedder.linear_1.weight.dtype)
    return embedder(sinusoids).to(dtype).unflatten(0, timestep.shape)


def token_refiner(text_embed_dim: int, num_attention_heads: int, attention_head_dim: int, num_layers: int):
    """Diffusers' `HunyuanVideo15TokenRefiner` (the prompt's own small transformer), its attention routed through
    `dispatch_attention_fn`."""
    refiner = HunyuanVideo15TokenRefiner(
        text_embed_dim, num_attention_heads, attention_head_dim, num_layers=num_layers
    )
    for block in refiner.token_refiner.refiner_blocks:
        block.attn.set_processor(SkyReelsV4TokenRefinerAttnProcessor())
    return refiner


def tower_key_to_joint(key: str, tower: str) -> str:
    """A single-tower parameter name -> the joint model's: the audio DiT's names (`tower="audio"`), or HunyuanVideo-1.5's
    names of the video tower (`tower="video"`)."""
    head, _, rest = key.partition(".")
    if head in ("transformer_blocks", "single_transformer_blocks"):
        index, _, rest = rest.partition(".")
        return f"{head}.{index}.{tower}.{rest}"
    if head == "proj_out":
        return f"proj_out.{tower}.{rest}"
    return key if tower == "video" else f"audio_{key}"


@dataclass
class ModalityTokens:
    """One modality's inputs to the blocks: its `tokens` `(B, N, dim)`, its tower's timestep embedding `temb`
    `(B, dim)` and refined prompt `text` `(B, S, dim)`, its RoPE `rotary_emb`, the key mask of its tower's joint
    attention `attention_mask` (the prompt's; under context parallelism also the padding) and its real tokens as
    keys of the audio<->video exchange `key_mask` (context parallelism only)."""

    tokens: torch.Tensor
    temb: torch.Tensor
    text: torch.Tensor
    rotary_emb: tuple[torch.Tensor, torch.Tensor]
    attention_mask: torch.Tensor | None
    key_mask: torch.Tensor | None = None


class SkyReelsV4Transformer3DModel(
    SkyReelsV4ContextParallelMixin, ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin, AttentionMixin
):
    r"""
    The joint video-audio MMDiT of SkyReels-V4: two towers of identical width and depth ("symmetric twin backbone")
    conditioned on one MLLM's hidden states, exchanging information through bidirectional audio<->video
    cross-attention in every layer. The layers are two flat lists of `SkyReelsV4JointTransformerBlock`s (dual-stream,
    then single-stream), each holding both towers' block and the exchange (see the module docstring).

    Runs text-to-audio-video (both inputs), text-to-video (`audio_hidden_states=None`) and text-to-audio
    (`hidden_states=None`); an absent tower does no work. Each modality has its own timestep, so a clean modality
    can condition the other (audio-to-video, video-to-audio).

    Video tokens are `[references ; video ; keyframes]`:
    - references (clean latents, shape `(B, C, R, Hr, Wr)`) are embedded as `[latent, latent, mask=1]`, get temporal
      RoPE index `-R + i` and are not predicted. [ours] They share the sample's timestep modulation (one adaLN per
      tower keeps blocks HunyuanVideo-compatible and compile-friendly); they are told apart by being clean, by
      their mask channel and by their negative temporal index;
    - keyframes (shape `(B, 2C+1, K, Hk, Wk)`) are high-resolution frames denoised together with the low-res video.
      Their RoPE shares one spatial frame with the low-res tokens, whose positions are scaled by `Hk / H`; their
      temporal index is `keyframe_positions` (in latent frames: pixel frame `f` sits at `f / temporal_ratio`).

    Audio tokens use 1D RoPE on the video latent timeline: audio latent `j` sits at `j * audio_rope_scale`, where
    `audio_rope_scale = (fps / vae_temporal_compression_ratio) / (audio_sample_rate / audio_samples_per_latent)`
    (derived from config, never hard-coded). Audio references sit at negative positions.

    Args:
        in_channels (`int`, defaults to 65): video tower input channels, `2C+1` (noisy latent, condition latent, mask).
        out_channels (`int`, defaults to 32): video latent channels `C`.
        audio_in_channels (`int`, defaults to 40): audio latent channels (also the audio output channels).
        num_attention_heads (`int`, defaults to 16), attention_head_dim (`int`, defaults to 128): both towers.
        num_layers (`int`, defaults to 20): dual-stream layers (may be 0).
        num_single_layers (`int`, defaults to 40): single-stream layers (may be 0).
        num_token_refiner_layers (`int`, defaults to 2): blocks of each tower's MLLM token refiner (the prompt's small
            transformer, not the Refiner stage).
        mlp_ratio (`float`, defaults to 4.0): MLP width ratio.
        patch_size (`int`, defaults to 1), patch_size_t (`int`, defaults to 1): video patch sizes.
        text_embed_dim (`int`, defaults to 3584): hidden size of the MLLM text encoder.
        rope_theta (`float`, defaults to 256.0), rope_axes_dim (`tuple`, defaults to (16, 56, 56)): video RoPE.
        fps (`float`, defaults to 16), vae_temporal_compression_ratio (`int`, defaults to 4),
        audio_sample_rate (`int`, defaults to 44100), audio_samples_per_latent (`int`, defaults to 1024):
            the latent timelines that place audio on the video's RoPE axis.
        cross_modal_attention_heads (`int`, *optional*): heads of width `attention_head_dim` in the audio<->video
            cross-attention; defaults to `max(1, num_attention_heads // 4)`.
    """

    _supports_gradient_checkpointing = True
    _keep_in_fp32_modules = ["time_embed", "audio_time_embed"]
    _no_split_modules = [
        "SkyReelsV4JointTransformerBlock",
        "SkyReelsV4SingleJointTransformerBlock",
        "HunyuanVideo15TokenRefiner",
        "HunyuanVideo15PatchEmbed",
    ]
    _repeated_blocks = ["SkyReelsV4JointTransformerBlock", "SkyReelsV4SingleJointTransformerBlock"]
    # Layerwise casting keeps these in the compute dtype besides Diffusers' defaults (norms, "^proj_out$"): the input
    # embeddings (as Diffusers' HunyuanVideo-1.5) and both output heads.
    _skip_layerwise_casting_patterns = ["x_embedder", "context_embedder", "^proj_out"]
    # Context parallelism (`enable_parallelism(config=ContextParallelConfig(ulysses_degree=N))`), Ulysses only:
    # - each modality's whole token sequence (references, video, keyframes / audio references, audio) is padded to a
    #   multiple of N and split into N equal shards by its `*_sequence_padding` module, together with everything
    #   indexed per token: RoPE tables and key masks. The prompt stays whole on every rank;
    # - attention whose keys are sharded (each tower's joint attention, audio<->video) runs through Diffusers'
    #   Ulysses attention: an all-to-all gives each rank the whole sequence for 1/N of the heads, so padded keys and
    #   the duplicate prompt copies are simply masked; the text cross-attention and the token refiner attend to the
    #   replicated prompt locally;
    # - `norm_out` / `audio_norm_out` (per token) gather the sequence back before the heads drop references and
    #   padding.
    _cp_plan = {
        "video_sequence_padding": sequence_split_plan(num_per_token=4),  # 3D RoPE and temporal RoPE, cos and sin
        "audio_sequence_padding": sequence_split_plan(num_per_token=2),
        "norm_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
        "audio_norm_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }

    @register_to_config
    def __init__(
        self,
        in_channels: int = 65,
        out_channels: int = 32,
        audio_in_channels: int = 40,
        num_attention_heads: int = 16,
        attention_head_dim: int = 128,
        num_layers: int = 20,
        num_single_layers: int = 40,
        num_token_refiner_layers: int = 2,
        mlp_ratio: float = 4.0,
        patch_size: int = 1,
        patch_size_t: int = 1,
        text_embed_dim: int = 3584,
        rope_theta: float = 256.0,
        rope_axes_dim: tuple[int, int, int] = (16, 56, 56),
        fps: float = 16.0,
        vae_temporal_compression_ratio: int = 4,
        audio_sample_rate: int = 44100,
        audio_samples_per_latent: int = 1024,
        cross_modal_attention_heads: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels != 2 * out_channels + 1:
            raise ValueError(
                f"`in_channels` must be 2 * out_channels + 1 = {2 * out_channels + 1} (noisy latent, condition "
                f"latent, mask), got in_channels={in_channels} with out_channels={out_channels}."
            )
        if sum(rope_axes_dim) != attention_head_dim:
            raise ValueError(
                f"`rope_axes_dim` must sum to attention_head_dim={attention_head_dim}, got {tuple(rope_axes_dim)}."
            )
        dim = num_attention_heads * attention_head_dim
        refiner_args = (text_embed_dim, num_attention_heads, attention_head_dim, num_token_refiner_layers)
        patch = (patch_size_t, patch_size, patch_size)

        self.x_embedder = HunyuanVideo15PatchEmbed(patch, in_channels, dim)
        self.time_embed = HunyuanVideo15TimeEmbedding(dim)
        self.context_embedder = token_refiner(*refiner_args)
        self.text_type_embedding = nn.Parameter(torch.zeros(dim))
        self.audio_x_embedder = nn.Linear(audio_in_channels, dim)
        self.audio_time_embed = HunyuanVideo15TimeEmbedding(dim)
        self.audio_context_embedder = token_refiner(*refiner_args)
        self.audio_text_type_embedding = nn.Parameter(torch.zeros(dim))

        block_args = (num_attention_heads, attention_head_dim, mlp_ratio)
        cross_modal_heads = cross_modal_attention_heads or max(1, num_attention_heads // 4)
        self.transformer_blocks = nn.ModuleList(
            [SkyReelsV4JointTransformerBlock(*block_args, cross_modal_heads) for _ in range(num_layers)]
        )
        self.single_transformer_blocks = nn.ModuleList(
            [SkyReelsV4SingleJointTransformerBlock(*block_args, cross_modal_heads) for _ in range(num_single_layers)]
        )

        self.norm_out = AdaLayerNormContinuous(dim, dim, elementwise_affine=False, eps=1e-6)
        self.audio_norm_out = AdaLayerNormContinuous(dim, dim, elementwise_affine=False, eps=1e-6)
        self.proj_out = SkyReelsV4OutputProjection(dim, patch_size_t * patch_size**2 * out_channels, audio_in_channels)

        self.rope = SkyReelsV4RotaryPosEmbed(rope_axes_dim, rope_theta)
        self.time_rope = SkyReelsV4RotaryPosEmbed((attention_head_dim,), rope_theta)
        self.video_sequence_padding = SkyReelsV4SequencePadding()
        self.audio_sequence_padding = SkyReelsV4SequencePadding()
        self.gradient_checkpointing = False

    @property
    def audio_rope_scale(self) -> float:
        """Video latent frames per audio latent: places audio latent `j` at `j * scale` on the video timeline."""
        return audio_rope_scale_from_config(self.config)

    @classmethod
    def from_video_and_audio(
        cls,
        video_model: "SkyReelsV4Transformer3DModel",
        audio_model: ModelMixin,
    ) -> "SkyReelsV4Transformer3DModel":
        """Assemble a joint model from a video source and a T2A-pretrained `SkyReelsV4AudioTransformer1DModel`.

        The video tower, the exchange and the RoPE/timeline config come from `video_model` (for example a converted
        HunyuanVideo-1.5 model, whose audio tower is untrained and whose exchange is still at zero), the audio
        tower from `audio_model`, whose parameter names map one to one (`tower_key_to_joint`)."""
        video_config, audio_config = video_model.config, audio_model.config
        for key in ("num_attention_heads", "attention_head_dim", "num_layers", "num_single_layers", "text_embed_dim"):
            if video_config[key] != audio_config[key]:
                raise ValueError(
                    f"`audio_model` must match `video_model` in {key}: got {audio_config[key]}, expected "
                    f"{video_config[key]} (the twin towers have identical width and depth)."
                )
        config = {k: v for k, v in video_config.items() if not k.startswith("_")}
        config["audio_in_channels"] = audio_config["in_channels"]
        for key in ("num_token_refiner_layers", "audio_sample_rate", "audio_samples_per_latent"):
            config[key] = audio_config[key]
        model = cls.from_config(config)
        if (video_model.device, video_model.dtype) != (model.device, model.dtype):
            model = model.to(device=video_model.device, dtype=video_model.dtype)
        state_dict = video_model.state_dict()
        state_dict.update({tower_key_to_joint(k, "audio"): v for k, v in audio_model.state_dict().items()})
        model.load_state_dict(state_dict)
        return model

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor | None = None,
        timestep: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        audio_hidden_states: torch.Tensor | None = None,
        audio_timestep: torch.Tensor | None = None,
        reference_latents: torch.Tensor | None = None,
        audio_reference_latents: torch.Tensor | None = None,
        keyframe_hidden_states: torch.Tensor | None = None,
        keyframe_positions: torch.Tensor | None = None,
        isolate_modalities: bool = False,
        spatio_temporal_guidance_blocks: list[int] | None = None,
        audio_spatio_temporal_guidance_blocks: list[int] | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> SkyReelsV4TransformerOutput | tuple:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(B, 2C+1, F, H, W)` or `None`):
                Video input: noisy latent, condition latent and mask stacked on channels. `None` for T2A.
            timestep (`torch.Tensor` of shape `(B,)` or scalar): video timestep (Diffusers' `sigma * 1000`); needed
                with `hidden_states`. Also the audio timestep when `audio_timestep` is not given.
            encoder_hidden_states (`torch.Tensor` of shape `(B, S, text_embed_dim)`): MLLM hidden states.
            encoder_attention_mask (`torch.Tensor` of shape `(B, S)`, *optional*): True/1 for real tokens.
            audio_hidden_states (`torch.Tensor` of shape `(B, C_a, L)`, *optional*): noisy audio latents; `None`
                for T2V.
            audio_timestep (`torch.Tensor` of shape `(B,)` or `(B, L)`, *optional*): audio timestep; 0 makes the audio
                a clean condition (audio-to-video), as timestep 0 on the video does for video-to-audio. Per audio
                latent `(B, L)`, each token is modulated at its own level: a clean prefix at 0 continues a given
                soundtrack (audio extension) while the rest is generated; the prompt and audio references then take
                each sample's highest timestep. Not under context parallelism.
            reference_latents (`torch.Tensor` of shape `(B, C, R, Hr, Wr)`, *optional*): clean reference latents
                prepended to the video tokens.
            audio_reference_latents (`torch.Tensor` of shape `(B, C_a, Lr)`, *optional*): clean audio reference
                latents prepended to the audio tokens.
            keyframe_hidden_states (`torch.Tensor` of shape `(B, 2C+1, K, Hk, Wk)`, *optional*): high-res keyframes
                (same channel layout as `hidden_states`) appended to the video tokens.
            keyframe_positions (`torch.Tensor` of shape `(K,)`, *optional*): temporal RoPE index of each keyframe on
                the video latent timeline.
            isolate_modalities (`bool`, defaults to `False`): run every layer without the audio<->video exchange, so
                each modality is predicted from itself and the prompt alone (the extra pass of modality guidance).
            spatio_temporal_guidance_blocks, audio_spatio_temporal_guidance_blocks (`list[int]`, *optional*): blocks
                whose video (audio) self-attention returns its values, as if its map were the identity: the perturbed
                pass of spatio-temporal guidance. Indices run over `transformer_blocks`, then
                `single_transformer_blocks`.
            attention_kwargs (`dict`, *optional*): `{"scale": lora_scale}`, and keyword arguments for the attention
                processors.
            return_dict (`bool`, defaults to `True`): return a `SkyReelsV4TransformerOutput` instead of a tuple.
        """
        self._check_inputs(
            hidden_states,
            encoder_hidden_states,
            encoder_attention_mask,
            audio_hidden_states,
            keyframe_hidden_states,
            keyframe_positions,
            spatio_temporal_guidance_blocks,
            audio_spatio_temporal_guidance_blocks,
        )
        has_video, has_audio = hidden_states is not None, audio_hidden_states is not None
        reference = hidden_states if has_video else audio_hidden_states
        batch_size, device, dtype = reference.shape[0], reference.device, reference.dtype
        if audio_timestep is None:
            audio_timestep = timestep
        elif audio_timestep.ndim == 2:
            self._check_token_timestep(audio_timestep, audio_hidden_states)
        if encoder_attention_mask is not None:
            encoder_attention_mask = encoder_attention_mask.bool()

        video = audio = video_time_rope = None
        if has_video:
            video, video_time_rope, video_layout = self._embed_video(
                hidden_states,
                expand_timestep(timestep, batch_size, device),
                encoder_hidden_states,
                encoder_attention_mask,
                reference_latents,
                keyframe_hidden_states,
                keyframe_positions,
                dtype,
            )
        if has_audio:
            audio, num_audio_refs = self._embed_audio(
                audio_hidden_states,
                audio_reference_latents,
                audio_timestep.to(device)
                if audio_timestep.ndim == 2
                else expand_timestep(audio_timestep, batch_size, device),
                encoder_hidden_states,
                encoder_attention_mask,
                dtype,
            )
            num_audio_tokens = audio.tokens.shape[1]

        num_shards = self.context_parallel_shards
        if num_shards > 1:  # pad and (through `_cp_plan`) split the sequences; see `SkyReelsV4SequencePadding`
            text_mask = encoder_attention_mask
            if text_mask is None:
                text_mask = torch.ones(encoder_hidden_states.shape[:2], dtype=torch.bool, device=device)
            if has_video:
                video.tokens, video.attention_mask, video.key_mask, *tables = self.video_sequence_padding(
                    video.tokens, text_mask, num_shards, *video.rotary_emb, *video_time_rope
                )
                video.rotary_emb, video_time_rope = tuple(tables[:2]), tuple(tables[2:])
            if has_audio:
                audio.tokens, audio.attention_mask, audio.key_mask, *tables = self.audio_sequence_padding(
                    audio.tokens, text_mask, num_shards, *audio.rotary_emb
                )
                audio.rotary_emb = tuple(tables)

        present = [stream for stream in (video, audio) if stream is not None]
        hidden_states = torch.cat([stream.tokens for stream in present], dim=1)
        encoder_hidden_states = torch.cat([stream.text for stream in present], dim=1)
        block_kwargs = {
            "temb": video and video.temb,
            "audio_temb": audio and audio.temb,
            "rotary_emb": video and video.rotary_emb,
            "audio_rotary_emb": audio and audio.rotary_emb,
            "temporal_rotary_emb": video_time_rope,
            "attention_mask": video and video.attention_mask,
            "audio_attention_mask": audio and audio.attention_mask,
            "text_context": video and video.text,
            "audio_text_context": audio and audio.text,
            "text_context_mask": encoder_attention_mask,
            "video_key_mask": video and video.key_mask,
            "audio_key_mask": audio and audio.key_mask,
            "isolate_modalities": isolate_modalities,
            "attention_kwargs": attention_kwargs,
        }
        video_perturbed = set(spatio_temporal_guidance_blocks or ())
        audio_perturbed = set(audio_spatio_temporal_guidance_blocks or ())
        for index, block in enumerate((*self.transformer_blocks, *self.single_transformer_blocks)):
            hidden_states, encoder_hidden_states = call_block(
                self,
                block,
                hidden_states,
                encoder_hidden_states,
                perturb_video=index in video_perturbed,
                perturb_audio=index in audio_perturbed,
                **block_kwargs,
            )

        num_video = video.tokens.shape[1] if has_video else 0
        video_tokens, audio_tokens = hidden_states[:, :num_video], hidden_states[:, num_video:]
        if has_video:
            video_tokens = self.norm_out(video_tokens, video.temb)  # gathered here under context parallelism
            video_tokens = video_tokens[:, video_layout.predicted]
        if has_audio:
            if isinstance(audio.temb, TokenTimeEmbedding):
                audio_tokens = modulate_per_token(self.audio_norm_out, audio_tokens, audio.temb.tokens)
            else:
                audio_tokens = self.audio_norm_out(audio_tokens, audio.temb)
            audio_tokens = audio_tokens[:, num_audio_refs:num_audio_tokens]
        video_tokens, audio_tokens = self.proj_out(video_tokens, audio_tokens)

        video_sample = keyframe_sample = audio_sample = None
        if has_video:
            video_sample, keyframe_sample = self._unpatchify_video(video_tokens, video_layout)
        if has_audio:
            audio_sample = audio_tokens.transpose(1, 2)
        if not return_dict:
            return (video_sample, audio_sample, keyframe_sample)
        return SkyReelsV4TransformerOutput(
            sample=video_sample, audio_sample=audio_sample, keyframe_sample=keyframe_sample
        )

    def _embed_video(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None,
        reference_latents: torch.Tensor | None,
        keyframe_hidden_states: torch.Tensor | None,
        keyframe_positions: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> tuple[ModalityTokens, tuple[torch.Tensor, torch.Tensor], "VideoTokenLayout"]:
        """The video tokens `[references ; video ; keyframes]` with their 3D RoPE, the temporal RoPE of the
        exchange, and where the predicted tokens sit."""
        device = hidden_states.device
        p_t, p = self.config.patch_size_t, self.config.patch_size
        _, _, num_frames, height, width = hidden_states.shape
        grid = (num_frames // p_t, height // p, width // p)
        temb, text = embed_timestep_and_prompt(
            self.time_embed,
            self.context_embedder,
            self.text_type_embedding,
            timestep,
            encoder_hidden_states,
            encoder_attention_mask,
            dtype,
        )

        tokens = [self.x_embedder(hidden_states)]
        reference_grid = keyframe_grid = None
        if reference_latents is not None:
            ones = torch.ones_like(reference_latents[:, :1])
            tokens.insert(0, self.x_embedder(torch.cat([reference_latents, reference_latents, ones], dim=1).to(dtype)))
            _, _, num_refs, ref_height, ref_width = reference_latents.shape
            reference_grid = (num_refs // p_t, ref_height // p, ref_width // p)
        if keyframe_hidden_states is not None:
            tokens.append(self.x_embedder(keyframe_hidden_states.to(dtype)))
            _, _, num_keyframes, kf_height, kf_width = keyframe_hidden_states.shape
            keyframe_grid = (num_keyframes, kf_height // p, kf_width // p)

        layout = VideoTokenLayout(tokens[0].shape[1] if reference_grid else 0, grid, keyframe_grid)
        tokens = torch.cat(tokens, dim=1) if len(tokens) > 1 else tokens[0]
        positions = self.video_positions(grid, reference_grid, keyframe_grid, keyframe_positions, device)
        video = ModalityTokens(tokens, temb, text, self.rope(positions), encoder_attention_mask)
        return video, self.time_rope(positions[:, :1]), layout

    def _embed_audio(
        self,
        audio_latents: torch.Tensor,
        reference_latents: torch.Tensor | None,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> tuple[ModalityTokens, int]:
        """The audio tokens `[references ; audio]` (latents `(B, C_a, L)`) with 1D RoPE on the video latent timeline
        (references at negative positions), and the number of references. A timestep `(B, L)` modulates each audio
        token at its own level (`TokenTimeEmbedding`); the references and the prompt take the sample's noisiest."""
        per_token = timestep.ndim == 2
        temb, text = embed_timestep_and_prompt(
            self.audio_time_embed,
            self.audio_context_embedder,
            self.audio_text_type_embedding,
            timestep.amax(dim=1) if per_token else timestep,
            encoder_hidden_states,
            encoder_attention_mask,
            dtype,
        )
        latents, num_references = audio_latents.to(dtype), 0
        if reference_latents is not None:
            num_references = reference_latents.shape[2]
            latents = torch.cat([reference_latents.to(dtype), latents], dim=2)
        if per_token:
            references = temb[:, None].expand(-1, num_references, -1)
            token_temb = embed_timestep(self.audio_time_embed, timestep, dtype)
            temb = TokenTimeEmbedding(temb, torch.cat([references, token_temb], dim=1))
        positions = audio_token_positions(latents.shape[2], num_references, self.audio_rope_scale, latents.device)
        tokens = self.audio_x_embedder(latents.transpose(1, 2))
        return ModalityTokens(tokens, temb, text, self.time_rope(positions), encoder_attention_mask), num_references

    def video_positions(
        self,
        grid: tuple[int, int, int],
        reference_grid: tuple[int, int, int] | None = None,
        keyframe_grid: tuple[int, int, int] | None = None,
        keyframe_positions: torch.Tensor | None = None,
        device: torch.device | None = None,
    ) -> torch.Tensor:
        """fp32 RoPE positions `(num_tokens, 3)` of the video tokens `[references ; video ; keyframes]`.

        Grids are post-patch `(frames, height, width)`. Reference `i` of `R` gets temporal index `-R + i`; with
        keyframes, low-res spatial positions are scaled onto the keyframes' grid, whose tokens keep integer
        positions and take their temporal index from `keyframe_positions`."""
        spatial_scale = (1.0, 1.0)
        if keyframe_grid is not None:
            spatial_scale = (keyframe_grid[1] / grid[1], keyframe_grid[2] / grid[2])
        positions = [video_token_positions(*grid, device, spatial_scale=spatial_scale)]
        if reference_grid is not None:
            reference_times = torch.arange(-reference_grid[0], 0, device=device, dtype=torch.float32)
            positions.insert(0, video_token_positions(*reference_grid, device, reference_times))
        if keyframe_grid is not None:
            positions.append(video_token_positions(*keyframe_grid, device, keyframe_positions))
        return torch.cat(positions, dim=0) if len(positions) > 1 else positions[0]

    def _unpatchify_video(
        self, tokens: torch.Tensor, layout: "VideoTokenLayout"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The predicted video tokens `[video ; keyframes]` -> video and keyframe latents."""
        patch = (self.config.patch_size_t, self.config.patch_size, self.config.patch_size)
        video = unpatchify(tokens[:, : layout.num_video_tokens], layout.grid, patch)
        if layout.keyframe_grid is None:
            return video, None
        return video, unpatchify(tokens[:, layout.num_video_tokens :], layout.keyframe_grid, patch)

    def _check_token_timestep(self, audio_timestep: torch.Tensor, audio_hidden_states: torch.Tensor | None) -> None:
        expected = (
            None if audio_hidden_states is None else (audio_hidden_states.shape[0], audio_hidden_states.shape[2])
        )
        if expected is None or tuple(audio_timestep.shape) != expected:
            raise ValueError(
                "A per-token `audio_timestep` must have shape (batch, audio latents) = "
                f"{expected} of `audio_hidden_states`, got {tuple(audio_timestep.shape)}."
            )
        if self.context_parallel_shards > 1:
            raise ValueError("A per-token `audio_timestep` `(B, L)` is not supported under context parallelism.")

    def _check_inputs(
        self,
        hidden_states,
        encoder_hidden_states,
        encoder_attention_mask,
        audio_hidden_states,
        keyframe_hidden_states,
        keyframe_positions,
        spatio_temporal_guidance_blocks,
        audio_spatio_temporal_guidance_blocks,
    ) -> None:
        """What a direct caller could get wrong without an error, or with one from deep inside a layer: the
        pipelines check everything else (types, channels, batch sizes) before they call the model."""
        config = self.config
        num_blocks = len(self.transformer_blocks) + len(self.single_transformer_blocks)
        for name, blocks in (
            ("spatio_temporal_guidance_blocks", spatio_temporal_guidance_blocks),
            ("audio_spatio_temporal_guidance_blocks", audio_spatio_temporal_guidance_blocks),
        ):
            if blocks is not None and not all(isinstance(i, int) and 0 <= i < num_blocks for i in blocks):
                raise ValueError(f"`{name}` must be block indices in [0, {num_blocks}), got {blocks!r}.")
        if hidden_states is None and audio_hidden_states is None:
            raise ValueError("Pass `hidden_states` (video), `audio_hidden_states` (audio) or both; got neither.")
        if encoder_attention_mask is not None and encoder_attention_mask.shape != encoder_hidden_states.shape[:2]:
            raise ValueError(  # a mask of another length would silently mask the wrong keys
                f"`encoder_attention_mask` must have shape {tuple(encoder_hidden_states.shape[:2])} (batch, text_len) "
                f"to match `encoder_hidden_states`, got {tuple(encoder_attention_mask.shape)}."
            )
        if (keyframe_hidden_states is None) != (keyframe_positions is None):
            raise ValueError(  # keyframes without their positions would silently sit at frames 0, 1, ...
                "`keyframe_hidden_states` and `keyframe_positions` must be given together."
            )
        if keyframe_hidden_states is not None and keyframe_positions.shape != keyframe_hidden_states.shape[2:3]:
            raise ValueError(
                f"`keyframe_positions` must have shape (num_keyframes,) = {tuple(keyframe_hidden_states.shape[2:3])}, "
                f"got {tuple(keyframe_positions.shape)}."
            )
        if hidden_states is None:
            return
        patch = (config.patch_size_t, config.patch_size, config.patch_size)
        if any(size % p for size, p in zip(hidden_states.shape[2:], patch)):
            raise ValueError(  # the patch embedding would silently drop the remainder
                f"`hidden_states` frames/height/width {tuple(hidden_states.shape[2:])} must be divisible by the patch "
                f"sizes (t, h, w) = {patch}."
            )
        if audio_hidden_states is not None:  # audio of another duration would silently misalign the RoPE timelines
            audio_latents_per_second = config.audio_sample_rate / config.audio_samples_per_latent
            num_pixel_frames = (hidden_states.shape[2] - 1) * config.vae_temporal_compression_ratio + 1
            expected = num_pixel_frames / config.fps * audio_latents_per_second
            tolerance = audio_latents_per_second * config.vae_temporal_compression_ratio / config.fps
            if abs(audio_hidden_states.shape[2] - expected) > tolerance:
                raise ValueError(
                    f"`audio_hidden_states` has {audio_hidden_states.shape[2]} latents, but {hidden_states.shape[2]} "
                    f"video latent frames ({num_pixel_frames} frames at {config.fps} fps) need about {expected:.1f} "
                    f"audio latents (within {tolerance:.1f}, one video latent frame)."
                )


@dataclass(frozen=True)
class VideoTokenLayout:
    """Where the video tokens `[references ; video ; keyframes]` sit: `num_reference_tokens` first, then the video's
    post-patch `grid` `(F, H, W)`, then the keyframes' `keyframe_grid` (or `None`)."""

    num_reference_tokens: int
    grid: tuple[int, int, int]
    keyframe_grid: tuple[int, int, int] | None

    @property
    def num_video_tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def predicted(self) -> slice:
        num_keyframe_tokens = 0 if self.keyframe_grid is None else math.prod(self.keyframe_grid)
        start = self.num_reference_tokens
        return slice(start, start + self.num_video_tokens + num_keyframe_tokens)


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    """Tokens `(B, F*H*W, C*pt*ph*pw)` on a post-patch `grid` (t-major) -> latents `(B, C, F*pt, H*ph, W*pw)`."""
    tokens = tokens.reshape(tokens.shape[0], *grid, -1, *patch).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return tokens.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def audio_rope_scale_from_config(config) -> float:
    """Video latent frames per audio latent: `(fps / temporal_ratio) / (sample_rate / samples_per_latent)`."""
    video_latents_per_second = config["fps"] / config["vae_temporal_compression_ratio"]
    audio_latents_per_second = config["audio_sample_rate"] / config["audio_samples_per_latent"]
    return video_latents_per_second / audio_latents_per_second


def audio_token_positions(num_tokens: int, num_references: int, scale: float, device: torch.device) -> torch.Tensor:
    """fp32 positions `(num_tokens, 1)` on the video latent timeline; the first `num_references` are negative."""
    return ((torch.arange(num_tokens, device=device, dtype=torch.float32) - num_references) * scale)[:, None]


register_block_outputs(
    SkyReelsV4TransformerBlock,
    SkyReelsV4SingleTransformerBlock,
    SkyReelsV4JointTransformerBlock,
    SkyReelsV4SingleJointTransformerBlock,
)
register_attention_skip_output(SkyReelsV4AttnProcessor)
