"""Every Diffusers cache (`enable_cache`) on the three SkyReels-V4 transformers, as Diffusers applies it.

The joint model and the Refiner run through their pipelines; the pipelines batch guidance's two passes into one call
when a cache is enabled (`batched_guidance`), because the cache hooks keep one state per layer. The audio DiT has no
pipeline of its own: it is stepped directly, inside `cache_context`, as a pipeline would."""

import contextlib
import os

import numpy as np
import pytest
import torch
from diffusers.hooks import (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
)

from skyreels_diffusers import SkyReelsV4AudioTransformer1DModel, SkyReelsV4RefinerPipeline
from skyreels_diffusers.tiny_components import build_tiny_pipeline, build_tiny_refiner


PROMPT = "<text>A red ball bounces in a box.</text><sfx>A knock on every bounce.</sfx>"
NEGATIVE = "blurry"  # a shorter prompt than PROMPT: batching the two passes pads it with masked tokens
STEPS = 6
MEASURE = os.environ.get("SKYREELS_MEASURE_CACHES") == "1"  # prints the figures the tolerances below come from


def every_cache(current_timestep):
    """Each Diffusers cache, set to skip work on these few steps. `current_timestep` is the pipeline's."""
    return {
        "PyramidAttentionBroadcast": PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2,
            cross_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(0, 1000),
            cross_attention_timestep_skip_range=(0, 1000),
            current_timestep_callback=current_timestep,
        ),
        "FirstBlockCache": FirstBlockCacheConfig(threshold=1.0),
        "MagCache": MagCacheConfig(mag_ratios=[1.0] * STEPS, num_inference_steps=STEPS),
        # FasterCache skips the unconditional half of the denoiser's batch on some steps; it must know every input
        # that carries both passes: the joint model's audio, the Refiner's audio condition.
        "FasterCache": FasterCacheConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(-1, 1001),
            current_timestep_callback=current_timestep,
            attention_weight_callback=lambda _: 0.5,
            unconditional_batch_skip_range=2,
            unconditional_batch_timestep_skip_range=(-1, 1001),
            _unconditional_conditional_input_kwargs_identifiers=(
                "hidden_states",
                "encoder_hidden_states",
                "encoder_attention_mask",
                "timestep",
                "audio_hidden_states",
                "audio_timestep",
                "audio_latents",
            ),
        ),
        "TaylorSeer": TaylorSeerCacheConfig(
            cache_interval=2, disable_cache_before_step=2, taylor_factors_dtype=torch.float32
        ),
        "TaylorSeerLite": TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=2, use_lite_mode=True),
    }


CACHES = list(every_cache(lambda: 0))

# Mean absolute change of the cached output from the uncached one, allowed at about 5x what was measured on these tiny
# random models (SKYREELS_MEASURE_CACHES=1 prints it). Video pixels are in [0, 1]; for scale, another seed changes the
# video by 0.17 and the audio waveform by 5e-3.
VIDEO_TOLERANCE = {
    "PyramidAttentionBroadcast": 1e-3,  # measured 2.0e-4
    "FirstBlockCache": 5e-3,  # measured 1.0e-3
    "MagCache": 6e-3,  # measured 1.1e-3
    "FasterCache": 1.4e-3,  # measured 2.7e-4
    "TaylorSeer": 7e-4,  # measured 1.3e-4
    "TaylorSeerLite": 8e-3,  # measured 1.6e-3
}
AUDIO_TOLERANCE = {
    "PyramidAttentionBroadcast": 5e-5,  # measured 1.0e-5
    "FirstBlockCache": 2e-4,  # measured 3.4e-5
    "MagCache": 1.5e-4,  # measured 2.9e-5
    "FasterCache": 3e-4,  # measured 5.6e-5
    "TaylorSeer": 3e-5,  # measured 5.2e-6
    "TaylorSeerLite": 2e-4,  # measured 4.2e-5
}
REFINER_TOLERANCE = {
    "PyramidAttentionBroadcast": 2e-3,  # measured 3.7e-4
    "FirstBlockCache": 7e-3,  # measured 1.4e-3
    "MagCache": 8e-3,  # measured 1.6e-3
    "FasterCache": 3.5e-3,  # measured 6.8e-4
    "TaylorSeer": 1e-3,  # measured 2.1e-4
    "TaylorSeerLite": 9e-3,  # measured 1.8e-3
}
AUDIO_DIT_TOLERANCE = {  # latents of unit scale
    "PyramidAttentionBroadcast": 3e-3,  # measured 6.3e-4
    "FirstBlockCache": 1.8e-2,  # measured 3.5e-3
    "MagCache": 2e-2,  # measured 4.2e-3
    "TaylorSeer": 1e-3,  # measured 2.1e-4
    "TaylorSeerLite": 1.4e-2,  # measured 2.8e-3
}


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline()


@pytest.fixture(scope="module")
def refiner(pipe):
    return SkyReelsV4RefinerPipeline.from_pipe(pipe, transformer=build_tiny_refiner(pipe.transformer))


