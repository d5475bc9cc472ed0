import pytest
import torch
from diffusers import HunyuanVideoTransformer3DModel
from script_loading import load_script

from skyreels_diffusers import SkyReelsV4Transformer3DModel


convert_hv = load_script("convert_hunyuanvideo_to_skyreels_v4")


def tiny_hunyuanvideo(image_condition_type=None, seed=0):
    torch.manual_seed(seed)
    return HunyuanVideoTransformer3DModel(
        in_channels=4 if image_condition_type is None else 9,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=2,
        num_refiner_layers=1,
        text_embed_dim=24,
        pooled_projection_dim=12,
        rope_axes_dim=(4, 6, 6),
        guidance_embeds=True,
        image_condition_type=image_condition_type,
    ).eval()


@pytest.mark.parametrize("image_condition_type", [None, "latent_concat"])
def test_converted_model_reproduces_hunyuanvideo(image_condition_type, tmp_path):
    source = tiny_hunyuanvideo(image_condition_type)
    source.save_pretrained(tmp_path / "source")
    output = tmp_path / "converted"
    args = ["--source", str(tmp_path / "source"), "--output", str(output), "--guidance", "4.5", "--check", "--strict"]
    assert convert_hv.main(args) == 0
    converted = SkyReelsV4Transformer3DModel.from_pretrained(output).eval()
    assert converted.config.in_channels == 9 and converted.config.num_single_layers == 2
    assert convert_hv.check_equivalence(source, converted, 4.5) <= 1e-5
    # The guidance is folded in at 4.5: another guidance value no longer matches.
    assert convert_hv.check_equivalence(source, converted, 1.0) > 1e-4


def test_token_replace_variant_is_refused(tmp_path):
    source = tiny_hunyuanvideo("token_replace")
    source.save_pretrained(tmp_path / "source")
    assert convert_hv.main(["--source", str(tmp_path / "source"), "--output", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_safetensors_file_with_config(tmp_path):
    from safetensors.torch import save_file

    source = tiny_hunyuanvideo()
    source.save_pretrained(tmp_path / "folder")
    save_file(source.state_dict(), tmp_path / "weights.safetensors")
    args = ["--source", str(tmp_path / "weights.safetensors"), "--output", str(tmp_path / "out"), "--check"]
    assert convert_hv.main(args) == 2  # the config is required
    args += ["--source_config", str(tmp_path / "folder" / "config.json")]
    assert convert_hv.main(args) == 0
