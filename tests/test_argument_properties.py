"""Property-based test over the three pipelines' arguments (issue 19).

Hypothesis replaces one or two arguments of a valid call with values from a pool of wrong types, out-of-range numbers,
non-finite numbers and tensors, empty and oversized containers. Every call must either return finite outputs or raise
a `ValueError`/`TypeError` whose message names an argument of the call; any other exception fails the test. Tight
`GenerationLimits` keep every accepted call small, so none can hang.
"""

import dataclasses
import inspect
import math
import os
import re

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyreels_diffusers import SkyReelsV4InpaintPipeline, SkyReelsV4RefinerPipeline
from skyreels_diffusers.pipelines.validation import GenerationLimits
from skyreels_diffusers.tiny_components import build_tiny_pipeline, build_tiny_refiner


PROMPT = "<text>A red ball bounces.</text><sfx>A knock.</sfx>"
FRAMES, SIZE = 9, 32
TIGHT_LIMITS = GenerationLimits(
    max_video_pixels=2 * 64 * 64 * 17,
    max_side=64,
    max_audio_seconds=2.0,
    max_inference_steps=3,
    max_batch=2,
    max_prompt_characters=2_000,
    max_input_frames=32,
)
# Examples per pipeline in CI (a few seconds); set SKYREELS_PROPERTY_EXAMPLES for a longer search.
EXAMPLES = int(os.environ.get("SKYREELS_PROPERTY_EXAMPLES", "40"))


def nan_like(shape):
    return torch.full(shape, float("nan"))


# Values that are wrong for most arguments and right for a few; each pipeline adds ones shaped like its inputs.
COMMON_VALUES = [
    None,
    0,
    -1,
    1,
    2,
    7,
    10**9,
    2**31,
    -(2**40),
    0.5,
    1.5,
    -0.5,
    float("nan"),
    float("inf"),
    -float("inf"),
    True,
    False,
    "",
    "x",
    "a" * 5_000,
    b"bytes",
    [],
    [0],
    [0, 0],
    [1, 0.5],
    [float("nan")],
    (1, 2),
    {},
    {"scale": 1.0},
    object(),
    5 + 0j,
    torch.tensor(1.0),
    torch.tensor(float("nan")),
    torch.zeros(0),
    torch.zeros(1, 2, 3),
    np.zeros((2, 2)),
    np.full((SIZE, SIZE, 3), np.nan, dtype=np.float32),
    np.full((FRAMES, SIZE, SIZE, 3), 2.0, dtype=np.float32),
    PIL.Image.new("RGB", (0, 0)),
    PIL.Image.new("RGB", (SIZE, SIZE)),
    PIL.Image.new("RGB", (4, 4)),
    [PIL.Image.new("RGB", (SIZE, SIZE))] * 2,
    torch.Generator(),
    [torch.Generator()] * 3,
    ["latents", "unknown_tensor"],
    lambda *args: None,
]


@pytest.fixture(scope="module")
def base():
    pipe = build_tiny_pipeline()
    pipe.limits = TIGHT_LIMITS
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def inpaint(base):
    pipe = SkyReelsV4InpaintPipeline.from_pipe(base)
    pipe.limits = TIGHT_LIMITS
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def refiner(base):
    pipe = SkyReelsV4RefinerPipeline.from_pipe(base, transformer=build_tiny_refiner(base.transformer))
    pipe.limits = TIGHT_LIMITS
    pipe.set_progress_bar_config(disable=True)
    return pipe


def valid_call(pipe):
    """A small valid call of `pipe` that the mutations start from."""
    common = {"prompt": PROMPT, "num_inference_steps": 1, "generator": torch.Generator().manual_seed(0)}
    if isinstance(pipe, SkyReelsV4RefinerPipeline):
        return {**common, "low_res_latents": torch.randn(1, 8, 3, 8, 8), "guidance_scale": 1.0}
    if isinstance(pipe, SkyReelsV4InpaintPipeline):
        return {**common, "image": PIL.Image.new("RGB", (SIZE, SIZE), "red"), "height": SIZE, "width": SIZE}
    return {**common, "height": SIZE, "width": SIZE, "num_frames": FRAMES}


def pipeline_values(pipe):
    """Values shaped like this pipeline's own tensors: right shape with NaN, wrong shape, wrong dtype."""
    values = [nan_like((1, 8, 3, 8, 8)), torch.zeros(1, 8, 3, 8, 8, dtype=torch.int64), torch.randn(1, 8, 3, 9, 8)]
    values += [nan_like((1, 8, 13)), torch.randn(1, 8, 13), nan_like((1, 5, 32)), torch.ones(1, 5, dtype=torch.bool)]
    values += [np.random.RandomState(0).rand(FRAMES, SIZE, SIZE, 3).astype(np.float32)]
    values += [np.zeros(1, dtype=np.float32), np.zeros(100, dtype=np.float32), np.full(4000, np.inf, np.float32)]
    values += [[(0, PIL.Image.new("RGB", (SIZE, SIZE)))], [(99, PIL.Image.new("RGB", (SIZE, SIZE)))], [0, 0]]
    values += [[0, 8], [8, 0], "flash", "nonexistent_backend", "latent", "pil", 16_000, 44_100]
    return values


def argument_names(pipe):
    names = set(inspect.signature(pipe.__call__).parameters)
    return sorted(names - {"self", "return_dict"})


def all_finite(value):
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.float()).all())
    if isinstance(value, np.ndarray):
        return bool(np.isfinite(value.astype(np.float64)).all())
    if isinstance(value, (list, tuple)):
        return all(all_finite(item) for item in value)
    return True


def check_one_call(pipe, kwargs, names):
    try:
        output = pipe(**kwargs)
    except (TypeError, ValueError) as error:
        # The leading name of each `quoted` span: `keyframe_indices[1]` names `keyframe_indices`.
        named = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)[^`]*`", str(error)))
        assert named & set(names), f"{type(error).__name__} names no argument of the call: {error}"
        return
    frames, audio = output.frames, output.audio
    assert all_finite(frames) and all_finite(audio), f"non-finite output for {sorted(kwargs)}"


def mutations(pipe):
    names = argument_names(pipe)
    values = st.sampled_from(COMMON_VALUES + pipeline_values(pipe))
    return st.lists(st.tuples(st.sampled_from(names), values), min_size=1, max_size=2)


def run_property(pipe):
    names = argument_names(pipe)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutations(pipe))
    def prop(changes):
        kwargs = valid_call(pipe)
        kwargs.update(changes)
        check_one_call(pipe, kwargs, names)

    prop()


def test_base_pipeline_arguments(base):
    run_property(base)


def test_inpaint_pipeline_arguments(inpaint):
    run_property(inpaint)


def test_refiner_pipeline_arguments(refiner):
    run_property(refiner)


def test_limits_are_checked_before_any_work(base):
    # `height * width * num_frames` past the limit fails at once; raising the limit lets the same call through.
    call = {"height": 64, "width": 64, "num_frames": 41, "generate_audio": False, "num_inference_steps": 1}
    assert math.prod((64, 64, 41)) > TIGHT_LIMITS.max_video_pixels
    with pytest.raises(ValueError, match="max_video_pixels"):
        base(PROMPT, **call)
    base.limits = dataclasses.replace(TIGHT_LIMITS, max_video_pixels=64 * 64 * 41)
    try:
        assert base(PROMPT, output_type="latent", **call).frames.shape[2] == 41 // 4 + 1
    finally:
        base.limits = TIGHT_LIMITS
