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
"""Long-form generation: clips past the model's window, made by chaining windows.

The first window is an ordinary call. Every later window is an extension (`SkyReelsV4InpaintPipeline`): it keeps
the last `overlap_history` frames of the clip so far (the video extension condition) and the matching audio (the
audio extension's clean prefix, timestep 0 per token), and generates the rest of its window. Each window is decoded
as soon as it is made and only its pixels and samples are kept, so memory does not grow with the clip's length
beyond the output itself. The model has no frame offset for its RoPE: every window starts at position 0 (positions
reset per window).

At each join the overlap is either the previous window's (`crossfade=False`: the next window keeps those frames and
samples exactly), or a linear crossfade from the previous window's overlap to the next window's own version of it
(`crossfade=True`: the next window regenerates its overlap under the condition, not kept exactly).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .validation import check_bool, check_int, check_number


# The defaults of chaining, chosen from the measures of examples/synthetic_av/measure_longform.py (README, "Long-form").
DEFAULT_OVERLAP_SECONDS = 0.25


@dataclass(frozen=True)
class ChainPlan:
    """How a long clip is cut into windows of `window` frames, each after the first keeping `overlap` frames of the
    one before it; the last window is generated whole and the clip cut to `num_frames`."""

    num_frames: int
    window: int
    overlap: int
    addnoise_condition: float
    crossfade: bool

    @property
    def num_windows(self) -> int:
        return 1 + math.ceil(max(0, self.num_frames - self.window) / (self.window - self.overlap))


def default_overlap(components, window: int | None = None) -> int:
    """`overlap_history` when chaining asks for none: at least `DEFAULT_OVERLAP_SECONDS` of frames in whole latent
    frames (of the VAE's form `t*k+1`), and less than the `window` (default: the pipeline's `default_num_frames`)."""
    temporal = components.vae_spec.temporal_compression
    window = components.config.default_num_frames if window is None else window
    frames = round(DEFAULT_OVERLAP_SECONDS * components.transformer.config.fps)
    overlap = math.ceil(max(0, frames - 1) / temporal) * temporal + 1
    return min(overlap, (window - 2) // temporal * temporal + 1)


def plan_chain(
    components,
    num_frames: int,
    base_num_frames: int | None,
    overlap_history: int | None,
    addnoise_condition: float,
    crossfade: bool,
    fps: float,
    generate_audio: bool,
) -> ChainPlan:
    """Checks the chaining arguments before any model work and plans the windows."""
    window = components.config.default_num_frames if base_num_frames is None else base_num_frames
    temporal = components.vae_spec.temporal_compression
    check_int("base_num_frames", window, 2, why=" (frames of one window)")
    if (window - 1) % temporal:
        raise ValueError(
            f"`base_num_frames` must be of the form {temporal}k+1 (a window of whole latent frames), got {window}."
        )
    overlap = default_overlap(components, window) if overlap_history is None else overlap_history
    check_int(
        "overlap_history", overlap, 0, window - 1, why=f" (frames of the {window}-frame window kept by the next one)"
    )
    if overlap and (overlap - 1) % temporal:
        raise ValueError(
            f"`overlap_history` must be 0 or of the form {temporal}k+1 (whole latent frames), got {overlap}."
        )
    check_chain_options(addnoise_condition, crossfade)
    check_int("num_frames", num_frames, 1)
    limit = components.limits.max_duration_seconds
    if num_frames / fps > limit:
        raise ValueError(
            f"`num_frames`={num_frames} at {fps:g} fps lasts {num_frames / fps:.2f} s, more than "
            f"`pipe.limits.max_duration_seconds`={limit:g} s for a chained clip."
        )
    if overlap and generate_audio and components.audio_spec is not None:
        spec = components.audio_spec
        if round(overlap / fps * spec.sample_rate) < spec.samples_per_latent:
            raise ValueError(
                f"`overlap_history`={overlap} frames last {overlap / fps:.4f} s, less than one audio latent "
                f"({spec.samples_per_latent / spec.sample_rate:g} s): the audio could not continue across the join."
            )
    return ChainPlan(num_frames, window, overlap, float(addnoise_condition), crossfade)


def check_chain_options(addnoise_condition: float, crossfade: bool) -> None:
    """The chaining options that every call checks, chained or not."""
    check_number("addnoise_condition", addnoise_condition, 0.0, 1000.0)
    check_bool("crossfade", crossfade)


def crossfade_join(previous: torch.Tensor, following: torch.Tensor, dim: int) -> torch.Tensor:
    """A linear crossfade along `dim` from `previous` to `following` (same shape): weight `(k + 1) / (n + 1)` on
    the following one at step k of n, so neither end is taken whole."""
    n = previous.shape[dim]
    weight = torch.arange(1, n + 1, device=previous.device, dtype=previous.dtype) / (n + 1)
    shape = [1] * previous.ndim
    shape[dim] = n
    return torch.lerp(previous, following.to(previous), weight.view(shape))


class ChainAssembler:
    """Joins window outputs along one axis (frames on 1, samples on -1) into the long clip: each window after the
    first overlaps the clip's last `overlap` entries, which it either leaves as they are (kept) or crossfades with its
    own version of them."""

    def __init__(self, overlap: int, dim: int, crossfade: bool) -> None:
        self.overlap, self.dim, self.crossfade = overlap, dim, crossfade
        self.clip = None

    @property
    def tail(self) -> torch.Tensor | None:
        """The clip's last `overlap` entries: what the next window continues."""
        return (
            None
            if self.clip is None
            else self.clip.narrow(self.dim, self.clip.shape[self.dim] - self.overlap, self.overlap)
        )

    def add(self, window: torch.Tensor) -> None:
        if self.clip is None:
            self.clip = window
            return
        n, dim = self.overlap, self.dim
        rest = window.narrow(dim, n, window.shape[dim] - n)
        if self.crossfade and n:
            joined = crossfade_join(self.tail, window.narrow(dim, 0, n), dim)
            self.clip = torch.cat([self.clip.narrow(dim, 0, self.clip.shape[dim] - n), joined, rest], dim)
        else:
            self.clip = torch.cat([self.clip, rest], dim)

    def result(self, length: int) -> torch.Tensor | None:
        return None if self.clip is None else self.clip.narrow(self.dim, 0, length)


