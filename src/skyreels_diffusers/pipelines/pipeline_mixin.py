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
"""What the three SkyReels-V4 pipelines share besides the denoising loop (`denoising.py`): prompt encoding with the
MLLM, per-stream schedulers, decoding and output formatting, and the state properties Diffusers pipelines expose.

The pipelines are siblings: each inherits this mixin and `DiffusionPipeline`, none inherits another.
"""

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.guiders.guider_utils import BaseGuidance
from diffusers.video_processor import VideoProcessor

from .denoising import LatentStream, LoopHooks, PassInputs, PreservedLatents
from .guidance import GuidanceArguments, check_guidance_arguments, multimodal_guider, needs_unconditional
from .preprocessing import to_pil
from .vae_utils import AudioVAESpec, audio_vae_spec, decode_audio, decode_video, video_vae_spec
from .validation import (
    GenerationLimits,
    check_bool,
    check_callback_inputs,
    check_choice,
    check_finite_tensor,
    check_generator,
    check_guidance_scale,
    check_int,
    check_number,
    check_prompt,
    check_sigmas,
    describe,
)


# What each work limit counts, in messages.
LIMIT_UNITS = {
    "max_video_pixels": "video pixels (height x width x frames x videos)",
    "max_audio_seconds": "seconds of audio generated with the clip",
}

