import numpy as np
import pytest
import torch
from model_work import refused_before_model_work

from skyreels_diffusers import SkyReelsV4RefinerPipeline, SkyReelsV4RefinerTransformer3DModel
from skyreels_diffusers.pipelines.conditioning import build_refiner_condition
from skyreels_diffusers.tiny_components import build_tiny_pipeline, build_tiny_refiner, build_tiny_transformer


PROMPT = "<text>A red ball bounces.</text><sfx>A knock.</sfx>"


@pytest.fixture(scope="module")
def base():
    return build_tiny_pipeline()


@pytest.fixture(scope="module")
def refiner(base):
    return SkyReelsV4RefinerPipeline.from_pipe(base, transformer=build_tiny_refiner(base.transformer))


def text_inputs(batch=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 5, 32, generator=generator), torch.ones(batch, 5, dtype=torch.bool)


def test_refiner_from_video_tower_reproduces_it_at_zero_sparsity():
    video_model = build_tiny_transformer()
    refiner = build_tiny_refiner(video_model, temporal_upscale_factor=1)
    hidden = torch.randn(1, 17, 5, 8, 8)
    text, mask = text_inputs()
    timestep = torch.tensor([400.0])
    with torch.no_grad():
        expected = video_model(hidden, timestep, text, mask).sample
        actual = refiner(hidden, timestep, text, mask, sparsity=0.0).sample
        sparse = refiner(hidden, timestep, text, mask, sparsity=0.75).sample
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)
    assert sparse.shape == expected.shape and not torch.allclose(sparse, expected, atol=1e-4)


@pytest.mark.parametrize("temporal_upscale_factor", [1, 2])
def test_refiner_shapes_with_and_without_audio(temporal_upscale_factor):
    refiner = build_tiny_refiner(temporal_upscale_factor=temporal_upscale_factor)
    frames = 2 * 2 + 1 if temporal_upscale_factor == 2 else 3
    hidden = torch.randn(2, 17, frames, 8, 12)
    text, mask = text_inputs(2)
    with torch.no_grad():
        out = refiner(hidden, torch.tensor([500.0, 200.0]), text, mask).sample
        with_audio = refiner(hidden, torch.tensor([500.0, 200.0]), text, mask, audio_latents=torch.randn(2, 8, 25))
    assert out.shape == (2, 8, frames, 8, 12)
    # The audio cross-attention starts at zero: a fresh Refiner ignores the audio exactly.
    torch.testing.assert_close(with_audio.sample, out)


def test_refiner_gradients_flow_through_sparse_attention():
    refiner = build_tiny_refiner(temporal_upscale_factor=1)
    with torch.no_grad():
        for block in (*refiner.transformer_blocks, *refiner.single_transformer_blocks):
            block.video.attn.vsa_gate.weight.normal_(std=0.1)
    text, mask = text_inputs()
    out = refiner(torch.randn(1, 17, 5, 8, 8), torch.tensor([300.0]), text, mask, sparsity=0.5).sample
    out.square().mean().backward()
    gate_grad = refiner.transformer_blocks[0].video.attn.vsa_gate.weight.grad
    query_grad = refiner.single_transformer_blocks[0].video.attn.to_q.weight.grad
    assert gate_grad is not None and gate_grad.abs().sum() > 0 and query_grad.abs().sum() > 0


def test_refiner_condition_upsamples_and_places_keyframes():
    low = torch.randn(1, 4, 3, 2, 2)
    keyframes = torch.full((1, 4, 2, 4, 4), 7.0)
    condition = build_refiner_condition(low, 2, 2, keyframes, [0, 4])
    assert condition.latents.shape == (1, 4, 5, 4, 4)
    assert condition.mask[0, 0, :, 0, 0].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert condition.latents[:, :, [0, 4]].eq(7).all()
    # Between keyframes: linear interpolation in time and space, endpoints aligned.
    expected_mid = torch.nn.functional.interpolate(low, size=(5, 4, 4), mode="trilinear", align_corners=True)
    torch.testing.assert_close(condition.latents[:, :, 1:4], expected_mid[:, :, 1:4])
    torch.testing.assert_close(expected_mid[:, :, 2, 0, 0], low[:, :, 1, 0, 0])


