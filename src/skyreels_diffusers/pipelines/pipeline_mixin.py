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
"""What the three classic SkyReels-V4 pipelines share besides the denoising loop (`denoising.py`) and the plain
step functions (`generation.py`, which the modular blocks call too): component registration, the latent streams of
the loop, its hooks, and the state properties Diffusers pipelines expose.

The pipelines are siblings: each inherits this mixin and `DiffusionPipeline`, none inherits another.
"""

import copy
from collections.abc import Callable
from typing import Any

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.guiders.guider_utils import BaseGuidance
from diffusers.video_processor import VideoProcessor

from . import generation
from .denoising import CleanTokens, LatentStream, LoopHooks, PassInputs, PreservedLatents
from .generation import (  # noqa: F401  (re-exported: the pipelines, the CLI and scripts import them from here)
    DEFAULT_SYSTEM_PROMPT,
    audio_spec_from_transformer,
    default_sigmas,
    noise_or_given,
    num_frames_for_duration,
    per_prompt_images,
)
from .guidance import GuidanceArguments, check_guidance_arguments, multimodal_guider, needs_unconditional
from .vae_utils import audio_vae_spec, video_vae_spec
from .validation import GenerationLimits, describe


# How each latent stream meets the transformers: (name in callbacks and results, input argument, output field,
# timestep argument). Keyframes share the video's timestep; the Refiner has only the video stream.
STREAM_INTERFACE = {
    "video": ("latents", "hidden_states", "sample", "timestep"),
    "audio": ("audio_latents", "audio_hidden_states", "audio_sample", "audio_timestep"),
    "keyframes": ("keyframe_latents", "keyframe_hidden_states", "keyframe_sample", None),
}


