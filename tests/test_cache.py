"""Diffusers' caches (`enable_cache`) on the SkyReels-V4 transformers, end to end through the pipelines.

Pyramid Attention Broadcast and TaylorSeer are supported; each keeps separate state for guidance's conditional and
unconditional passes, whose prompts differ in length. The other caches of Diffusers are refused with a reason."""

import contextlib

import numpy as np
import pytest
import torch
from diffusers.hooks import (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    SeaCacheConfig,
    TaylorSeerCacheConfig,
    TextKVCacheConfig,
)

from skyreels_diffusers import SkyReelsV4AudioTransformer1DModel, SkyReelsV4RefinerPipeline
from skyreels_diffusers.tiny_components import build_tiny_pipeline, build_tiny_refiner


PROMPT = "<text>A red ball bounces in a box.</text><sfx>A knock on every bounce.</sfx>"
NEGATIVE = "blurry"  # a shorter prompt than PROMPT: the two passes of guidance have different lengths
STEPS = 6
# Mean absolute change of a cached output vs the uncached one allowed here. Measured on these tiny random models:
# video (pixels in [0, 1]) 2e-4 with PAB, 6e-5 with TaylorSeer, 5e-4 through the Refiner; audio (waveform) 1e-5.
# For scale, another seed changes the video by 0.17 and the audio by 5e-3.
TOLERANCE = {"frames": 1e-2, "audio": 5e-4}


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline()


@pytest.fixture(scope="module")
def refiner(pipe):
    return SkyReelsV4RefinerPipeline.from_pipe(pipe, transformer=build_tiny_refiner(pipe.transformer))


def pab(pipe):
    return PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2,
        cross_attention_block_skip_range=2,
        spatial_attention_timestep_skip_range=(0, 1000),
        cross_attention_timestep_skip_range=(0, 1000),
        current_timestep_callback=lambda: pipe.current_timestep,
    )


def taylorseer(pipe):
    return TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=2, taylor_factors_dtype=torch.float32)


@contextlib.contextmanager
def count_attention(model):
    """Counts attention computations: every attention layer projects its queries (`to_q` or fused `to_qkv`) once
    per computation, and a cached layer skips its whole forward."""
    counter = {"calls": 0}
    handles = [
        module.register_forward_pre_hook(lambda *_: counter.__setitem__("calls", counter["calls"] + 1))
        for name, module in model.named_modules()
        if name.endswith((".to_q", ".to_qkv"))
    ]
    try:
        yield counter
    finally:
        for handle in handles:
            handle.remove()


def generate(pipe, **kwargs):
    with count_attention(pipe.transformer) as counter:
        out = pipe(
            PROMPT,
            negative_prompt=NEGATIVE,
            guidance_scale=4.0,
            num_inference_steps=STEPS,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            **kwargs,
        )
    return out, counter["calls"]


@pytest.mark.parametrize("make_config", [pab, taylorseer])
def test_cached_generation_is_close_and_computes_less(pipe, make_config):
    uncached, uncached_calls = generate(pipe)
    pipe.transformer.enable_cache(make_config(pipe))
    try:
        assert pipe.transformer.is_cache_enabled
        cached, cached_calls = generate(pipe)
        again, _ = generate(pipe)  # the pipeline resets the cache state after each call
    finally:
        pipe.transformer.disable_cache()
    restored, restored_calls = generate(pipe)

    assert cached_calls < 0.8 * uncached_calls, (cached_calls, uncached_calls)
    for name in ("frames", "audio"):
        difference = np.abs(getattr(cached, name) - getattr(uncached, name)).mean()
        assert 0 < difference < TOLERANCE[name], (name, difference)
        np.testing.assert_array_equal(getattr(again, name), getattr(cached, name))
        np.testing.assert_array_equal(getattr(restored, name), getattr(uncached, name))
    assert restored_calls == uncached_calls and not pipe.transformer.is_cache_enabled


def test_pyramid_attention_broadcast_through_the_refiner(refiner):
    video = np.random.RandomState(0).rand(5, 32, 32, 3).astype(np.float32)
    audio = np.random.RandomState(1).uniform(-0.5, 0.5, (1, 1, 13781)).astype(np.float32)

    def upscale():
        with count_attention(refiner.transformer) as counter:
            out = refiner(
                PROMPT,
                negative_prompt=NEGATIVE,
                video=video,
                audio=audio,
                num_inference_steps=4,
                generator=torch.Generator().manual_seed(0),
            )
        return out.frames, counter["calls"]

    uncached, uncached_calls = upscale()
    refiner.transformer.enable_cache(pab(refiner))
    try:
        cached, cached_calls = upscale()
    finally:
        refiner.transformer.disable_cache()
    assert cached_calls < 0.8 * uncached_calls
    assert np.abs(cached - uncached).mean() < TOLERANCE["frames"]
    np.testing.assert_array_equal(upscale()[0], uncached)


def test_pyramid_attention_broadcast_on_a_direct_model_call():
    # Outside any `cache_context` (no pipeline) every layer keeps one state: the second call reuses the first's.
    torch.manual_seed(0)
    model = SkyReelsV4AudioTransformer1DModel(
        in_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_single_layers=1,
        num_token_refiner_layers=1,
        text_embed_dim=8,
    ).eval()
    inputs = {
        "hidden_states": torch.randn(1, 4, 10),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 3, 8),
    }
    model.enable_cache(
        PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2, current_timestep_callback=lambda: 500)
    )
    with torch.no_grad(), count_attention(model) as counter:
        model(**inputs)
        first = counter["calls"]
        model(**inputs)
    assert 0 < counter["calls"] - first < first


@pytest.mark.parametrize(
    "config",
    [
        FirstBlockCacheConfig(),
        MagCacheConfig(mag_ratios=[1.0] * STEPS, num_inference_steps=STEPS),
        SeaCacheConfig(),
        FasterCacheConfig(),
        TextKVCacheConfig(),
        TaylorSeerCacheConfig(use_lite_mode=True),
    ],
    ids=lambda config: type(config).__name__,
)
def test_unsupported_caches_are_refused_by_name(pipe, config):
    with pytest.raises(ValueError, match=type(config).__name__) as error:
        pipe.transformer.enable_cache(config)
    assert "PyramidAttentionBroadcastConfig" in str(error.value)
    assert not pipe.transformer.is_cache_enabled
