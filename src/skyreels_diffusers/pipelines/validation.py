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
"""Argument checks and work limits of the pipelines, applied before any resize, encode or forward pass.

Every check raises `TypeError` (wrong kind of value) or `ValueError` (wrong value) with a message that names the
argument, says what it got and what it accepts. `GenerationLimits` bounds the work one call may ask for.
"""

import math
import re
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch


# C0 control characters but tab, newline and carriage return.
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# The generated video one call may make, as a multiple of the clip the model was trained at (the pipeline config's
# `default_height x default_width x default_num_frames`): 32 covers the paper's Refiner output (a 15 s 1080p clip at
# 32 fps) from the full-size model's 480x848x81 default, and keeps the tiny default's largest call at 2.4 GB of RAM.
TRAINED_CLIP_MULTIPLE = 32
# The size of the full-size model's trained clip (the pipelines' default config): (height, width, num_frames).
FULL_SIZE_TRAINED_CLIP = (480, 848, 81)


@dataclass
class GenerationLimits:
    """Upper bounds on one pipeline call, checked before anything is allocated.

    A pipeline derives its generated-video bound from the clip its model was trained at: `max_video_pixels` is
    `TRAINED_CLIP_MULTIPLE` (32) times `default_height x default_width x default_num_frames` of the pipeline config
    (`GenerationLimits.for_trained_clip`), so a small model refuses a size it cannot hold in memory (the tiny default:
    64x64x17, so at most 2,228,224 pixels, e.g. 256x256x33). The other defaults are fixed. `GenerationLimits()` alone
    holds the full-size model's bounds (a 480x848x81 trained clip). Change one bound on a pipeline with
    `pipe.limits.max_video_pixels *= 2`, or several with `pipe.limits = dataclasses.replace(pipe.limits, ...)`.

    Args:
        max_video_pixels: height x width x frames x videos that one call generates, for the low-res clip and the
            high-res keyframes together (the Refiner: its output).
        max_side: largest height or width in pixels, of outputs and of input images and videos.
        max_audio_seconds: longest audio generated or given, references included.
        max_inference_steps: denoising steps (and custom sigmas) per call.
        max_batch: prompts x videos per prompt.
        max_prompt_characters: longest prompt or negative prompt, in characters (encoding stops at
            `max_sequence_length` tokens anyway; this bounds the text handed to the tokenizer).
        max_input_frames: most frames read from an input video.
        max_prompt_images: most images in one prompt (`prompt_images`).
        max_input_pixels: most pixels (frames x width x height) decoded from an input video file (default: two
            15-second 1080p clips at 32 fps); it is resized to the output size afterwards.
        max_guidance_scale: largest `guidance_scale` / `audio_guidance_scale` (guidance far beyond the trained
            range overflows to NaN: 1e30 does in fp32).
        max_duration_seconds: longest clip made by chaining windows (`overlap_history`); each window is bounded by
            the limits above.
    """

    max_video_pixels: int = TRAINED_CLIP_MULTIPLE * math.prod(FULL_SIZE_TRAINED_CLIP)
    max_side: int = 4096
    max_audio_seconds: float = 120.0
    max_inference_steps: int = 1000
    max_batch: int = 16
    max_prompt_characters: int = 50_000
    max_input_frames: int = 2048
    max_prompt_images: int = 16
    max_input_pixels: int = 2 * 1920 * 1088 * 481
    max_guidance_scale: float = 100.0
    max_duration_seconds: float = 600.0

    @classmethod
    def for_trained_clip(cls, height: int, width: int, num_frames: int) -> "GenerationLimits":
        """The default limits of a model trained at `height x width x num_frames` (its pipeline's default size)."""
        return cls(max_video_pixels=TRAINED_CLIP_MULTIPLE * height * width * num_frames)

    @classmethod
    def from_config(cls, config) -> "GenerationLimits":
        """`for_trained_clip` of a pipeline config's `default_height`, `default_width` and `default_num_frames`;
        the full-size model's defaults when the config has none of them."""
        sizes = [config.get(name) for name in ("default_height", "default_width", "default_num_frames")]
        return cls() if None in sizes else cls.for_trained_clip(*sizes)


def describe(value: Any) -> str:
    """A short description of a received value for error messages."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    if isinstance(value, (str, bytes)):
        text = repr(value)
        return text if len(text) <= 60 else f"a {type(value).__name__} of {len(value)} characters"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"{type(value).__name__} {value!r}"[:80]


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None, why: str = "") -> int:
    """An integer (not a bool) in `[minimum, maximum]`."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"`{name}` must be an integer, got {describe(value)}.")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            bounds = f" in [{minimum}, {maximum}]"
        else:
            bounds = f" >= {minimum}" if minimum is not None else f" <= {maximum}"
        raise ValueError(f"`{name}` must be an integer{bounds}{why}, got {value}.")
    return int(value)


