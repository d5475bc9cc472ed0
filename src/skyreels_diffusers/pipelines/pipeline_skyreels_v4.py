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
"""SkyReelsV4Pipeline: text (plus instruction images) -> video with synchronized audio."""

from collections.abc import Callable
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
from diffusers.utils import logging, replace_example_docstring
from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

from ..loaders import SkyReelsV4LoraLoaderMixin
from ..models import SkyReelsV4Transformer3DModel
from .conditioning import build_video_condition, latent_frame_index
from .denoising import LatentStream, denoise, num_loop_iterations
from .guidance import GuidanceArguments
from .loading import SkyReelsV4PipelineLoadingMixin
from .pipeline_mixin import (
    DEFAULT_SYSTEM_PROMPT,
    SkyReelsV4PipelineMixin,
    audio_spec_from_transformer,
    noise_or_given,
)
from .pipeline_output import SkyReelsV4PipelineOutput
from .validation import check_int, check_video_work, describe


logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from skyreels_diffusers import SkyReelsV4Pipeline
        >>> from skyreels_diffusers.utils import export_to_video_with_audio

        >>> pipe = SkyReelsV4Pipeline.from_pretrained("pipelines/skyreels-v4-tiny")
        >>> out = pipe("<text>A red ball bounces in a box.</text><sfx>A hollow knock on each bounce.</sfx>")
        >>> export_to_video_with_audio(
        ...     out.frames[0], "clip.mp4", fps=pipe.transformer.config.fps, audio=out.audio[0],
        ...     audio_sample_rate=out.audio_sample_rate,
        ... )
        ```
"""


class SkyReelsV4Steps:
    """The steps of `SkyReelsV4Pipeline.__call__` after the prompt: the keyframe check, the latent streams and the
    decoding. They read only components and config, so the modular blocks (`skyreels_diffusers.modular_pipelines`)
    call the same methods and give the same outputs."""

    def prepare_streams(
        self,
        batch_size: int,
        height: int,
        width: int,
        num_frames: int,
        fps: float,
        audio_duration: float | None,
        generate_video: bool,
        generate_audio: bool,
        timesteps: torch.Tensor,
        guider: BaseGuidance | None,
        audio_guider: BaseGuidance | None,
        video_lead_steps: int = 0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        audio_latents: torch.Tensor | None = None,
        keyframe_indices: list[int] | None = None,
        keyframe_height: int | None = None,
        keyframe_width: int | None = None,
    ) -> tuple[list[LatentStream], torch.Tensor | None, float | None]:
        """The generated streams (video, high-res keyframes, audio) starting from noise; returns them, the keyframes'
        positions on the latent timeline, and the audio duration (`None` without audio)."""
        device = self._execution_device
        dtype = self.transformer.dtype
        keyframe_height = 2 * height if keyframe_height is None else keyframe_height
        keyframe_width = 2 * width if keyframe_width is None else keyframe_width
        streams = []
        if generate_video:
            latents = self.prepare_latents(
                batch_size, height, width, num_frames, torch.float32, device, generator, latents
            )
            # Text-to-video: no condition frames, so every latent frame holds the black-image latent, mask 0.
            condition = build_video_condition(self.vae, batch_size, num_frames, height, width).as_channels()
            streams.append(self.latent_stream("video", latents, timesteps, condition.to(dtype), guider))
        keyframe_positions = None
        if keyframe_indices:
            spatial = self.vae_spec.spatial_compression
            keyframe_shape = (
                batch_size,
                self.vae_spec.latent_channels,
                len(keyframe_indices),
                keyframe_height // spatial,
                keyframe_width // spatial,
            )
            keyframe_latents = noise_or_given(
                "keyframe_latents", None, keyframe_shape, generator, device, torch.float32
            )
            keyframe_condition = build_video_condition(self.vae, batch_size, 1, keyframe_height, keyframe_width)
            keyframe_condition = keyframe_condition.as_channels().expand(-1, -1, len(keyframe_indices), -1, -1)
            streams.append(
                self.latent_stream("keyframes", keyframe_latents, timesteps, keyframe_condition.to(dtype), guider)
            )
            temporal = self.vae_spec.temporal_compression
            keyframe_positions = torch.tensor([i / temporal for i in keyframe_indices], device=device)
        if generate_audio:
            spec = self.audio_spec or audio_spec_from_transformer(self.transformer)
            audio_duration = audio_duration or num_frames / fps
            audio_latents = self.prepare_audio_latents(
                batch_size, spec.num_latents(audio_duration), torch.float32, device, generator, audio_latents
            )
            start = video_lead_steps if generate_video else 0
            streams.append(self.latent_stream("audio", audio_latents, timesteps, None, audio_guider, start=start))
        return streams, keyframe_positions, audio_duration

    def decode_outputs(
        self,
        latents: torch.Tensor | None,
        audio_latents: torch.Tensor | None,
        keyframe_latents: torch.Tensor | None,
        audio_duration: float | None,
        output_type: str,
    ) -> tuple[Any, Any, int | None, Any]:
        """Denoised latents -> `(frames, audio, audio_sample_rate, keyframes)` in `output_type` (latents pass
        through for `"latent"`)."""
        if output_type == "latent":
            return latents, audio_latents, None, keyframe_latents
        frames = self.decode_latents(latents) if latents is not None else None
        audio = self.decode_audio_latents(audio_latents, audio_duration) if audio_latents is not None else None
        frames, audio = self.format_outputs(frames, audio, output_type)
        sample_rate = self.audio_spec.sample_rate if audio_latents is not None else None
        keyframes = None
        if keyframe_latents is not None:
            # Each keyframe is a one-frame latent video: decode them as a batch of single frames.
            single_frames = keyframe_latents.movedim(2, 1).flatten(0, 1)[:, :, None]
            decoded = self.decode_latents(single_frames).unflatten(0, (keyframe_latents.shape[0], -1)).squeeze(2)
            keyframes, _ = self.format_outputs(decoded, None, output_type)
        return frames, audio, sample_rate, keyframes

    def check_keyframes(
        self,
        keyframe_indices,
        num_keyframes,
        keyframe_height,
        keyframe_width,
        height,
        width,
        num_frames,
        generate_video,
        batch_size,
    ) -> list[int]:
        """Validate the high-res keyframe request (its pixels count in `self.limits` with the clip's); returns the
        pixel frame indices (empty without keyframes)."""
        if keyframe_indices is None and num_keyframes is None:
            for name, size in (("keyframe_height", keyframe_height), ("keyframe_width", keyframe_width)):
                if size is not None:
                    raise ValueError(f"`{name}` sizes high-res keyframes; pass `num_keyframes` or `keyframe_indices`.")
            return []
        if keyframe_indices is not None and num_keyframes is not None:
            raise ValueError("Pass at most one of `keyframe_indices` or `num_keyframes`; got both.")
        if not generate_video:
            raise ValueError("High-resolution keyframes are part of the video; they need `generate_video=True`.")
        temporal = self.vae_spec.temporal_compression
        num_latent_frames = (num_frames - 1) // temporal + 1
        if num_keyframes is not None:
            check_int("num_keyframes", num_keyframes, 1, num_latent_frames, why=" (one per latent frame at most)")
            latent_indices = np.linspace(0, num_latent_frames - 1, num_keyframes).round().astype(int)
            keyframe_indices = [int(i) * temporal for i in latent_indices]
        if not isinstance(keyframe_indices, (list, tuple)) or not keyframe_indices:
            raise TypeError(
                f"`keyframe_indices` must be a non-empty list of frame indices, got {describe(keyframe_indices)}."
            )
        for i, index in enumerate(keyframe_indices):
            check_int(
                f"keyframe_indices[{i}]", index, 0, num_frames - 1, why=f" (frames of the {num_frames}-frame clip)"
            )
        latent_positions = [latent_frame_index(i, temporal) for i in keyframe_indices]
        if len(set(latent_positions)) != len(latent_positions):
            raise ValueError(
                f"`keyframe_indices` {list(keyframe_indices)} fall in the same latent frames {latent_positions}; use at "
                f"most one keyframe per group of {temporal} frames."
            )
        sizes = {}
        for name, size, low in (
            ("keyframe_height", keyframe_height, height),
            ("keyframe_width", keyframe_width, width),
        ):
            sizes[name] = 2 * low if size is None else check_int(name, size, low, self.limits.max_side)
            if sizes[name] % low:
                raise ValueError(
                    f"`{name}` must be an integer multiple of the video's {low} px (keyframes share the low-res RoPE "
                    f"frame scaled by an integer factor), got {size!r}."
                )
        check_video_work(
            self.limits,
            batch_size,
            [(num_frames, height, width), (len(keyframe_indices), sizes["keyframe_height"], sizes["keyframe_width"])],
            f"The clip ({num_frames} frames of {height}x{width}) and its {len(keyframe_indices)} keyframes "
            f"(`keyframe_indices` / `num_keyframes`) of `keyframe_height` x `keyframe_width` = "
            f"{sizes['keyframe_height']}x{sizes['keyframe_width']}",
        )
        return [int(i) for i in keyframe_indices]


class SkyReelsV4Pipeline(
    SkyReelsV4Steps,
    SkyReelsV4PipelineMixin,
    SkyReelsV4PipelineLoadingMixin,
    DiffusionPipeline,
    SkyReelsV4LoraLoaderMixin,
):
    r"""
    Text-to-audio-video generation with SkyReels-V4: one joint MMDiT denoises video and audio latents together, both
    conditioned on one multimodal LLM's reading of the instruction. The same pipeline runs T2AV, T2V
    (`generate_audio=False`) and T2A (`generate_video=False`).

    Args:
        text_encoder ([`~transformers.PreTrainedModel`]): a multimodal LLM that returns hidden states (Qwen2.5-VL by
            default); frozen.
        processor ([`~transformers.ProcessorMixin`] or tokenizer): its processor (needed for instruction images) or
            tokenizer; it must have a chat template.
        transformer ([`SkyReelsV4Transformer3DModel`]): the joint video-audio denoiser.
        vae: a Diffusers video VAE with 4x causal temporal compression (`AutoencoderKLHunyuanVideo15`,
            `AutoencoderKLWan`), or an image `AutoencoderKL` applied frame by frame.
        scheduler ([`~diffusers.FlowMatchEulerDiscreteScheduler`]).
        audio_vae (*optional*): `MMAudioVAE` (with `vocoder`) or `AutoencoderOobleck`; without it only video is made.
        vocoder (*optional*): `MMAudioVocoder`, turning MMAudio mel spectrograms into waveforms.
        system_prompt (`str`): the system message of the chat template.
        text_hidden_layer (`int`, defaults to -3): which entry of the text encoder's `hidden_states` conditions the
            transformer (-3 skips the last two layers, as HunyuanVideo-1.5 does).
        default_height, default_width, default_num_frames: the size used when the call gives none.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae->audio_vae->vocoder"
    _optional_components = ["audio_vae", "vocoder"]
    _callback_tensor_inputs = ["latents", "audio_latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        text_encoder: PreTrainedModel,
        processor: ProcessorMixin | PreTrainedTokenizerBase,
        transformer: SkyReelsV4Transformer3DModel,
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

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        prompt_images: Any = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        fps: float | None = None,
        audio_duration: float | None = None,
        generate_video: bool = True,
        generate_audio: bool | None = None,
        num_inference_steps: int = 30,
        sigmas: list[float] | None = None,
        guidance_scale: float = 5.0,
        audio_guidance_scale: float | None = None,
        stg_scale: float = 0.0,
        audio_stg_scale: float | None = None,
        modality_scale: float = 1.0,
        audio_modality_scale: float | None = None,
        guidance_rescale: float = 0.0,
        audio_guidance_rescale: float | None = None,
        spatio_temporal_guidance_blocks: list[int] | None = None,
        audio_spatio_temporal_guidance_blocks: list[int] | None = None,
        guider: BaseGuidance | None = None,
        audio_guider: BaseGuidance | None = None,
        video_lead_steps: int = 0,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        audio_latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[[Any, int, int, dict], dict]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int = 512,
        batched_guidance: bool | None = None,
        keyframe_indices: list[int] | None = None,
        num_keyframes: int | None = None,
        keyframe_height: int | None = None,
        keyframe_width: int | None = None,
    ) -> SkyReelsV4PipelineOutput | tuple:
        r"""
        Generates a video with synchronized audio (or either alone) from an instruction.

        Args:
            prompt (`str` or `list[str]`): the instruction; structured tags pass through (see `encode_prompt`).
            negative_prompt (`str` or `list[str]`, *optional*): what to steer away from under guidance.
            prompt_images (*optional*): images (or video frames) that are part of the instruction.
            height, width (`int`, *optional*): video size in pixels, multiples of the VAE's spatial compression times
                the patch size; default to the pipeline config.
            num_frames (`int`, *optional*): `4k+1` frames; defaults to the pipeline config. At most what
                `pipe.limits` allows at this size (see `frame_limit`).
            fps (`float`, *optional*): frames per second; must equal the transformer's timeline fps (its default).
            audio_duration (`float`, *optional*): seconds of audio; defaults to the video's `num_frames / fps`.
            generate_video, generate_audio (`bool`): T2AV (both), T2V or T2A. `generate_audio` defaults to whether the
                pipeline can make audio: it has an `audio_vae`, or `output_type="latent"`.
            num_inference_steps (`int`, defaults to 30): denoising steps (ignored when `sigmas` is given).
            sigmas (`list[float]`, *optional*): custom noise levels from 1 towards 0, passed to the scheduler.
            guidance_scale (`float`, defaults to 5.0): classifier-free guidance of the video; 1 disables it; at most
                `pipe.limits.max_guidance_scale` (100).
            audio_guidance_scale (`float`, *optional*): guidance of the audio; defaults to `guidance_scale`.
            stg_scale, audio_stg_scale (`float`, defaults to 0): spatio-temporal guidance (STG) of each modality:
                `+ stg * (cond - perturbed)`, where the perturbed pass runs the blocks in
                `spatio_temporal_guidance_blocks` (`audio_spatio_temporal_guidance_blocks`) with their self-attention
                returning its values. Indices run over the dual-stream, then the single-stream blocks.
            modality_scale, audio_modality_scale (`float`, defaults to 1): modality guidance,
                `+ (modality - 1) * (cond - isolated)`, where the isolated pass runs without the audio<->video
                exchange (LTX-2's term for lip-sync).
            guidance_rescale, audio_guidance_rescale (`float`, defaults to 0): rescale the guided prediction towards
                the conditional one's standard deviation, `pred *= r * std(cond) / std(pred) + (1 - r)`.
                Each `audio_*` argument not given takes the video's value. The terms are Diffusers' `LTX2Guidance`,
                applied to each modality's velocity. A term at its neutral value (1 for CFG and modality, 0 for STG)
                costs no transformer pass; each pass that is on runs once per step, shared by both modalities: with
                every term off (`guidance_scale=1`, the setting for guidance-distilled weights) one pass per step.
            guider, audio_guider (`BaseGuidance`, *optional*): any Diffusers guider for that modality instead (for
                example `SkipLayerGuidance` or `AdaptiveProjectedGuidance`); the scale arguments of that modality are
                then not used.
            video_lead_steps (`int`, defaults to 0): with video and audio both generated, start the audio this many
                steps after the video (it waits as pure noise), so it denoises against a clearer picture; the loop
                then runs `num_inference_steps + video_lead_steps` transformer steps, and each stream takes
                `num_inference_steps`. Ignored when only one modality is generated.
            num_videos_per_prompt (`int`, defaults to 1): samples per prompt.
            generator (`torch.Generator` or list, *optional*): for reproducible noise.
            latents (`torch.Tensor` of shape `(B, C, F', h, w)`, *optional*): initial video noise.
            audio_latents (`torch.Tensor` of shape `(B, C_a, L)`, *optional*): initial audio noise.
            prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask
                (*optional*): precomputed text-encoder hidden states and masks.
            output_type (`str`, defaults to `"np"`): `"np"`, `"pt"`, `"pil"` or `"latent"`.
            return_dict (`bool`, defaults to `True`): return a [`SkyReelsV4PipelineOutput`] instead of a tuple.
            attention_kwargs (`dict`, *optional*): passed to the transformer (e.g. `{"scale": lora_scale}`).
            callback_on_step_end (`Callable`, *optional*): called as `callback(pipe, step, timestep, tensors)` after
                each step; it may return a dict that replaces any of `callback_on_step_end_tensor_inputs` (tensors
                without NaN or infinity, latents of the same shape; anything else raises at once).
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): subset of `_callback_tensor_inputs`.
            max_sequence_length (`int`, defaults to 512): maximum instruction tokens after the system prompt.
            batched_guidance (`bool`, *optional*): run guidance's conditional and unconditional passes as one
                batched transformer call (prompts padded to one length, masked). Defaults to True when a cache is
                enabled on the transformer (`enable_cache`): PAB and FasterCache keep one state per layer and need
                both passes together. Same result within float rounding; more memory, often faster on GPUs.
            keyframe_indices (`list[int]`, *optional*): pixel frames to also generate at high resolution, in the
                same pass (the paper's low-res full sequence + high-res keyframes). Frame `f` sits at `f / 4` on the
                latent timeline; indices must fall in distinct latent frames.
            num_keyframes (`int`, *optional*): instead of indices, this many keyframes spread evenly from the first
                to the last frame, on latent-frame boundaries.
            keyframe_height, keyframe_width (`int`, *optional*): keyframe size, an integer multiple of the video's;
                defaults to twice the video size.

        Examples:

        Returns:
            [`SkyReelsV4PipelineOutput`] or `(frames, audio, audio_sample_rate)`.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if callback_on_step_end_tensor_inputs is None:
            callback_on_step_end_tensor_inputs = ["latents"]
        # `None` means the default; any other value (0 included) is checked as given.
        height = self.config.default_height if height is None else height
        width = self.config.default_width if width is None else width
        num_frames = self.config.default_num_frames if num_frames is None else num_frames
        fps = self.transformer.config.fps if fps is None else fps
        audio_guidance_scale = guidance_scale if audio_guidance_scale is None else audio_guidance_scale
        if generate_audio is None:
            generate_audio = self.audio_vae is not None or output_type == "latent"

        # 1. Check inputs, before any work
        batch_size = self.check_inputs(
            prompt,
            negative_prompt,
            prompt_embeds,
            prompt_attention_mask,
            negative_prompt_embeds,
            negative_prompt_attention_mask,
            height,
            width,
            num_frames,
            fps,
            audio_duration,
            generate_video,
            generate_audio,
            num_inference_steps,
            sigmas,
            guidance_scale,
            audio_guidance_scale,
            video_lead_steps,
            num_videos_per_prompt,
            generator,
            latents,
            audio_latents,
            output_type,
            return_dict,
            attention_kwargs,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            max_sequence_length,
        )
        keyframe_indices = self.check_keyframes(
            keyframe_indices,
            num_keyframes,
            keyframe_height,
            keyframe_width,
            height,
            width,
            num_frames,
            generate_video,
            batch_size,
        )
        self._guidance_scale = guidance_scale
        self._audio_guidance_scale = audio_guidance_scale
        self._generate_video, self._generate_audio = generate_video, generate_audio
        guiders = self.prepare_guiders(
            GuidanceArguments(
                guidance_scale,
                stg_scale,
                modality_scale,
                guidance_rescale,
                spatio_temporal_guidance_blocks,
                guider,
            ),
            GuidanceArguments(
                audio_guidance_scale,
                audio_stg_scale,
                audio_modality_scale,
                audio_guidance_rescale,
                audio_spatio_temporal_guidance_blocks,
                audio_guider,
            ),
            generate_video,
            generate_audio,
        )
        self._attention_kwargs = attention_kwargs
        self._interrupt = False
        batched_guidance = self.batched_guidance(batched_guidance)
        device = self._execution_device

        # 2. Encode the instruction
        prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask = (
            self.encode_prompt(
                prompt,
                negative_prompt,
                prompt_images=prompt_images,
                do_classifier_free_guidance=self.do_classifier_free_guidance,
                num_videos_per_prompt=num_videos_per_prompt,
                prompt_embeds=prompt_embeds,
                prompt_attention_mask=prompt_attention_mask,
                negative_prompt_embeds=negative_prompt_embeds,
                negative_prompt_attention_mask=negative_prompt_attention_mask,
                max_sequence_length=max_sequence_length,
                device=device,
                dtype=self.transformer.dtype,
            )
        )
        batch_size = prompt_embeds.shape[0]

        # 3. Timesteps: each stream steps its own copy of the schedule; with `video_lead_steps`, the audio starts
        # that many steps after the video.
        timesteps = self.prepare_timesteps(num_inference_steps, sigmas, device)

        # 4. Latent streams: the video, the high-res keyframes, the audio
        streams, keyframe_positions, audio_duration = self.prepare_streams(
            batch_size,
            height,
            width,
            num_frames,
            fps,
            audio_duration,
            generate_video,
            generate_audio,
            timesteps,
            guiders.get("video"),
            guiders.get("audio"),
            video_lead_steps,
            generator,
            latents,
            audio_latents,
            keyframe_indices,
            keyframe_height,
            keyframe_width,
        )
        self._num_timesteps = num_loop_iterations(streams)

        # 5. Denoising loop
        inputs = self.prompt_pass_inputs(
            prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask
        )
        model_kwargs = {"keyframe_positions": keyframe_positions, "attention_kwargs": self.attention_kwargs}
        hooks = self.loop_hooks(callback_on_step_end, callback_on_step_end_tensor_inputs)
        result = denoise(self.transformer, streams, inputs, model_kwargs, hooks, batched_guidance)
        latents, audio_latents = result.get("latents"), result.get("audio_latents")
        keyframe_latents = result.get("keyframe_latents")

        # 6. Decode
        frames, audio, sample_rate, keyframes = self.decode_outputs(
            latents, audio_latents, keyframe_latents, audio_duration, output_type
        )
        self.maybe_free_model_hooks()

        if not return_dict:
            return (frames, audio, sample_rate)
        return SkyReelsV4PipelineOutput(
            frames=frames,
            audio=audio,
            audio_sample_rate=sample_rate,
            keyframes=keyframes,
            keyframe_indices=keyframe_indices or None,
            fps=fps,
        )