class SkyReelsV4PipelineMixin:
    """Shared methods of `SkyReelsV4Pipeline`, `SkyReelsV4InpaintPipeline` and `SkyReelsV4RefinerPipeline`."""

    def _register(self, components: dict[str, Any], **config) -> None:
        """Register the components and the pipeline config, then derive the latent geometry of the VAEs."""
        self.register_modules(**components)
        self.register_to_config(**config)
        self._init_media_specs()

    def _init_media_specs(self) -> None:
        """Latent geometry of the registered VAEs, the frame post-processor, and the default work limits (from the
        trained clip size, see `GenerationLimits`)."""
        self.limits = GenerationLimits.from_config(self.config)
        self.vae_spec = video_vae_spec(self.vae) if self.vae is not None else None
        self.audio_spec = audio_vae_spec(self.audio_vae) if getattr(self, "audio_vae", None) is not None else None
        spatial = self.vae_spec.spatial_compression if self.vae_spec else 16
        self.video_processor = VideoProcessor(vae_scale_factor=spatial)

    # ------------------------------------------------------------------ the shared steps, as Diffusers pipelines name them

    def encode_prompt(self, prompt, negative_prompt=None, **kwargs):
        """See `generation.encode_prompt`."""
        return generation.encode_prompt(self, prompt, negative_prompt, **kwargs)

    def check_inputs(self, *args) -> int:
        """See `generation.check_generation_inputs`."""
        return generation.check_generation_inputs(self, *args)

    def frame_limit(self, height, width, batch_size=1, generate_video=True, generate_audio=True) -> tuple[int, str]:
        """See `generation.frame_limit`."""
        return generation.frame_limit(self, height, width, batch_size, generate_video, generate_audio)

    def latent_shape(self, batch_size: int, height: int, width: int, num_frames: int) -> tuple[int, ...]:
        """See `generation.latent_shape`."""
        return generation.latent_shape(self, batch_size, height, width, num_frames)

    def prepare_timesteps(self, num_inference_steps: int, sigmas, device) -> torch.Tensor:
        """See `generation.prepare_timesteps`."""
        return generation.prepare_timesteps(self, num_inference_steps, sigmas, device)

    # ------------------------------------------------------------------ the loop's inputs

    @staticmethod
    def prompt_pass_inputs(prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_mask):
        """The transformer's prompt inputs of the conditional and (with guidance) unconditional pass, with the names
        step callbacks use for them."""
        conditional = {"encoder_hidden_states": prompt_embeds, "encoder_attention_mask": prompt_attention_mask}
        unconditional = None
        if negative_prompt_embeds is not None:
            unconditional = {"encoder_hidden_states": negative_prompt_embeds, "encoder_attention_mask": negative_mask}
        names = {
            "prompt_embeds": ("conditional", "encoder_hidden_states"),
            "negative_prompt_embeds": ("unconditional", "encoder_hidden_states"),
        }
        return PassInputs(conditional, unconditional, names)

    # ------------------------------------------------------------------ schedules, streams and the loop's hooks

    def latent_stream(
        self,
        kind: str,
        latents: torch.Tensor,
        timesteps: torch.Tensor | None,
        condition: torch.Tensor | None = None,
        guider: BaseGuidance | None = None,
        start: int = 0,
        preserved: PreservedLatents | None = None,
        clean: CleanTokens | None = None,
    ) -> LatentStream:
        """A `LatentStream` of `kind` ("video", "audio", "keyframes") stepping a private copy of the (already set)
        scheduler through `timesteps`, guided by `guider` (see `prepare_guiders`). `timesteps=None` makes it given:
        clean latents at timestep 0, never updated."""
        name, input_name, output_name, timestep_name = STREAM_INTERFACE[kind]
        given = timesteps is None
        return LatentStream(
            name,
            latents,
            input_name,
            output_name,
            timestep_name,
            scheduler=None if given else copy.deepcopy(self.scheduler),
            timesteps=timesteps,
            start=start,
            condition=condition,
            guider=None if given else guider,
            preserved=preserved,
            clean=clean,
        )

    def prepare_guiders(
        self, video: GuidanceArguments, audio: GuidanceArguments, generate_video: bool, generate_audio: bool
    ) -> dict[str, BaseGuidance]:
        """Checks each modality's guidance arguments (the audio's not given follow the video's) and builds the guider
        of each generated modality: the given Diffusers guider, or `LTX2Guidance` with the given scales (see
        `pipelines/guidance.py`). Keyed "video" and "audio"; also kept for `do_classifier_free_guidance`."""
        audio = audio.with_defaults_from(video)
        num_blocks = len(self.transformer.transformer_blocks) + len(self.transformer.single_transformer_blocks)
        check_guidance_arguments("", video, num_blocks, self.limits)
        check_guidance_arguments("audio_", audio, num_blocks, self.limits)
        self._guiders = {}
        if generate_video:
            self._guiders["video"] = multimodal_guider(video)
        if generate_audio:
            self._guiders["audio"] = multimodal_guider(audio)
        return self._guiders

    def batched_guidance(self, batched_guidance: bool | None) -> bool:
        """Whether guidance's passes run as one batched call: as asked, else when a cache is enabled on the
        transformer (Diffusers' cache hooks keep one state per layer, so they must see both passes together)."""
        if batched_guidance is None:
            return self.transformer.is_cache_enabled
        if not isinstance(batched_guidance, bool):
            raise TypeError(f"`batched_guidance` must be True, False or None, got {describe(batched_guidance)}.")
        return batched_guidance

    def loop_hooks(
        self,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None,
        callback_on_step_end_tensor_inputs: list[str],
    ) -> LoopHooks:
        callback = None
        if callback_on_step_end is not None:

            def callback(step, timestep, tensors):
                return callback_on_step_end(self, step, timestep, tensors)

        return LoopHooks(
            progress_bar=self.progress_bar,
            interrupted=lambda: self.interrupt,
            on_timestep=self._set_current_timestep,
            guidance_scales=self._stream_guidance_scales,
            callback=callback,
            callback_tensor_inputs=list(callback_on_step_end_tensor_inputs),
        )

    def _stream_guidance_scales(self) -> dict[str, float]:
        """The current guidance scale of each stream, read before every step: a step callback may change them, as
        in Diffusers pipelines (for example, guidance switched off after some steps)."""
        return {
            "latents": self._guidance_scale,
            "keyframe_latents": self._guidance_scale,
            "audio_latents": self._audio_guidance_scale,
        }

    def _set_current_timestep(self, timestep: torch.Tensor | None) -> None:
        self._current_timestep = timestep

    # ------------------------------------------------------------------ state of the current call

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def audio_guidance_scale(self) -> float:
        return self._audio_guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether a guider of a generated modality asks for the unconditional pass (the negative prompt)."""
        return any(needs_unconditional(guider) for guider in self._guiders.values())

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def current_timestep(self) -> torch.Tensor | None:
        return getattr(self, "_current_timestep", None)

    @property
    def attention_kwargs(self) -> dict[str, Any] | None:
        return self._attention_kwargs

    @property
    def interrupt(self) -> bool:
        return self._interrupt