def check_number(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    minimum_inclusive: bool = True,
    why: str = "",
) -> float:
    """A finite real number (not a bool) with `minimum <= value` (or `<` when not `minimum_inclusive`) and
    `value <= maximum`."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"`{name}` must be a number, got {describe(value)}.")
    value = float(value)
    low_ok = minimum is None or (value >= minimum if minimum_inclusive else value > minimum)
    if not math.isfinite(value) or not low_ok or (maximum is not None and value > maximum):
        low = "" if minimum is None else f"{'>=' if minimum_inclusive else '>'} {minimum:g}"
        high = "" if maximum is None else f"<= {maximum:g}"
        bounds = " and ".join(part for part in (low, high) if part)
        raise ValueError(f"`{name}` must be a finite number{' ' + bounds if bounds else ''}{why}, got {value!r}.")
    return value


def check_guidance_scale(name: str, value: Any, limits: GenerationLimits, neutral: float = 1.0) -> float:
    """A guidance scale in [0, `limits.max_guidance_scale`]; `neutral` is the value that turns its term off."""
    return check_number(
        name,
        value,
        0.0,
        limits.max_guidance_scale,
        why=f" ({neutral:g} turns it off; `pipe.limits.max_guidance_scale`)",
    )


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {describe(value)}.")
    return value


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}; got {describe(value)}.")
    return value


def check_finite_tensor(name: str, value: Any, ndim: int | None = None, what: str = "") -> torch.Tensor:
    """A floating-point tensor without NaN or infinity (of `ndim` dimensions when given)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor{' ' + what if what else ''}, got {describe(value)}.")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"`{name}` must have {ndim} dimensions{' ' + what if what else ''}, got {describe(value)}.")
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return value


def check_prompt(name: str, value: Any, limits: GenerationLimits, optional: bool = False) -> list[str] | None:
    """A string or a non-empty list of strings, each at most `limits.max_prompt_characters` long and free of control
    characters other than tab, newline and carriage return (tokenizers refuse NUL and its kin)."""
    if value is None and optional:
        return None
    prompts = [value] if isinstance(value, str) else value
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"`{name}` must be a string or a non-empty list of strings, got {describe(value)}.")
    longest = max(len(p) for p in prompts)
    if longest > limits.max_prompt_characters:
        raise ValueError(
            f"`{name}` has {longest} characters; the limit is {limits.max_prompt_characters} "
            "(`pipe.limits.max_prompt_characters`)."
        )
    for index, prompt in enumerate(prompts):
        found = CONTROL_CHARACTER.search(prompt)
        if found:
            which = name if isinstance(value, str) else f"{name}[{index}]"
            raise ValueError(
                f"`{which}` contains the control character {found.group()!r} at position {found.start()}; prompts "
                "accept text with tab, newline and carriage return as the only control characters."
            )
    return list(prompts)


def check_generator(generator: Any, batch_size: int) -> None:
    """None, a `torch.Generator`, or a list of exactly `batch_size` of them."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator):
        if len(generator) != batch_size:
            raise ValueError(
                f"`generator` is a list of {len(generator)} generators; it needs one per video ({batch_size})."
            )
        return
    raise TypeError(f"`generator` must be a torch.Generator or a list of them, got {describe(generator)}.")


def check_sigmas(sigmas: Any, limits: GenerationLimits) -> list[float] | None:
    """None, or a non-empty list of finite noise levels in (0, 1], decreasing."""
    if sigmas is None:
        return None
    if isinstance(sigmas, (torch.Tensor, np.ndarray)):
        sigmas = sigmas.tolist()
    if not isinstance(sigmas, (list, tuple)) or not sigmas:
        raise TypeError(f"`sigmas` must be a non-empty list of noise levels in (0, 1], got {describe(sigmas)}.")
    if len(sigmas) > limits.max_inference_steps:
        raise ValueError(
            f"`sigmas` has {len(sigmas)} levels; the limit is {limits.max_inference_steps} steps "
            "(`pipe.limits.max_inference_steps`)."
        )
    values = [check_number(f"sigmas[{i}]", s, 0.0, 1.0, minimum_inclusive=False) for i, s in enumerate(sigmas)]
    if any(a <= b for a, b in zip(values, values[1:])):
        raise ValueError(f"`sigmas` must decrease from step to step, got {values}.")
    return values


def check_callback_inputs(names: Any, allowed: list[str]) -> None:
    if names is None:
        return
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"`callback_on_step_end_tensor_inputs` must be a list of names, got {describe(names)}.")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(
            f"`callback_on_step_end_tensor_inputs` must be a subset of {allowed}, got unknown names {unknown}."
        )


def check_callback_output(name: str, value: Any, step: int, shape: torch.Size | None = None) -> None:
    """A tensor that `callback_on_step_end` returned to replace `name` after `step`: finite, and of `shape` when
    given (latents keep theirs: the scheduler steps them next)."""
    returned = f"`callback_on_step_end` returned `{name}` after step {step}"
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{returned} as {describe(value)}; it must be a tensor.")
    if shape is not None and value.shape != shape:
        raise ValueError(f"{returned} of shape {tuple(value.shape)}; it must keep the shape {tuple(shape)}.")
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise ValueError(f"{returned} with NaN or infinite values.")


def check_video_work(limits: GenerationLimits, batch: int, videos: list[tuple[int, int, int]], what: str) -> None:
    """`videos`: `(frames, height, width)` of each video the call makes (the clip, the keyframes); their pixels times
    the batch must stay within `limits.max_video_pixels`. `what` names the arguments that set them."""
    pixels = batch * sum(frames * height * width for frames, height, width in videos)
    if pixels > limits.max_video_pixels:
        raise ValueError(
            f"{what} make {pixels:,} video pixels (height x width x frames x {batch} videos); the limit is "
            f"{limits.max_video_pixels:,} (`pipe.limits.max_video_pixels`)."
        )
