"""Property-based test over the three pipelines' arguments (issues 19 and 32).

Hypothesis replaces one or two arguments of a valid call with values from a pool of wrong types, out-of-range numbers,
non-finite numbers and tensors, empty and oversized containers; further properties draw the shapes, dtypes and values
of the tensor arguments (latents, keyframes, prompt embeddings and their masks) and of inpainting masks. Every call
must either return finite outputs or raise a `ValueError`/`TypeError` before any model runs, whose message names one
of the arguments that were changed; any other exception fails the test. Tight `GenerationLimits` keep every accepted
call small, so none can hang.
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
from model_work import model_calls

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


# Deprecated names: their errors name the new argument (the aliases go away with the flat-blocks change).
ALIASES = {"keyframes": "frame_conditions", "latents": "low_res_latents"}


def check_one_call(pipe, kwargs, changed):
    """Calls `pipe(**kwargs)`: finite outputs, or a `ValueError`/`TypeError` raised before any model ran that names
    one of the `changed` arguments."""
    allowed = set(changed)
    if isinstance(pipe, SkyReelsV4RefinerPipeline):
        allowed |= {ALIASES["latents"] for name in changed if name == "latents"}
    if isinstance(pipe, SkyReelsV4InpaintPipeline):
        allowed |= {ALIASES["keyframes"] for name in changed if name == "keyframes"}
    with model_calls(pipe) as calls:
        try:
            output = pipe(**kwargs)
        except (TypeError, ValueError) as error:
            # The leading name of each `quoted` span: `keyframe_indices[1]` names `keyframe_indices`.
            named = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)[^`]*`", str(error)))
            assert named & allowed, f"{type(error).__name__} names none of the changed {sorted(changed)}: {error}"
            assert not calls, f"{type(error).__name__} raised after model work ({sorted(set(calls))}): {error}"
            return
    frames, audio = output.frames, output.audio
    assert all_finite(frames) and all_finite(audio), f"non-finite output for {sorted(kwargs)}"


def mutations(pipe):
    names = argument_names(pipe)
    values = st.sampled_from(COMMON_VALUES + pipeline_values(pipe))
    return st.lists(st.tuples(st.sampled_from(names), values), min_size=1, max_size=2)


def run_property(pipe, changes_strategy, call=valid_call):
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(changes_strategy)
    def prop(changes):
        kwargs = call(pipe)
        kwargs.update(changes)
        check_one_call(pipe, kwargs, [name for name, _ in changes])

    prop()


# The property tests: `EXAMPLES` pipeline calls each (a few seconds to a minute on 2 cores, more with
# SKYREELS_PROPERTY_EXAMPLES raised).
def property_test(test):
    return pytest.mark.slow(pytest.mark.timeout(600)(test))


# ---------------------------------------------------------------------- drawn shapes, dtypes and values


def tensors(shapes, fills=(0.0, 1.0, 0.5, -1.0, 255.0, float("nan"), float("inf"))):
    """Tensors or arrays whose every dimension is drawn from `shapes` (a list of choices per axis), of a drawn dtype,
    filled with random normal values or one drawn value."""

    def build(shape, fill, dtype, as_numpy):
        values = (
            torch.randn(shape, generator=torch.Generator().manual_seed(0)) if fill is None else torch.full(shape, fill)
        )
        if dtype is not torch.float32:
            values = values.nan_to_num(0.0, 0.0, 0.0).clamp(0, 255).to(dtype)
        return values.numpy() if as_numpy else values

    shape = st.one_of(*(st.tuples(*(st.sampled_from(axis) for axis in axes)) for axes in shapes))
    dtype = st.sampled_from([torch.float32, torch.float32, torch.uint8, torch.bool, torch.int64])
    return st.builds(build, shape, st.sampled_from([None, *fills]), dtype, st.booleans())


def around(size):
    """Choices for one axis: the right size, its neighbours, and the degenerate ones."""
    return sorted({0, 1, 2, max(size - 1, 0), size, size + 1})


def latent_changes(pipe):
    """Base pipeline: drawn video and audio latents, and precomputed prompt embeddings with drawn masks."""
    latent = pipe.latent_shape(1, SIZE, SIZE, FRAMES)
    spec = pipe.audio_spec
    audio = (1, pipe.transformer.config.audio_in_channels, spec.num_latents(FRAMES / pipe.transformer.config.fps))
    embed_dim = pipe.transformer.config.text_embed_dim
    return st.one_of(
        st.tuples(
            st.tuples(st.just("latents"), tensors([[around(n) for n in latent], [around(n) for n in latent[1:]]]))
        ),
        st.tuples(
            st.tuples(st.just("audio_latents"), tensors([[around(n) for n in audio], [around(n) for n in audio[1:]]]))
        ),
        st.tuples(
            st.just(("prompt", None)),
            st.tuples(st.just("prompt_embeds"), tensors([[[1, 2], [1, 4], [embed_dim, 3]]], (0.0, float("nan")))),
            st.tuples(st.just("prompt_attention_mask"), tensors([[[1, 2], [0, 1, 4]], [[4]]], (0.0, 1.0))),
        ),
    )


def edit_call(pipe):
    """A valid editing call: a source video and a mask (replaced by the drawn one)."""
    video = np.random.RandomState(0).rand(FRAMES, SIZE, SIZE, 3).astype(np.float32)
    return {**valid_call(pipe), "image": None, "video": video, "mask": np.ones((SIZE, SIZE), np.float32)}


def mask_changes():
    masks = tensors(
        [
            [[SIZE, SIZE + 1, 2], [SIZE, 1]],
            [[1, FRAMES, 2], [SIZE], [SIZE, 3]],
            [[1, 2, 3], [1, FRAMES, 4], [SIZE], [SIZE]],
            [[1, 2], [1], [FRAMES], [SIZE], [SIZE]],
        ]
    )
    mask = st.tuples(st.just("mask"), masks)
    return st.one_of(
        st.tuples(mask),
        st.tuples(mask, st.tuples(st.just("num_videos_per_prompt"), st.sampled_from([1, 2, 3]))),
    )


def refiner_changes(pipe):
    """Refiner: drawn low-res latents, keyframe latents with their indices, audio latents, and the scale factor."""
    channels = pipe.vae_spec.latent_channels
    low_res = tensors([[[1, 2], [channels, 3], [1, 3], [1, 2, 3, 4, 5, 8], [1, 3, 4, 8]]], (0.0, float("nan")))
    keyframes = tensors([[[1, 2], [channels, 3], [1, 2], [8, 16, 17], [16, 12]]], (0.0, float("nan")))
    audio_in = pipe.transformer.config.audio_in_channels
    audio = tensors([[[1, 2], [audio_in, 3], [0, 1, 13, 10**5]]], (0.0, float("nan")))
    return st.one_of(
        st.tuples(
            st.tuples(st.just("low_res_latents"), low_res),
            st.tuples(st.just("scale_factor"), st.sampled_from([1, 2, 3])),
        ),
        st.tuples(
            st.tuples(st.just("keyframes"), keyframes),
            st.tuples(st.just("keyframe_indices"), st.sampled_from([[0], [0, 8], [0, 4], [9], [0, 0]])),
        ),
        st.tuples(st.tuples(st.just("audio_latents"), audio)),
    )


@property_test
def test_base_pipeline_arguments(base):
    run_property(base, mutations(base))


@property_test
def test_inpaint_pipeline_arguments(inpaint):
    run_property(inpaint, mutations(inpaint))


@property_test
def test_refiner_pipeline_arguments(refiner):
    run_property(refiner, mutations(refiner))


@property_test
def test_base_pipeline_latent_shapes(base):
    run_property(base, latent_changes(base))


@property_test
def test_inpaint_mask_shapes(inpaint):
    run_property(inpaint, mask_changes(), edit_call)


@property_test
def test_refiner_latent_shapes(refiner):
    run_property(refiner, refiner_changes(refiner))


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
