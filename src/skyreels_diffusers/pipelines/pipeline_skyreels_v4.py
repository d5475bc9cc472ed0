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
from . import generation, longform
from .denoising import denoise, num_loop_iterations
from .guidance import GuidanceArguments
from .loading import SkyReelsV4PipelineLoadingMixin
from .pipeline_mixin import DEFAULT_SYSTEM_PROMPT, SkyReelsV4PipelineMixin
from .pipeline_output import SkyReelsV4PipelineOutput


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


class SkyReelsV4Pipeline(
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
        base_num_frames: int | None = None,
        overlap_history: int | None = None,
        addnoise_condition: float = 0.0,
        crossfade: bool = True,
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
            base_num_frames (`int`, *optional*), overlap_history (`int`, *optional*): long-form generation. With
                either one given and `num_frames` beyond the window (`base_num_frames`, default the pipeline's
                `default_num_frames`), the clip is made by chaining windows: each window after the first extends the
                last `overlap_history` frames of the clip so far (default about 0.25 s of frames) and the matching
                audio (audio extension, its latents clean at timestep 0). `overlap_history=0` chains independent
                windows. One clip per call; the total is bounded by `pipe.limits.max_duration_seconds`. See
                `pipelines/longform.py`.
            addnoise_condition (`float`, defaults to 0): noise put on the kept overlap (video condition and audio
                prefix) of each later window, in timestep units (0-1000; SkyReels-V2's diffusion-forcing option).
            crossfade (`bool`, defaults to True): crossfade each join linearly over the overlap, from the previous
                window to the next one's own version of it (measured smoother, README "Long-form"); False: the next
                window keeps the overlap exactly.

        Examples:

        Returns:
            [`SkyReelsV4PipelineOutput`] or `(frames, audio, audio_sample_rate)`.
        """
        arguments = {name: value for name, value in locals().items() if name != "self"}  # for chained windows
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
        if base_num_frames is not None or overlap_history is not None:
            plan = longform.plan_chain(
                self, num_frames, base_num_frames, overlap_history, addnoise_condition, crossfade, fps, generate_audio
            )
            if plan.num_windows > 1:
                batch = longform.batch_size_of(prompt, prompt_embeds, num_videos_per_prompt)
                longform.check_chained_arguments(arguments, batch)
                from .pipeline_skyreels_v4_inpaint import SkyReelsV4InpaintPipeline

                inpaint = SkyReelsV4InpaintPipeline.from_pipe(self)
                inpaint.limits = self.limits
                inpaint.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
                return longform.chained_call(self, inpaint, plan, arguments)
        longform.check_chain_options(addnoise_condition, crossfade)

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
        keyframe_indices = generation.check_keyframes(
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
        )
        self._guidance_scale = guidance_scale
        self._audio_guidance_scale = audio_guidance_scale
        guiders = self.prepare_guiders(
            GuidanceArguments(
                guidance_scale, stg_scale, modality_scale, guidance_rescale, spatio_temporal_guidance_blocks, guider
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
        self._generate_video, self._generate_audio = generate_video, generate_audio
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
        streams, keyframe_positions = [], None
        if generate_video:
            latents = generation.prepare_latents(
                self, batch_size, height, width, num_frames, torch.float32, device, generator, latents
            )
            condition = generation.text_to_video_condition(self, batch_size, num_frames, height, width)
            streams.append(self.latent_stream("video", latents, timesteps, condition, guiders["video"]))
        if keyframe_indices:
            keyframe_height = 2 * height if keyframe_height is None else keyframe_height
            keyframe_width = 2 * width if keyframe_width is None else keyframe_width
            keyframe_latents, keyframe_condition, keyframe_positions = generation.prepare_keyframe_latents(
                self, batch_size, keyframe_indices, keyframe_height, keyframe_width, generator
            )
            streams.append(
                self.latent_stream("keyframes", keyframe_latents, timesteps, keyframe_condition, guiders["video"])
            )
        if generate_audio:
            audio_duration = audio_duration or num_frames / fps
            audio_latents = generation.prepare_audio_latents(
                self,
                batch_size,
                generation.audio_latent_count(self, audio_duration),
                torch.float32,
                device,
                generator,
                audio_latents,
            )
            start = video_lead_steps if generate_video else 0
            streams.append(self.latent_stream("audio", audio_latents, timesteps, None, guiders["audio"], start=start))
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
        frames, audio, sample_rate, keyframes = generation.decode_outputs(
            self, latents, audio_latents, keyframe_latents, audio_duration, output_type
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
