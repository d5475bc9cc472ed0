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
"""The SkyReels-V4 Refiner: super-resolution and 2x frame interpolation with Video Sparse Attention."""

import inspect
import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ContextParallelConfig
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin
from diffusers.models.attention_dispatch import SeqAllToAllDim
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormContinuous
from diffusers.models.transformers.transformer_hunyuan_video15 import (
    HunyuanVideo15PatchEmbed,
    HunyuanVideo15TimeEmbedding,
)
from diffusers.utils import apply_lora_scale
from diffusers.utils.torch_utils import maybe_allow_in_graph

from .attention_video_sparse import VSA_BACKENDS, video_sparse_attention
from .diffusers_extension_points import ContextParallelOutput, register_block_outputs
from .transformer_skyreels_v4 import (
    SkyReelsV4Attention,
    SkyReelsV4ContextParallelMixin,
    SkyReelsV4RotaryPosEmbed,
    SkyReelsV4SequencePadding,
    SkyReelsV4SingleTransformerBlock,
    SkyReelsV4TransformerBlock,
    audio_rope_scale_from_config,
    audio_token_positions,
    call_block,
    embed_timestep_and_prompt,
    expand_timestep,
    gather_from_ranks,
    project_added_qkv,
    project_qkv,
    sequence_split_plan,
    token_refiner,
    unpatchify,
    video_token_positions,
)


class SkyReelsV4VSAAttnProcessor:
    """Self-attention of the Refiner's video tokens through Video Sparse Attention; text tokens stay dense.

    Handles both block layouts of the tower: joint attention with separate text projections (dual-stream) and one
    shared projection over `[video ; text]` (single-stream, the text being the tokens after `video_grid`'s count).
    The output is `fine + coarse * gate`, with `gate = attn.vsa_gate(x)` per head, zero-initialised, so a Refiner
    fresh from a dense video tower starts from the fine branch alone (dense attention at sparsity 0).

    Context parallelism: VSA tiles the whole `(T, H, W)` grid into cubes, so it cannot run on a shard of the
    sequence. Ulysses' all-to-all provides exactly what it needs: each rank receives the whole (unpadded) video
    sequence for `heads / N` of the heads and runs VSA on them, and a second all-to-all returns its tokens with all
    heads. The prompt is whole on every rank: each takes its heads' slice of the text queries/keys/values, and the
    text output heads are all-gathered.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: SkyReelsV4Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        encoder_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        video_grid: tuple[int, int, int] | None = None,
        sparsity: float = 0.0,
        vsa_backend: str = "auto",
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        is_joint = encoder_hidden_states is not None
        num_video = video_grid[0] * video_grid[1] * video_grid[2]
        cp_config = None if self._parallel_config is None else self._parallel_config.context_parallel_config
        if cp_config is not None:  # this rank's shard of the video tokens, padded to equal shards
            num_video = math.ceil(num_video / cp_config.ulysses_degree)

        query, key, value = project_qkv(attn, hidden_states)
        gate = attn.vsa_gate(hidden_states[:, :num_video]).unflatten(2, (attn.heads, -1))
        if is_joint:
            text_query, text_key, text_value = project_added_qkv(attn, encoder_hidden_states)
        else:  # single-stream: the text tokens follow the video tokens in one sequence
            query, text_query = query[:, :num_video], query[:, num_video:]
            key, text_key = key[:, :num_video], key[:, num_video:]
            value, text_value = value[:, :num_video], value[:, num_video:]
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        vsa_kwargs = {"gate": gate, "sparsity": sparsity, "backend": vsa_backend, "text_mask": attention_mask}
        if cp_config is None:
            video_out, text_out = video_sparse_attention(
                query,
                key,
                value,
                video_grid,
                text_query=text_query,
                text_key=text_key,
                text_value=text_value,
                **vsa_kwargs,
            )
        else:
            video_out, text_out = _ulysses_video_sparse_attention(
                query, key, value, video_grid, text_query, text_key, text_value, vsa_kwargs, cp_config
            )
        video_out = video_out.flatten(2, 3).to(hidden_states.dtype)
        text_out = text_out.flatten(2, 3).to(hidden_states.dtype)
        if is_joint:
            return attn.to_out[0](video_out), attn.to_add_out(text_out)
        return torch.cat([video_out, text_out], dim=1)  # pre-only: the block projects attention and MLP together


def _ulysses_video_sparse_attention(
    query, key, value, video_grid, text_query, text_key, text_value, vsa_kwargs, cp_config: ContextParallelConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """`video_sparse_attention` on this rank's `(B, N_local, heads, D)` shard of the (padded) video sequence: the
    whole sequence with `heads / N` heads after Ulysses' all-to-all, then back. Text tensors are whole per rank."""
    group, degree = dist.group.WORLD, cp_config.ulysses_degree  # the model's context-parallel group is the world
    num_video = video_grid[0] * video_grid[1] * video_grid[2]
    num_padded = query.shape[1] * degree

    def to_head_shard(x):  # (B, N_local, heads, D) -> (B, N, heads / degree, D), padding dropped
        return SeqAllToAllDim.apply(group, x, 2, 1)[:, :num_video]

    heads_per_rank = query.shape[2] // degree
    first_head = dist.get_rank() * heads_per_rank
    local_heads = slice(first_head, first_head + heads_per_rank)  # the heads the all-to-all gives this rank
    query, key, value = (to_head_shard(x) for x in (query, key, value))
    vsa_kwargs = {**vsa_kwargs, "gate": to_head_shard(vsa_kwargs["gate"])}
    video_out, text_out = video_sparse_attention(
        query,
        key,
        value,
        video_grid,
        text_query=text_query[:, :, local_heads],
        text_key=text_key[:, :, local_heads],
        text_value=text_value[:, :, local_heads],
        **vsa_kwargs,
    )
    video_out = F.pad(video_out, (0, 0, 0, 0, 0, num_padded - num_video))
    video_out = SeqAllToAllDim.apply(group, video_out, 1, 2)
    text_out = gather_from_ranks(text_out, dim=2)
    return video_out, text_out


