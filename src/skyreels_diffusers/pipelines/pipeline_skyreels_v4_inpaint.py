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
"""SkyReelsV4InpaintPipeline: every conditioned task through one interface.

Image-to-video, start-end interpolation, frame conditions, extension, masked editing and video-to-audio are choices of the
channel-concatenated condition (see `conditioning.py`): video-to-audio keeps every frame, so the video is given
whole and only the audio is generated. Audio-to-video gives the audio track instead. Reference images/frames and an
audio reference are prepended in context to the video and audio tokens.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
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
from diffusers.utils import replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

from ..loaders import SkyReelsV4LoraLoaderMixin
from ..models import SkyReelsV4Transformer3DModel
from .conditioning import VideoCondition, build_video_condition, latent_frame_index
from .denoising import LatentStream, PreservedLatents, denoise, num_loop_iterations
from .guidance import GuidanceArguments
from .loading import SkyReelsV4PipelineLoadingMixin
from .pipeline_mixin import (
    DEFAULT_SYSTEM_PROMPT,
    SkyReelsV4PipelineMixin,
    audio_spec_from_transformer,
    num_frames_for_duration,
    per_prompt_images,
)
from .pipeline_output import SkyReelsV4PipelineOutput
from .preprocessing import (
    check_frame_list,
    check_list,
    fit_with_black_padding,
    frame_size,
    frames_to_tensor,
    mask_to_tensor,
    pixels_for_vae,
    to_pil,
)
from .vae_utils import encode_audio_track, encode_video
from .validation import check_bool, check_int, check_number


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from skyreels_diffusers import SkyReelsV4InpaintPipeline, SkyReelsV4Pipeline
        >>> from skyreels_diffusers.utils import export_to_video_with_audio

        >>> pipe = SkyReelsV4InpaintPipeline.from_pipe(SkyReelsV4Pipeline.from_pretrained("pipelines/skyreels-v4-tiny"))
        >>> foley = pipe("<sfx>A knock each time the ball hits a wall.</sfx>", video="bounce.mp4")  # video-to-audio
        >>> clip = pipe("<text>A red circle bounces.</text>", audio="knocks.wav")  # audio-to-video
        >>> export_to_video_with_audio(
        ...     clip.frames[0], "clip.mp4", fps=clip.fps, audio=clip.audio[0], audio_sample_rate=clip.audio_sample_rate
        ... )
        ```
"""

# Peak amplitude below which a given audio track counts as silent (-80 dBFS): nothing for a video to follow.
SILENCE_PEAK = 1e-4


@dataclass
class InpaintMedia:
    """The media of an inpainting call, checked and resolved to the clip, before any encoding.

    Args:
        num_frames: the clip's frames (from the call, the video, or the given audio).
        video: the source frames as given (list, array or tensor; a file is read first), or `None`.
        video_given: video-to-audio: `video` alone, every frame kept and returned as given.
        generate_audio: whether audio is generated (off when it is given).
        given_audio: the given soundtrack `(channels, samples)` at the audio VAE's rate (audio-to-video).
        references: reference images and reference-video frames.
        preserve_unmasked: re-inject the known latents each step and composite the kept pixels into the output.
        source_frames: `video` at the target size `(F, 3, H, W)` in [0, 1], cut or black-padded to `num_frames`.
        frame_conditions: `[(pixel_frame_index, (1, 3, H, W) in [-1, 1])]` from `image`, `last_image`,
            `frame_conditions`.
        pixel_keep: the keep-mask `(1 or B, 1, F, H, W)` of extension or editing, or `None`.
        audio_reference: the audio reference `(channels, samples)` at the audio VAE's rate, or `None`.
    """

    num_frames: int
    video: Any
    video_given: bool
    generate_audio: bool
    given_audio: torch.Tensor | None
    references: list
    preserve_unmasked: bool | None
    source_frames: torch.Tensor | None = None
    frame_conditions: list = field(default_factory=list)
    pixel_keep: torch.Tensor | None = None
    audio_reference: torch.Tensor | None = None


@dataclass
class InpaintConditions:
    """The conditions of an inpainting call on the latent grid (batch-expanded)."""

    video: VideoCondition
    source_latents: torch.Tensor | None
    reference_latents: torch.Tensor | None
    audio_reference_latents: torch.Tensor | None


