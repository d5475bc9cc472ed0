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

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import PIL.Image
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
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

from ..loaders import SkyReelsV4LoraLoaderMixin
from ..models import SkyReelsV4Transformer3DModel
from .conditioning import build_video_condition
from .loading import SkyReelsV4PipelineLoadingMixin
from .pipeline_output import SkyReelsV4PipelineOutput
from .vae_utils import AudioVAESpec, audio_vae_spec, decode_audio, decode_video, video_vae_spec


logger = logging.get_logger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    "You are a director describing a shot for a video with sound. Read the instruction: visual content in <text>, "
    "sound effects in <sfx>, speech in <dialogue>, singing in <singing>, music in <bgm>, and any reference images."
)

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


class SkyReelsV4Pipeline(SkyReelsV4PipelineLoadingMixin, DiffusionPipeline, SkyReelsV4LoraLoaderMixin):
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
        self.register_modules(
            text_encoder=text_encoder,
            processor=processor,
            transformer=transformer,
            vae=vae,
            scheduler=scheduler,
            audio_vae=audio_vae,
            vocoder=vocoder,
        )
        self.register_to_config(
            system_prompt=system_prompt,
            text_hidden_layer=text_hidden_layer,
            default_height=default_height,
            default_width=default_width,
            default_num_frames=default_num_frames,
        )
        self.vae_spec = video_vae_spec(vae) if vae is not None else None
        self.audio_spec = audio_vae_spec(audio_vae) if audio_vae is not None else None
        spatial = self.vae_spec.spatial_compression if self.vae_spec else 16
        self.video_processor = VideoProcessor(vae_scale_factor=spatial)

    # ------------------------------------------------------------------ prompt encoding

    def _build_messages(self, prompt: str, images: list) -> list[dict]:
        """The chat of one instruction: the system prompt, then the images followed by the (tagged) text."""
        return [
            {"role": "system", "content": [{"type": "text", "text": self.config.system_prompt}]},
            {"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": prompt}]},
        ]

    def _get_mllm_prompt_embeds(
        self,
        prompts: list[str],
        images: list[list[PIL.Image.Image]],
        max_sequence_length: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        processor = self.processor
        tokenizer = getattr(processor, "tokenizer", processor)
        texts = [
            processor.apply_chat_template(self._build_messages(p, imgs), tokenize=False, add_generation_prompt=True)
            for p, imgs in zip(prompts, images)
        ]
        flat_images = [image for prompt_images in images for image in prompt_images]
        kwargs = {"images": flat_images} if flat_images else {}
        # Right padding keeps the system-prompt prefix at the same positions in every row, so it can be cropped.
        inputs = processor(text=texts, padding=True, padding_side="right", return_tensors="pt", **kwargs).to(device)

        encoder = self.text_encoder.base_model if hasattr(self.text_encoder, "base_model") else self.text_encoder
        hidden_states = encoder(**inputs, output_hidden_states=True).hidden_states[self.config.text_hidden_layer]
        mask = inputs["attention_mask"].bool()

        # Drop the system turn, identical for every prompt, when the template renders it as a prefix.
        system_text = processor.apply_chat_template(self._build_messages("", [])[:1], tokenize=False)
        prefix = tokenizer(system_text, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
        num_prefix = prefix.shape[1]
        if num_prefix < inputs["input_ids"].shape[1] and (inputs["input_ids"][:, :num_prefix] == prefix).all():
            hidden_states, mask = hidden_states[:, num_prefix:], mask[:, num_prefix:]
        return hidden_states[:, :max_sequence_length], mask[:, :max_sequence_length]

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None = None,
        prompt_images: Any = None,
        do_classifier_free_guidance: bool = True,
        num_videos_per_prompt: int = 1,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        max_sequence_length: int = 512,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        r"""
        Encodes the instruction (and the negative prompt) with the MLLM.

        Args:
            prompt (`str` or `list[str]`): the instruction, optionally with the structured tags `<text>`, `<sfx>`,
                `<dialogue>`, `<singing>`, `<bgm>`, which pass through to the text encoder unchanged.
            negative_prompt (`str` or `list[str]`, *optional*): defaults to the empty prompt.
            prompt_images: images that are part of the instruction: one image, a list shared by every prompt, or a
                list of lists (one per prompt). Video frames are given the same way, as a list of images.
            prompt_embeds, prompt_attention_mask (`torch.Tensor` of shapes `(B, S, D)`, `(B, S)`, *optional*):
                precomputed hidden states, instead of `prompt`.

        Returns:
            `(prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask)`, each
            repeated `num_videos_per_prompt` times; the negatives are `None` without guidance.
        """
        device = device or self._execution_device
        dtype = dtype or self.transformer.dtype
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            images = _per_prompt_images(prompt_images, len(prompts))
            prompt_embeds, prompt_attention_mask = self._get_mllm_prompt_embeds(
                prompts, images, max_sequence_length, device
            )
        elif prompt_attention_mask is None:
            prompt_attention_mask = torch.ones(prompt_embeds.shape[:2], dtype=torch.bool, device=device)
        batch_size = prompt_embeds.shape[0]

        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative_prompt = negative_prompt or ""
            negatives = [negative_prompt] * batch_size if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != batch_size:
                raise ValueError(
                    f"`negative_prompt` must be a string or a list of {batch_size} strings (one per prompt), got a "
                    f"list of {len(negatives)}."
                )
            negative_prompt_embeds, negative_prompt_attention_mask = self._get_mllm_prompt_embeds(
                negatives, [[] for _ in negatives], max_sequence_length, device
            )
        elif negative_prompt_embeds is not None and negative_prompt_attention_mask is None:
            negative_prompt_attention_mask = torch.ones(
                negative_prompt_embeds.shape[:2], dtype=torch.bool, device=device
            )

        def repeat(embeds, mask):
            if embeds is None:
                return None, None
            embeds = embeds.to(device=device, dtype=dtype).repeat_interleave(num_videos_per_prompt, dim=0)
            return embeds, mask.to(device=device).bool().repeat_interleave(num_videos_per_prompt, dim=0)

        return (
            *repeat(prompt_embeds, prompt_attention_mask),
            *repeat(negative_prompt_embeds, negative_prompt_attention_mask),
        )

    # ------------------------------------------------------------------ checks and latents

    def check_inputs(
        self,
        prompt,
        prompt_embeds,
        negative_prompt,
        negative_prompt_embeds,
        height,
        width,
        num_frames,
        fps,
        audio_duration,
        generate_video,
        generate_audio,
        num_inference_steps,
        sigmas,
        output_type,
        callback_on_step_end_tensor_inputs,
    ) -> None:
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError(
                "Pass exactly one of `prompt` or `prompt_embeds`; got "
                + ("both." if prompt is not None else "neither.")
            )
        if prompt is not None and not (
            isinstance(prompt, str)
            or (isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt))
        ):
            raise TypeError(f"`prompt` must be a string or a non-empty list of strings, got {type(prompt).__name__}.")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass at most one of `negative_prompt` or `negative_prompt_embeds`; got both.")
        if not (generate_video or generate_audio):
            raise ValueError("`generate_video` and `generate_audio` are both False; at least one must be True.")
        if generate_audio and self.audio_vae is None and output_type != "latent":
            raise ValueError("`generate_audio=True` needs an `audio_vae` component; this pipeline has none.")
        if output_type not in ("np", "pt", "pil", "latent"):
            raise ValueError(f"`output_type` must be one of 'np', 'pt', 'pil', 'latent'; got {output_type!r}.")
        if sigmas is None and (not isinstance(num_inference_steps, int) or num_inference_steps < 1):
            raise ValueError(f"`num_inference_steps` must be an integer >= 1, got {num_inference_steps!r}.")

        config = self.transformer.config
        if self.vae_spec.latent_channels != config.out_channels:
            raise ValueError(
                f"The `vae` has {self.vae_spec.latent_channels} latent channels but the transformer expects "
                f"out_channels={config.out_channels}; load matching components."
            )
        if self.audio_spec is not None and (
            (self.audio_spec.sample_rate, self.audio_spec.samples_per_latent, self.audio_spec.latent_channels)
            != (config.audio_sample_rate, config.audio_samples_per_latent, config.audio_in_channels)
        ):
            raise ValueError(
                f"The `audio_vae` ({self.audio_spec.sample_rate} Hz, {self.audio_spec.samples_per_latent} samples per "
                f"latent, {self.audio_spec.latent_channels} channels) does not match the transformer config "
                f"({config.audio_sample_rate} Hz, {config.audio_samples_per_latent}, {config.audio_in_channels})."
            )
        multiple = self.vae_spec.spatial_compression * self.transformer.config.patch_size
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % multiple:
                raise ValueError(
                    f"`{name}` must be a positive multiple of {multiple} (VAE spatial compression "
                    f"{self.vae_spec.spatial_compression} x patch size {self.transformer.config.patch_size}), got "
                    f"{value!r}."
                )
        temporal = self.vae_spec.temporal_compression
        if not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % temporal:
            raise ValueError(
                f"`num_frames` must be of the form {temporal}k+1 (1, {temporal + 1}, {2 * temporal + 1}, ...) for the "
                f"causal VAE, got {num_frames!r}."
            )
        if fps != self.transformer.config.fps:
            raise ValueError(
                f"`fps` must be the transformer's timeline fps {self.transformer.config.fps} (its audio RoPE places "
                f"audio on that timeline), got {fps!r}."
            )
        if audio_duration is not None:
            if not isinstance(audio_duration, (int, float)) or audio_duration <= 0:
                raise ValueError(f"`audio_duration` must be a positive number of seconds, got {audio_duration!r}.")
            video_duration = num_frames / fps
            tolerance = temporal / fps  # one video latent frame
            if generate_video and generate_audio and abs(audio_duration - video_duration) > tolerance:
                raise ValueError(
                    f"`audio_duration`={audio_duration}s does not match the video's {video_duration:.3f}s "
                    f"({num_frames} frames at {fps} fps); joint generation accepts a difference of at most one video "
                    f"latent frame ({tolerance:.3f}s). Leave it unset to use the video's duration."
                )
        if callback_on_step_end_tensor_inputs is not None and not all(
            k in self._callback_tensor_inputs for k in callback_on_step_end_tensor_inputs
        ):
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` must be a subset of {self._callback_tensor_inputs}, got "
                f"{callback_on_step_end_tensor_inputs}."
            )

    def prepare_latents(
        self,
        batch_size: int,
        height: int,
        width: int,
        num_frames: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        spec = self.vae_spec
        shape = (
            batch_size,
            spec.latent_channels,
            (num_frames - 1) // spec.temporal_compression + 1,
            height // spec.spatial_compression,
            width // spec.spatial_compression,
        )
        return _noise_or_given("latents", latents, shape, generator, device, dtype)

    def prepare_audio_latents(
        self,
        batch_size: int,
        num_audio_latents: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        audio_latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        shape = (batch_size, self.transformer.config.audio_in_channels, num_audio_latents)
        return _noise_or_given("audio_latents", audio_latents, shape, generator, device, dtype)

    # ------------------------------------------------------------------ properties

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def audio_guidance_scale(self) -> float:
        return self._audio_guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return (self._generate_video and self._guidance_scale > 1) or (
            self._generate_audio and self._audio_guidance_scale > 1
        )

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def attention_kwargs(self) -> dict[str, Any] | None:
        return self._attention_kwargs

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
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
        generate_audio: bool = True,
        num_inference_steps: int = 30,
        sigmas: list[float] | None = None,
        guidance_scale: float = 5.0,
        audio_guidance_scale: float | None = None,
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
            num_frames (`int`, *optional*): `4k+1` frames; defaults to the pipeline config.
            fps (`float`, *optional*): frames per second; must equal the transformer's timeline fps (its default).
            audio_duration (`float`, *optional*): seconds of audio; defaults to the video's `num_frames / fps`.
            generate_video, generate_audio (`bool`): T2AV (both), T2V or T2A.
            num_inference_steps (`int`, defaults to 30): denoising steps (ignored when `sigmas` is given).
            sigmas (`list[float]`, *optional*): custom noise levels from 1 towards 0, passed to the scheduler.
            guidance_scale (`float`, defaults to 5.0): classifier-free guidance of the video; 1 disables it.
            audio_guidance_scale (`float`, *optional*): guidance of the audio; defaults to `guidance_scale`. With both
                at 1 there is one transformer call per step; otherwise two.
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
                each step; it may return a dict that replaces any of `callback_on_step_end_tensor_inputs`.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): subset of `_callback_tensor_inputs`.
            max_sequence_length (`int`, defaults to 512): maximum instruction tokens after the system prompt.
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
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        height = height or self.config.default_height
        width = width or self.config.default_width
        num_frames = num_frames or self.config.default_num_frames
        fps = fps or self.transformer.config.fps
        audio_guidance_scale = guidance_scale if audio_guidance_scale is None else audio_guidance_scale

        # 1. Check inputs
        self.check_inputs(
            prompt, prompt_embeds, negative_prompt, negative_prompt_embeds, height, width, num_frames, fps,
            audio_duration, generate_video, generate_audio, num_inference_steps, sigmas, output_type,
            callback_on_step_end_tensor_inputs,
        )  # fmt: skip
        keyframe_indices = self.check_keyframes(
            keyframe_indices, num_keyframes, keyframe_height, keyframe_width, height, width, num_frames, generate_video
        )
        keyframe_height, keyframe_width = keyframe_height or 2 * height, keyframe_width or 2 * width
        self._guidance_scale = guidance_scale
        self._audio_guidance_scale = audio_guidance_scale
        self._generate_video, self._generate_audio = generate_video, generate_audio
        self._attention_kwargs = attention_kwargs
        self._interrupt = False
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

        # 3. Timesteps: one noise level shared by video and audio; each modality steps its own scheduler copy.
        timesteps = self.prepare_timesteps(num_inference_steps, sigmas, device)

        # 4. Latents
        if generate_video:
            latents = self.prepare_latents(
                batch_size, height, width, num_frames, torch.float32, device, generator, latents
            )
            # Text-to-video: no condition frames, so every latent frame holds the black-image latent, mask 0.
            condition = build_video_condition(self.vae, batch_size, num_frames, height, width).as_channels()
            condition = condition.to(self.transformer.dtype)
        else:
            latents = None
        keyframe_latents = keyframe_condition = keyframe_positions = None
        if keyframe_indices:
            spatial = self.vae_spec.spatial_compression
            keyframe_shape = (
                batch_size, self.vae_spec.latent_channels, len(keyframe_indices), keyframe_height // spatial,
                keyframe_width // spatial,
            )  # fmt: skip
            keyframe_latents = randn_tensor(keyframe_shape, generator=generator, device=device, dtype=torch.float32)
            keyframe_condition = build_video_condition(self.vae, batch_size, 1, keyframe_height, keyframe_width)
            keyframe_condition = keyframe_condition.as_channels().expand(-1, -1, len(keyframe_indices), -1, -1)
            keyframe_condition = keyframe_condition.to(self.transformer.dtype)
            temporal = self.vae_spec.temporal_compression
            keyframe_positions = torch.tensor([i / temporal for i in keyframe_indices], device=device)
        if generate_audio:
            spec = self.audio_spec or _audio_spec_from_transformer(self.transformer)
            audio_duration = audio_duration or num_frames / fps
            # Cover the whole duration; the decoded waveform is trimmed to it.
            num_audio_latents = math.ceil(audio_duration * spec.sample_rate / spec.samples_per_latent)
            audio_latents = self.prepare_audio_latents(
                batch_size, num_audio_latents, torch.float32, device, generator, audio_latents
            )
        else:
            audio_latents = None

        # 5. Denoising loop
        latents, audio_latents, keyframe_latents = self.denoise(
            latents,
            audio_latents,
            condition if generate_video else None,
            timesteps,
            prompt_embeds,
            prompt_attention_mask,
            negative_prompt_embeds,
            negative_prompt_attention_mask,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            keyframe_latents=keyframe_latents,
            keyframe_condition=keyframe_condition,
            keyframe_positions=keyframe_positions,
        )

        # 6. Decode
        keyframes = keyframe_latents
        if output_type == "latent":
            frames, audio, sample_rate = latents, audio_latents, None
        else:
            frames = self.decode_latents(latents) if generate_video else None
            audio = self.decode_audio_latents(audio_latents, audio_duration) if generate_audio else None
            frames, audio = self.format_outputs(frames, audio, output_type)
            sample_rate = self.audio_spec.sample_rate if generate_audio else None
            if keyframe_latents is not None:
                # Each keyframe is a one-frame latent video: decode them as a batch of single frames.
                single_frames = keyframe_latents.movedim(2, 1).flatten(0, 1)[:, :, None]
                decoded = self.decode_latents(single_frames).unflatten(0, (batch_size, -1)).squeeze(2)
                keyframes, _ = self.format_outputs(decoded, None, output_type)
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
    ) -> list[int]:
        """Validate the high-res keyframe request; returns the pixel frame indices (empty without keyframes)."""
        if keyframe_indices is None and num_keyframes is None:
            return []
        if keyframe_indices is not None and num_keyframes is not None:
            raise ValueError("Pass at most one of `keyframe_indices` or `num_keyframes`; got both.")
        if not generate_video:
            raise ValueError("High-resolution keyframes are part of the video; they need `generate_video=True`.")
        temporal = self.vae_spec.temporal_compression
        num_latent_frames = (num_frames - 1) // temporal + 1
        if num_keyframes is not None:
            if not isinstance(num_keyframes, int) or not 1 <= num_keyframes <= num_latent_frames:
                raise ValueError(
                    f"`num_keyframes` must be an integer in [1, {num_latent_frames}] (one per latent frame at most), "
                    f"got {num_keyframes!r}."
                )
            latent_indices = np.linspace(0, num_latent_frames - 1, num_keyframes).round().astype(int)
            keyframe_indices = [int(i) * temporal for i in latent_indices]
        if not all(isinstance(i, int) and 0 <= i < num_frames for i in keyframe_indices):
            raise ValueError(
                f"`keyframe_indices` must be frame indices in [0, num_frames={num_frames}), got {keyframe_indices}."
            )
        latent_positions = [math.ceil(i / temporal) for i in keyframe_indices]
        if len(set(latent_positions)) != len(latent_positions):
            raise ValueError(
                f"`keyframe_indices` {keyframe_indices} fall in the same latent frames {latent_positions}; use at most "
                f"one keyframe per group of {temporal} frames."
            )
        for name, size, low in (
            ("keyframe_height", keyframe_height, height),
            ("keyframe_width", keyframe_width, width),
        ):
            if size is not None and (not isinstance(size, int) or size <= 0 or size % low):
                raise ValueError(
                    f"`{name}` must be a positive integer multiple of the video's {low} px (keyframes share the "
                    f"low-res RoPE frame scaled by an integer factor), got {size!r}."
                )
        return list(keyframe_indices)

    def prepare_timesteps(self, num_inference_steps: int, sigmas: list[float] | None, device) -> torch.Tensor:
        """One noise schedule for every modality (the paper shares t between video and audio)."""
        if sigmas is None:
            sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
        self.scheduler.set_timesteps(sigmas=sigmas, device=device)
        self._num_timesteps = len(self.scheduler.timesteps)
        return self.scheduler.timesteps

    def denoise(
        self,
        latents: torch.Tensor | None,
        audio_latents: torch.Tensor | None,
        condition: torch.Tensor | None,
        timesteps: torch.Tensor,
        prompt_embeds: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        negative_prompt_embeds: torch.Tensor | None,
        negative_prompt_attention_mask: torch.Tensor | None,
        callback_on_step_end: Callable | None,
        callback_on_step_end_tensor_inputs: list[str],
        reference_latents: torch.Tensor | None = None,
        audio_reference_latents: torch.Tensor | None = None,
        preserved: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        keyframe_latents: torch.Tensor | None = None,
        keyframe_condition: torch.Tensor | None = None,
        keyframe_positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The flow-matching loop over video latents `(B, C, F, h, w)`, audio latents `(B, C_a, L)` and high-res
        keyframe latents `(B, C, K, hk, wk)` (any may be `None`). `condition` `(B, C+1, F, h, w)` (and
        `keyframe_condition`) is concatenated to its latents on channels at every step.

        `preserved = (known_latents, keep_mask, noise)` re-injects known video latents after every step at the next
        noise level, `(1 - sigma) * known + sigma * noise` where `keep_mask` is 1, so they end exactly known.
        """
        transformer_dtype = self.transformer.dtype
        batch_size = prompt_embeds.shape[0]
        sigmas = self.scheduler.sigmas
        # Each latent stream steps its own copy of the (already set) scheduler: `step` advances a step index.
        audio_scheduler, keyframe_scheduler = copy.deepcopy(self.scheduler), copy.deepcopy(self.scheduler)
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                model_inputs = {
                    "hidden_states": None
                    if latents is None
                    else torch.cat([latents.to(transformer_dtype), condition], dim=1),
                    "audio_hidden_states": None if audio_latents is None else audio_latents.to(transformer_dtype),
                    "timestep": t.expand(batch_size),
                    "reference_latents": reference_latents,
                    "audio_reference_latents": audio_reference_latents,
                    "keyframe_hidden_states": None
                    if keyframe_latents is None
                    else torch.cat([keyframe_latents.to(transformer_dtype), keyframe_condition], dim=1),
                    "keyframe_positions": keyframe_positions,
                    "attention_kwargs": self.attention_kwargs,
                }
                prediction = self.transformer(
                    **model_inputs, encoder_hidden_states=prompt_embeds, encoder_attention_mask=prompt_attention_mask
                )
                noise_pred, audio_pred = prediction.sample, prediction.audio_sample
                keyframe_pred = prediction.keyframe_sample
                if self.do_classifier_free_guidance:
                    unconditional = self.transformer(
                        **model_inputs,
                        encoder_hidden_states=negative_prompt_embeds,
                        encoder_attention_mask=negative_prompt_attention_mask,
                    )
                    if latents is not None:
                        noise_pred = unconditional.sample + self.guidance_scale * (noise_pred - unconditional.sample)
                    if keyframe_latents is not None:
                        keyframe_pred = unconditional.keyframe_sample + self.guidance_scale * (
                            keyframe_pred - unconditional.keyframe_sample
                        )
                    if audio_latents is not None:
                        audio_pred = unconditional.audio_sample + self.audio_guidance_scale * (
                            audio_pred - unconditional.audio_sample
                        )

                if latents is not None:
                    latents = self.scheduler.step(noise_pred.float(), t, latents, return_dict=False)[0]
                    if preserved is not None:
                        known, keep, noise = preserved
                        sigma = sigmas[i + 1].to(latents.device)
                        latents = torch.lerp(latents, (1 - sigma) * known + sigma * noise, keep)
                if audio_latents is not None:
                    audio_latents = audio_scheduler.step(audio_pred.float(), t, audio_latents, return_dict=False)[0]
                if keyframe_latents is not None:
                    keyframe_latents = keyframe_scheduler.step(
                        keyframe_pred.float(), t, keyframe_latents, return_dict=False
                    )[0]

                if callback_on_step_end is not None:
                    step_tensors = {
                        "latents": latents,
                        "audio_latents": audio_latents,
                        "prompt_embeds": prompt_embeds,
                        "negative_prompt_embeds": negative_prompt_embeds,
                    }
                    callback_kwargs = {k: step_tensors[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                    audio_latents = callback_outputs.pop("audio_latents", audio_latents)
                    prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = callback_outputs.pop("negative_prompt_embeds", negative_prompt_embeds)
                progress_bar.update()
        return latents, audio_latents, keyframe_latents

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Video latents -> frames `(B, F, 3, H, W)` in [0, 1]."""
        return self.video_processor.postprocess_video(decode_video(self.vae, latents), output_type="pt")

    def decode_audio_latents(self, audio_latents: torch.Tensor, duration: float) -> torch.Tensor:
        """Audio latents -> waveform `(B, channels, samples)` in [-1, 1], trimmed to `duration` seconds."""
        waveform = decode_audio(self.audio_vae, self.vocoder, audio_latents).float()
        return waveform[..., : round(duration * self.audio_spec.sample_rate)].clamp(-1, 1)

    def format_outputs(self, frames: torch.Tensor | None, audio: torch.Tensor | None, output_type: str):
        """Frames `(B, F, 3, H, W)` in [0, 1] and audio `(B, ch, N)` -> the requested `output_type`."""
        if output_type == "pt":
            return frames, audio
        if frames is not None:
            frames = frames.permute(0, 1, 3, 4, 2).float().cpu().numpy()
            if output_type == "pil":
                frames = [self.video_processor.numpy_to_pil(video) for video in frames]
        return frames, None if audio is None else audio.cpu().numpy()


def _per_prompt_images(prompt_images: Any, num_prompts: int) -> list[list]:
    """Normalise `prompt_images` into one list of images per prompt."""
    if prompt_images is None:
        return [[] for _ in range(num_prompts)]
    if not isinstance(prompt_images, (list, tuple)):
        return [[prompt_images] for _ in range(num_prompts)]
    if prompt_images and all(isinstance(item, (list, tuple)) for item in prompt_images):
        if len(prompt_images) != num_prompts:
            raise ValueError(
                f"`prompt_images` given as a list of lists needs one list per prompt ({num_prompts}), got "
                f"{len(prompt_images)}."
            )
        return [list(item) for item in prompt_images]
    return [list(prompt_images) for _ in range(num_prompts)]


def _noise_or_given(name, given, shape, generator, device, dtype) -> torch.Tensor:
    if given is None:
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    if not isinstance(given, torch.Tensor) or tuple(given.shape) != tuple(shape):
        got = tuple(given.shape) if isinstance(given, torch.Tensor) else type(given).__name__
        raise ValueError(f"`{name}` must be a tensor of shape {tuple(shape)} for these settings, got {got}.")
    return given.to(device=device, dtype=dtype)


def _audio_spec_from_transformer(transformer: SkyReelsV4Transformer3DModel):
    """Audio timeline from the transformer config, for `output_type="latent"` without an audio VAE."""
    config = transformer.config
    return AudioVAESpec(config.audio_sample_rate, config.audio_samples_per_latent, config.audio_in_channels, 1)
