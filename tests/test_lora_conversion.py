import torch
from diffusers import DiffusionPipeline, HunyuanVideoTransformer3DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from script_loading import load_script

from skyreels_diffusers import SkyReelsV4LoraLoaderMixin


convert_hv = load_script("convert_hunyuanvideo_to_skyreels_v4")
convert_lora = load_script("convert_lora")


class TransformerOnlyPipeline(DiffusionPipeline, SkyReelsV4LoraLoaderMixin):
    def __init__(self, transformer):
        super().__init__()
        self.register_modules(transformer=transformer)


def tiny_hunyuanvideo():
    torch.manual_seed(0)
    return HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        text_embed_dim=24,
        pooled_projection_dim=12,
        rope_axes_dim=(4, 6, 6),
        guidance_embeds=True,
    ).eval()


def inputs():
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 4, 2, 4, 4, generator=generator)
    return latents, torch.tensor([300.0]), torch.randn(1, 5, 24, generator=generator)


def test_diffusers_hunyuanvideo_lora_loads_into_the_converted_model():
    source = tiny_hunyuanvideo()
    converted, _, _ = convert_hv.convert(source, 6.0, show_progress=False)
    source.add_adapter(
        LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    )
    lora = {f"transformer.{k}": v for k, v in get_peft_model_state_dict(source).items()}
    pipe = TransformerOnlyPipeline(converted.eval())
    pipe.load_lora_weights(lora)
    latents, timestep, text = inputs()
    with torch.no_grad():
        expected = source(
            latents, timestep, text, torch.ones(1, 5), torch.zeros(1, 12), guidance=torch.tensor([6000.0])
        ).sample
        hidden = torch.cat([latents, torch.zeros(1, 5, 2, 4, 4)], dim=1)
        actual = pipe.transformer(hidden, timestep, text).sample
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_original_hunyuanvideo_lora_keys_are_converted():
    generator = torch.Generator().manual_seed(0)
    down, up = torch.randn(2, 32, generator=generator), torch.randn(96, 2, generator=generator)
    original = {
        "diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight": down,
        "diffusion_model.double_blocks.0.img_attn_qkv.lora_B.weight": up,
    }
    converted = SkyReelsV4LoraLoaderMixin._convert_non_diffusers_lora(original)
    prefix = "transformer.transformer_blocks.0.video.attn"
    assert set(converted) == {f"{prefix}.to_{n}.lora_{ab}.weight" for n in "qkv" for ab in "AB"}
    torch.testing.assert_close(converted[f"{prefix}.to_k.lora_A.weight"], down)
    torch.testing.assert_close(converted[f"{prefix}.to_k.lora_B.weight"], up[32:64])


def test_exported_peft_adapter_loads_with_the_same_effect(tmp_path):
    source = tiny_hunyuanvideo()
    model, _, _ = convert_hv.convert(source, 6.0, show_progress=False)
    model.eval()
    latents, timestep, text = inputs()
    hidden = torch.cat([latents, torch.zeros(1, 5, 2, 4, 4)], dim=1)
    model.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_v"], init_lora_weights=False))
    with torch.no_grad():
        adapted = model(hidden, timestep, text).sample
    model.save_lora_adapter(tmp_path / "adapter")  # a PEFT adapter folder, as training writes it
    assert (
        convert_lora.main(
            ["export", "--adapter", str(tmp_path / "adapter"), "--output", str(tmp_path / "lora.safetensors")]
        )
        == 0
    )

    base, _, _ = convert_hv.convert(source, 6.0, show_progress=False)
    pipe = TransformerOnlyPipeline(base.eval())
    pipe.load_lora_weights(str(tmp_path / "lora.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(pipe.transformer(hidden, timestep, text).sample, adapted)
    assert (
        convert_lora.main(
            ["export", "--adapter", str(tmp_path / "missing"), "--output", str(tmp_path / "x.safetensors")]
        )
        == 2
    )


def test_import_writes_a_file_in_this_layout(tmp_path):
    from safetensors.torch import load_file, save_file

    generator = torch.Generator().manual_seed(0)
    original = {
        "double_blocks.0.img_attn_qkv.lora_A.weight": torch.randn(2, 32, generator=generator),
        "double_blocks.0.img_attn_qkv.lora_B.weight": torch.randn(96, 2, generator=generator),
    }
    save_file(original, tmp_path / "hunyuan.safetensors")
    args = ["import", "--lora", str(tmp_path / "hunyuan.safetensors"), "--output", str(tmp_path / "ours.safetensors")]
    assert convert_lora.main(args) == 0
    keys = set(load_file(tmp_path / "ours.safetensors"))
    assert "transformer.transformer_blocks.0.video.attn.to_v.lora_B.weight" in keys and len(keys) == 6
    torch.save(original, tmp_path / "hunyuan.bin")
    pickle_args = ["import", "--lora", str(tmp_path / "hunyuan.bin"), "--output", str(tmp_path / "x.safetensors")]
    assert convert_lora.main(pickle_args) == 2
    assert convert_lora.main([*pickle_args, "--allow-pickle"]) == 0


def test_merge_audio_tower(tmp_path):
    from skyreels_diffusers import SkyReelsV4AudioTransformer1DModel, SkyReelsV4Transformer3DModel

    merge = load_script("merge_audio_tower")
    torch.manual_seed(0)
    joint = SkyReelsV4Transformer3DModel(
        in_channels=9,
        out_channels=4,
        audio_in_channels=6,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=1,
        num_token_refiner_layers=1,
        text_embed_dim=24,
        rope_axes_dim=(4, 6, 6),
    ).eval()
    audio = SkyReelsV4AudioTransformer1DModel(
        in_channels=6,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=1,
        num_token_refiner_layers=1,
        text_embed_dim=24,
    ).eval()
    joint.save_pretrained(tmp_path / "joint")
    audio.save_pretrained(tmp_path / "audio")
    args = [
        "--joint",
        str(tmp_path / "joint"),
        "--audio",
        str(tmp_path / "audio"),
        "--output",
        str(tmp_path / "merged"),
    ]
    assert merge.main(args) == 0
    merged = SkyReelsV4Transformer3DModel.from_pretrained(tmp_path / "merged").eval()
    sound, text = torch.randn(1, 6, 24), torch.randn(1, 5, 24)
    with torch.no_grad():
        torch.testing.assert_close(
            merged(None, torch.tensor([400.0]), text, audio_hidden_states=sound).audio_sample,
            audio(sound, torch.tensor([400.0]), text).sample,
        )
    assert (
        merge.main(
            ["--joint", str(tmp_path / "nope"), "--audio", str(tmp_path / "audio"), "--output", str(tmp_path / "m2")]
        )
        == 2
    )