def run_chain(
    plan: ChainPlan,
    first_window: Callable[[], tuple[torch.Tensor | None, torch.Tensor | None]],
    next_window: Callable[[torch.Tensor | None, torch.Tensor | None], tuple[torch.Tensor | None, torch.Tensor | None]],
    fps: float,
    sample_rate: int | None,
    progress_bar: Callable,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Runs the windows of `plan` and joins them. `first_window()` and `next_window(tail_frames, tail_audio)` return
    a window's `(frames (B, F, 3, H, W) in [0, 1] or None, audio (B, channels, samples) or None)`; the tails are the
    last `overlap` frames `(F_o, 3, H, W)` and the matching audio `(channels, samples)` of the clip so far (batch 1).
    Returns the clip, `plan.num_frames` frames and as many seconds of audio."""
    audio_overlap = 0 if sample_rate is None else round(plan.overlap / fps * sample_rate)
    video = ChainAssembler(plan.overlap, 1, plan.crossfade)
    audio = ChainAssembler(audio_overlap, -1, plan.crossfade)
    with progress_bar(total=plan.num_windows) as bar:
        for index in range(plan.num_windows):
            if index == 0:
                frames, samples = first_window()
            else:
                tail_frames = None if video.tail is None else video.tail[0]
                tail_audio = None if audio.tail is None else audio.tail[0]
                frames, samples = next_window(tail_frames, tail_audio)
            if frames is not None:
                video.add(frames)
            if samples is not None:
                audio.add(samples)
            bar.update()
    samples = None if audio.clip is None else audio.result(round(plan.num_frames / fps * sample_rate))
    return video.result(plan.num_frames), samples


# Inpainting arguments that condition the first window only: later windows are conditioned by the overlap.
FIRST_WINDOW_ONLY = (
    "image",
    "video",
    "num_condition_frames",
    "audio",
    "audio_sample_rate",
    "keep_input_audio",
    "audio_condition_seconds",
    "preserve_unmasked",
    "addnoise_condition",
)
# Arguments of `SkyReelsV4Pipeline` that the inpainting pipeline, which makes the later windows, does not take.
BASE_ONLY = ("keyframe_indices", "num_keyframes", "keyframe_height", "keyframe_width")
# Arguments a chained call refuses: they are per window (initial noise) or condition a place in one window.
NOT_CHAINED = (
    "latents",
    "audio_latents",
    "mask",
    "last_image",
    "frame_conditions",
    "keyframe_indices",
    "num_keyframes",
)


def check_chained_arguments(arguments: dict, batch_size: int) -> None:
    """What chaining cannot honour, refused before any model work."""
    for name in NOT_CHAINED:
        if arguments.get(name) is not None:
            raise ValueError(
                f"`{name}` is not supported when windows are chained (`overlap_history` / `base_num_frames` with "
                "`num_frames` beyond the window)."
            )
    if arguments.get("output_type") == "latent":
        raise ValueError('`output_type="latent"` is not supported when windows are chained: each window is decoded.')
    if batch_size != 1:
        raise ValueError(
            f"Chained windows make one clip per call (each window continues its own previous one); got {batch_size} "
            "(prompts x `num_videos_per_prompt`)."
        )
    if arguments.get("video") is not None and arguments.get("num_condition_frames") is None:
        raise ValueError(
            "A chained call extends `video`: pass `num_condition_frames` (video-to-audio is not chained)."
        )
    if arguments.get("audio") is not None and arguments.get("audio_condition_seconds") is None:
        raise ValueError(
            "A chained call extends `audio`: pass `audio_condition_seconds` (audio-to-video is not chained)."
        )


def chained_call(pipe, inpaint, plan: ChainPlan, arguments: dict):
    """A long clip: `pipe` (either pipeline) makes the first window from `arguments` (the call's own), `inpaint`
    (an inpainting pipeline sharing its components) each later one from the overlap of the clip so far. Returns the
    call's output, formatted as `arguments` ask."""
    from .generation import format_outputs
    from .pipeline_output import SkyReelsV4PipelineOutput

    fps = pipe.transformer.config.fps if arguments.get("fps") is None else arguments["fps"]
    window = {
        **arguments,
        "num_frames": plan.window,
        "base_num_frames": None,
        "overlap_history": None,
        "output_type": "pt",
        "return_dict": True,
    }
    later = {k: v for k, v in window.items() if k not in BASE_ONLY + FIRST_WINDOW_ONLY}
    sample_rate = None if pipe.audio_spec is None else pipe.audio_spec.sample_rate

    def first_window():
        out = pipe(**window)
        return out.frames, out.audio

    def next_window(tail_frames, tail_audio):
        extension = {}
        if plan.overlap:
            extension = {"preserve_unmasked": not plan.crossfade, "addnoise_condition": plan.addnoise_condition}
            if tail_frames is not None:
                extension.update(video=tail_frames, num_condition_frames=plan.overlap)
            if tail_audio is not None and tail_audio.shape[-1]:
                seconds = tail_audio.shape[-1] / sample_rate
                extension.update(audio=tail_audio, audio_sample_rate=sample_rate, audio_condition_seconds=seconds)
        out = inpaint(**later, **extension)
        return out.frames, out.audio

    frames, audio = run_chain(plan, first_window, next_window, fps, sample_rate, pipe.progress_bar)
    frames, audio = format_outputs(pipe, frames, audio, arguments.get("output_type", "np"))
    sample_rate = None if audio is None else sample_rate
    if not arguments.get("return_dict", True):
        return (frames, audio, sample_rate)
    return SkyReelsV4PipelineOutput(frames=frames, audio=audio, audio_sample_rate=sample_rate, fps=fps)


def batch_size_of(prompt, prompt_embeds, num_videos_per_prompt) -> int:
    """The videos a call makes (prompts x videos per prompt); what chaining checks before any work."""
    prompts = (
        prompt_embeds.shape[0]
        if prompt_embeds is not None
        else 1
        if isinstance(prompt, str)
        else len(prompt or [None])
    )
    return prompts * (num_videos_per_prompt if isinstance(num_videos_per_prompt, int) else 1)