DEFAULT_SYSTEM_PROMPT = (
    "You are a director describing a shot for a video with sound. Read the instruction: visual content in <text>, "
    "sound effects in <sfx>, speech in <dialogue>, singing in <singing>, music in <bgm>, and any reference images."
)


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

        # The system turn, identical for every prompt, is dropped when the template renders it as a prefix.
        system_text = processor.apply_chat_template(self._build_messages("", [])[:1], tokenize=False)
        prefix = tokenizer(system_text, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
        num_prefix = prefix.shape[1]
        has_prefix = (
            num_prefix < inputs["input_ids"].shape[1] and (inputs["input_ids"][:, :num_prefix] == prefix).all()
        )
        keep = (num_prefix if has_prefix else 0) + max_sequence_length
        if not flat_images and inputs["input_ids"].shape[1] > keep:
            # Only the first `max_sequence_length` tokens are used: cut the rest before the encoder runs on them, as
            # Diffusers pipelines truncate at tokenization (for a causal MLLM the kept tokens' states are unchanged).
            inputs = {key: value[:, :keep] for key, value in inputs.items()}

        encoder = self.text_encoder.base_model if hasattr(self.text_encoder, "base_model") else self.text_encoder
        hidden_states = encoder(**inputs, output_hidden_states=True).hidden_states[self.config.text_hidden_layer]
        mask = inputs["attention_mask"].bool()
        if has_prefix:
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
            dtype (`torch.dtype`, *optional*): of the returned embeddings; defaults to the transformer's, or the text
                encoder's in a pipeline without a transformer (precomputing embeddings).

        Returns:
            `(prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask)`, each
            repeated `num_videos_per_prompt` times; the negatives are `None` without guidance.
        """
        device = device or self._execution_device
        if dtype is None:
            dtype = (self.transformer if self.transformer is not None else self.text_encoder).dtype
        if prompt_embeds is not None and prompt_images is not None:
            raise ValueError("`prompt_images` belong to `prompt`; they cannot be combined with `prompt_embeds`.")
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            images = per_prompt_images(prompt_images, len(prompts), getattr(self, "limits", None))
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

        prompt_embeds, prompt_attention_mask = _per_video(
            prompt_embeds, prompt_attention_mask, num_videos_per_prompt, device, dtype
        )
        negative_prompt_embeds, negative_prompt_attention_mask = _per_video(
            negative_prompt_embeds, negative_prompt_attention_mask, num_videos_per_prompt, device, dtype
        )
        return prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask

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

    # ------------------------------------------------------------------ checks and latents

    def _check_prompt_inputs(
        self,
        prompt,
        negative_prompt,
        prompt_embeds,
        prompt_attention_mask,
        negative_prompt_embeds,
        negative_prompt_attention_mask,
    ) -> int:
        """The prompt arguments of every pipeline (text or embeddings, positive and negative); returns the number of
        prompts."""
        limits = self.limits
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError(
                "Pass exactly one of `prompt` or `prompt_embeds`; got "
                + ("both." if prompt is not None else "neither.")
            )
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass at most one of `negative_prompt` or `negative_prompt_embeds`; got both.")
        prompts = check_prompt("prompt", prompt, limits, optional=True)
        negatives = check_prompt("negative_prompt", negative_prompt, limits, optional=True)
        num_prompts = len(prompts) if prompts is not None else self._check_embeds(prompt_embeds, prompt_attention_mask)
        if negative_prompt_embeds is not None:
            if self._check_embeds(negative_prompt_embeds, negative_prompt_attention_mask, "negative_") != num_prompts:
                raise ValueError(
                    f"`negative_prompt_embeds` has batch {negative_prompt_embeds.shape[0]}; the prompts give "
                    f"{num_prompts}."
                )
        if negatives is not None and len(negatives) not in (1, num_prompts) and not isinstance(negative_prompt, str):
            raise ValueError(
                f"`negative_prompt` must be a string or a list of {num_prompts} strings (one per prompt), got a list of "
                f"{len(negatives)}."
            )
        return num_prompts

    def _check_call_settings(
        self,
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
    ) -> None:
        """The settings every pipeline call takes: steps or sigmas, guidance, generators, output and callbacks."""
        limits = self.limits
        if sigmas is None:
            check_int(
                "num_inference_steps",
                num_inference_steps,
                1,
                limits.max_inference_steps,
                why=" (`pipe.limits.max_inference_steps`)",
            )
        else:
            check_sigmas(sigmas, limits)
        check_guidance_scale("guidance_scale", guidance_scale, limits)
        check_choice("output_type", output_type, ("np", "pt", "pil", "latent"))
        check_bool("return_dict", return_dict)
        check_int("max_sequence_length", max_sequence_length, 1, 100_000)
        check_generator(generator, batch_size)
        if attention_kwargs is not None and not isinstance(attention_kwargs, dict):
            raise TypeError(f"`attention_kwargs` must be a dict or None, got {describe(attention_kwargs)}.")
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise TypeError(f"`callback_on_step_end` must be callable, got {describe(callback_on_step_end)}.")
        check_callback_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def check_inputs(
        self,
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
    ) -> int:
        """Every argument shared by the base and the inpainting pipelines, checked before any work, within
        `self.limits`. Returns the batch size (prompts x videos per prompt)."""
        limits = self.limits
        num_prompts = self._check_prompt_inputs(
            prompt,
            negative_prompt,
            prompt_embeds,
            prompt_attention_mask,
            negative_prompt_embeds,
            negative_prompt_attention_mask,
        )
        videos = check_int("num_videos_per_prompt", num_videos_per_prompt, 1, limits.max_batch)
        batch_size = num_prompts * videos
        if batch_size > limits.max_batch:
            raise ValueError(
                f"{num_prompts} prompts x num_videos_per_prompt={videos} = {batch_size} videos; the limit is "
                f"{limits.max_batch} (`pipe.limits.max_batch`)."
            )
        check_bool("generate_video", generate_video)
        check_bool("generate_audio", generate_audio)
        if not (generate_video or generate_audio):
            raise ValueError("`generate_video` and `generate_audio` are both False; at least one must be True.")
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
        if generate_audio and self.audio_vae is None and output_type != "latent":
            raise ValueError("`generate_audio=True` needs an `audio_vae` component; this pipeline has none.")
        check_guidance_scale("audio_guidance_scale", audio_guidance_scale, limits)
        check_int("video_lead_steps", video_lead_steps, 0, limits.max_inference_steps)

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
        multiple = self.vae_spec.spatial_compression * config.patch_size
        for name, value in (("height", height), ("width", width)):
            check_int(name, value, multiple, limits.max_side, why=f" and a multiple of {multiple}")
            if value % multiple:
                raise ValueError(
                    f"`{name}` must be a multiple of {multiple} (VAE spatial compression "
                    f"{self.vae_spec.spatial_compression} x patch size {config.patch_size}), got {value}."
                )
        temporal = self.vae_spec.temporal_compression
        check_int("num_frames", num_frames, 1, why=f" of the form {temporal}k+1")
        if (num_frames - 1) % temporal:
            raise ValueError(
                f"`num_frames` must be of the form {temporal}k+1 (1, {temporal + 1}, {2 * temporal + 1}, ...) for the "
                f"causal VAE, got {num_frames}."
            )
        if check_number("fps", fps) != config.fps:
            raise ValueError(
                f"`fps` must be the transformer's timeline fps {config.fps} (its audio RoPE places audio on that "
                f"timeline), got {fps!r}."
            )
        audio_follows_video = generate_audio and audio_duration is None
        if generate_video or audio_follows_video:
            most, limit = self.frame_limit(height, width, batch_size, generate_video, audio_follows_video)
            if num_frames > most:
                bound = f"`pipe.limits.{limit}` = {getattr(limits, limit):,} {LIMIT_UNITS[limit]}"
                if most < 1 and limit == "max_video_pixels":
                    raise ValueError(
                        f"`height` x `width` = {height} x {width} is too large: one frame of {batch_size} video(s) "
                        f"already exceeds {bound}."
                    )
                size = f" at {height}x{width} for {batch_size} video(s)" if limit == "max_video_pixels" else ""
                raise ValueError(
                    f"`num_frames`={num_frames} is more than one call may make: at most {most} frames "
                    f"({most / fps:g} s at {fps:g} fps){size}, set by {bound}."
                )
        video_duration = num_frames / fps
        if audio_duration is not None:
            check_number(
                "audio_duration",
                audio_duration,
                0.0,
                limits.max_audio_seconds,
                minimum_inclusive=False,
                why=" seconds (`pipe.limits.max_audio_seconds`)",
            )
            tolerance = temporal / fps  # one video latent frame
            if generate_video and generate_audio and abs(audio_duration - video_duration) > tolerance:
                raise ValueError(
                    f"`audio_duration`={audio_duration}s does not match the video's {video_duration:.3f}s "
                    f"({num_frames} frames at {fps} fps); joint generation accepts a difference of at most one video "
                    f"latent frame ({tolerance:.3f}s). Leave it unset to use the video's duration."
                )
        if latents is not None and generate_video:
            expected = self.latent_shape(batch_size, height, width, num_frames)
            check_finite_tensor("latents", latents, 5, f"{expected}")
            if tuple(latents.shape) != expected:
                raise ValueError(f"`latents` must have shape {expected} for these settings, got {describe(latents)}.")
        if audio_latents is not None and generate_audio:
            spec = self.audio_spec or audio_spec_from_transformer(self.transformer)
            duration = video_duration if audio_duration is None else audio_duration
            expected = (batch_size, config.audio_in_channels, spec.num_latents(duration))
            check_finite_tensor("audio_latents", audio_latents, 3, f"{expected}")
            if tuple(audio_latents.shape) != expected:
                raise ValueError(
                    f"`audio_latents` must have shape {expected} for these settings, got {describe(audio_latents)}."
                )
        return batch_size

    def frame_limit(
        self, height: int, width: int, batch_size: int = 1, generate_video: bool = True, generate_audio: bool = True
    ) -> tuple[int, str]:
        """The most frames one call may make at `height x width` for `batch_size` videos within `self.limits` (of the
        VAE's form `t*k+1`; 0 when even one frame is too many), and the name of the limit that sets it:
        `"max_video_pixels"`, or `"max_audio_seconds"` when the audio generated with the clip lasts as long as it.
        The `num_frames` check and the CLI's `--duration` check both read it."""
        limits, temporal = self.limits, self.vae_spec.temporal_compression
        bounds = []
        if generate_video:
            bounds.append((limits.max_video_pixels // (batch_size * height * width), "max_video_pixels"))
        if generate_audio:
            bounds.append((math.floor(limits.max_audio_seconds * self.transformer.config.fps), "max_audio_seconds"))
        frames, limit = min(bounds)
        return ((frames - 1) // temporal * temporal + 1 if frames >= 1 else 0), limit

    def _check_embeds(self, embeds, mask, prefix: str = "") -> int:
        """`{prefix}prompt_embeds` `(B, S, D)` (finite) and its optional mask `(B, S)`; returns B."""
        check_finite_tensor(f"{prefix}prompt_embeds", embeds, 3, "(batch, tokens, text_embed_dim)")
        if embeds.shape[0] < 1 or embeds.shape[1] < 1:
            raise ValueError(
                f"`{prefix}prompt_embeds` must hold at least one prompt and one token, got {describe(embeds)}."
            )
        if embeds.shape[-1] != self.transformer.config.text_embed_dim:
            raise ValueError(
                f"`{prefix}prompt_embeds` must have text_embed_dim={self.transformer.config.text_embed_dim} features, "
                f"got {describe(embeds)}."
            )
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(embeds.shape[:2]):
                raise ValueError(
                    f"`{prefix}prompt_attention_mask` must be a tensor of shape {tuple(embeds.shape[:2])}, got "
                    f"{describe(mask)}."
                )
            empty = (~mask.bool().any(dim=1)).nonzero()
            if len(empty):  # attention over no token at all is NaN
                raise ValueError(
                    f"`{prefix}prompt_attention_mask` row {int(empty[0])} has no real token (all False); every prompt "
                    "needs at least one."
                )
        return embeds.shape[0]

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
        shape = self.latent_shape(batch_size, height, width, num_frames)
        return noise_or_given("latents", latents, shape, generator, device, dtype)

    def latent_shape(self, batch_size: int, height: int, width: int, num_frames: int) -> tuple[int, ...]:
        """`(B, C, F', h, w)` of the video latents of `num_frames` frames of `height x width`."""
        spec = self.vae_spec
        return (
            batch_size,
            spec.latent_channels,
            (num_frames - 1) // spec.temporal_compression + 1,
            height // spec.spatial_compression,
            width // spec.spatial_compression,
        )

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
        return noise_or_given("audio_latents", audio_latents, shape, generator, device, dtype)

    # ------------------------------------------------------------------ schedules, streams and the loop's hooks

    def prepare_timesteps(self, num_inference_steps: int, sigmas: list[float] | None, device) -> torch.Tensor:
        """Sets the scheduler's noise schedule (each latent stream then steps its own copy) and returns its
        timesteps."""
        self.scheduler.set_timesteps(
            sigmas=default_sigmas(num_inference_steps) if sigmas is None else sigmas, device=device
        )
        self._num_timesteps = len(self.scheduler.timesteps)
        return self.scheduler.timesteps

    def latent_stream(
        self,
        kind: str,
        latents: torch.Tensor,
        timesteps: torch.Tensor | None,
        condition: torch.Tensor | None = None,
        guider: BaseGuidance | None = None,
        start: int = 0,
        preserved: PreservedLatents | None = None,
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

    # ------------------------------------------------------------------ decoding and outputs

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


def _per_video(embeds, mask, num_videos_per_prompt: int, device, dtype):
    """Embeddings and mask repeated for every video of a prompt, on `device` (embeddings in `dtype`)."""
    if embeds is None:
        return None, None
    embeds = embeds.to(device=device, dtype=dtype).repeat_interleave(num_videos_per_prompt, dim=0)
    return embeds, mask.to(device=device).bool().repeat_interleave(num_videos_per_prompt, dim=0)


def per_prompt_images(prompt_images: Any, num_prompts: int, limits: GenerationLimits | None = None) -> list[list]:
    """Normalise `prompt_images` into one list of RGB PIL images per prompt, checking each image (type, size within
    `limits.max_side`, finite values in range) and the count per prompt (`limits.max_prompt_images`)."""
    if prompt_images is None:
        return [[] for _ in range(num_prompts)]
    if not isinstance(prompt_images, (list, tuple)):
        groups = [[prompt_images]] * num_prompts
    elif prompt_images and all(isinstance(item, (list, tuple)) for item in prompt_images):
        if len(prompt_images) != num_prompts:
            raise ValueError(
                f"`prompt_images` given as a list of lists needs one list per prompt ({num_prompts}), got "
                f"{len(prompt_images)}."
            )
        groups = prompt_images
    else:
        groups = [prompt_images] * num_prompts
    max_side = limits.max_side if limits is not None else None
    if limits is not None and max(len(group) for group in groups) > limits.max_prompt_images:
        raise ValueError(
            f"`prompt_images` has {max(len(group) for group in groups)} images for one prompt; the limit is "
            f"{limits.max_prompt_images} (`pipe.limits.max_prompt_images`)."
        )
    converted = {}  # an image shared by every prompt is converted once
    for group in groups:
        for image in group:
            if id(image) not in converted:
                converted[id(image)] = to_pil("prompt_images", image, max_side)
    return [[converted[id(image)] for image in group] for group in groups]


def noise_or_given(name, given, shape, generator, device, dtype) -> torch.Tensor:
    """Fresh noise of `shape`, or the caller's own starting latents after a shape check."""
    from diffusers.utils.torch_utils import randn_tensor

    if given is None:
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    if not isinstance(given, torch.Tensor) or tuple(given.shape) != tuple(shape):
        got = tuple(given.shape) if isinstance(given, torch.Tensor) else type(given).__name__
        raise ValueError(f"`{name}` must be a tensor of shape {tuple(shape)} for these settings, got {got}.")
    return given.to(device=device, dtype=dtype)


def audio_spec_from_transformer(transformer) -> AudioVAESpec:
    """Audio timeline from the transformer config, for `output_type="latent"` without an audio VAE."""
    config = transformer.config
    return AudioVAESpec(config.audio_sample_rate, config.audio_samples_per_latent, config.audio_in_channels, 1)


def num_frames_for_duration(duration: float, fps: float, temporal_compression: int) -> int:
    """The frame count of the form `temporal_compression * k + 1` whose duration `num_frames / fps` is closest to
    `duration` seconds (at least one frame)."""
    k = max(0, round((duration * fps - 1) / temporal_compression))
    return k * temporal_compression + 1


def default_sigmas(num_inference_steps: int) -> np.ndarray:
    """Noise levels from 1 towards 0 (the scheduler's shift is applied on top)."""
    return np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
