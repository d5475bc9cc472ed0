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
"""The steps of the conditioned SkyReels-V4 tasks (image-to-video, frame conditions, extension, editing, references,
audio reference, video-to-audio, audio-to-video) as plain functions, shared by `SkyReelsV4InpaintPipeline` and the
modular blocks. Like `generation.py`, each takes `components`: a pipeline holding the components as attributes.
"""

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from .conditioning import VideoCondition, build_video_condition, latent_frame_index
from .denoising import CleanTokens, PreservedLatents
from .generation import (
    decode_audio_latents,
    decode_video_latents,
    format_outputs,
    num_frames_for_duration,
    per_prompt_images,
)
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
        audio_source: audio extension: the given soundtrack `(channels, samples)`, whose first `audio_prefix_samples`
            are kept (clean latents at timestep 0, see `CleanTokens`) while the rest of the audio is generated.
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
    audio_source: torch.Tensor | None = None
    audio_prefix_samples: int = 0


def check_media(
    components,
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
    audio_condition_seconds: float | None = None,
) -> InpaintMedia:
    """Checks this pipeline's own arguments and reads the media files (within `components.limits`); resolves which
    modality is given and the clip's `num_frames`."""
    limits = components.limits
    check_bool("keep_input_audio", keep_input_audio)
    check_bool("generate_audio", generate_audio)
    if preserve_unmasked is not None:
        check_bool("preserve_unmasked", preserve_unmasked)
    if num_condition_frames is not None:
        check_int("num_condition_frames", num_condition_frames, 1)
    for name, value in (("height", height), ("width", width)):
        check_int(name, value, 1, limits.max_side)
    check_number("fps", fps, 0.0, minimum_inclusive=False)
    extend_audio = audio_condition_seconds is not None
    if extend_audio:
        check_number("audio_condition_seconds", audio_condition_seconds, 0.0, minimum_inclusive=False)
        if not keep_input_audio and audio is None:
            raise ValueError(
                f"`audio_condition_seconds`={audio_condition_seconds!r} keeps the start of a given soundtrack: pass "
                "`audio` or `keep_input_audio=True` (the track of `video`)."
            )
        if not generate_audio:
            raise ValueError("`audio_condition_seconds` extends the given audio, but `generate_audio=False`.")
    if keep_input_audio or audio is not None or audio_reference is not None:
        if components.audio_vae is None:
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
    audio_given = (keep_input_audio or audio is not None) and not extend_audio
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
            original_video, components.audio_spec.sample_rate, num_channels=components.audio_spec.audio_channels
        )
        if given_audio is None:
            raise ValueError(f"`keep_input_audio=True`, but `video` {original_video!r} has no audio track.")
    elif audio is not None:
        given_audio = load_given_audio(components, audio, audio_sample_rate, refuse_silence=not extend_audio)
    if num_frames is None:
        if video is not None and not num_condition_frames:
            num_frames = len(video)
        elif given_audio is not None and not keep_input_audio and not extend_audio:
            num_frames = frames_for_audio(components, given_audio)
        else:
            num_frames = components.config.default_num_frames
    check_int("num_frames", num_frames, 1)
    audio_source = None
    if extend_audio:  # the start of the track is kept, the rest generated
        check_audio_prefix(components, given_audio, audio_condition_seconds, num_frames / fps)
        audio_source, given_audio = given_audio, None
    elif keep_input_audio:  # the track covers the source; extension frames get silence
        num_samples = round(num_frames / fps * components.audio_spec.sample_rate)
        given_audio = torch.nn.functional.pad(given_audio, (0, max(0, num_samples - given_audio.shape[-1])))
    if given_audio is not None:
        check_audio_duration(components, given_audio, num_frames, fps, audio_duration)
    references = [
        *check_list("reference_images", reference_images),
        *check_list("reference_video", reference_video),
    ]
    if len(references) > components.config.max_references:
        raise ValueError(
            f"At most max_references={components.config.max_references} references (reference_images plus "
            f"reference_video frames) are allowed, got {len(references)}."
        )
    if references and video_given:
        raise ValueError(
            "`reference_images` / `reference_video` guide generated frames; with `video` alone "
            "(video-to-audio) no frame is generated."
        )
    if audio_reference is not None and not generate_audio:
        raise ValueError("`audio_reference` guides generated audio; here the audio is given or off.")
    media = InpaintMedia(num_frames, video, video_given, generate_audio, given_audio, references, preserve_unmasked)
    if audio_source is not None:
        media.audio_source = audio_source
        media.audio_prefix_samples = round(audio_condition_seconds * components.audio_spec.sample_rate)
    if audio_reference is not None:
        media.audio_reference = load_audio_reference(components, audio_reference, audio_reference_sample_rate)
    return media


