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
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch


@dataclass
class GenerationLimits:
    """Upper bounds on one pipeline call, checked before anything is allocated.

    The defaults fit a single large GPU (80 GB and more) running the full-size model; a smaller machine fails later
    but still fails cleanly. Raise or lower them on a pipeline instance, e.g. `pipe.limits.max_video_pixels *= 2`, or
    replace them: `pipe.limits = GenerationLimits(max_inference_steps=200)`.

    Args:
        max_video_pixels: height x width x frames x videos of one call, for the low-res clip and the high-res
            keyframes together (default: two 15-second 1080p clips at 32 fps).
        max_side: largest height or width in pixels, of outputs and of input images and videos.
        max_audio_seconds: longest audio generated or given, references included.
        max_inference_steps: denoising steps (and custom sigmas) per call.
        max_batch: prompts x videos per prompt.
        max_prompt_characters: longest prompt or negative prompt, in characters (encoding stops at
            `max_sequence_length` tokens anyway; this bounds the text handed to the tokenizer).
        max_input_frames: most frames read from an input video.
        max_prompt_images: most images in one prompt (`prompt_images`).
    """

    max_video_pixels: int = 2 * 1920 * 1088 * 481
    max_side: int = 4096
    max_audio_seconds: float = 120.0
    max_inference_steps: int = 1000
    max_batch: int = 16
    max_prompt_characters: int = 50_000
    max_input_frames: int = 2048
    max_prompt_images: int = 16


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
    """A string or a non-empty list of strings, each at most `limits.max_prompt_characters` long."""
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


def check_video_work(limits: GenerationLimits, batch: int, *videos: tuple[int, int, int]) -> None:
    """`videos`: `(frames, height, width)` of each video the call makes (the clip, the keyframes); their pixels times
    the batch must stay within `limits.max_video_pixels`."""
    pixels = batch * sum(frames * height * width for frames, height, width in videos)
    if pixels > limits.max_video_pixels:
        raise ValueError(
            f"This call would make {pixels:,} video pixels (`height` x `width` x `num_frames` x videos); the limit is "
            f"{limits.max_video_pixels:,} (`pipe.limits.max_video_pixels`)."
        )
