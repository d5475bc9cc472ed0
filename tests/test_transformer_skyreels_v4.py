import math

import pytest
import torch
from peft import LoraConfig

from skyreels_diffusers import SkyReelsV4AudioTransformer1DModel, SkyReelsV4Transformer3DModel
from skyreels_diffusers.models.transformer_skyreels_v4 import audio_token_positions, tower_key_to_joint


TINY = {
    "in_channels": 9,
    "out_channels": 4,
    "audio_in_channels": 6,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_layers": 1,
    "num_single_layers": 1,
    "num_token_refiner_layers": 1,
    "text_embed_dim": 24,
    "rope_axes_dim": (4, 6, 6),
}
BATCH, FRAMES, HEIGHT, WIDTH = 2, 3, 4, 6
# Outputs of the same weights on the same inputs through different memory layouts or CPU kernels (AVX-512 / AVX2 /
# default ATen paths, MKL vs oneDNN GEMMs) differ in the last bits: measured at most 4e-7 on these outputs (|x| ~ 1).
KERNEL_TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
# 3 latent frames = 9 frames at 16 fps = 0.5625 s = 24.2 audio latents at 44100 / 1024 per second.
AUDIO_LEN = 24


def make_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return SkyReelsV4Transformer3DModel(**{**TINY, **overrides}).eval()


def make_inputs(seed=0, batch=BATCH):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 7, dtype=torch.bool)
    mask[-1, 4:] = False  # the last prompt is padded
    return {
        "hidden_states": torch.randn(batch, 9, FRAMES, HEIGHT, WIDTH, generator=generator),
        "timestep": torch.linspace(700.0, 300.0, batch),
        "encoder_hidden_states": torch.randn(batch, 7, 24, generator=generator),
        "encoder_attention_mask": mask,
        "audio_hidden_states": torch.randn(batch, 6, AUDIO_LEN, generator=generator),
    }