def check_audio_only(generate_video: bool, generate_audio: bool, arguments: dict) -> None:
    """`generate_video=False` (text-to-audio, or a soundtrack's continuation) takes no video condition."""
    check_bool("generate_video", generate_video)
    if generate_video:
        return
    if generate_audio is False:
        raise ValueError("Nothing to generate: `generate_video=False` and `generate_audio=False`.")
    for name in VIDEO_INPUTS:
        if arguments.get(name) is not None:
            raise ValueError(f"`{name}` conditions the video, but `generate_video=False` makes audio alone.")


# The arguments of the inpainting pipeline that condition or give its video.
VIDEO_INPUTS = (
    "image",
    "last_image",
    "frame_conditions",
    "video",
    "num_condition_frames",
    "mask",
    "reference_images",
    "reference_video",
)


def prepare_frames(
    components,
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
        None if video is None else frames_to_tensor("video", video, height, width, components.limits.max_side)
    )
    media.frame_conditions = collect_frame_conditions(
        components, image, last_image, frame_conditions, num_frames, height, width
    )
    if not media.video_given:
        media.pixel_keep = pixel_keep_mask(
            components, video, source_frames, mask, num_condition_frames, num_frames, batch_size
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
        media.preserve_unmasked = media.pixel_keep is not None or media.audio_source is not None


def reference_prompt_images(
    components, prompt: str | list[str] | None, prompt_images: Any, media: InpaintMedia, height: int, width: int
) -> tuple[Any, list]:
    """The references as images of the clip's size, also shown to the MLLM after each prompt's own images;
    returns `(prompt_images, reference_images)`."""
    max_side = components.limits.max_side
    reference_pil = [
        fit_with_black_padding(to_pil("reference_images", r, max_side), height, width) for r in media.references
    ]
    if reference_pil and prompt is not None:
        num_prompts = 1 if isinstance(prompt, str) else len(prompt)
        prompt_images = [
            [*imgs, *reference_pil] for imgs in per_prompt_images(prompt_images, num_prompts, components.limits)
        ]
    return prompt_images, reference_pil


def collect_frame_conditions(components, image, last_image, frame_conditions, num_frames, height, width):
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
    if len(pairs) > components.config.max_frame_conditions:
        raise ValueError(
            f"At most max_frame_conditions={components.config.max_frame_conditions} frame conditions (image, "
            f"last_image, frame_conditions) are allowed, got {len(pairs)}."
        )
    for index, _, name in pairs:
        if not 0 <= index < num_frames:
            raise ValueError(f"`{name}` frame index {index} is outside the clip of num_frames={num_frames}.")
    indices = [latent_frame_index(index, components.vae_spec.temporal_compression) for index, _, _ in pairs]
    if len(set(indices)) != len(indices):
        names = sorted({name for _, _, name in pairs})
        raise ValueError(
            f"The frame conditions ({', '.join(f'`{n}`' for n in names)}) at frames {[i for i, _, _ in pairs]} "
            f"share latent frames {indices}: each latent frame (frame 0, then groups of "
            f"{components.vae_spec.temporal_compression}) holds at most one."
        )
    conditions = []
    for index, frame, name in pairs:
        pixels = frames_to_tensor(name, [frame], height, width, components.limits.max_side)[0]
        conditions.append((index, (pixels * 2 - 1)[None]))
    return conditions


def pixel_keep_mask(components, video, source_frames, mask, num_condition_frames, num_frames, batch_size):
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
        raise ValueError(f"For editing, `video` must have num_frames={num_frames} frames, got {len(source_frames)}.")
    return mask_to_tensor(mask, video, num_frames, height, width, batch_size)[:, None]


def load_given_audio(components, audio, sample_rate, refuse_silence: bool = True) -> torch.Tensor:
    """The given soundtrack `(channels, samples)` at the audio VAE's rate; refuses empty audio, and silent audio for
    audio-to-video (`refuse_silence`; an extension may continue silence)."""
    from ..utils.media import load_audio

    spec = components.audio_spec
    waveform = load_audio(
        audio,
        spec.sample_rate,
        sample_rate=sample_rate,
        num_channels=spec.audio_channels,
        max_duration=components.limits.max_audio_seconds,
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
    if refuse_silence and not peak >= SILENCE_PEAK:  # also catches NaN
        raise ValueError(
            f"`audio` is silent (peak amplitude {peak:.2g}, below {SILENCE_PEAK:g}): audio-to-video needs a "
            "soundtrack to follow; use `SkyReelsV4Pipeline` with `generate_audio=False` for a video without one."
        )
    return waveform


def check_audio_prefix(components, waveform: torch.Tensor, seconds: float, clip_seconds: float) -> None:
    """The first `seconds` of `waveform` `(channels, samples)` are what an audio extension keeps: within the track,
    shorter than the clip (something is generated) and at least one whole audio latent."""
    spec = components.audio_spec
    available = waveform.shape[-1] / spec.sample_rate
    if not torch.isfinite(waveform).all():
        raise ValueError("The given audio has NaN or infinite samples; `audio_condition_seconds` cannot keep them.")
    if seconds > available:
        raise ValueError(
            f"`audio_condition_seconds`={seconds!r} exceeds the given soundtrack, which lasts {available:.3f} s."
        )
    if seconds >= clip_seconds:
        raise ValueError(
            f"`audio_condition_seconds`={seconds!r} must be shorter than the clip ({clip_seconds:.3f} s = "
            "num_frames / fps): the audio after it is what is generated."
        )
    if clean_audio_latents(spec, seconds) < 1:
        raise ValueError(
            f"`audio_condition_seconds`={seconds!r} is shorter than one audio latent "
            f"({spec.samples_per_latent / spec.sample_rate:g} s), the least that can be kept."
        )


def clean_audio_latents(spec, seconds: float) -> int:
    """The audio latents an audio extension keeps clean for a prefix of `seconds`: the whole latents inside it (the
    trainer's extension tasks count them the same way)."""
    return round(seconds * spec.sample_rate) // spec.samples_per_latent


def audio_prefix_tokens(
    components, source: torch.Tensor, prefix_samples: int, num_audio_latents: int, batch_size: int
) -> CleanTokens:
    """The clean tokens of an audio extension: the soundtrack `source` `(channels, samples)` encoded as a whole (as
    the trainer's clips are), its whole latents inside the first `prefix_samples` held at timestep 0."""
    spec = components.audio_spec
    device = components._execution_device
    known = encode_audio_track(components.audio_vae, source[None].to(device), num_audio_latents).float()
    num_clean = clean_audio_latents(spec, prefix_samples / spec.sample_rate)
    mask = (torch.arange(num_audio_latents, device=device) < num_clean).expand(batch_size, -1)
    return CleanTokens(known.expand(batch_size, -1, -1), mask)


def frames_for_audio(components, waveform: torch.Tensor) -> int:
    """The `num_frames` whose duration is closest to the audio's."""
    duration = waveform.shape[-1] / components.audio_spec.sample_rate
    return num_frames_for_duration(
        duration, components.transformer.config.fps, components.vae_spec.temporal_compression
    )


def check_audio_duration(components, waveform, num_frames: int, fps: float, audio_duration) -> None:
    duration = waveform.shape[-1] / components.audio_spec.sample_rate
    tolerance = components.vae_spec.temporal_compression / fps  # one video latent frame
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


def load_audio_reference(components, audio_reference, sample_rate) -> torch.Tensor:
    """The audio reference `(channels, samples)` at the audio VAE's rate, at most `max_audio_reference_seconds`."""
    from ..utils.media import load_audio

    spec = components.audio_spec
    return load_audio(
        audio_reference,
        target_sample_rate=spec.sample_rate,
        sample_rate=sample_rate,
        num_channels=spec.audio_channels,
        max_duration=components.config.max_audio_reference_seconds,
        name="audio_reference",
        sample_rate_name="audio_reference_sample_rate",
    )


def encode_conditions(
    components,
    batch_size: int,
    num_frames: int,
    height: int,
    width: int,
    video_given: bool,
    source_frames: torch.Tensor | None,
    pixel_keep: torch.Tensor | None,
    frame_conditions: list,
    reference_images: list,
    audio_reference: torch.Tensor | None,
    with_video: bool = True,
) -> tuple[VideoCondition | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The conditions on the latent grid (batch-expanded): the channel-concatenated video condition (see
    `build_video_condition`; `None` without video, `with_video=False`), the source's own latents, and the reference
    and audio-reference latents."""
    dtype = components.transformer.dtype
    source = source_latents = None
    if source_frames is not None:
        source = pixels_for_vae(source_frames)
        source_latents = encode_video(components.vae, source).expand(batch_size, -1, -1, -1, -1)
    keep_all = torch.ones(1, 1, num_frames, height, width) if video_given else pixel_keep
    condition = (
        None
        if not with_video
        else build_video_condition(
            components.vae,
            batch_size,
            num_frames,
            height,
            width,
            video=None if source is None else source.expand(batch_size, -1, -1, -1, -1),
            keep_mask=None if keep_all is None else keep_all.expand(batch_size, -1, -1, -1, -1),
            frame_conditions=[(index, frame.expand(batch_size, -1, -1, -1)) for index, frame in frame_conditions],
            video_latents=source_latents,
        )
    )
    reference_latents = None
    if reference_images:
        pixels = torch.stack([frames_to_tensor("reference_images", [r], height, width)[0] for r in reference_images])
        pixels = pixels_for_vae(pixels)  # (1, 3, R, H, W); each reference is one image
        reference_latents = torch.cat(
            [encode_video(components.vae, pixels[:, :, i : i + 1]) for i in range(len(reference_images))], dim=2
        )
        reference_latents = reference_latents.expand(batch_size, -1, -1, -1, -1).to(dtype)
    audio_reference_latents = None
    if audio_reference is not None:
        spec = components.audio_spec
        num_latents = spec.num_latents(audio_reference.shape[-1] / spec.sample_rate)
        audio_reference_latents = encode_audio_track(components.audio_vae, audio_reference[None], num_latents)
        audio_reference_latents = audio_reference_latents.expand(batch_size, -1, -1).to(dtype)
    return condition, source_latents, reference_latents, audio_reference_latents


def preserved_latents(
    components,
    condition: VideoCondition,
    source_latents: torch.Tensor | None,
    pixel_keep: torch.Tensor | None,
    frame_conditions: list,
    generator: torch.Generator | list[torch.Generator] | None,
) -> PreservedLatents | None:
    """The known latents re-injected after every step with `preserve_unmasked` (None when nothing is kept). Call it
    after the starting noise is drawn: it draws its own noise from `generator`."""
    if not bool(condition.mask.any()):
        return None
    known = condition.latents.float()
    if pixel_keep is not None:
        # Kept source cells take the source's own latents; the condition holds the masked-video encoding.
        from_source = torch.ones(known.shape[2], dtype=torch.bool, device=known.device)
        for index, _ in frame_conditions:
            from_source[latent_frame_index(index, components.vae_spec.temporal_compression)] = False
        known = torch.where(from_source.view(1, 1, -1, 1, 1), source_latents.float(), known)
    noise = randn_tensor(known.shape, generator=generator, device=components._execution_device, dtype=torch.float32)
    return PreservedLatents(known, condition.mask.float(), noise)


def noised_condition(components, condition: VideoCondition, level: float, generator) -> VideoCondition:
    """`condition` with its kept cells noised to timestep `level` (`sigma = level / 1000`), as the transformer's
    condition channels see them with `addnoise_condition`."""
    latents = condition.latents.float()
    noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=torch.float32)
    return VideoCondition(torch.lerp(latents, noise, level / 1000 * condition.mask.float()), condition.mask)


def encode_given_audio(components, given_audio: torch.Tensor, num_audio_latents: int, batch_size: int) -> torch.Tensor:
    """The given soundtrack of audio-to-video as clean fp32 latents `(B, C_a, L)`."""
    device = components._execution_device
    latents = encode_audio_track(components.audio_vae, given_audio[None].to(device), num_audio_latents)
    return latents.float().expand(batch_size, -1, -1)


def decode_inpaint_outputs(
    components,
    latents: torch.Tensor,
    audio_latents: torch.Tensor | None,
    audio_duration: float,
    output_type: str,
    video: Any = None,
    video_given: bool = False,
    source_frames: torch.Tensor | None = None,
    pixel_keep: torch.Tensor | None = None,
    preserve_unmasked: bool = False,
    condition_mask: torch.Tensor | None = None,
    given_audio: torch.Tensor | None = None,
    audio_prefix: torch.Tensor | None = None,
) -> tuple[Any, Any, int | None]:
    """`(frames, audio, audio_sample_rate)`: given frames and audio are returned as given, and with
    `preserve_unmasked` the kept pixels come from the input exactly."""
    if output_type == "latent":
        return latents, audio_latents, None
    batch_size = (latents if latents is not None else audio_latents).shape[0]
    if latents is None:  # audio alone
        frames = None
    elif video_given:
        frames = frames_to_tensor("video", video, *frame_size(video))[None].expand(batch_size, -1, -1, -1, -1)
    else:
        frames = decode_video_latents(components, latents)
        if preserve_unmasked and pixel_keep is not None and bool(condition_mask.any()):
            keep = pixel_keep.movedim(1, 2).to(frames.device).bool()  # (1, F, 1, H, W)
            frames = torch.where(keep, source_frames.to(frames), frames)
    if given_audio is not None:
        audio = given_audio[None].expand(batch_size, -1, -1)
    elif audio_latents is not None:
        audio = decode_audio_latents(components, audio_latents, audio_duration)
        if preserve_unmasked and audio_prefix is not None:  # the kept start of the track, exactly
            audio = torch.cat(
                [audio_prefix[None].to(audio).expand(batch_size, -1, -1), audio[..., audio_prefix.shape[-1] :]], -1
            )
    else:
        audio = None
    sample_rate = None if audio is None else components.audio_spec.sample_rate
    frames, audio = format_outputs(components, frames, audio, output_type)
    return frames, audio, sample_rate
