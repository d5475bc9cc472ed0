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
from dataclasses import dataclass
from typing import Any

import numpy as np
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
from diffusers.guiders.guider_utils import BaseGuidance
from diffusers.utils import replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

from ..loaders import SkyReelsV4LoraLoaderMixin
from ..models.attention_video_sparse import VSA_BACKENDS
from ..models.transformer_skyreels_v4_refiner import SkyReelsV4RefinerTransformer3DModel
from .conditioning import build_refiner_condition, latent_frame_index
from .denoising import LatentStream, denoise, num_loop_iterations
from .guidance import GuidanceArguments, multimodal_guider
from .loading import SkyReelsV4PipelineLoadingMixin
from .pipeline_mixin import DEFAULT_SYSTEM_PROMPT, SkyReelsV4PipelineMixin, audio_spec_from_transformer
from .pipeline_output import SkyReelsV4PipelineOutput
from .preprocessing import check_frame_list, frame_size, frames_to_tensor, pixels_for_vae
from .vae_utils import encode_audio_track, encode_video
from .validation import (
    check_choice,
    check_finite_tensor,
    check_int,
    check_number,
    check_video_work,
    describe,
)


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


@dataclass
class RefinerLowRes:
    """The Refiner's low-resolution input on the latent grid: its latents `(1 or B, C, F', h, w)` (fp32), the
    high-res keyframes' latents and latent frame indices, its pixel frame count and the target latent size."""

    latents: torch.Tensor
    keyframe_latents: torch.Tensor | None
    keyframe_latent_indices: list[int] | None
    num_frames: int
    scale_factor: int


@dataclass
class RefinerCondition:
    """The Refiner's condition channels (upsampled low-res latents, keyframes, mask), its fp32 latents for
    `strength < 1`, and the clean base audio latents (`audio_condition` is what the transformer reads)."""

    channels: torch.Tensor
    latents: torch.Tensor
    audio_latents: torch.Tensor | None
    audio_condition: torch.Tensor | None
    num_low_frames: int


