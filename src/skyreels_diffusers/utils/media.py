"""Media I/O for SkyReels-V4: write MP4 clips with sound, and read audio and video back.

Writing is H.264 + AAC through PyAV, like Diffusers' `encode_video`, whose audio helpers it reuses; the video stream is
set up here because x264 must run with a fixed thread count for the same frames to give the same bytes. Reading and
resampling use PyAV directly; `av.AudioResampler` does all sample-rate conversion, so there is no torchaudio dependency.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from numbers import Integral, Real

import av
import numpy as np
import PIL.Image
import torch
from diffusers.utils.logging import get_logger


logger = get_logger(__name__)

__all__ = ["export_to_video_with_audio", "load_audio", "load_video", "load_video_audio", "resample_frames"]

# Containers that hold an H.264 video stream next to an AAC audio stream.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")

# Silence appended before flushing the resampler. libswresample's flush emits nothing for inputs shorter than its
# filter, and rounds the tail length by a sample; feeding a little silence and then cutting the output to the exact
# expected length fixes both. 256 samples is well past the default filter's reach at any rate ratio.
_RESAMPLER_TAIL_PADDING = 256

# x264 sizes its thread pool from the cores it can see, and the bitstream depends on the pool size: the same frames
# encoded with all cores and with one core differ by up to tens of levels after decoding. A fixed count makes the bytes
# depend only on the frames (x264 is deterministic for a given thread count).
X264_THREADS = 4


# ---------------------------------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------------------------------


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"`{name}` must be a positive int, got {type(value).__name__} {value!r}.")
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive int, got {value}.")
    return int(value)


class MediaFileNotFoundError(FileNotFoundError, ValueError):
    """A media path argument that names no file. It is also a `ValueError`, like every other bad argument, so callers
    that catch `ValueError` around a pipeline call see it too."""


def _check_path(path, name: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a str or os.PathLike file path, got {type(path).__name__}.")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MediaFileNotFoundError(f"`{name}` does not point to an existing file: {path!r}.")
    return path


def _check_num_channels(num_channels) -> int | None:
    if num_channels is None:
        return None
    if isinstance(num_channels, bool) or not isinstance(num_channels, Integral) or num_channels not in (1, 2):
        raise ValueError(f"`num_channels` must be None, 1 (mono) or 2 (stereo), got {num_channels!r}.")
    return int(num_channels)


def _audio_to_numpy(audio, name: str) -> np.ndarray:
    """Validates a waveform and returns it as a float32 `(channels, samples)` array with 1 or 2 channels.

    Accepts an `np.ndarray` or `torch.Tensor` of a floating dtype with shape `(samples,)` or `(channels, samples)`.
    """
    if isinstance(audio, torch.Tensor):
        if not audio.is_floating_point():
            raise TypeError(
                f"`{name}` must be a floating-point tensor with values in [-1, 1], got dtype {audio.dtype}."
            )
        array = audio.detach().to("cpu", torch.float32).numpy()
    elif isinstance(audio, np.ndarray):
        if not np.issubdtype(audio.dtype, np.floating):
            raise TypeError(
                f"`{name}` must be a floating-point array with values in [-1, 1], got dtype {audio.dtype}."
            )
        array = audio.astype(np.float32, copy=False)
    else:
        raise TypeError(f"`{name}` must be an np.ndarray or torch.Tensor waveform, got {type(audio).__name__}.")

    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[0] not in (1, 2) or array.shape[1] == 0:
        raise ValueError(
            f"`{name}` must have shape (samples,) or (channels, samples) with 1 or 2 channels and at least one "
            f"sample, got shape {tuple(audio.shape)}."
        )
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return np.ascontiguousarray(array)


def _video_to_uint8(video) -> np.ndarray:
    """Validates one clip and returns it as a uint8 `(frames, height, width, 3)` RGB array."""
    if isinstance(video, list):
        if len(video) == 0 or not all(isinstance(frame, PIL.Image.Image) for frame in video):
            raise TypeError("`video` given as a list must be a non-empty list of PIL.Image.Image frames.")
        sizes = {frame.size for frame in video}
        if len(sizes) != 1:
            raise ValueError(f"All frames in `video` must have the same size, got sizes {sorted(sizes)}.")
        return np.stack([np.asarray(frame.convert("RGB")) for frame in video])

    if isinstance(video, torch.Tensor):
        array = video.detach().cpu()
        array = array.float().numpy() if array.is_floating_point() else array.numpy()
    elif isinstance(video, np.ndarray):
        array = video
    else:
        raise TypeError(
            "`video` must be a list of PIL images, an np.ndarray or a torch.Tensor of shape (frames, height, width, 3), "
            f"got {type(video).__name__}."
        )

    if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape:
        hint = " For a batch of clips, pass one clip, e.g. `video[0]`." if array.ndim == 5 else ""
        raise ValueError(f"`video` must have shape (frames, height, width, 3), got shape {tuple(video.shape)}.{hint}")

    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"`video` must be uint8 or a floating dtype with values in [0, 1], got dtype {video.dtype}.")
    low, high = float(array.min()), float(array.max())
    if not (0.0 <= low and high <= 1.0):  # also false for NaN
        raise ValueError(
            f"Floating-point `video` must have values in [0, 1] (Diffusers' output_type='np'/'pt'), got values in "
            f"[{low}, {high}]."
        )
    return (array * 255.0).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------------
# Resampling and decoding
# ---------------------------------------------------------------------------------------------------------------------


def _resample(
    waveform: np.ndarray, sample_rate: int, target_sample_rate: int, layout: str, target_layout: str
) -> np.ndarray:
    """Resamples a float32 `(channels, samples)` waveform with `av.AudioResampler`.

    Returns float32 `(target_channels, round(samples * target_sample_rate / sample_rate))`: exactly that length.
    """
    if sample_rate == target_sample_rate and layout == target_layout:
        return waveform.copy()  # never hand back memory shared with the caller's array
    num_samples = waveform.shape[1]
    target_length = round(num_samples * target_sample_rate / sample_rate)

    padded = np.pad(waveform, ((0, 0), (0, _RESAMPLER_TAIL_PADDING)))
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(padded), format="fltp", layout=layout)
    frame.sample_rate = sample_rate
    frame.pts = 0
    frame.time_base = Fraction(1, sample_rate)

    resampler = av.AudioResampler(format="fltp", layout=target_layout, rate=target_sample_rate)
    # `resample(None)` flushes the samples still held in the filter; a passthrough resampler may return None items.
    out_frames = [f for f in resampler.resample(frame) + resampler.resample(None) if f is not None]
    resampled = np.concatenate([f.to_ndarray() for f in out_frames], axis=1)
    return np.ascontiguousarray(resampled[:, :target_length], dtype=np.float32)


def _decode_audio_file(path: str, max_duration: float | None) -> tuple[np.ndarray, int, str]:
    """Decodes the first audio stream of a media file.

    Returns a float32 `(channels, samples)` waveform at the file's sample rate, that rate, and the channel layout
    name (used to downmix layouts with more than two channels).
    """
    container, stream = _open_stream(path, "source", "audio")
    with container:
        # Decoded frames come in whatever sample format the codec uses; convert them to planar float.
        to_float = av.AudioResampler(format="fltp")
        chunks, sample_rate, layout, num_samples = [], None, None, 0
        for decoded in container.decode(stream):
            for frame in to_float.resample(decoded):
                if frame is None:
                    continue
                sample_rate, layout = frame.sample_rate, frame.layout.name
                chunks.append(frame.to_ndarray())
                num_samples += frame.samples
            # Stop early instead of decoding a long file into memory only to reject it.
            if max_duration is not None and sample_rate and num_samples > max_duration * sample_rate:
                raise ValueError(
                    f"`source` is longer than `max_duration`={max_duration} s: {path!r} has more than "
                    f"{num_samples / sample_rate:.3f} s of audio."
                )
        chunks += [f.to_ndarray() for f in to_float.resample(None) if f is not None]
    if not chunks:
        raise ValueError(f"`source` has an audio stream without any decodable samples: {path!r}.")
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), sample_rate, layout


def _fit_length(waveform: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Trims `(channels, samples)` audio to `num_samples`, or pads it with trailing silence."""
    if waveform.shape[-1] >= num_samples:
        return waveform[..., :num_samples]
    return torch.nn.functional.pad(waveform, (0, num_samples - waveform.shape[-1]))


