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
from collections.abc import Callable
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.video_processor import VideoProcessor

from .denoising import LatentStream, LoopHooks, PassInputs, PreservedLatents, cfg_guider
from .vae_utils import AudioVAESpec, audio_vae_spec, decode_audio, decode_video, video_vae_spec


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
        """Latent geometry of the registered VAEs and the frame post-processor."""
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
            dtype (`torch.dtype`, *optional*): of the returned embeddings; defaults to the transformer's, or the text
                encoder's in a pipeline without a transformer (precomputing embeddings).

        Returns:
            `(prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask)`, each
            repeated `num_videos_per_prompt` times; the negatives are `None` without guidance.
        """
        device = device or self._execution_device
        if dtype is None:
            dtype = (self.transformer if self.transformer is not None else self.text_encoder).dtype
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            images = per_prompt_images(prompt_images, len(prompts))
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
        return noise_or_given("latents", latents, shape, generator, device, dtype)

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
        guidance_scale: float = 1.0,
        start: int = 0,
        preserved: PreservedLatents | None = None,
    ) -> LatentStream:
        """A `LatentStream` of `kind` ("video", "audio", "keyframes") stepping a private copy of the (already set)
        scheduler through `timesteps`, guided by classifier-free guidance at `guidance_scale`. `timesteps=None`
        makes it given: clean latents at timestep 0, never updated."""
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
            guider=None if given else cfg_guider(guidance_scale),
            preserved=preserved,
        )

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
        return (self._generate_video and self._guidance_scale > 1) or (
            self._generate_audio and self._audio_guidance_scale > 1
        )

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


def per_prompt_images(prompt_images: Any, num_prompts: int) -> list[list]:
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