@contextlib.contextmanager
def count_attention(model):
    """Counts attention computations, one per sample: every attention layer projects its queries (`to_q` or fused
    `to_qkv`) once per computation, a cached layer or block skips its whole forward, and FasterCache drops the
    unconditional half of the batch."""
    counter = {"calls": 0}

    def count(module, args):
        counter["calls"] += args[0].shape[0]

    handles = [
        module.register_forward_pre_hook(count)
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


def test_batched_guidance_matches_two_passes(pipe):
    two_passes, two_pass_calls = generate(pipe, batched_guidance=False)
    batched, batched_calls = generate(pipe, batched_guidance=True)
    assert batched_calls == two_pass_calls  # the same samples, in one call per step instead of two
    # Padding the shorter prompt with masked tokens changes only the summation order: measured max 6e-7 (video) and
    # 1.5e-7 (audio).
    np.testing.assert_allclose(batched.frames, two_passes.frames, atol=5e-6, rtol=0)
    np.testing.assert_allclose(batched.audio, two_passes.audio, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cache", CACHES)
def test_cached_generation_is_close_and_computes_less(pipe, cache):
    uncached, uncached_calls = generate(pipe, batched_guidance=True)
    pipe.transformer.enable_cache(every_cache(lambda: pipe.current_timestep)[cache])
    try:
        assert pipe.transformer.is_cache_enabled
        cached, cached_calls = generate(pipe)  # batched, as a cache is enabled
        again, _ = generate(pipe)  # the pipeline resets the cache state after each call
    finally:
        pipe.transformer.disable_cache()
    restored, restored_calls = generate(pipe, batched_guidance=True)

    video_change = np.abs(cached.frames - uncached.frames).mean()
    audio_change = np.abs(cached.audio - uncached.audio).mean()
    if MEASURE:
        print(f"\n{cache}: calls {cached_calls}/{uncached_calls}, video {video_change:.2g}, audio {audio_change:.2g}")
    assert cached_calls < 0.8 * uncached_calls, (cached_calls, uncached_calls)
    assert 0 < video_change < VIDEO_TOLERANCE[cache], video_change
    assert 0 < audio_change < AUDIO_TOLERANCE[cache], audio_change
    # Same kernels on the same tensors: a reset cache repeats itself exactly, and disabling it restores the model.
    np.testing.assert_array_equal(again.frames, cached.frames)
    np.testing.assert_array_equal(again.audio, cached.audio)
    np.testing.assert_array_equal(restored.frames, uncached.frames)
    assert restored_calls == uncached_calls and not pipe.transformer.is_cache_enabled


@pytest.mark.parametrize("cache", CACHES)
def test_caches_through_the_refiner(refiner, cache):
    video = np.random.RandomState(0).rand(5, 32, 32, 3).astype(np.float32)
    audio = np.random.RandomState(1).uniform(-0.5, 0.5, (1, 1, 13781)).astype(np.float32)

    def upscale():
        with count_attention(refiner.transformer) as counter:
            out = refiner(
                PROMPT,
                negative_prompt=NEGATIVE,
                video=video,
                audio=audio,
                num_inference_steps=STEPS,
                batched_guidance=True,
                generator=torch.Generator().manual_seed(0),
            )
        return out.frames, counter["calls"]

    uncached, uncached_calls = upscale()
    refiner.transformer.enable_cache(every_cache(lambda: refiner.current_timestep)[cache])
    try:
        cached, cached_calls = upscale()
    finally:
        refiner.transformer.disable_cache()
    change = np.abs(cached - uncached).mean()
    if MEASURE:
        print(f"\nRefiner {cache}: calls {cached_calls}/{uncached_calls}, video {change:.2g}")
    assert cached_calls < 0.8 * uncached_calls, (cached_calls, uncached_calls)
    assert 0 < change < REFINER_TOLERANCE[cache], change
    np.testing.assert_array_equal(upscale()[0], uncached)


@pytest.mark.parametrize("cache", [name for name in CACHES if name != "FasterCache"])
def test_caches_on_the_audio_dit(cache):
    # FasterCache is left out: it approximates a guided denoiser's unconditional half, and this loop has no guidance.
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
    noise, prompt = torch.randn(1, 4, 10), torch.randn(1, 3, 8)
    timesteps = torch.linspace(1000, 0, STEPS + 1)[:-1]
    state = {"timestep": 1000}

    def sample():
        latents = noise.clone()
        with torch.no_grad(), count_attention(model) as counter:
            for t, t_next in zip(timesteps, list(timesteps[1:]) + [0]):
                state["timestep"] = float(t)
                with model.cache_context("cond"):
                    velocity = model(hidden_states=latents, timestep=t[None], encoder_hidden_states=prompt).sample
                latents = latents + (t_next - t) / 1000 * velocity
        return latents, counter["calls"]

    uncached, uncached_calls = sample()
    model.enable_cache(every_cache(lambda: state["timestep"])[cache])
    cached, cached_calls = sample()
    model.disable_cache()
    change = (cached - uncached).abs().mean().item()
    if MEASURE:
        print(f"\nAudio DiT {cache}: calls {cached_calls}/{uncached_calls}, latents {change:.2g}")
    assert cached_calls < 0.8 * uncached_calls, (cached_calls, uncached_calls)
    assert 0 < change < AUDIO_DIT_TOLERANCE[cache], change
