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
"""The standalone audio DiT of SkyReels-V4, used for text-to-audio pre-training (curriculum stage 6)."""

from typing import Any

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormContinuous
from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15TimeEmbedding
from diffusers.utils import apply_lora_scale

from .transformer_skyreels_v4 import (
    SkyReelsV4RotaryPosEmbed,
    SkyReelsV4SingleTransformerBlock,
    SkyReelsV4TransformerBlock,
    audio_rope_scale_from_config,
    audio_token_positions,
    call_block,
    embed_timestep_and_prompt,
    expand_timestep,
    token_refiner,
)


class SkyReelsV4AudioTransformer1DModel(ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin, AttentionMixin):
    r"""
    The audio tower of [`SkyReelsV4Transformer3DModel`] on its own: text-to-audio flow matching.

    Its layers are flat lists of the joint model's own block classes (`transformer_blocks`, then
    `single_transformer_blocks`), and its parameter names are the joint model's audio names without their tower
    (`tower_key_to_joint(key, "audio")` maps them); use [`SkyReelsV4Transformer3DModel.from_video_and_audio`] to
    assemble a joint model from it. Its audio RoPE uses the same video-latent timeline as the joint model (see
    `audio_rope_scale`), so a pretrained tower sees the same positions after the merge.

    Args:
        in_channels (`int`, defaults to 40): audio latent channels (input and output).
        num_attention_heads, attention_head_dim, num_layers, num_single_layers, num_token_refiner_layers, mlp_ratio,
        text_embed_dim, rope_theta: as in [`SkyReelsV4Transformer3DModel`].
        fps, vae_temporal_compression_ratio, audio_sample_rate, audio_samples_per_latent: the timelines that give
            `audio_rope_scale = (fps / vae_temporal_compression_ratio) / (audio_sample_rate /
            audio_samples_per_latent)`.
    """

    _supports_gradient_checkpointing = True
    _keep_in_fp32_modules = ["time_embed"]
    _no_split_modules = [
        "SkyReelsV4TransformerBlock",
        "SkyReelsV4SingleTransformerBlock",
        "HunyuanVideo15TokenRefiner",
    ]
    _repeated_blocks = ["SkyReelsV4TransformerBlock", "SkyReelsV4SingleTransformerBlock"]
    _skip_layerwise_casting_patterns = ["x_embedder", "context_embedder"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 40,
        num_attention_heads: int = 16,
        attention_head_dim: int = 128,
        num_layers: int = 20,
        num_single_layers: int = 40,
        num_token_refiner_layers: int = 2,
        mlp_ratio: float = 4.0,
        text_embed_dim: int = 3584,
        rope_theta: float = 256.0,
        fps: float = 16.0,
        vae_temporal_compression_ratio: int = 4,
        audio_sample_rate: int = 44100,
        audio_samples_per_latent: int = 1024,
    ) -> None:
        super().__init__()
        dim = num_attention_heads * attention_head_dim
        self.x_embedder = nn.Linear(in_channels, dim)
        self.time_embed = HunyuanVideo15TimeEmbedding(dim)
        self.context_embedder = token_refiner(
            text_embed_dim, num_attention_heads, attention_head_dim, num_token_refiner_layers
        )
        self.text_type_embedding = nn.Parameter(torch.zeros(dim))
        block_args = (num_attention_heads, attention_head_dim, mlp_ratio)
        self.transformer_blocks = nn.ModuleList([SkyReelsV4TransformerBlock(*block_args) for _ in range(num_layers)])
        self.single_transformer_blocks = nn.ModuleList(
            [SkyReelsV4SingleTransformerBlock(*block_args) for _ in range(num_single_layers)]
        )
        self.norm_out = AdaLayerNormContinuous(dim, dim, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(dim, in_channels)
        self.time_rope = SkyReelsV4RotaryPosEmbed((attention_head_dim,), rope_theta)
        self.gradient_checkpointing = False

    @property
    def audio_rope_scale(self) -> float:
        return audio_rope_scale_from_config(self.config)

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        reference_latents: torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(B, C_a, L)`): noisy audio latents.
            timestep (`torch.Tensor` of shape `(B,)` or scalar): Diffusers' `sigma * 1000`.
            encoder_hidden_states (`torch.Tensor` of shape `(B, S, text_embed_dim)`): MLLM hidden states.
            encoder_attention_mask (`torch.Tensor` of shape `(B, S)`, *optional*): True/1 for real tokens.
            reference_latents (`torch.Tensor` of shape `(B, C_a, Lr)`, *optional*): clean audio reference latents,
                prepended at negative positions and not predicted.

        Returns:
            `Transformer2DModelOutput` whose `sample` (the velocity) has the shape of `hidden_states`; with
            `return_dict=False`, the tuple `(sample,)`.
        """
        if encoder_attention_mask is not None and encoder_attention_mask.shape != encoder_hidden_states.shape[:2]:
            raise ValueError(  # a mask of another length would silently mask the wrong keys
                f"`encoder_attention_mask` must have shape {tuple(encoder_hidden_states.shape[:2])} (batch, text_len) "
                f"to match `encoder_hidden_states`, got {tuple(encoder_attention_mask.shape)}."
            )
        batch_size, dtype, device = hidden_states.shape[0], hidden_states.dtype, hidden_states.device
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
        latents, num_references = hidden_states, 0
        if reference_latents is not None:
            num_references = reference_latents.shape[2]
            latents = torch.cat([reference_latents.to(dtype), latents], dim=2)
        positions = audio_token_positions(latents.shape[2], num_references, self.audio_rope_scale, device)
        rotary_emb = self.time_rope(positions)

        tokens, context = self.x_embedder(latents.transpose(1, 2)), text
        for block in self.transformer_blocks:
            tokens, text = call_block(
                self, block, tokens, text, temb, encoder_attention_mask, rotary_emb, attention_kwargs=attention_kwargs
            )
        for block in self.single_transformer_blocks:
            tokens, text = call_block(
                self,
                block,
                tokens,
                text,
                temb,
                encoder_attention_mask,
                rotary_emb,
                text_context=context,
                text_context_mask=encoder_attention_mask,
                attention_kwargs=attention_kwargs,
            )

        sample = self.proj_out(self.norm_out(tokens, temb)[:, num_references:]).transpose(1, 2)
        if not return_dict:
            return (sample,)
        return Transformer2DModelOutput(sample=sample)
