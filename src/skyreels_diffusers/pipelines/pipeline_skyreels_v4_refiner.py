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
"""SkyReelsV4RefinerPipeline: super-resolution and 2x frame interpolation of a base clip (or any video)."""

from collections.abc import Callable
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLHunyuanVideo15,
    AutoencoderKLWan,
    AutoencoderOobleck,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    MMAudioVAE,
    MMAudioVocoder,
)
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import replace_example_docstring
from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

from ..loaders import SkyReelsV4LoraLoaderMixin
from ..models.transformer_skyreels_v4_refiner import SkyReelsV4RefinerTransformer3DModel
from . import refining
from .denoising import denoise, num_loop_iterations
from .guidance import GuidanceArguments, multimodal_guider
from .loading import SkyReelsV4PipelineLoadingMixin
from .pipeline_mixin import DEFAULT_SYSTEM_PROMPT, SkyReelsV4PipelineMixin
from .pipeline_output import SkyReelsV4PipelineOutput


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from skyreels_diffusers import SkyReelsV4Pipeline, SkyReelsV4RefinerPipeline
        >>> from skyreels_diffusers import SkyReelsV4RefinerTransformer3DModel

        >>> pipe = SkyReelsV4Pipeline.from_pretrained("pipelines/skyreels-v4-tiny")
        >>> refiner = SkyReelsV4RefinerPipeline.from_pipe(
        ...     pipe,
        ...     transformer=SkyReelsV4RefinerTransformer3DModel.from_pretrained(
        ...         "pipelines/skyreels-v4-tiny", subfolder="refiner"
        ...     ),
        ... )
        >>> prompt = "<text>A red circle bounces around a dark box.</text><sfx>A pure low knock on each bounce.</sfx>"
        >>> base = pipe(prompt, num_keyframes=3, output_type="latent")
        >>> hd = refiner(
        ...     prompt, low_res_latents=base.frames, keyframes=base.keyframes,
        ...     keyframe_indices=base.keyframe_indices, audio_latents=base.audio, guidance_scale=1.0,
        ... )
        ```
"""


class SkyReelsV4RefinerPipeline(
    SkyReelsV4PipelineMixin,
    SkyReelsV4PipelineLoadingMixin,
    DiffusionPipeline,
    SkyReelsV4LoraLoaderMixin,
):
    r"""
    The second stage of SkyReels-V4: from a low-resolution clip (latents of the base pass, or any video) plus a few
    high-resolution keyframes, generate the clip at `scale_factor` times the size and, with a Refiner whose
    `temporal_upscale_factor` is 2, at twice the frame rate. The base audio passes through unchanged; its clean
    latents condition the Refiner so interpolated frames stay in sync.

    Chain (see `examples/generate_refined.py`):

    ```py
    base = pipe(prompt, num_keyframes=3, output_type="latent")
    out = refiner(prompt, low_res_latents=base.frames, keyframes=base.keyframes,
                  keyframe_indices=base.keyframe_indices, audio_latents=base.audio)
    ```

    Components are those of [`SkyReelsV4Pipeline`] with a [`SkyReelsV4RefinerTransformer3DModel`] as `transformer`.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae->audio_vae->vocoder"
    _optional_components = ["audio_vae", "vocoder"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        text_encoder: PreTrainedModel,
        processor: ProcessorMixin | PreTrainedTokenizerBase,
        transformer: SkyReelsV4RefinerTransformer3DModel,
        vae: AutoencoderKLHunyuanVideo15 | AutoencoderKLWan | AutoencoderKL,
        scheduler: FlowMatchEulerDiscreteScheduler,
        audio_vae: MMAudioVAE | AutoencoderOobleck | None = None,
        vocoder: MMAudioVocoder | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        text_hidden_layer: int = -3,
        default_height: int = 480,
        default_width: int = 848,
        default_num_frames: int = 81,
    ) -> None:
        # The defaults size a base pass; the Refiner takes its size from its input and keeps them for from_pipe.
        super().__init__()
        components = dict(
            text_encoder=text_encoder,
            processor=processor,
            transformer=transformer,
            vae=vae,
            scheduler=scheduler,
            audio_vae=audio_vae,
            vocoder=vocoder,
        )
        self._register(
            components,
            system_prompt=system_prompt,
            text_hidden_layer=text_hidden_layer,
            default_height=default_height,
            default_width=default_width,
            default_num_frames=default_num_frames,
        )

    def check_inputs(self, *args) -> int:
        """See `refining.check_refiner_inputs`."""
        return refining.check_refiner_inputs(self, *args)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        low_res_latents: torch.Tensor | None = None,
        video: Any = None,
        keyframes: Any = None,
        keyframe_indices: list[int] | None = None,
        audio: Any = None,
        audio_latents: torch.Tensor | None = None,
        scale_factor: int = 2,
        num_inference_steps: int = 30,
        sigmas: list[float] | None = None,
        strength: float = 1.0,
        guidance_scale: float = 5.0,
        sparsity: float | None = None,
        vsa_backend: str = "auto",
        generator: torch.Generator | list[torch.Generator] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int = 512,
        batched_guidance: bool | None = None,
    ) -> SkyReelsV4PipelineOutput | tuple:
        r"""
        Args:
            low_res_latents (`torch.Tensor` of shape `(B, C, F, h, w)`): low-res latents of the base pass
                (`output_type="latent"`). Either this or `video`.
            video: a low-res clip to refine instead (list of PIL images, NumPy `(F, H, W, 3)`, torch
                `(F, 3, H, W)`), `4k+1` frames whose size is a multiple of the VAE's spatial compression.
            keyframes: high-res keyframes at the target size: latents `(B, C, K, h*s, w*s)` (the base pass's
                `keyframes` with `output_type="latent"`) or a list of K images.
            keyframe_indices (`list[int]`): the low-res frame each keyframe shows.
            audio: the base waveform `(B, channels, samples)`; returned unchanged.
            audio_latents (`torch.Tensor` of shape `(B, C_a, L)`): clean base audio latents conditioning the Refiner;
                encoded from `audio` when only that is given; decoded for the output when `audio` is not given.
            scale_factor (`int`, defaults to 2): spatial upscaling factor, a whole number.
            strength (`float`, defaults to 1.0): how much of the noise schedule to run, in (0, 1], as in Diffusers'
                image-to-image pipelines. 1.0 starts from pure noise. Below 1, denoising starts from the upsampled
                low-res latents (with the keyframes), noised to the level where the last
                `int(num_inference_steps * strength)` steps begin, and only those steps run: the Refiner then adds
                detail instead of redrawing the clip.
            sparsity (`float`, *optional*): VSA sparsity in [0, 1); defaults to the Refiner's config.
            vsa_backend (`str`, defaults to "auto"): VSA implementation.
            Other arguments are as in [`SkyReelsV4Pipeline.__call__`].

        Examples:

        Returns:
            [`SkyReelsV4PipelineOutput`] with frames at `scale_factor` times the size and `(F-1) *
            temporal_upscale_factor + 1` frames at `fps * temporal_upscale_factor`, and the base audio.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if callback_on_step_end_tensor_inputs is None:
            callback_on_step_end_tensor_inputs = ["latents"]
        batched_guidance = self.batched_guidance(batched_guidance)
        device = self._execution_device
        dtype = self.transformer.dtype

        # 1. Check inputs before any work, then bring the low-res clip to latents
        batch_size = self.check_inputs(
            prompt,
            negative_prompt,
            prompt_embeds,
            prompt_attention_mask,
            negative_prompt_embeds,
            negative_prompt_attention_mask,
            low_res_latents,
            video,
            keyframes,
            keyframe_indices,
            audio,
            audio_latents,
            scale_factor,
            num_inference_steps,
            sigmas,
            strength,
            guidance_scale,
            sparsity,
            vsa_backend,
            generator,
            output_type,
            return_dict,
            attention_kwargs,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            max_sequence_length,
        )
        low_res_latents = refining.refiner_low_res_latents(self, low_res_latents, video)
        num_low_frames = refining.num_low_res_frames(self, low_res_latents)
        target_latent_size = (low_res_latents.shape[3] * scale_factor, low_res_latents.shape[4] * scale_factor)
        keyframe_latents, keyframe_latent_indices = refining.refiner_keyframe_latents(
            self,
            keyframes,
            keyframe_indices,
            target_latent_size,
            self.transformer.config.temporal_upscale_factor,
            device,
        )
        self._guidance_scale, self._audio_guidance_scale = guidance_scale, 1.0
        self._guiders = {"video": multimodal_guider(GuidanceArguments(guidance_scale, 0.0, 1.0, 0.0, None))}
        self._generate_video, self._generate_audio = True, False
        self._attention_kwargs = attention_kwargs
        self._interrupt = False

        # 2. Encode the instruction
        prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask = (
            self.encode_prompt(
                prompt,
                negative_prompt,
                do_classifier_free_guidance=self.do_classifier_free_guidance,
                prompt_embeds=prompt_embeds,
                prompt_attention_mask=prompt_attention_mask,
                negative_prompt_embeds=negative_prompt_embeds,
                negative_prompt_attention_mask=negative_prompt_attention_mask,
                max_sequence_length=max_sequence_length,
                device=device,
                dtype=dtype,
            )
        )
        batch_size = prompt_embeds.shape[0]

        # 3. Condition: upsampled low-res latents with the keyframes at their frames, plus the mask; the clean base
        # audio latents
        condition, condition_latents = refining.refiner_condition(
            self, low_res_latents, keyframe_latents, keyframe_latent_indices, scale_factor, batch_size
        )
        audio_latents = refining.refiner_audio_latents(self, audio, audio_latents, num_low_frames, batch_size)
        audio_condition = (
            None if audio_latents is None or not self.transformer.config.audio_in_channels else audio_latents.to(dtype)
        )

        # 4. Timesteps and the starting latent: pure noise, or (strength < 1) the upsampled condition noised to
        # where the shortened schedule begins
        timesteps = self.prepare_timesteps(num_inference_steps, sigmas, device)
        latent_shape = (batch_size, condition_latents.shape[1], *condition.shape[2:])
        latents, timesteps = refining.refiner_start_latents(
            self, condition_latents, latent_shape, timesteps, strength, generator
        )
        stream = self.latent_stream("video", latents, timesteps, condition, self._guiders["video"])
        self._num_timesteps = num_loop_iterations([stream])

        # 5. Denoising loop: one video stream; the clean base audio is a fixed input of every call
        inputs = self.prompt_pass_inputs(
            prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask
        )
        model_kwargs = {
            "audio_latents": audio_condition,
            "sparsity": sparsity,
            "vsa_backend": vsa_backend,
            "attention_kwargs": attention_kwargs,
        }
        hooks = self.loop_hooks(callback_on_step_end, callback_on_step_end_tensor_inputs)
        latents = denoise(self.transformer, [stream], inputs, model_kwargs, hooks, batched_guidance)["latents"]

        # 6. Decode; the base audio passes through
        frames, out_audio, sample_rate = refining.decode_refiner_outputs(
            self, latents, audio, audio_latents, num_low_frames, output_type
        )
        fps = self.transformer.config.fps * self.transformer.config.temporal_upscale_factor
        self.maybe_free_model_hooks()

        if not return_dict:
            return (frames, out_audio, sample_rate)
        return SkyReelsV4PipelineOutput(frames=frames, audio=out_audio, audio_sample_rate=sample_rate, fps=fps)