class SkyReelsV4InpaintSteps:
    """The steps of `SkyReelsV4InpaintPipeline.__call__`: checking and reading the media, the reference images of the
    instruction, the conditions, the latent streams and the outputs. They read only components and config, so the
    modular blocks (`skyreels_diffusers.modular_pipelines`) call the same methods and give the same outputs."""

    def check_media(
        self,
        video: Any,
        num_condition_frames: int | None,
        mask: Any,
        preserve_unmasked: bool | None,
        audio: Any,
        audio_sample_rate: int | None,
        reference_images: list | None,
        reference_video: list | None,
        audio_reference: Any,
        keep_input_audio: bool,
        height: int,
        width: int,
        num_frames: int | None,
        fps: float,
        audio_duration: float | None,
        generate_audio: bool,
        audio_reference_sample_rate: int | None = None,
    ) -> InpaintMedia:
        """Checks this pipeline's own arguments and reads the media files (within `self.limits`); resolves which
        modality is given and the clip's `num_frames`."""
        limits = self.limits
        check_bool("keep_input_audio", keep_input_audio)
        check_bool("generate_audio", generate_audio)
        if preserve_unmasked is not None:
            check_bool("preserve_unmasked", preserve_unmasked)
        if num_condition_frames is not None:
            check_int("num_condition_frames", num_condition_frames, 1)
        for name, value in (("height", height), ("width", width)):
            check_int(name, value, 1, limits.max_side)
        check_number("fps", fps, 0.0, minimum_inclusive=False)
        if keep_input_audio or audio is not None or audio_reference is not None:
            if self.audio_vae is None:
                name = "keep_input_audio" if keep_input_audio else "audio" if audio is not None else "audio_reference"
                raise ValueError(f"`{name}` needs an `audio_vae` component to encode it; this pipeline has none.")
        if keep_input_audio:
            if not isinstance(video, (str, os.PathLike)):
                raise ValueError("`keep_input_audio=True` needs `video` as a file path with an audio track.")
            if audio is not None:
                raise ValueError("Pass at most one of `audio` or `keep_input_audio=True`; got both.")
        original_video = video
        if isinstance(video, (str, os.PathLike)):
            from ..utils.media import load_video, resample_frames

            video, video_fps = load_video(
                original_video,
                max_frames=limits.max_input_frames,
                max_side=limits.max_side,
                max_pixels=limits.max_input_pixels,
                name="video",
            )
            video = resample_frames(video, video_fps, fps)
        elif video is not None:
            check_frame_list("video", video, limits)
        video_given = video is not None and mask is None and num_condition_frames is None
        audio_given = keep_input_audio or audio is not None
        if video_given and (audio_given or not generate_audio):
            raise ValueError(
                "Nothing is left to generate: `video` alone gives every frame (video-to-audio), and the audio is "
                + ("given too (`audio` / `keep_input_audio`)." if audio_given else "off (`generate_audio=False`).")
            )
        generate_audio = generate_audio and not audio_given
        given_audio = None
        if keep_input_audio:
            from ..utils.media import load_video_audio

            _, _, given_audio = load_video_audio(
                original_video, self.audio_spec.sample_rate, num_channels=self.audio_spec.audio_channels
            )
            if given_audio is None:
                raise ValueError(f"`keep_input_audio=True`, but `video` {original_video!r} has no audio track.")
        elif audio is not None:
            given_audio = self._load_given_audio(audio, audio_sample_rate)
        if num_frames is None:
            if video is not None and not num_condition_frames:
                num_frames = len(video)
            elif given_audio is not None and not keep_input_audio:
                num_frames = self._frames_for_audio(given_audio)
            else:
                num_frames = self.config.default_num_frames
        check_int("num_frames", num_frames, 1)
        if keep_input_audio:  # the track covers the source; extension frames get silence
            num_samples = round(num_frames / fps * self.audio_spec.sample_rate)
            given_audio = torch.nn.functional.pad(given_audio, (0, max(0, num_samples - given_audio.shape[-1])))
        if given_audio is not None:
            self._check_audio_duration(given_audio, num_frames, fps, audio_duration)
        references = [
            *check_list("reference_images", reference_images),
            *check_list("reference_video", reference_video),
        ]
        if len(references) > self.config.max_references:
            raise ValueError(
                f"At most max_references={self.config.max_references} references (reference_images plus "
                f"reference_video frames) are allowed, got {len(references)}."
            )
        if references and video_given:
            raise ValueError(
                "`reference_images` / `reference_video` guide generated frames; with `video` alone "
                "(video-to-audio) no frame is generated."
            )
        if audio_reference is not None and not generate_audio:
            raise ValueError("`audio_reference` guides generated audio; here the audio is given or off.")
        media = InpaintMedia(
            num_frames, video, video_given, generate_audio, given_audio, references, preserve_unmasked
        )
        if audio_reference is not None:
            media.audio_reference = self._load_audio_reference(audio_reference, audio_reference_sample_rate)
        return media

    def prepare_frames(
        self,
        media: InpaintMedia,
        image: Any,
        last_image: Any,
        frame_conditions: list | None,
        mask: Any,
        num_condition_frames: int | None,
        height: int,
        width: int,
        batch_size: int = 1,
    ) -> None:
        """The pixel inputs at the target size (their own sizes were bounded by `check_media`): fills `media`'s
        `source_frames`, `frame_conditions`, `pixel_keep` and the default of `preserve_unmasked`. `batch_size` (the
        videos generated) is how many masks a batch of them may hold."""
        video, num_frames = media.video, media.num_frames
        source_frames = (
            None if video is None else frames_to_tensor("video", video, height, width, self.limits.max_side)
        )
        media.frame_conditions = self._collect_frame_conditions(
            image, last_image, frame_conditions, num_frames, height, width
        )
        if not media.video_given:
            media.pixel_keep = self._pixel_keep_mask(
                video, source_frames, mask, num_condition_frames, num_frames, batch_size
            )
        else:
            if len(source_frames) != num_frames:
                raise ValueError(
                    f"`video` has {len(source_frames)} frames but `num_frames`={num_frames}: for video-to-audio the "
                    "whole video is kept, so they must agree (leave `num_frames` unset)."
                )
            if media.frame_conditions:
                raise ValueError(
                    "`image`, `last_image` and `frame_conditions` condition generated frames; with `video` alone "
                    "(video-to-audio) every frame is given. Pass `mask` or `num_condition_frames` to generate some "
                    "of it."
                )
        if source_frames is not None:  # extension: frames past the source are black (not kept anyway)
            source_frames = torch.nn.functional.pad(
                source_frames[:num_frames], (0, 0, 0, 0, 0, 0, 0, max(0, num_frames - len(source_frames)))
            )
        media.source_frames = source_frames
        if media.preserve_unmasked is None:
            media.preserve_unmasked = media.pixel_keep is not None

    def reference_prompt_images(
        self, prompt: str | list[str] | None, prompt_images: Any, media: InpaintMedia, height: int, width: int
    ) -> tuple[Any, list]:
        """The references as images of the clip's size, also shown to the MLLM after each prompt's own images;
        returns `(prompt_images, reference_images)`."""
        max_side = self.limits.max_side
        reference_pil = [
            fit_with_black_padding(to_pil("reference_images", r, max_side), height, width) for r in media.references
        ]
        if reference_pil and prompt is not None:
            num_prompts = 1 if isinstance(prompt, str) else len(prompt)
            prompt_images = [
                [*imgs, *reference_pil] for imgs in per_prompt_images(prompt_images, num_prompts, self.limits)
            ]
        return prompt_images, reference_pil

    def prepare_conditions(
        self,
        media: InpaintMedia,
        batch_size: int,
        height: int,
        width: int,
        reference_pil: list,
    ) -> InpaintConditions:
        """The channel-concatenated video condition (see `build_video_condition`), the source's own latents, and the
        reference and audio-reference latents."""
        dtype = self.transformer.dtype
        num_frames = media.num_frames
        source = source_latents = None
        if media.source_frames is not None:
            source = pixels_for_vae(media.source_frames)
            source_latents = encode_video(self.vae, source).expand(batch_size, -1, -1, -1, -1)
        keep_all = torch.ones(1, 1, num_frames, height, width) if media.video_given else media.pixel_keep
        condition = build_video_condition(
            self.vae,
            batch_size,
            num_frames,
            height,
            width,
            video=None if source is None else source.expand(batch_size, -1, -1, -1, -1),
            keep_mask=None if keep_all is None else keep_all.expand(batch_size, -1, -1, -1, -1),
            frame_conditions=[
                (index, frame.expand(batch_size, -1, -1, -1)) for index, frame in media.frame_conditions
            ],
            video_latents=source_latents,
        )
        reference_latents = None
        if reference_pil:
            pixels = torch.stack([frames_to_tensor("reference_images", [r], height, width)[0] for r in reference_pil])
            pixels = pixels_for_vae(pixels)  # (1, 3, R, H, W); each reference is one image
            reference_latents = torch.cat(
                [encode_video(self.vae, pixels[:, :, i : i + 1]) for i in range(len(reference_pil))], dim=2
            )
            reference_latents = reference_latents.expand(batch_size, -1, -1, -1, -1).to(dtype)
        audio_reference_latents = None
        if media.audio_reference is not None:
            spec = self.audio_spec
            waveform = media.audio_reference
            num_latents = spec.num_latents(waveform.shape[-1] / spec.sample_rate)
            audio_reference_latents = encode_audio_track(self.audio_vae, waveform[None], num_latents)
            audio_reference_latents = audio_reference_latents.expand(batch_size, -1, -1).to(dtype)
        return InpaintConditions(condition, source_latents, reference_latents, audio_reference_latents)

    def prepare_inpaint_streams(
        self,
        media: InpaintMedia,
        conditions: InpaintConditions,
        batch_size: int,
        height: int,
        width: int,
        fps: float,
        audio_duration: float | None,
        timesteps: torch.Tensor,
        guider: BaseGuidance | None,
        audio_guider: BaseGuidance | None,
        video_lead_steps: int = 0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        audio_latents: torch.Tensor | None = None,
    ) -> tuple[list[LatentStream], float]:
        """The video stream (generated, or given for video-to-audio) and the audio stream (generated, or given for
        audio-to-video); returns them and the audio duration."""
        device = self._execution_device
        dtype = self.transformer.dtype
        condition, source_latents = conditions.video, conditions.source_latents
        num_frames, video_given = media.num_frames, media.video_given
        latents = self.prepare_latents(
            batch_size, height, width, num_frames, torch.float32, device, generator, latents
        )
        audio_duration = audio_duration or num_frames / fps
        audio_spec = self.audio_spec or audio_spec_from_transformer(self.transformer)
        num_audio_latents = audio_spec.num_latents(audio_duration)
        if media.generate_audio:
            audio_latents = self.prepare_audio_latents(
                batch_size, num_audio_latents, torch.float32, device, generator, audio_latents
            )
        preserved = None
        if media.preserve_unmasked and not video_given and bool(condition.mask.any()):
            known = condition.latents.float()
            if media.pixel_keep is not None:
                # Kept source cells take the source's own latents; the condition holds the masked-video encoding.
                from_source = torch.ones(known.shape[2], dtype=torch.bool, device=known.device)
                for index, _ in media.frame_conditions:
                    from_source[latent_frame_index(index, self.vae_spec.temporal_compression)] = False
                known = torch.where(from_source.view(1, 1, -1, 1, 1), source_latents.float(), known)
            noise = randn_tensor(known.shape, generator=generator, device=device, dtype=torch.float32)
            preserved = PreservedLatents(known, condition.mask.float(), noise)

        if video_given:  # the condition of a keep-everything mask is the video's own encoding
            streams = [self.latent_stream("video", condition.latents.float(), None, condition.as_channels())]
        else:
            video_condition = condition.as_channels().to(dtype)
            streams = [self.latent_stream("video", latents, timesteps, video_condition, guider, preserved=preserved)]
        if media.generate_audio:
            start = 0 if video_given else video_lead_steps
            streams.append(self.latent_stream("audio", audio_latents, timesteps, None, audio_guider, start=start))
        elif media.given_audio is not None:
            given_latents = encode_audio_track(self.audio_vae, media.given_audio[None].to(device), num_audio_latents)
            streams.append(self.latent_stream("audio", given_latents.float().expand(batch_size, -1, -1), None))
        return streams, audio_duration

    def decode_inpaint_outputs(
        self,
        media: InpaintMedia,
        conditions: InpaintConditions,
        latents: torch.Tensor,
        audio_latents: torch.Tensor | None,
        audio_duration: float,
        output_type: str,
    ) -> tuple[Any, Any, int | None]:
        """`(frames, audio, audio_sample_rate)`: given frames and audio are returned as given, and with
        `preserve_unmasked` the kept pixels come from the input exactly."""
        if output_type == "latent":
            return latents, audio_latents, None
        batch_size = latents.shape[0]
        if media.video_given:
            video = media.video
            frames = frames_to_tensor("video", video, *frame_size(video))[None].expand(batch_size, -1, -1, -1, -1)
        else:
            frames = self.decode_latents(latents)
            if media.preserve_unmasked and media.pixel_keep is not None and bool(conditions.video.mask.any()):
                keep = media.pixel_keep.movedim(1, 2).to(frames.device).bool()  # (1, F, 1, H, W)
                frames = torch.where(keep, media.source_frames.to(frames), frames)
        if media.generate_audio:
            audio = self.decode_audio_latents(audio_latents, audio_duration)
        elif media.given_audio is not None:
            audio = media.given_audio[None].expand(batch_size, -1, -1)
        else:
            audio = None
        sample_rate = None if audio is None else self.audio_spec.sample_rate
        frames, audio = self.format_outputs(frames, audio, output_type)
        return frames, audio, sample_rate

    # ------------------------------------------------------------------ helpers

    def _collect_frame_conditions(self, image, last_image, frame_conditions, num_frames, height, width):
        """`[(pixel_frame_index, (1, 3, H, W) in [-1, 1])]` from `image`, `last_image` and `frame_conditions`."""
        pairs = []
        if image is not None:
            pairs.append((0, image, "image"))
        if last_image is not None:
            pairs.append((num_frames - 1, last_image, "last_image"))
        if frame_conditions is not None:
            if not isinstance(frame_conditions, (list, tuple)) or not all(
                isinstance(k, (list, tuple)) and len(k) == 2 and isinstance(k[0], int) for k in frame_conditions
            ):
                raise TypeError("`frame_conditions` must be a list of (frame_index: int, image) pairs.")
            pairs.extend((index, frame, "frame_conditions") for index, frame in frame_conditions)
        if len(pairs) > self.config.max_frame_conditions:
            raise ValueError(
                f"At most max_frame_conditions={self.config.max_frame_conditions} frame conditions (image, "
                f"last_image, frame_conditions) are allowed, got {len(pairs)}."
            )
        for index, _, name in pairs:
            if not 0 <= index < num_frames:
                raise ValueError(f"`{name}` frame index {index} is outside the clip of num_frames={num_frames}.")
        indices = [latent_frame_index(index, self.vae_spec.temporal_compression) for index, _, _ in pairs]
        if len(set(indices)) != len(indices):
            names = sorted({name for _, _, name in pairs})
            raise ValueError(
                f"The frame conditions ({', '.join(f'`{n}`' for n in names)}) at frames {[i for i, _, _ in pairs]} "
                f"share latent frames {indices}: each latent frame (frame 0, then groups of "
                f"{self.vae_spec.temporal_compression}) holds at most one."
            )
        conditions = []
        for index, frame, name in pairs:
            pixels = frames_to_tensor(name, [frame], height, width, self.limits.max_side)[0]
            conditions.append((index, (pixels * 2 - 1)[None]))
        return conditions

    def _pixel_keep_mask(self, video, source_frames, mask, num_condition_frames, num_frames, batch_size):
        """Pixel keep-mask `(1 or B, 1, F, H, W)` for extension or editing, or None."""
        if video is None:
            if mask is not None or num_condition_frames is not None:
                raise ValueError("`mask` and `num_condition_frames` need a source `video`.")
            return None
        if (mask is None) == (num_condition_frames is None):
            raise ValueError(
                "With `video`, pass exactly one of `num_condition_frames` (extension) or `mask` (editing); got "
                + ("both." if mask is not None else "neither.")
            )
        _, _, height, width = source_frames.shape
        if num_condition_frames is not None:
            if not isinstance(num_condition_frames, int) or not 1 <= num_condition_frames < num_frames:
                raise ValueError(
                    f"`num_condition_frames` must be an integer in [1, num_frames={num_frames}) (frames kept before "
                    f"the generated ones), got {num_condition_frames!r}."
                )
            if num_condition_frames > len(source_frames):
                raise ValueError(
                    f"`num_condition_frames`={num_condition_frames} exceeds the {len(source_frames)} frames of `video`."
                )
            keep = torch.zeros(1, 1, num_frames, height, width)
            keep[:, :, :num_condition_frames] = 1
            return keep
        if len(source_frames) != num_frames:
            raise ValueError(
                f"For editing, `video` must have num_frames={num_frames} frames, got {len(source_frames)}."
            )
        return mask_to_tensor(mask, video, num_frames, height, width, batch_size)[:, None]

    def _load_given_audio(self, audio, sample_rate) -> torch.Tensor:
        """The audio-to-video soundtrack `(channels, samples)` at the audio VAE's rate; refuses empty or silent audio."""
        from ..utils.media import load_audio

        spec = self.audio_spec
        waveform = load_audio(
            audio,
            spec.sample_rate,
            sample_rate=sample_rate,
            num_channels=spec.audio_channels,
            max_duration=self.limits.max_audio_seconds,
            name="audio",
            sample_rate_name="audio_sample_rate",
        )
        if waveform.shape[-1] < spec.samples_per_latent:  # less than one latent encodes to nothing of its own
            raise ValueError(
                f"`audio` lasts {waveform.shape[-1] / spec.sample_rate:g} s ({waveform.shape[-1]} sample(s) at the "
                f"audio VAE's {spec.sample_rate} Hz); audio-to-video needs at least one audio latent: "
                f"{spec.samples_per_latent} samples ({spec.samples_per_latent / spec.sample_rate:g} s)."
            )
        peak = float(waveform.abs().max())
        if not peak >= SILENCE_PEAK:  # also catches NaN
            raise ValueError(
                f"`audio` is silent (peak amplitude {peak:.2g}, below {SILENCE_PEAK:g}): audio-to-video needs a "
                "soundtrack to follow; use `SkyReelsV4Pipeline` with `generate_audio=False` for a video without one."
            )
        return waveform

    def _frames_for_audio(self, waveform: torch.Tensor) -> int:
        """The `num_frames` whose duration is closest to the audio's."""
        duration = waveform.shape[-1] / self.audio_spec.sample_rate
        return num_frames_for_duration(duration, self.transformer.config.fps, self.vae_spec.temporal_compression)

    def _check_audio_duration(self, waveform, num_frames: int, fps: float, audio_duration) -> None:
        duration = waveform.shape[-1] / self.audio_spec.sample_rate
        tolerance = self.vae_spec.temporal_compression / fps  # one video latent frame
        if audio_duration is not None:
            raise ValueError(
                f"`audio_duration`={audio_duration!r} cannot be set together with `audio`: the given track's length "
                f"({duration:.3f} s) is the duration."
            )
        if abs(duration - num_frames / fps) > tolerance:
            raise ValueError(
                f"`audio` lasts {duration:.3f} s but `num_frames`={num_frames} at {fps} fps last "
                f"{num_frames / fps:.3f} s; they must agree within one video latent frame ({tolerance:.3f} s). Leave "
                "`num_frames` unset to take it from the audio."
            )

    def _load_audio_reference(self, audio_reference, sample_rate) -> torch.Tensor:
        """The audio reference `(channels, samples)` at the audio VAE's rate, at most `max_audio_reference_seconds`."""
        from ..utils.media import load_audio

        spec = self.audio_spec
        return load_audio(
            audio_reference,
            target_sample_rate=spec.sample_rate,
            sample_rate=sample_rate,
            num_channels=spec.audio_channels,
            max_duration=self.config.max_audio_reference_seconds,
            name="audio_reference",
            sample_rate_name="audio_reference_sample_rate",
        )