def randomize_cross_modal(model, seed=1):
    """Give the zero-initialised cross-modal and text cross-attention outputs real weights, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ("audio_attn.to_out" in name or "video_attn.to_out" in name or "text_attn.to_out" in name) or (
                "text_type_embedding" in name
            ):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model


@pytest.fixture
def model():
    return make_model()


def test_t2av_t2v_t2a_shapes(model):
    inputs = make_inputs()
    with torch.no_grad():
        both = model(**inputs)
        video_only = model(**{**inputs, "audio_hidden_states": None})
        audio_only = model(**{**inputs, "hidden_states": None})
    assert both.sample.shape == (BATCH, 4, FRAMES, HEIGHT, WIDTH)
    assert both.audio_sample.shape == (BATCH, 6, AUDIO_LEN)
    assert both.keyframe_sample is None
    assert video_only.sample.shape == both.sample.shape and video_only.audio_sample is None
    assert audio_only.audio_sample.shape == both.audio_sample.shape and audio_only.sample is None
    assert torch.isfinite(both.sample).all() and torch.isfinite(both.audio_sample).all()


def test_tuple_output_and_scalar_timestep(model):
    inputs = {**make_inputs(), "timestep": torch.tensor(500.0)}
    with torch.no_grad():
        sample, audio_sample, keyframes = model(**inputs, return_dict=False)
        batched = model(**{**inputs, "timestep": torch.full((BATCH,), 500.0)})
    torch.testing.assert_close(sample, batched.sample)
    torch.testing.assert_close(audio_sample, batched.audio_sample)
    assert keyframes is None


def test_references_and_keyframes_shapes_and_influence(model):
    randomize_cross_modal(model)
    inputs = make_inputs()
    references = torch.randn(BATCH, 4, 2, HEIGHT, WIDTH)
    audio_references = torch.randn(BATCH, 6, 5)
    keyframes = torch.randn(BATCH, 9, 2, 2 * HEIGHT, 2 * WIDTH)
    with torch.no_grad():
        plain = model(**inputs)
        out = model(
            **inputs,
            reference_latents=references,
            audio_reference_latents=audio_references,
            keyframe_hidden_states=keyframes,
            keyframe_positions=torch.tensor([0.0, 2.0]),
        )
    # References are not predicted: outputs keep the shapes of the noisy inputs only.
    assert out.sample.shape == plain.sample.shape
    assert out.audio_sample.shape == plain.audio_sample.shape
    assert out.keyframe_sample.shape == (BATCH, 4, 2, 2 * HEIGHT, 2 * WIDTH)
    # ...but they condition the prediction through attention.
    assert not torch.allclose(out.sample, plain.sample)
    assert not torch.allclose(out.audio_sample, plain.audio_sample)


def test_padded_text_tokens_are_ignored(model):
    inputs = make_inputs()
    changed = {k: v.clone() for k, v in inputs.items()}
    changed["encoder_hidden_states"][-1, 4:] = 1000.0  # masked positions of the padded prompt
    with torch.no_grad():
        a = model(**inputs)
        b = model(**changed)
    torch.testing.assert_close(a.sample, b.sample)
    torch.testing.assert_close(a.audio_sample, b.audio_sample)
    assert torch.isfinite(a.sample).all()


def test_batch_matches_single_sample(model):
    randomize_cross_modal(model)
    inputs = make_inputs()
    with torch.no_grad():
        batched = model(**inputs)
        single = model(**{k: v[-1:] for k, v in inputs.items()})
    torch.testing.assert_close(batched.sample[-1:], single.sample, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched.audio_sample[-1:], single.audio_sample, atol=1e-5, rtol=1e-4)


def test_save_load_roundtrip_safetensors(model, tmp_path):
    randomize_cross_modal(model)
    inputs = make_inputs()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = SkyReelsV4Transformer3DModel.from_pretrained(tmp_path).eval()
    # The weights come back bit for bit; the outputs are compared with a tolerance, because the loaded tensors may
    # sit at other addresses (memory-mapped) and some CPUs' kernels then round the last bit differently.
    original = model.state_dict()
    assert all(torch.equal(value, original[key]) for key, value in loaded.state_dict().items())
    with torch.no_grad():
        expected, actual = model(**inputs), loaded(**inputs)
    torch.testing.assert_close(actual.sample, expected.sample, **KERNEL_TOLERANCE)
    torch.testing.assert_close(actual.audio_sample, expected.audio_sample, **KERNEL_TOLERANCE)


def test_zero_initialised_cross_modal_layers_keep_towers_independent(model):
    # Exact: with the exchange at zero, each tower's blocks run the same kernels on the same values whether or not the
    # other modality is there (the joint sequence is split into views; every block's first op makes them contiguous).
    inputs = make_inputs()
    with torch.no_grad():
        joint = model(**inputs)
        video_only = model(**{**inputs, "audio_hidden_states": None})
        audio_only = model(**{**inputs, "hidden_states": None})
    assert torch.equal(joint.sample, video_only.sample)
    assert torch.equal(joint.audio_sample, audio_only.audio_sample)
    # Once trained (non-zero outputs), each modality really sees the other.
    randomize_cross_modal(model)
    with torch.no_grad():
        joint = model(**inputs)
        video_only = model(**{**inputs, "audio_hidden_states": None})
    assert not torch.allclose(joint.sample, video_only.sample)


def test_cross_modal_order_audio_first_then_video_sees_updated_audio(model):
    block = model.transformer_blocks[0].cross_modal
    randomize_cross_modal(model)
    video, audio = torch.randn(1, 5, 32), torch.randn(1, 4, 32)
    video_rope = model.time_rope(torch.arange(5.0)[:, None])
    audio_rope = model.time_rope(audio_token_positions(4, 0, 0.5, None))
    with torch.no_grad():
        new_video, new_audio = block(video, audio, video_rope, audio_rope)
        expected_audio = audio + block.audio_attn(
            block.norm_audio_query(audio), block.norm_video(video), None, audio_rope, video_rope
        )
        expected_video = video + block.video_attn(
            block.norm_video(video), block.norm_audio_context(expected_audio), None, video_rope, audio_rope
        )
    torch.testing.assert_close(new_audio, expected_audio)
    torch.testing.assert_close(new_video, expected_video)


@pytest.mark.parametrize(
    "timeline",
    [
        {
            "fps": 16.0,
            "vae_temporal_compression_ratio": 4,
            "audio_sample_rate": 44100,
            "audio_samples_per_latent": 1024,
        },
        {
            "fps": 24.0,
            "vae_temporal_compression_ratio": 4,
            "audio_sample_rate": 16000,
            "audio_samples_per_latent": 320,
        },
    ],
)
def test_audio_rope_scale_derived_from_config(timeline):
    model = make_model(**timeline)
    expected = (timeline["fps"] / timeline["vae_temporal_compression_ratio"]) / (
        timeline["audio_sample_rate"] / timeline["audio_samples_per_latent"]
    )
    assert math.isclose(model.audio_rope_scale, expected, rel_tol=1e-12)
    audio = SkyReelsV4AudioTransformer1DModel(
        in_channels=6,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=0,
        num_token_refiner_layers=1,
        text_embed_dim=24,
        **timeline,
    )
    assert math.isclose(audio.audio_rope_scale, expected, rel_tol=1e-12)

    positions = audio_token_positions(10, 3, model.audio_rope_scale, None)
    assert positions.dtype == torch.float32
    torch.testing.assert_close(positions[:, 0], (torch.arange(10.0) - 3) * expected)
    assert (positions[:3] < 0).all() and positions[3, 0] == 0


def test_video_positions_references_negative_and_keyframes_share_spatial_frame(model):
    positions = model.video_positions(
        grid=(3, 2, 2), reference_grid=(2, 2, 2), keyframe_grid=(1, 4, 4), keyframe_positions=torch.tensor([2.0])
    )
    references, video, keyframes = positions[:8], positions[8:20], positions[20:]
    assert positions.shape == (8 + 12 + 16, 3)
    assert set(references[:, 0].tolist()) == {-2.0, -1.0}
    assert references[:4, 0].eq(-2.0).all()  # reference i of R sits at -R + i
    assert set(video[:, 0].tolist()) == {0.0, 1.0, 2.0}
    assert set(video[:, 1].tolist()) == {0.0, 2.0}  # low-res rows scaled by the 2x keyframe ratio
    assert set(keyframes[:, 1].tolist()) == {0.0, 1.0, 2.0, 3.0}
    assert keyframes[:, 0].eq(2.0).all()


def test_gradient_checkpointing_matches(model):
    randomize_cross_modal(model)
    inputs = make_inputs()

    def grads(enable):
        model.zero_grad()
        if enable:
            model.enable_gradient_checkpointing()
        else:
            model.disable_gradient_checkpointing()
        out = model(**inputs)
        (out.sample.square().mean() + out.audio_sample.square().mean()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert model.gradient_checkpointing
    assert plain.keys() == checkpointed.keys() and len(plain) > 50
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], atol=1e-6, rtol=1e-5, msg=name)


def test_fused_qkv_projections_give_the_same_outputs(model):
    randomize_cross_modal(model)
    inputs = make_inputs()
    with torch.no_grad():
        reference = model(**inputs)
        model.fuse_qkv_projections()
        assert model.transformer_blocks[0].video.attn.fused_projections
        fused = model(**inputs)
        model.unfuse_qkv_projections()
        unfused = model(**inputs)
    for name in ("sample", "audio_sample"):
        torch.testing.assert_close(getattr(fused, name), getattr(reference, name), atol=1e-5, rtol=1e-5)
        # Exact: unfusing restores the very same weight tensors, so the same kernels run on the same values.
        torch.testing.assert_close(getattr(unfused, name), getattr(reference, name), atol=0, rtol=0)


def test_lora_trains_changes_outputs_and_roundtrips(model, tmp_path):
    inputs = make_inputs()
    with torch.no_grad():
        before = model(**inputs).sample
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.numel() < 16 * 64 for p in trainable)  # only the low-rank factors
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    out = model(**inputs)
    (out.sample.square().mean() + out.audio_sample.square().mean()).backward()
    optimizer.step()
    with torch.no_grad():
        after = model(**inputs)
    assert not torch.allclose(before, after.sample)

    model.save_lora_adapter(tmp_path)
    fresh = make_model()
    fresh.load_lora_adapter(tmp_path, prefix=None, use_safetensors=True)
    with torch.no_grad():
        reloaded = fresh(**inputs)
    torch.testing.assert_close(reloaded.sample, after.sample)
    torch.testing.assert_close(reloaded.audio_sample, after.audio_sample)


def test_compiles_without_graph_breaks(model):
    inputs = make_inputs()
    with torch.no_grad():
        expected = model(**inputs)
        # `fullgraph=True` fails on any graph break; aot_eager keeps the suite fast (inductor codegen takes ~1 min).
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        actual = compiled(**inputs)
    torch.testing.assert_close(actual.sample, expected.sample)
    torch.testing.assert_close(actual.audio_sample, expected.audio_sample)


def test_regional_compilation_compiles_each_kind_of_block_once():
    # Dual- and single-stream joint blocks are separate classes, so `compile_repeated_blocks` compiles each once: a
    # second call, and every block of a kind after the first, reuse the compiled code (no recompilation).
    model = make_model()
    inputs = make_inputs()
    with torch.no_grad():
        expected = model(**inputs)
        model.compile_repeated_blocks(fullgraph=True, backend="eager")
        torch._dynamo.reset()
        with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
            actual = model(**inputs)
            again = model(**inputs)
    torch.testing.assert_close(actual.sample, expected.sample)
    torch.testing.assert_close(again.audio_sample, expected.audio_sample)


def test_audio_dit_tuple_output_puts_the_prediction_first():
    from skyreels_diffusers import SkyReelsV4AudioTransformer1DModel

    torch.manual_seed(0)
    audio_model = SkyReelsV4AudioTransformer1DModel(
        in_channels=6,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=1,
        num_token_refiner_layers=1,
        text_embed_dim=24,
    ).eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = audio_model(inputs["audio_hidden_states"], inputs["timestep"], inputs["encoder_hidden_states"])
        (sample,) = audio_model(
            inputs["audio_hidden_states"], inputs["timestep"], inputs["encoder_hidden_states"], return_dict=False
        )
    # Exact: the same call with another return type.
    torch.testing.assert_close(sample, out.sample, rtol=0, atol=0)


def test_audio_dit_loads_into_joint_model_through_the_key_map(model):
    torch.manual_seed(3)
    audio_model = SkyReelsV4AudioTransformer1DModel(
        in_channels=6,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=1,
        num_token_refiner_layers=1,
        text_embed_dim=24,
    ).eval()
    assert {tower_key_to_joint(key, "audio") for key in audio_model.state_dict()} <= set(model.state_dict())
    joint = SkyReelsV4Transformer3DModel.from_video_and_audio(model, audio_model).eval()
    inputs = make_inputs()
    references = torch.randn(BATCH, 6, 3)
    with torch.no_grad():
        joint_out = joint(**inputs, audio_reference_latents=references)
        video_out = model(**{**inputs, "audio_hidden_states": None})
        audio_out = audio_model(
            inputs["audio_hidden_states"],
            inputs["timestep"],
            inputs["encoder_hidden_states"],
            inputs["encoder_attention_mask"],
            reference_latents=references,
        )
    torch.testing.assert_close(joint_out.sample, video_out.sample)
    torch.testing.assert_close(joint_out.audio_sample, audio_out.sample)
    assert audio_out.sample.shape == (BATCH, 6, AUDIO_LEN)


def test_from_video_and_audio_rejects_mismatched_towers(model):
    audio_model = SkyReelsV4AudioTransformer1DModel(
        in_channels=6,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        num_single_layers=1,
        num_token_refiner_layers=1,
        text_embed_dim=24,
    )
    with pytest.raises(ValueError, match="num_layers"):
        SkyReelsV4Transformer3DModel.from_video_and_audio(model, audio_model)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"encoder_attention_mask": torch.ones(BATCH, 6, dtype=torch.bool)}, "encoder_attention_mask"),
        ({"audio_hidden_states": torch.randn(BATCH, 6, 60)}, "audio latents"),
        ({"hidden_states": None, "audio_hidden_states": None}, "neither"),
        ({"keyframe_hidden_states": torch.randn(BATCH, 9, 1, 8, 12)}, "together"),
        (
            {"keyframe_hidden_states": torch.randn(BATCH, 9, 1, 8, 12), "keyframe_positions": torch.zeros(2)},
            "keyframe_positions",
        ),
    ],
)
def test_what_a_direct_caller_could_get_wrong_silently_raises(model, change, message):
    with pytest.raises(ValueError, match=message):
        model(**{**make_inputs(), **change})


def test_sizes_not_divisible_by_the_patch_raise():
    model = make_model(patch_size=2)  # the patch embedding would silently drop the odd row
    with pytest.raises(ValueError, match="divisible by the patch"):
        model(**{**make_inputs(), "hidden_states": torch.randn(BATCH, 9, FRAMES, HEIGHT + 1, WIDTH)})


def test_bad_config():
    with pytest.raises(ValueError, match="in_channels"):
        SkyReelsV4Transformer3DModel(**{**TINY, "in_channels": 8})
    with pytest.raises(ValueError, match="rope_axes_dim"):
        SkyReelsV4Transformer3DModel(**{**TINY, "rope_axes_dim": (4, 4, 4)})


def test_per_token_audio_timestep_equals_per_sample_when_constant():
    """Issue 30: a `(B, L)` audio timestep modulates each audio token at its own level. Constant per sample, it gives
    the `(B,)` result (the per-token adaLN runs its linear layers on other shapes: measured 2.4e-6 apart on the tiny
    default); a clean prefix at 0 changes the generated tokens' prediction."""
    model = SkyReelsV4Transformer3DModel.from_pretrained("pipelines/skyreels-v4-tiny/transformer").eval()
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(2, 17, 5, 8, 8, generator=generator),
        "timestep": torch.tensor([700.0, 300.0]),
        "encoder_hidden_states": torch.randn(2, 7, 32, generator=generator),
        "audio_hidden_states": torch.randn(2, 8, 10, generator=generator),
        "audio_reference_latents": torch.randn(2, 8, 3, generator=generator),
    }
    audio_timestep = torch.tensor([500.0, 200.0])
    with torch.no_grad():
        per_sample = model(**inputs, audio_timestep=audio_timestep)
        per_token = model(**inputs, audio_timestep=audio_timestep[:, None].expand(2, 10))
        prefix = audio_timestep[:, None].repeat(1, 10)
        prefix[:, :4] = 0
        with_prefix = model(**inputs, audio_timestep=prefix)
    torch.testing.assert_close(per_token.audio_sample, per_sample.audio_sample, **KERNEL_TOLERANCE)
    torch.testing.assert_close(per_token.sample, per_sample.sample, **KERNEL_TOLERANCE)
    assert (with_prefix.audio_sample[:, :, 4:] - per_sample.audio_sample[:, :, 4:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"per-token `audio_timestep` must have shape \(batch, audio latents\)"):
        model(**inputs, audio_timestep=torch.zeros(2, 9))
