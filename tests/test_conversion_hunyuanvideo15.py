import pytest
import torch
from diffusers import HunyuanVideo15Transformer3DModel
from script_loading import load_script

from skyreels_diffusers import SkyReelsV4Transformer3DModel


convert_hv15 = load_script("convert_hunyuanvideo15_to_skyreels_v4")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.manual_seed(0)
    model = HunyuanVideo15Transformer3DModel(
        in_channels=9,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        num_refiner_layers=1,
        text_embed_dim=24,
        text_embed_2_dim=8,
        image_embed_dim=12,
        rope_axes_dim=(4, 6, 6),
    ).eval()
    folder = tmp_path_factory.mktemp("hv15")
    model.save_pretrained(folder)
    return model, folder


def test_converted_video_tower_reproduces_hunyuanvideo15(source, tmp_path):
    model, folder = source
    output = tmp_path / "converted"
    assert convert_hv15.main(["--source", str(folder), "--output", str(output), "--check"]) == 0
    converted = SkyReelsV4Transformer3DModel.from_pretrained(output).eval()
    assert converted.config.num_single_layers == 0 and converted.config.num_layers == 2
    assert convert_hv15.check_equivalence(model, converted) <= 1e-5
    # New paths start at zero: audio present or not, the video prediction is the same.
    generator = torch.Generator().manual_seed(1)
    hidden, text = torch.randn(1, 9, 3, 4, 4, generator=generator), torch.randn(1, 5, 24, generator=generator)
    with torch.no_grad():
        video_only = converted(hidden, torch.tensor([300.0]), text).sample
        joint = converted(hidden, torch.tensor([300.0]), text, audio_hidden_states=torch.randn(1, 40, 24)).sample
    torch.testing.assert_close(video_only, joint)


def test_strict_refuses_unused_keys_and_dtype(source, tmp_path):
    _, folder = source
    assert convert_hv15.main(["--source", str(folder), "--output", str(tmp_path / "a"), "--strict"]) == 2
    assert not (tmp_path / "a").exists()
    assert convert_hv15.main(["--source", str(folder), "--output", str(tmp_path / "b"), "--dtype", "bf16"]) == 0
    from safetensors import safe_open

    with safe_open(tmp_path / "b" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert f.get_tensor("proj_out.video.weight").dtype == torch.bfloat16


def test_refuses_pickle_missing_and_existing_output(source, tmp_path):
    _, folder = source
    pickle = tmp_path / "weights.bin"
    torch.save({"x": torch.zeros(1)}, pickle)
    assert convert_hv15.main(["--source", str(pickle), "--output", str(tmp_path / "o")]) == 2
    assert convert_hv15.main(["--source", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    (tmp_path / "exists").mkdir()
    assert convert_hv15.main(["--source", str(folder), "--output", str(tmp_path / "exists")]) == 2
    assert not list(tmp_path.glob(".partial-*"))


def test_audio_tower_taken_from_a_t2a_checkpoint(source, tmp_path):
    from skyreels_diffusers import SkyReelsV4AudioTransformer1DModel

    _, folder = source
    torch.manual_seed(2)
    audio_model = SkyReelsV4AudioTransformer1DModel(
        in_channels=6,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        num_single_layers=0,
        num_token_refiner_layers=1,
        text_embed_dim=24,
    ).eval()
    audio_model.save_pretrained(tmp_path / "t2a")
    output = tmp_path / "joint"
    assert (
        convert_hv15.main(["--source", str(folder), "--output", str(output), "--audio_source", str(tmp_path / "t2a")])
        == 0
    )
    joint = SkyReelsV4Transformer3DModel.from_pretrained(output).eval()
    audio, text = torch.randn(1, 6, 20), torch.randn(1, 5, 24)
    with torch.no_grad():
        expected = audio_model(audio, torch.tensor([500.0]), text).sample
        actual = joint(None, torch.tensor([500.0]), text, audio_hidden_states=audio).audio_sample
    torch.testing.assert_close(actual, expected)


def test_whole_pipeline_folder_around_the_converted_transformer(tmp_path):
    from skyreels_diffusers import SkyReelsV4Pipeline
    from skyreels_diffusers.tiny_components import build_tiny_text_encoder, build_tiny_video_vae

    torch.manual_seed(0)
    source = HunyuanVideo15Transformer3DModel(
        in_channels=17,
        out_channels=8,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_refiner_layers=1,
        text_embed_dim=32,
        text_embed_2_dim=8,
        image_embed_dim=12,
        rope_axes_dim=(4, 6, 6),
    ).eval()
    hv15 = tmp_path / "hunyuanvideo15"
    source.save_pretrained(hv15 / "transformer")
    text_encoder, processor = build_tiny_text_encoder()
    text_encoder.save_pretrained(hv15 / "text_encoder")
    processor.tokenizer.save_pretrained(hv15 / "tokenizer")
    build_tiny_video_vae("hunyuanvideo15").save_pretrained(hv15 / "vae")
    output = tmp_path / "pipeline"
    args = ["--source", str(hv15 / "transformer"), "--output", str(output), "--pipeline_source", str(hv15)]
    assert convert_hv15.main(args) == 0
    pipe = SkyReelsV4Pipeline.from_pretrained(output)
    out = pipe("<text>a ball</text>", height=32, width=32, num_frames=5, num_inference_steps=1, generate_audio=False)
    assert out.frames.shape == (1, 5, 32, 32, 3) and out.audio is None
    assert convert_hv15.main([*args[:3], str(tmp_path / "p2"), "--pipeline_source", str(tmp_path)]) == 2
