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
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import apply_lora_scale

from .transformer_skyreels_v4 import (
    SkyReelsV4BlocksMixin,
    SkyReelsV4CacheMixin,
    SkyReelsV4RotaryPosEmbed,
    SkyReelsV4Tower,
    SkyReelsV4TransformerOutput,
    _check_tensor,
    audio_rope_scale_from_config,
    renamed_config_value,
)


class SkyReelsV4AudioTransformer1DModel(
    SkyReelsV4BlocksMixin, ModelMixin, ConfigMixin, PeftAdapterMixin, SkyReelsV4CacheMixin, AttentionMixin
):
    r"""
    The audio tower of [`SkyReelsV4Transformer3DModel`] on its own: text-to-audio flow matching.

    It is built from the same `SkyReelsV4Tower` code and stores it under the same module name (`audio_tower`), so
    its state dict is the joint model's `audio_tower.*` unchanged; use
    [`SkyReelsV4Transformer3DModel.from_video_and_audio`] to assemble a joint model from it. Its audio RoPE uses the
    same video-latent timeline as the joint model (see `audio_rope_scale`), so a pretrained tower sees the same
    positions after the merge.

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
        num_refiner_layers: int | None = None,
    ) -> None:
        super().__init__()
        num_token_refiner_layers = renamed_config_value(
            self, "num_refiner_layers", num_refiner_layers, "num_token_refiner_layers", num_token_refiner_layers
        )
        self.audio_tower = SkyReelsV4Tower(
            in_channels,
            in_channels,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            num_token_refiner_layers=num_token_refiner_layers,
            mlp_ratio=mlp_ratio,
            text_embed_dim=text_embed_dim,
        )
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
    ) -> SkyReelsV4TransformerOutput | tuple:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(B, C_a, L)`): noisy audio latents.
            timestep (`torch.Tensor` of shape `(B,)` or scalar): Diffusers' `sigma * 1000`.
            encoder_hidden_states (`torch.Tensor` of shape `(B, S, text_embed_dim)`): MLLM hidden states.
            encoder_attention_mask (`torch.Tensor` of shape `(B, S)`, *optional*): True/1 for real tokens.
            reference_latents (`torch.Tensor` of shape `(B, C_a, Lr)`, *optional*): clean audio reference latents,
                prepended at negative positions and not predicted.

        Returns:
            [`SkyReelsV4TransformerOutput`] whose `audio_sample` has the shape of `hidden_states`; with
            `return_dict=False`, the tuple `(audio_sample,)`.
        """
        config = self.config
        _check_tensor("hidden_states", hidden_states, ndim=3, channels=config.in_channels, what="(B, C_a, L)")
        _check_tensor("encoder_hidden_states", encoder_hidden_states, ndim=3, what="(B, S, text_embed_dim)")
        if encoder_hidden_states.shape[-1] != config.text_embed_dim or encoder_hidden_states.shape[0] != len(
            hidden_states
        ):
            raise ValueError(
                f"`encoder_hidden_states` must have shape (B={len(hidden_states)}, S, {config.text_embed_dim}), got "
                f"{tuple(encoder_hidden_states.shape)}."
            )
        if encoder_attention_mask is not None and encoder_attention_mask.shape != encoder_hidden_states.shape[:2]:
            raise ValueError(
                f"`encoder_attention_mask` must have shape {tuple(encoder_hidden_states.shape[:2])}, got "
                f"{tuple(encoder_attention_mask.shape)}."
            )
        if reference_latents is not None:
            _check_tensor("reference_latents", reference_latents, 3, "(B, C_a, Lr)", channels=config.in_channels)

        batch_size, dtype, device = hidden_states.shape[0], hidden_states.dtype, hidden_states.device
        timestep = self._expand_timestep(timestep, batch_size, device)
        if encoder_attention_mask is not None:
            encoder_attention_mask = encoder_attention_mask.bool()

        tower = self.audio_tower
        state, num_refs = tower.embed_audio(
            hidden_states,
            reference_latents,
            timestep,
            encoder_hidden_states,
            encoder_attention_mask,
            self.time_rope,
            self.audio_rope_scale,
            dtype,
        )
        for index in range(len(tower.blocks)):
            tower.run_block(index, state, self._call_block)

        sample = tower.project_out(state.tokens[:, num_refs:], state.temb).transpose(1, 2)
        if not return_dict:
            return (sample,)
        return SkyReelsV4TransformerOutput(audio_sample=sample)