def test_chain_base_to_refiner_end_to_end(base, refiner):
    generator = torch.Generator().manual_seed(0)
    stage1 = base(PROMPT, num_keyframes=2, num_inference_steps=2, generator=generator, output_type="latent")
    seen = []

    def capture(module, args, kwargs):
        seen.append(kwargs["hidden_states"][:, -1:])  # the mask channel

    handle = refiner.transformer.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        stage2 = refiner(
            PROMPT,
            low_res_latents=stage1.frames,
            keyframes=stage1.keyframes,
            keyframe_indices=stage1.keyframe_indices,
            audio_latents=stage1.audio,
            num_inference_steps=2,
            generator=generator,
        )
    finally:
        handle.remove()
    # 9 frames at 16 fps -> 17 frames at 32 fps, twice the size; the audio is the base audio, decoded.
    assert stage2.frames.shape == (1, 17, 64, 64, 3) and stage2.fps == 32
    assert stage2.audio.shape == (1, 1, round(9 / 16 * 44100)) and stage2.audio_sample_rate == 44100
    # Keyframes of low-res frames 0 and 8 land on output latent frames 0 and 4 (frames 0 and 16 at 2x fps).
    assert seen[0][0, 0, :, 0, 0].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_refiner_as_a_standalone_upscaler_passes_audio_through(refiner):
    video = np.random.RandomState(0).rand(5, 32, 32, 3).astype(np.float32)
    audio = np.random.RandomState(1).uniform(-0.5, 0.5, (1, 1, 13781)).astype(np.float32)
    out = refiner(PROMPT, video=video, audio=audio, num_inference_steps=1, guidance_scale=1.0, sparsity=0.5)
    assert out.frames.shape == (1, 9, 64, 64, 3)
    np.testing.assert_array_equal(out.audio, audio)


def test_refiner_strength_starts_from_the_noised_upsampled_condition(refiner):
    latents = torch.randn(1, 8, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    seen = []

    def capture(module, args, kwargs):
        seen.append((kwargs["timestep"].clone(), kwargs["hidden_states"][:, :8].clone()))

    handle = refiner.transformer.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        refiner(
            PROMPT,
            low_res_latents=latents,
            num_inference_steps=10,
            strength=0.3,
            guidance_scale=1.0,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        )
        assert refiner.num_timesteps == 3
        schedule = refiner.prepare_timesteps(10, None, "cpu")
    finally:
        handle.remove()
    # Only the last 3 of 10 steps run, starting at the 8th timestep of the full schedule ...
    assert len(seen) == 3
    torch.testing.assert_close(seen[0][0], schedule[7:8])
    # ... from the upsampled low-res latents noised to that sigma with the generator's noise.
    sigma = refiner.scheduler.sigmas[7]
    upsampled = build_refiner_condition(latents, 2, refiner.transformer.config.temporal_upscale_factor).latents
    noise = torch.randn(upsampled.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(seen[0][1], sigma * noise + (1 - sigma) * upsampled)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strength": 0.0}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"strength": 0.4}, "no step"),
        ({"keyframes": [np.zeros((64, 64, 3), np.float32)], "keyframe_indices": [9]}, "keyframe_indices"),
        ({"scale_factor": 0}, "scale_factor"),
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.1}, "sparsity"),
        ({"keyframes": torch.zeros(1, 8, 1, 12, 12), "keyframe_indices": [0]}, "low-res latent size times"),
        ({"keyframes": torch.zeros(1, 8, 1, 16, 16)}, "together"),
        # issue 32
        (
            {"keyframes": torch.zeros(1, 3, 1, 16, 16), "keyframe_indices": [0]},
            r"`keyframes` latents must have shape \(B, 8, K, 16, 16\): the VAE's latent channels",
        ),
        ({"keyframes": torch.zeros(1, 8, 2, 16, 16), "keyframe_indices": [0]}, "`keyframes` holds 2 keyframes"),
        ({"audio_latents": torch.zeros(1, 8, 100_000)}, r"`audio_latents` holds 100000 latents; it takes 1 to 5168"),
        ({"audio_latents": torch.zeros(1, 3, 10)}, "`audio_latents` must have 8 channels"),
        ({"audio_latents": torch.zeros(2, 8, 10)}, "`audio_latents` has batch 2, which does not divide"),
    ],
)
def test_refiner_bad_inputs(refiner, kwargs, message):
    latents = torch.randn(1, 8, 3, 8, 8)
    with refused_before_model_work(refiner, ValueError, message):
        refiner(PROMPT, low_res_latents=latents, num_inference_steps=1, **kwargs)
    with refused_before_model_work(refiner, TypeError, "`scale_factor` must be an integer, got float 1.5"):
        refiner(PROMPT, low_res_latents=latents, num_inference_steps=1, scale_factor=1.5)