class SkyReelsV4RefinerSteps:
    """The steps of `SkyReelsV4RefinerPipeline.__call__`: the checks, the low-res input, the condition, the starting
    stream and the outputs. They read only components and config, so the modular Refiner blocks
    (`skyreels_diffusers.modular_pipelines`) call the same methods and give the same outputs."""

    def prepare_low_res(
        self,
        low_res_latents: torch.Tensor | None,
        video: Any,
        keyframes: Any,
        keyframe_indices: list[int] | None,
        scale_factor: int,
    ) -> RefinerLowRes:
        """The low-res clip as latents (`video` is VAE-encoded) and the keyframes as latents at the target size."""
        device = self._execution_device
        if video is not None:
            low_res_latents = self._encode_low_res_video(video)
        low_res_latents = low_res_latents.to(device=device, dtype=torch.float32)
        _, _, num_latent_frames, low_height, low_width = low_res_latents.shape
        num_low_frames = (num_latent_frames - 1) * self.vae_spec.temporal_compression + 1
        target_latent_size = (low_height * scale_factor, low_width * scale_factor)
        keyframe_latents, keyframe_latent_indices = self._prepare_keyframes(
            keyframes,
            keyframe_indices,
            target_latent_size,
            self.transformer.config.temporal_upscale_factor,
            device,
        )
        return RefinerLowRes(low_res_latents, keyframe_latents, keyframe_latent_indices, num_low_frames, scale_factor)

    def prepare_refiner_condition(
        self, low_res: RefinerLowRes, batch_size: int, audio: Any = None, audio_latents: torch.Tensor | None = None
    ) -> RefinerCondition:
        """Upsampled low-res latents with the keyframes at their frames plus the mask, and the base audio latents
        (`audio` is encoded when no `audio_latents` are given)."""
        config = self.transformer.config
        dtype = self.transformer.dtype
        low_res_latents = _repeat_to_batch(low_res.latents, batch_size)
        keyframe_latents = low_res.keyframe_latents
        if isinstance(keyframe_latents, torch.Tensor):
            keyframe_latents = _repeat_to_batch(keyframe_latents, batch_size)
        if audio_latents is not None:
            audio_latents = _repeat_to_batch(audio_latents, batch_size)
        refiner_condition = build_refiner_condition(
            low_res_latents,
            low_res.scale_factor,
            config.temporal_upscale_factor,
            keyframe_latents,
            low_res.keyframe_latent_indices,
        )
        channels = refiner_condition.as_channels().to(dtype)
        if audio_latents is None and audio is not None and self.audio_vae is not None and config.audio_in_channels:
            # Padded with silence (or cut) to the clip's whole latents, like the soundtrack the base model made.
            num_audio_latents = self.audio_spec.num_latents(low_res.num_frames / config.fps)
            waveform = torch.as_tensor(audio).float()
            if waveform.shape[1] != self.audio_spec.audio_channels:  # mono <-> stereo, as `load_audio` converts
                waveform = waveform.mean(1, keepdim=True).expand(-1, self.audio_spec.audio_channels, -1)
            audio_latents = encode_audio_track(self.audio_vae, waveform, num_audio_latents)
            audio_latents = _repeat_to_batch(audio_latents, batch_size)
        audio_condition = None if audio_latents is None or not config.audio_in_channels else audio_latents.to(dtype)
        return RefinerCondition(
            channels, refiner_condition.latents, audio_latents, audio_condition, low_res.num_frames
        )

    def prepare_refiner_stream(
        self,
        condition: RefinerCondition,
        batch_size: int,
        num_inference_steps: int,
        sigmas: list[float] | None,
        strength: float,
        guider: BaseGuidance,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> LatentStream:
        """The video stream: pure noise, or (`strength < 1`) the upsampled condition noised to where the shortened
        schedule begins."""
        device = self._execution_device
        timesteps = self.prepare_timesteps(num_inference_steps, sigmas, device)
        noisy = randn_tensor(
            (batch_size, condition.latents.shape[1], *condition.channels.shape[2:]),
            generator=generator,
            device=device,
            dtype=torch.float32,
        )
        if strength < 1:
            num_steps = int(len(timesteps) * strength)  # at least 1 (`check_inputs`)
            begin = len(timesteps) - num_steps
            timesteps = timesteps[begin:]
            self.scheduler.set_begin_index(begin)
            start = condition.latents.float().expand(batch_size, -1, -1, -1, -1)
            noisy = self.scheduler.scale_noise(start, timesteps[:1], noisy)
        return self.latent_stream("video", noisy, timesteps, condition.channels, guider)

    def decode_refiner_outputs(
        self, condition: RefinerCondition, latents: torch.Tensor, audio: Any, output_type: str
    ) -> tuple[Any, Any, int | None]:
        """`(frames, audio, audio_sample_rate)`; the base audio passes through (decoded from its latents when only
        those were given)."""
        if output_type == "latent":
            return latents, condition.audio_latents, None
        frames = self.decode_latents(latents)
        out_audio = None
        if audio is not None:
            out_audio = torch.as_tensor(audio)
        elif condition.audio_latents is not None and self.audio_vae is not None:
            duration = condition.num_low_frames / self.transformer.config.fps
            out_audio = self.decode_audio_latents(condition.audio_latents, duration)
        sample_rate = None if out_audio is None or self.audio_spec is None else self.audio_spec.sample_rate
        frames, out_audio = self.format_outputs(frames, out_audio, output_type)
        return frames, out_audio, sample_rate

    def check_inputs(
        self,
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
    ) -> int:
        """Every argument, checked before any work and within `self.limits`; returns the batch size."""
        limits = self.limits
        batch_size = self._check_prompt_inputs(
            prompt,
            negative_prompt,
            prompt_embeds,
            prompt_attention_mask,
            negative_prompt_embeds,
            negative_prompt_attention_mask,
        )
        if batch_size > limits.max_batch:
            raise ValueError(f"{batch_size} prompts; the limit is {limits.max_batch} (`pipe.limits.max_batch`).")
        if (low_res_latents is None) == (video is None):
            raise ValueError(
                "Pass exactly one of `low_res_latents` (base pass output) or `video` (frames to refine); got "
                + ("both." if video is not None else "neither.")
            )
        scale_factor = check_int("scale_factor", scale_factor, 1, 8)
        check_number("strength", strength, 0.0, 1.0, minimum_inclusive=False)
        if sparsity is not None:
            check_number("sparsity", sparsity, 0.0, 0.999)
        check_choice("vsa_backend", vsa_backend, VSA_BACKENDS)
        self._check_call_settings(
            batch_size,
            num_inference_steps,
            sigmas,
            guidance_scale,
            generator,
            output_type,
            return_dict,
            attention_kwargs,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            max_sequence_length,
        )
        num_steps = num_inference_steps if sigmas is None else len(sigmas)
        if int(num_steps * strength) < 1:
            raise ValueError(
                f"`strength`={strength} leaves no step of the {num_steps}-step schedule; raise `strength` or "
                "`num_inference_steps`."
            )

        spatial, temporal = self.vae_spec.spatial_compression, self.vae_spec.temporal_compression
        channels = self.vae_spec.latent_channels
        config = self.transformer.config
        if video is not None:
            source = "video"
            check_frame_list("video", video, limits)
            num_frames = len(video)
            height, width = frame_size(video) if not isinstance(video, torch.Tensor) else video.shape[2:4]
            if height % spatial or width % spatial or (num_frames - 1) % temporal:
                raise ValueError(
                    f"`video` must have {temporal}k+1 frames of a size divisible by {spatial}; got {num_frames} frames "
                    f"of {height}x{width}."
                )
        else:
            source = "low_res_latents"
            check_finite_tensor("low_res_latents", low_res_latents, 5, f"(B, {channels}, F, h, w)")
            if low_res_latents.shape[1] != channels or min(low_res_latents.shape[2:]) < 1:
                raise ValueError(
                    f"`low_res_latents` must be low-res latents of shape (B, {channels}, F, h, w), got "
                    f"{describe(low_res_latents)}."
                )
            check_batch_divides("low_res_latents", low_res_latents, batch_size)
            num_frames = (low_res_latents.shape[2] - 1) * temporal + 1
            height, width = low_res_latents.shape[3] * spatial, low_res_latents.shape[4] * spatial
        # The Refiner patchifies the upscaled latents: each side must hold whole patches, and a low-res clip smaller
        # than one patch cannot come from a base pass (whose sides are whole patches).
        latent_size = (height // spatial, width // spatial)
        target_size = (latent_size[0] * scale_factor, latent_size[1] * scale_factor)
        patch = config.patch_size
        if min(latent_size) < patch or target_size[0] % patch or target_size[1] % patch:
            raise ValueError(
                f"`{source}` is {latent_size[0]}x{latent_size[1]} latents a frame, which `scale_factor`={scale_factor} "
                f"upscales to {target_size[0]}x{target_size[1]}; the Refiner needs at least its patch size {patch} a "
                f"side before upscaling and a multiple of {patch} after."
            )
        out_frames = (num_frames - 1) * config.temporal_upscale_factor + 1
        what = f"`{source}` ({num_frames} frames of {height}x{width}) refined by `scale_factor`={scale_factor}"
        if max(height, width) * scale_factor > limits.max_side:
            raise ValueError(
                f"{what} make {height * scale_factor}x{width * scale_factor} frames; the largest side allowed is "
                f"{limits.max_side} (`pipe.limits.max_side`)."
            )
        check_video_work(limits, batch_size, [(out_frames, height * scale_factor, width * scale_factor)], what)
        if (keyframes is None) != (keyframe_indices is None):
            raise ValueError("`keyframes` and `keyframe_indices` must be given together.")
        if isinstance(keyframes, torch.Tensor):
            expected = f"(B, {channels}, K, {target_size[0]}, {target_size[1]})"
            check_finite_tensor("keyframes", keyframes, 5, expected)
            if keyframes.shape[1] != channels or tuple(keyframes.shape[-2:]) != target_size:
                raise ValueError(
                    f"`keyframes` latents must have shape {expected}: the VAE's latent channels, and the low-res "
                    f"latent size times `scale_factor`; got {describe(keyframes)}."
                )
            check_batch_divides("keyframes", keyframes, batch_size)
            num_keyframes = keyframes.shape[2]
        elif keyframes is not None:
            check_frame_list("keyframes", keyframes, limits)
            num_keyframes = len(keyframes)
        if keyframe_indices is not None:
            if not isinstance(keyframe_indices, (list, tuple)):
                raise TypeError(
                    f"`keyframe_indices` must be a list of frame indices, got {describe(keyframe_indices)}."
                )
            for i, index in enumerate(keyframe_indices):
                check_int(f"keyframe_indices[{i}]", index, 0, num_frames - 1, why=" (frames of the low-res clip)")
            if len(set(keyframe_indices)) != len(keyframe_indices):
                raise ValueError(f"`keyframe_indices` must not repeat a frame, got {list(keyframe_indices)}.")
            if len(keyframe_indices) != num_keyframes:
                raise ValueError(
                    f"`keyframes` holds {num_keyframes} keyframes but `keyframe_indices` gives {len(keyframe_indices)} "
                    "frames; they must agree."
                )
        if audio_latents is not None:
            check_finite_tensor("audio_latents", audio_latents, 3, "(B, C_a, L)")
            spec = self.audio_spec or audio_spec_from_transformer(self.transformer)
            most = spec.num_latents(limits.max_audio_seconds)
            if config.audio_in_channels and audio_latents.shape[1] != config.audio_in_channels:
                raise ValueError(
                    f"`audio_latents` must have {config.audio_in_channels} channels (B, C_a, L), got "
                    f"{describe(audio_latents)}."
                )
            if not 1 <= audio_latents.shape[-1] <= most:
                raise ValueError(
                    f"`audio_latents` holds {audio_latents.shape[-1]} latents; it takes 1 to {most} "
                    f"({limits.max_audio_seconds:g} s at {spec.sample_rate} Hz, `pipe.limits.max_audio_seconds`)."
                )
            check_batch_divides("audio_latents", audio_latents, batch_size)
        if audio is not None:
            if not isinstance(audio, (np.ndarray, torch.Tensor)) or not (
                audio.dtype.is_floating_point if isinstance(audio, torch.Tensor) else audio.dtype.kind == "f"
            ):
                raise TypeError(
                    f"`audio` must be a floating-point NumPy array or torch tensor `(B, channels, samples)` in "
                    f"[-1, 1], got {describe(audio)}."
                )
            audio_tensor = check_finite_tensor("audio", torch.as_tensor(audio), 3, "(B, channels, samples)")
            if audio_tensor.shape[-1] == 0 or audio_tensor.shape[1] not in (1, 2):
                raise ValueError(f"`audio` needs 1 or 2 channels and at least one sample, got {describe(audio)}.")
            if (
                self.audio_spec is not None
                and audio_tensor.shape[-1] > limits.max_audio_seconds * self.audio_spec.sample_rate
            ):
                raise ValueError(
                    f"`audio` is longer than {limits.max_audio_seconds} s (`pipe.limits.max_audio_seconds`)."
                )
            check_batch_divides("audio", audio_tensor, batch_size)
        return batch_size

    def _encode_low_res_video(self, video: Any) -> torch.Tensor:
        """Frames at their own size (checked by `check_inputs`) -> low-res latents `(1, C, F', h, w)`."""
        frames = frames_to_tensor("video", video, *frame_size(video))
        return encode_video(self.vae, pixels_for_vae(frames))

    def _prepare_keyframes(self, keyframes, keyframe_indices, target_latent_size, factor, device):
        """High-res keyframe latents `(B, C, K, H, W)` and the output latent frame each one lands on (the keyframes
        were checked by `check_inputs`)."""
        if keyframes is None:
            return None, None
        if isinstance(keyframes, torch.Tensor):
            latents = keyframes.to(device=device, dtype=torch.float32)
        else:
            spatial = self.vae_spec.spatial_compression
            pixels = frames_to_tensor(
                "keyframes", keyframes, target_latent_size[0] * spatial, target_latent_size[1] * spatial
            )
            pixels = pixels_for_vae(pixels)
            latents = torch.cat([encode_video(self.vae, pixels[:, :, i : i + 1]) for i in range(pixels.shape[2])], 2)
        temporal = self.vae_spec.temporal_compression
        return latents, [latent_frame_index(i * factor, temporal) for i in keyframe_indices]


class SkyReelsV4RefinerPipeline(
    SkyReelsV4RefinerSteps,
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
        low_res = self.prepare_low_res(low_res_latents, video, keyframes, keyframe_indices, scale_factor)
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
        condition = self.prepare_refiner_condition(low_res, batch_size, audio, audio_latents)

        # 4. Timesteps and the starting latent: pure noise, or (strength < 1) the upsampled condition noised to
        # where the shortened schedule begins
        stream = self.prepare_refiner_stream(
            condition, batch_size, num_inference_steps, sigmas, strength, self._guiders["video"], generator
        )
        self._num_timesteps = num_loop_iterations([stream])

        # 5. Denoising loop: one video stream; the clean base audio is a fixed input of every call
        inputs = self.prompt_pass_inputs(
            prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask
        )
        model_kwargs = {
            "audio_latents": condition.audio_condition,
            "sparsity": sparsity,
            "vsa_backend": vsa_backend,
            "attention_kwargs": attention_kwargs,
        }
        hooks = self.loop_hooks(callback_on_step_end, callback_on_step_end_tensor_inputs)
        latents = denoise(self.transformer, [stream], inputs, model_kwargs, hooks, batched_guidance)["latents"]

        # 6. Decode; the base audio passes through
        frames, out_audio, sample_rate = self.decode_refiner_outputs(condition, latents, audio, output_type)
        fps = self.transformer.config.fps * self.transformer.config.temporal_upscale_factor
        self.maybe_free_model_hooks()

        if not return_dict:
            return (frames, out_audio, sample_rate)
        return SkyReelsV4PipelineOutput(frames=frames, audio=out_audio, audio_sample_rate=sample_rate, fps=fps)


def check_batch_divides(name: str, tensor: torch.Tensor, batch_size: int) -> None:
    """A conditioning batch is repeated to the prompts' batch when it divides it (Diffusers' image-to-image rule)."""
    if batch_size % tensor.shape[0]:
        raise ValueError(
            f"`{name}` has batch {tensor.shape[0]}, which does not divide the batch of prompts ({batch_size})."
        )


def _repeat_to_batch(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A conditioning batch (checked by `check_batch_divides`) repeated to the prompts' batch."""
    return tensor.repeat_interleave(batch_size // tensor.shape[0], dim=0)