# ---------------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------------


def load_audio(
    source,
    target_sample_rate: int,
    sample_rate: int | None = None,
    num_channels: int | None = None,
    max_duration: float | None = None,
    name: str = "source",
    sample_rate_name: str = "sample_rate",
) -> torch.Tensor:
    """Loads a waveform from a file or an array and resamples it to `target_sample_rate`.

    Args:
        source (`str`, `os.PathLike`, `np.ndarray` or `torch.Tensor`):
            A path to any file PyAV can decode (WAV, MP3, FLAC, the audio track of an MP4, ...; the first audio stream
            is used), or a floating-point waveform of shape `(samples,)` or `(channels, samples)` with 1 or 2 channels
            and values in [-1, 1].
        target_sample_rate (`int`):
            The sample rate of the returned waveform. Resampling uses `av.AudioResampler` (libswresample) and the
            output has exactly `round(samples * target_sample_rate / source_rate)` samples.
        sample_rate (`int`, *optional*):
            The sample rate of an array `source`; required for arrays and not accepted for files, whose rate is read
            from the file.
        num_channels (`int`, *optional*):
            `1` downmixes to mono (mean of two channels), `2` makes stereo (mono is duplicated). Files with more than
            two channels are downmixed by libswresample's standard matrix. `None` keeps the source's channels.
        max_duration (`float`, *optional*):
            If given, a `source` longer than this many seconds raises a `ValueError`.
        name, sample_rate_name (`str`): the caller's names for `source` and `sample_rate` in error messages (e.g. a
            pipeline's `audio` and `audio_sample_rate` arguments).

    Returns:
        `torch.Tensor`: float32 waveform of shape `(channels, samples)` at `target_sample_rate`.

    Note:
        Lossy codecs decode in whole codec frames, so e.g. an AAC track can carry up to ~1024 samples of trailing
        silence beyond what was encoded. `load_video_audio` cuts a video's audio to the video's duration.
    """
    target_sample_rate = _check_positive_int(target_sample_rate, "target_sample_rate")
    num_channels = _check_num_channels(num_channels)
    if max_duration is not None:
        if isinstance(max_duration, bool) or not isinstance(max_duration, Real):
            raise TypeError(f"`max_duration` must be None or a number of seconds, got {type(max_duration).__name__}.")
        if not max_duration > 0:
            raise ValueError(f"`max_duration` must be None or a positive number of seconds, got {max_duration!r}.")

    if isinstance(source, (str, os.PathLike)):
        if sample_rate is not None:
            raise ValueError(
                f"`{sample_rate_name}` is only for array sources (got {sample_rate!r} with a file `{name}`); a file's own "
                "sample rate is read from the file."
            )
        waveform, sample_rate, layout = _decode_audio_file(_check_path(source, name), max_duration)
        if waveform.shape[0] <= 2:
            layout = "mono" if waveform.shape[0] == 1 else "stereo"
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        if sample_rate is None:
            raise ValueError(
                f"`{sample_rate_name}` is required when `{name}` is an array or tensor waveform, got None."
            )
        sample_rate = _check_positive_int(sample_rate, sample_rate_name)
        waveform = _audio_to_numpy(source, name)
        layout = "mono" if waveform.shape[0] == 1 else "stereo"
    else:
        raise TypeError(
            f"`{name}` must be a file path (str or os.PathLike), an np.ndarray or a torch.Tensor, "
            f"got {type(source).__name__}."
        )

    duration = waveform.shape[1] / sample_rate
    if max_duration is not None and duration > max_duration:
        raise ValueError(f"`{name}` is {duration:.3f} s long, longer than `max_duration`={max_duration} s.")

    # Mono and stereo are converted here, not by libswresample, whose -3 dB centre mix would change the level.
    target_layout = layout
    if num_channels == 1 and waveform.shape[0] == 2:
        waveform, layout, target_layout = waveform.mean(axis=0, keepdims=True), "mono", "mono"
    elif num_channels is not None and waveform.shape[0] > 2:
        target_layout = "mono" if num_channels == 1 else "stereo"

    waveform = _resample(waveform, sample_rate, target_sample_rate, layout, target_layout)
    if num_channels == 2 and waveform.shape[0] == 1:
        waveform = np.repeat(waveform, 2, axis=0)
    return torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))