@maybe_allow_in_graph
class SkyReelsV4AudioConditionBlock(nn.Module):
    """Video tokens attend to the clean audio latents of the base pass: `v' = v + CrossAttn(q=v, kv=audio)`, with
    1D RoPE on the base video timeline on both sides so interpolated frames find their sound. Zero-initialised.
    The audio is short and not split by context parallelism: each rank's video tokens attend to it locally."""

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SkyReelsV4Attention(
            dim,
            num_attention_heads,
            attention_head_dim,
            cross_attention_dim=dim,
            zero_init_output=True,
            replicated_context=True,
        )

    def forward(self, hidden_states, audio_tokens, video_time_rotary_emb, audio_time_rotary_emb) -> torch.Tensor:
        return hidden_states + self.attn(
            self.norm(hidden_states),
            audio_tokens,
            image_rotary_emb=video_time_rotary_emb,
            encoder_rotary_emb=audio_time_rotary_emb,
        )


@maybe_allow_in_graph
class SkyReelsV4RefinerTransformerBlock(nn.Module):
    """One layer of the Refiner: the video tower's block (`video`, same class and parameter names as the joint
    model's `transformer_blocks.{i}.video`, its attention through Video Sparse Attention), then the cross-attention to
    the base pass's audio (`audio_condition`, when the Refiner has one)."""

    def __init__(
        self,
        num_attention_heads: int,
        attention_head_dim: int,
        mlp_ratio: float,
        audio_attention_heads: int | None,
        single_stream: bool = False,
    ) -> None:
        super().__init__()
        block_class = SkyReelsV4SingleTransformerBlock if single_stream else SkyReelsV4TransformerBlock
        self.single_stream = single_stream
        self.video = block_class(num_attention_heads, attention_head_dim, mlp_ratio, sparse_attention=True)
        self.video.attn.set_processor(SkyReelsV4VSAAttnProcessor())
        self.audio_condition = None
        if audio_attention_heads:
            dim = num_attention_heads * attention_head_dim
            self.audio_condition = SkyReelsV4AudioConditionBlock(dim, audio_attention_heads, attention_head_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        encoder_attention_mask: torch.Tensor | None = None,
        text_context: torch.Tensor | None = None,
        audio_hidden_states: torch.Tensor | None = None,
        temporal_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        audio_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`hidden_states` `(B, N, dim)` video tokens, `encoder_hidden_states` `(B, S, dim)` prompt tokens; the
        single-stream text cross-attention reads `text_context` (the refined prompt) under `encoder_attention_mask`;
        `audio_hidden_states` `(B, L, dim)` are the embedded base audio, `temporal_rotary_emb` / `audio_rotary_emb`
        the two sides' places on the base video timeline."""
        extra = {}
        if self.single_stream:
            extra = {"text_context": text_context, "text_context_mask": encoder_attention_mask}
        hidden_states, encoder_hidden_states = self.video(
            hidden_states,
            encoder_hidden_states,
            temb,
            encoder_attention_mask,
            rotary_emb,
            attention_kwargs=attention_kwargs,
            **extra,
        )
        if audio_hidden_states is not None:
            hidden_states = self.audio_condition(
                hidden_states, audio_hidden_states, temporal_rotary_emb, audio_rotary_emb
            )
        return hidden_states, encoder_hidden_states


register_block_outputs(SkyReelsV4RefinerTransformerBlock)


class SkyReelsV4RefinerTransformer3DModel(
    SkyReelsV4ContextParallelMixin, ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin, AttentionMixin
):
    r"""
    The Refiner of SkyReels-V4: a DiT with the video tower's design (so it initialises from it, see
    `from_video_transformer`) that denoises the high-resolution (and, with `temporal_upscale_factor=2`,
    double-frame-rate) video given `[noisy latent ; condition latent ; mask]` on `2C+1` channels, where the
    condition holds the linearly upsampled low-res latents with the high-res keyframes at their frames.

    Its layers are flat lists of `SkyReelsV4RefinerTransformerBlock`s (dual-stream, then single-stream). Video
    self-attention runs through Video Sparse Attention (coarse + fine, (4,4,4) cubes, text dense); `sparsity` is a
    forward argument. Optional cross-attention to the base pass's clean audio latents keeps the sound in sync when
    frames are interpolated.

    RoPE: self-attention uses the integer grid of the output latents (as the video tower was trained); the audio
    cross-attention places output latent frame `j` at `j / temporal_upscale_factor` on the base video timeline, where
    the audio sits at `audio_rope_scale` per latent as in the joint model.

    Args:
        in_channels, out_channels, num_attention_heads, attention_head_dim, num_layers, num_single_layers,
        num_token_refiner_layers, mlp_ratio, patch_size, patch_size_t, text_embed_dim, rope_theta, rope_axes_dim,
        fps, vae_temporal_compression_ratio, audio_sample_rate, audio_samples_per_latent,
        cross_modal_attention_heads: as in [`SkyReelsV4Transformer3DModel`] (the last one sizes the attention to
        the base audio).
        audio_in_channels (`int`, *optional*, defaults to 40): channels of the base audio latents; `None` builds no
            audio cross-attention.
        temporal_upscale_factor (`int`, defaults to 2): 1 for super-resolution only, 2 to also double the frame rate.
        default_sparsity (`float`, defaults to 0.875): VSA sparsity when `forward` is not given one.
    """

    _supports_gradient_checkpointing = True
    _keep_in_fp32_modules = ["time_embed"]
    _no_split_modules = ["SkyReelsV4RefinerTransformerBlock", "HunyuanVideo15TokenRefiner", "HunyuanVideo15PatchEmbed"]
    _repeated_blocks = ["SkyReelsV4RefinerTransformerBlock"]
    _skip_layerwise_casting_patterns = ["x_embedder", "context_embedder", "audio_embedder"]
    # Context parallelism (Ulysses): the video tokens are padded to a multiple of N and split with their RoPE tables
    # (see `SkyReelsV4SequencePadding`); VSA runs per head group on the whole sequence (see
    # `SkyReelsV4VSAAttnProcessor`), so the heads must divide among the ranks; the prompt and the audio condition stay
    # whole on every rank; `norm_out` gathers the sequence back.
    _cp_plan = {
        "sequence_padding": sequence_split_plan(num_per_token=4),  # 3D RoPE and temporal RoPE, cos and sin
        "norm_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }

    @register_to_config
    def __init__(
        self,
        in_channels: int = 65,
        out_channels: int = 32,
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
        audio_in_channels: int | None = 40,
        temporal_upscale_factor: int = 2,
        default_sparsity: float = 0.875,
        fps: float = 16.0,
        vae_temporal_compression_ratio: int = 4,
        audio_sample_rate: int = 44100,
        audio_samples_per_latent: int = 1024,
        cross_modal_attention_heads: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels != 2 * out_channels + 1:
            raise ValueError(
                f"`in_channels` must be 2 * out_channels + 1 = {2 * out_channels + 1} (noisy latent, condition, "
                f"mask), got in_channels={in_channels} with out_channels={out_channels}."
            )
        if temporal_upscale_factor not in (1, 2):
            raise ValueError(f"`temporal_upscale_factor` must be 1 or 2, got {temporal_upscale_factor!r}.")
        dim = num_attention_heads * attention_head_dim
        self.x_embedder = HunyuanVideo15PatchEmbed((patch_size_t, patch_size, patch_size), in_channels, dim)
        self.time_embed = HunyuanVideo15TimeEmbedding(dim)
        self.context_embedder = token_refiner(
            text_embed_dim, num_attention_heads, attention_head_dim, num_token_refiner_layers
        )
        self.text_type_embedding = nn.Parameter(torch.zeros(dim))
        self.audio_embedder = nn.Linear(audio_in_channels, dim) if audio_in_channels else None

        audio_heads = (cross_modal_attention_heads or max(1, num_attention_heads // 4)) if audio_in_channels else None
        block_args = (num_attention_heads, attention_head_dim, mlp_ratio, audio_heads)
        self.transformer_blocks = nn.ModuleList(
            [SkyReelsV4RefinerTransformerBlock(*block_args) for _ in range(num_layers)]
        )
        self.single_transformer_blocks = nn.ModuleList(
            [SkyReelsV4RefinerTransformerBlock(*block_args, single_stream=True) for _ in range(num_single_layers)]
        )
        self.norm_out = AdaLayerNormContinuous(dim, dim, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(dim, patch_size_t * patch_size**2 * out_channels)

        self.rope = SkyReelsV4RotaryPosEmbed(rope_axes_dim, rope_theta)
        self.time_rope = SkyReelsV4RotaryPosEmbed((attention_head_dim,), rope_theta)
        self.sequence_padding = SkyReelsV4SequencePadding()
        self.gradient_checkpointing = False

    def check_context_parallel_config(self, cp_config: ContextParallelConfig) -> None:
        super().check_context_parallel_config(cp_config)
        heads = self.config.num_attention_heads
        if heads % cp_config.ulysses_degree:
            raise ValueError(
                f"`config.ulysses_degree` ({cp_config.ulysses_degree}) must divide the Refiner's num_attention_heads "
                f"({heads}): Video Sparse Attention needs the whole sequence, which Ulysses provides per head group."
            )

    @classmethod
    def from_video_transformer(cls, video_model, **config_overrides) -> "SkyReelsV4RefinerTransformer3DModel":
        """A Refiner initialised from the video tower of a [`SkyReelsV4Transformer3DModel`]: same blocks, same
        weights; the VSA gates and the audio cross-attention are new and start at zero, so at sparsity 0 the
        Refiner computes exactly what the video tower computes on the same input."""
        # Every config entry the two models share (the tower's shape, the timelines), then the overrides.
        own = inspect.signature(cls.__init__).parameters
        config = {key: value for key, value in video_model.config.items() if key in own and not key.startswith("_")}
        config.update(config_overrides)
        refiner = cls(**config)
        if (video_model.device, video_model.dtype) != (refiner.device, refiner.dtype):
            refiner = refiner.to(device=video_model.device, dtype=video_model.dtype)
        video_state = {
            key.replace("proj_out.video.", "proj_out."): value
            for key, value in video_model.state_dict().items()
            if not key.startswith(("audio_", "proj_out.audio."))
            and ".audio." not in key
            and ".cross_modal." not in key
        }
        missing, unexpected = refiner.load_state_dict(video_state, strict=False)
        if unexpected or any("vsa_gate" not in key and "audio" not in key for key in missing):
            raise ValueError(f"Video tower mismatch: missing {missing}, unexpected {unexpected}.")
        return refiner

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        audio_latents: torch.Tensor | None = None,
        sparsity: float | None = None,
        vsa_backend: str = "auto",
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(B, 2C+1, F, H, W)`): high-res noisy latent, condition, mask.
            timestep (`torch.Tensor` of shape `(B,)` or scalar): Diffusers' `sigma * 1000`.
            encoder_hidden_states (`torch.Tensor` of shape `(B, S, text_embed_dim)`), encoder_attention_mask
                (`(B, S)`): the MLLM prompt.
            audio_latents (`torch.Tensor` of shape `(B, C_a, L)`, *optional*): clean audio latents of the base pass.
            sparsity (`float`, *optional*): VSA sparsity in [0, 1); defaults to `config.default_sparsity`.
            vsa_backend (`str`): one of `VSA_BACKENDS` ("auto" picks the gather path on CPU, flex on CUDA).

        Returns:
            `Transformer2DModelOutput` whose `sample` `(B, C, F, H, W)` is the velocity prediction.
        """
        config = self.config
        sparsity = config.default_sparsity if sparsity is None else sparsity
        if not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
            raise ValueError(f"`sparsity` must be a number in [0, 1), got {sparsity!r}.")
        if vsa_backend not in VSA_BACKENDS:
            raise ValueError(f"`vsa_backend` must be one of {VSA_BACKENDS}, got {vsa_backend!r}.")
        if audio_latents is not None and self.audio_embedder is None:
            raise ValueError("`audio_latents` given, but this Refiner was built with audio_in_channels=None.")

        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p = config.patch_size_t, config.patch_size
        grid = (num_frames // p_t, height // p, width // p)
        device, dtype = hidden_states.device, hidden_states.dtype
        if encoder_attention_mask is not None:
            encoder_attention_mask = encoder_attention_mask.bool()
        temb, text = embed_timestep_and_prompt(
            self.time_embed,
            self.context_embedder,
            self.text_type_embedding,
            expand_timestep(timestep, batch_size, device),
            encoder_hidden_states,
            encoder_attention_mask,
            dtype,
        )
        positions = video_token_positions(*grid, device)
        tokens, rotary_emb = self.x_embedder(hidden_states), self.rope(positions)

        audio_tokens = temporal_rope = audio_rope = None
        if audio_latents is not None:
            audio_tokens = self.audio_embedder(audio_latents.transpose(1, 2).to(dtype))
            audio_positions = audio_token_positions(
                audio_latents.shape[2], 0, audio_rope_scale_from_config(config), device
            )
            audio_rope = self.time_rope(audio_positions)
        num_shards = self.context_parallel_shards
        if audio_latents is not None or num_shards > 1:  # the split below takes the table either way
            temporal_rope = self.time_rope(positions[:, :1] / config.temporal_upscale_factor)

        if num_shards > 1:  # pad and (through `_cp_plan`) split the video tokens; the masks are not needed here
            text_mask = encoder_attention_mask
            if text_mask is None:
                text_mask = torch.ones(encoder_hidden_states.shape[:2], dtype=torch.bool, device=device)
            tokens, _, _, *tables = self.sequence_padding(tokens, text_mask, num_shards, *rotary_emb, *temporal_rope)
            rotary_emb, temporal_rope = tuple(tables[:2]), tuple(tables[2:])

        attention_kwargs = {
            **(attention_kwargs or {}),
            "video_grid": grid,
            "sparsity": float(sparsity),
            "vsa_backend": vsa_backend,
        }
        context = text
        for block in (*self.transformer_blocks, *self.single_transformer_blocks):
            tokens, text = call_block(
                self,
                block,
                tokens,
                text,
                temb,
                rotary_emb,
                encoder_attention_mask=encoder_attention_mask,
                text_context=context,
                audio_hidden_states=audio_tokens,
                temporal_rotary_emb=temporal_rope,
                audio_rotary_emb=audio_rope,
                attention_kwargs=attention_kwargs,
            )

        num_tokens = grid[0] * grid[1] * grid[2]
        sample = unpatchify(self.proj_out(self.norm_out(tokens, temb)[:, :num_tokens]), grid, (p_t, p, p))
        if not return_dict:
            return (sample,)
        return Transformer2DModelOutput(sample=sample)