@pytest.fixture(scope="module")
def patch2_refiner(base):
    """A Refiner that patchifies 2x2 latents, like the tiny default's."""
    transformer = SkyReelsV4RefinerTransformer3DModel.from_config({**build_tiny_refiner().config, "patch_size": 2})
    return SkyReelsV4RefinerPipeline.from_pipe(base, transformer=transformer.eval())


@pytest.mark.parametrize(
    "low_res_shape, scale_factor, upscaled",
    [
        ((1, 8, 3, 1, 1), 2, "2x2"),
        ((1, 8, 3, 1, 4), 2, "2x8"),
        ((1, 8, 3, 3, 5), 1, "3x5"),
        ((1, 8, 3, 3, 5), 3, "9x15"),
    ],
)
def test_low_res_latents_smaller_than_a_patch_or_not_divisible_are_refused(
    patch2_refiner, low_res_shape, scale_factor, upscaled
):
    message = rf"`low_res_latents` is .* latents a frame, which `scale_factor`={scale_factor} upscales to {upscaled}"
    with refused_before_model_work(patch2_refiner, ValueError, message + ".*patch size 2"):
        patch2_refiner(PROMPT, low_res_latents=torch.randn(low_res_shape), scale_factor=scale_factor)


def test_low_res_video_is_checked_by_the_same_rule(patch2_refiner):
    video = np.zeros((5, 36, 36, 3), np.float32)  # 9x9 latents: whole patches only after an even upscaling
    with refused_before_model_work(patch2_refiner, ValueError, r"`video` is 9x9 latents a frame.*upscales to 9x9"):
        patch2_refiner(PROMPT, video=video, scale_factor=1)
    out = patch2_refiner(PROMPT, video=video, num_inference_steps=1, guidance_scale=1.0, output_type="latent")
    assert out.frames.shape == (1, 8, 3, 18, 18)


def test_low_res_latents_of_whole_patches_after_upscaling_are_refined(patch2_refiner):
    # 3x5 latents are not whole 2x2 patches, but upscaled by 2 they are: a valid, finite refinement.
    low_res = torch.randn(1, 8, 3, 3, 5, generator=torch.Generator().manual_seed(0))
    out = patch2_refiner(PROMPT, low_res_latents=low_res, num_inference_steps=1, output_type="latent")
    assert out.frames.shape == (1, 8, 5, 6, 10) and torch.isfinite(out.frames).all()


def test_refiner_bad_config():
    with pytest.raises(ValueError, match="temporal_upscale_factor"):
        SkyReelsV4RefinerTransformer3DModel(in_channels=9, out_channels=4, temporal_upscale_factor=3)


def test_the_former_name_latents_is_gone(refiner):
    # No release has shipped, so renamed arguments are simply gone: Python names the unknown argument.
    with pytest.raises(TypeError, match="latents"):
        refiner(PROMPT, latents=torch.zeros(1, 8, 3, 8, 8), num_inference_steps=1, output_type="latent")


def test_one_low_res_clip_serves_a_batch_of_prompts(refiner):
    low_res = torch.randn(1, 8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = refiner([PROMPT, PROMPT + " Slower."], low_res_latents=low_res, num_inference_steps=1, output_type="latent")
    assert out.frames.shape[0] == 2
    with pytest.raises(ValueError, match="does not divide"):
        refiner([PROMPT] * 3, low_res_latents=torch.cat([low_res, low_res]), num_inference_steps=1)