def _open_stream(path: str, name: str, kind: str):
    """The opened container of `path` and its first `kind` ("audio" or "video") stream; errors name `name`."""
    try:
        container = av.open(path)
    except av.FFmpegError as error:
        raise ValueError(f"`{name}` could not be opened as a media file: {path!r} ({error}).") from error
    streams = getattr(container.streams, kind)
    if not streams:
        container.close()
        raise ValueError(f"`{name}` has no {kind} stream: {path!r}.")
    return container, streams[0]


def load_video(
    path,
    max_frames: int | None = None,
    max_side: int | None = None,
    max_pixels: int | None = None,
    name: str = "path",
) -> tuple[list[PIL.Image.Image], float]:
    """Decodes the frames of a video file with PyAV, within limits checked before decoding.

    Args:
        path (`str` or `os.PathLike`): A video file (first video stream is used).
        max_frames (`int`, *optional*): decode at most this many frames; a longer video raises a `ValueError` as soon
            as the frame after the limit is reached (the container's frame count is checked first when it has one).
        max_side (`int`, *optional*): refuse frames larger than this on either side, from the stream's header,
            before decoding any.
        max_pixels (`int`, *optional*): refuse a video whose frames hold more pixels than this in total (frames x
            width x height): a small file can expand to gigabytes of frames. Checked from the header's frame count
            when it has one, and again as frames are decoded.
        name (`str`, defaults to `"path"`): the caller's name for `path` in error messages.

    Returns:
        `tuple[list[PIL.Image.Image], float]`: the frames as RGB PIL images, and the stream's frame rate.
    """
    path = _check_path(path, name)
    container, stream = _open_stream(path, name, "video")
    with container:
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise ValueError(f"`{name}` has a video stream without a known frame rate: {path!r}.")
        width, height = stream.codec_context.width, stream.codec_context.height
        if max_side is not None and max(width, height) > max_side:
            raise ValueError(f"`{name}` is {width}x{height} pixels; the largest side allowed is {max_side}: {path!r}.")
        if max_frames is not None and stream.frames and stream.frames > max_frames:
            raise ValueError(f"`{name}` has {stream.frames} frames; the limit is {max_frames}: {path!r}.")
        frame_budget = None if max_pixels is None else max(max_pixels // max(width * height, 1), 0)
        if frame_budget is not None and stream.frames and stream.frames > frame_budget:
            raise ValueError(
                f"`{name}` holds {stream.frames} frames of {width}x{height} = {stream.frames * width * height} pixels; "
                f"the limit is {max_pixels}: {path!r}."
            )
        frames = []
        for frame in container.decode(stream):
            if max_frames is not None and len(frames) == max_frames:
                raise ValueError(f"`{name}` has more than {max_frames} frames, the limit: {path!r}.")
            if frame_budget is not None and len(frames) == frame_budget:
                raise ValueError(
                    f"`{name}` holds more than {max_pixels} pixels ({width}x{height} frames), the limit: {path!r}."
                )
            frames.append(frame.to_image())
    if not frames:
        raise ValueError(f"`{name}` has a video stream without any decodable frames: {path!r}.")
    return frames, float(rate)


def resample_frames(frames: list, source_fps: float, target_fps: float) -> list:
    """Nearest-frame resampling in time: the frames shown at `target_fps` over the same duration (the list itself when
    the rates agree)."""
    if abs(source_fps - target_fps) < 1e-6:
        return frames
    count = max(1, math.floor(len(frames) * target_fps / source_fps + 1e-6))
    return [frames[min(len(frames) - 1, round(i * source_fps / target_fps))] for i in range(count)]


def load_video_audio(
    path, target_sample_rate: int, num_channels: int | None = None
) -> tuple[list[PIL.Image.Image], float, torch.Tensor | None]:
    """Decodes a video file's frames and its own audio track, e.g. to keep a clip's sound when extending or editing it.

    Args:
        path (`str` or `os.PathLike`): A video file.
        target_sample_rate (`int`): The sample rate of the returned audio.
        num_channels (`int`, *optional*): `1` or `2` to force mono or stereo, see `load_audio`.

    Returns:
        `tuple`: `(frames, fps, audio)`: RGB PIL frames, the frame rate, and a float32 `(channels, samples)` tensor
        with exactly `round(len(frames) * target_sample_rate / fps)` samples (the file's audio cut to the video's
        duration, or padded with trailing silence), or `None` if the file has no audio stream. The audio is assumed to
        start together with the video, as in files written by `export_to_video_with_audio`.
    """
    target_sample_rate = _check_positive_int(target_sample_rate, "target_sample_rate")
    frames, fps = load_video(path)
    with av.open(os.fspath(path)) as container:
        has_audio = bool(container.streams.audio)
    if not has_audio:
        return frames, fps, None
    audio = load_audio(path, target_sample_rate, num_channels=num_channels)
    return frames, fps, _fit_length(audio, round(len(frames) * target_sample_rate / fps))


def export_to_video_with_audio(
    video,
    output_path,
    fps: int,
    audio=None,
    audio_sample_rate: int | None = None,
) -> str:
    """Writes one clip, optionally with sound, as H.264 video + AAC audio; the same frames always give the same bytes.

    Args:
        video (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            One clip, as a pipeline returns it: a non-empty list of same-size PIL images (converted to RGB), or an
            array/tensor of shape `(frames, height, width, 3)` that is either uint8 in [0, 255] or floating point in
            [0, 1]. H.264 (yuv420p) needs even sizes: an odd height or width is padded by one row/column that repeats
            the last one (a warning is logged).
        output_path (`str` or `os.PathLike`):
            Where to write; the suffix must be `.mp4`, `.m4v`, `.mov` or `.mkv`.
        fps (`int`):
            Frames per second; a whole number (a container time base cannot hold a fractional rate exactly).
        audio (`np.ndarray` or `torch.Tensor`, *optional*):
            Floating-point waveform of shape `(samples,)` or `(channels, samples)` with 1 or 2 channels, values in
            [-1, 1] (values outside are clipped). It is written as stereo AAC, and is cut or padded with trailing
            silence to exactly the video's duration, `round(frames * audio_sample_rate / fps)` samples, so the two
            streams end together (within one AAC frame of 1024 samples).
        audio_sample_rate (`int`, *optional*):
            Sample rate of `audio`; required with `audio`. Must be a rate the AAC encoder supports (e.g. 16000, 22050,
            24000, 44100, 48000); resample others with `load_audio`.

    Returns:
        `str`: `output_path`.
    """
    if not isinstance(output_path, (str, os.PathLike)):
        raise TypeError(f"`output_path` must be a str or os.PathLike, got {type(output_path).__name__}.")
    output_path = os.fspath(output_path)
    if not output_path.lower().endswith(VIDEO_SUFFIXES):
        raise ValueError(f"`output_path` must end with one of {VIDEO_SUFFIXES}, got {output_path!r}.")
    if isinstance(fps, bool) or not isinstance(fps, Real):
        raise TypeError(f"`fps` must be a positive whole number, got {type(fps).__name__} {fps!r}.")
    if not (math.isfinite(fps) and fps > 0 and float(fps).is_integer()):
        raise ValueError(f"`fps` must be a positive whole number, got {fps!r}.")
    fps = int(fps)

    frames = _video_to_uint8(video)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        logger.warning(
            f"H.264 needs an even height and width; padding the {frames.shape[1]}x{frames.shape[2]} video to "
            f"{frames.shape[1] + pad_h}x{frames.shape[2] + pad_w} by repeating its last row/column."
        )
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")

    waveform = None
    if audio is not None:
        if audio_sample_rate is None:
            raise ValueError("`audio_sample_rate` is required when `audio` is given, got None.")
        audio_sample_rate = _check_positive_int(audio_sample_rate, "audio_sample_rate")
        supported = av.codec.Codec("aac", "w").audio_rates
        if supported and audio_sample_rate not in supported:
            raise ValueError(
                f"`audio_sample_rate`={audio_sample_rate} is not supported by the AAC encoder; use one of "
                f"{sorted(supported)} (resample with `load_audio`)."
            )
        waveform = torch.from_numpy(_audio_to_numpy(audio, "audio"))
        waveform = _fit_length(waveform, round(len(frames) * audio_sample_rate / fps))
    elif audio_sample_rate is not None:
        raise ValueError(f"`audio_sample_rate` was given ({audio_sample_rate!r}) without `audio`.")

    _encode_h264_aac(frames, fps, output_path, waveform, audio_sample_rate)
    return output_path


def _encode_h264_aac(frames: np.ndarray, fps: int, path: str, waveform: torch.Tensor | None, sample_rate: int | None):
    """Writes uint8 `(frames, height, width, 3)` frames (even sizes) and an optional waveform to `path`."""
    container = av.open(path, mode="w")
    try:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = X264_THREADS
        audio_stream = None
        if waveform is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.codec_context.layout = "stereo"
            audio_stream.codec_context.time_base = Fraction(1, sample_rate)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
        if waveform is not None:
            _encode_aac(container, audio_stream, waveform, sample_rate)
    finally:
        container.close()


def _encode_aac(container, stream, waveform: torch.Tensor, sample_rate: int) -> None:
    """Encodes a `(channels, samples)` waveform in [-1, 1] as stereo AAC (mono is written to both channels): 16-bit
    interleaved samples, converted to the encoder's sample format by libswresample."""
    stereo = waveform.expand(2, -1) if waveform.shape[0] == 1 else waveform
    interleaved = (stereo.clamp(-1.0, 1.0) * 32767.0).to(torch.int16).T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(interleaved.contiguous().numpy(), format="s16", layout="stereo")
    frame.sample_rate = sample_rate
    codec = stream.codec_context
    resampler = av.audio.resampler.AudioResampler(format=codec.format or "fltp", layout="stereo", rate=sample_rate)
    next_pts = 0
    for converted in resampler.resample(frame):
        if converted.pts is None:
            converted.pts = next_pts
        next_pts += converted.samples
        container.mux(stream.encode(converted))
    container.mux(stream.encode())  # flush