class SkyReelsV4InpaintPipeline(
    SkyReelsV4InpaintSteps,
    SkyReelsV4PipelineMixin,
    SkyReelsV4PipelineLoadingMixin,
    DiffusionPipeline,
    SkyReelsV4LoraLoaderMixin,
):
    r"""
    Conditioned generation with SkyReels-V4: image-to-video, start-end interpolation, frame conditions, extension, masked
    editing, reference-guided generation, video-to-audio and audio-to-video, with synchronized audio. Same
    components as [`SkyReelsV4Pipeline`] (`SkyReelsV4InpaintPipeline.from_pipe(pipe)` shares them).

    | task | inputs | generated |
    |---|---|---|
    | image-to-video | `image` | video (frame 0 kept) + audio |
    | start-end interpolation / any frames | `image` + `last_image` / `frame_conditions` | video + audio |
    | extension | `video` + `num_condition_frames` | the rest of the video + audio |
    | editing | `video` + `mask` | the masked region + audio |
    | video-to-audio (foley) | `video` alone | audio; the frames are returned as given |
    | audio-to-video | `audio` (+ any video condition above) | video; the audio is returned as given |
    | references | `reference_images`, `reference_video`, `audio_reference` | as the other inputs say |

    A modality that is given enters the transformer as clean latents at timestep 0 and is neither predicted nor
    re-noised; it conditions the other through the audio-video cross-attention.

    Inputs are resized to `(height, width)` by the same policy everywhere: scaled to cover the target and
    center-cropped (`PIL.ImageOps.fit`), so images of another aspect are cropped, never stretched. Reference
    images are instead scaled to fit inside the target and padded with black, so nothing of them is cut.

    Extra args (pipeline config):
        max_frame_conditions (`int`, defaults to 8): frame conditions allowed per call (`image`, `last_image` and
            `frame_conditions` together).
        max_references (`int`, defaults to 4): reference images plus reference-video frames allowed per call.
        max_audio_reference_seconds (`float`, defaults to 10.0): longest audio reference accepted.
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
        max_frame_conditions: int = 8,
        max_references: int = 4,
        max_audio_reference_seconds: float = 10.0,
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
            max_frame_conditions=max_frame_conditions,
            max_references=max_references,
            max_audio_reference_seconds=max_audio_reference_seconds,
        )

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        image: Any = None,
        last_image: Any = None,
        frame_conditions: list[tuple[int, Any]] | None = None,
        video: Any = None,
        num_condition_frames: int | None = None,
        mask: Any = None,
        preserve_unmasked: bool | None = None,
        audio: Any = None,
        audio_sample_rate: int | None = None,
        reference_images: list | None = None,
        reference_video: list | None = None,
        audio_reference: Any = None,
        audio_reference_sample_rate: int | None = None,
        keep_input_audio: bool = False,
        prompt_images: Any = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        fps: float | None = None,
        audio_duration: float | None = None,
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
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int = 512,
        batched_guidance: bool | None = None,
    ) -> SkyReelsV4PipelineOutput | tuple:
        r"""
        Generates (or edits) a video with synchronized audio under visual and audio conditions, or the audio of a
        given video, or the video of a given audio track. The arguments shared with [`SkyReelsV4Pipeline.__call__`]
        (prompts, sizes, steps, guidance, generator, latents, embeddings, outputs, callbacks) mean the same here;
        the base pipeline's high-resolution keyframes (`num_keyframes`, `keyframe_indices`) are not offered here.

        Args:
            image: first frame (image-to-video). PIL image, NumPy `(H, W, 3)` or torch `(3, H, W)`, in [0, 1] or uint8.
            last_image: last frame (start-end interpolation, with `image`).
            frame_conditions (`list[tuple[int, image]]`): `(pixel_frame_index, image)` pairs generalising both; frame
                `f` conditions latent frame `ceil(f / 4)` of the causal VAE. At most `max_frame_conditions` in all.
            video: a source clip: a list of PIL images, NumPy `(F, H, W, 3)`, torch `(F, 3, H, W)`, or a video file
                path (its frames are resampled to `fps` by nearest frame). With `num_condition_frames=k` it is
                extended: its first k frames are kept and the rest of `num_frames` generated. With `mask` it is
                edited. Alone, every frame is kept: video-to-audio, and the output frames are the input's.
            mask: the edit mask, 1 = keep, 0 = regenerate, the size of `video`: one image (PIL, NumPy or torch
                `(H, W)`) applied to every frame, one per frame (`(F, H, W)` or a list of images), or one of those per
                generated video, `(B, F or 1, H, W)` with B = prompts x `num_videos_per_prompt`. Values are in [0, 1]
                (soft masks are thresholded at 0.5); uint8 masks are read as [0, 255] and scaled by 1/255; NaN and
                other values outside [0, 1] are refused.
            preserve_unmasked (`bool`, *optional*): re-inject the known latents at every step and composite the
                unmasked input pixels into the output, so they are identical to the input. Defaults to True for
                editing and extension, False otherwise. When True, image / last-frame / keyframe conditions are
                re-injected too, so those frames decode to exactly the VAE reconstruction of the given images.
            audio: the soundtrack to make a video for (audio-to-video): a file path, or a waveform `(samples,)` /
                `(channels, samples)` array or tensor with `audio_sample_rate`; resampled with PyAV to the audio
                VAE's rate. Its duration must match `num_frames / fps` within one video latent frame (`num_frames`
                defaults to the audio's length). It is returned unchanged as the output audio.
            reference_images (`list`): images whose content should appear (identity, objects, style); VAE-encoded,
                prepended to the video tokens at negative temporal RoPE indices, kept clean, and also shown to the MLLM.
            reference_video (`list`): frames of a video used the same way (each frame is one reference).
            audio_reference: a file path, or a waveform `(samples,)` / `(channels, samples)` array or tensor with
                `audio_reference_sample_rate`; resampled with PyAV to the audio VAE's rate, encoded and prepended to
                the audio tokens. At most `max_audio_reference_seconds` long.
            keep_input_audio (`bool`, defaults to False): instead of generating audio (the paper's behaviour: audio
                is made from scratch, conditioned on the edited video), use the audio track of `video` (a file path)
                as the given `audio`, padded with silence to the output's duration: the generated frames follow it.
            video_lead_steps (`int`, defaults to 0): when video and audio are both generated, the audio starts this
                many steps after the video (see [`SkyReelsV4Pipeline.__call__`]).

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
        fps = self.transformer.config.fps if fps is None else fps
        audio_guidance_scale = guidance_scale if audio_guidance_scale is None else audio_guidance_scale
        if generate_audio is None:  # as in `SkyReelsV4Pipeline`: audio when the pipeline can make it
            generate_audio = self.audio_vae is not None or output_type == "latent"
        batched_guidance = self.batched_guidance(batched_guidance)
        device = self._execution_device

        # 1. Check inputs before any work: this pipeline's own arguments, the media (read within `self.limits`),
        # then the arguments shared with `SkyReelsV4Pipeline`; resizing and encoding come after.
        media = self.check_media(
            video,
            num_condition_frames,
            mask,
            preserve_unmasked,
            audio,
            audio_sample_rate,
            reference_images,
            reference_video,
            audio_reference,
            keep_input_audio,
            height,
            width,
            num_frames,
            fps,
            audio_duration,
            generate_audio,
            audio_reference_sample_rate,
        )
        batch_size = self.check_inputs(
            prompt,
            negative_prompt,
            prompt_embeds,
            prompt_attention_mask,
            negative_prompt_embeds,
            negative_prompt_attention_mask,
            height,
            width,
            media.num_frames,
            fps,
            audio_duration,
            not media.video_given,
            media.generate_audio,
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
        self.prepare_frames(
            media, image, last_image, frame_conditions, mask, num_condition_frames, height, width, batch_size
        )
        self._guidance_scale, self._audio_guidance_scale = guidance_scale, audio_guidance_scale
        self._generate_video, self._generate_audio = not media.video_given, media.generate_audio
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
            not media.video_given,
            media.generate_audio,
        )
        self._attention_kwargs = attention_kwargs
        self._interrupt = False

        # 2. Encode the instruction; references are part of it (their semantic path)
        prompt_images, reference_pil = self.reference_prompt_images(prompt, prompt_images, media, height, width)
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

        # 3. Timesteps
        timesteps = self.prepare_timesteps(num_inference_steps, sigmas, device)

        # 4. Conditions on the latent grid: the channel-concatenated condition, references, audio reference
        conditions = self.prepare_conditions(media, batch_size, height, width, reference_pil)

        # 5. Latent streams: generated ones start from noise, given ones are clean at timestep 0
        streams, audio_duration = self.prepare_inpaint_streams(
            media,
            conditions,
            batch_size,
            height,
            width,
            fps,
            audio_duration,
            timesteps,
            guiders.get("video"),
            guiders.get("audio"),
            video_lead_steps,
            generator,
            latents,
            audio_latents,
        )
        self._num_timesteps = num_loop_iterations(streams)

        # 6. Denoising loop
        inputs = self.prompt_pass_inputs(
            prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask
        )
        model_kwargs = {
            "reference_latents": conditions.reference_latents,
            "audio_reference_latents": conditions.audio_reference_latents,
            "attention_kwargs": self.attention_kwargs,
        }
        hooks = self.loop_hooks(callback_on_step_end, callback_on_step_end_tensor_inputs)
        result = denoise(self.transformer, streams, inputs, model_kwargs, hooks, batched_guidance)

        # 7. Decode; given frames and audio are returned as given, unmasked pixels come from the input exactly
        frames, audio, sample_rate = self.decode_inpaint_outputs(
            media, conditions, result["latents"], result.get("audio_latents"), audio_duration, output_type
        )
        self.maybe_free_model_hooks()

        if not return_dict:
            return (frames, audio, sample_rate)
        return SkyReelsV4PipelineOutput(frames=frames, audio=audio, audio_sample_rate=sample_rate, fps=fps)
