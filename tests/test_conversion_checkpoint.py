import json

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file
from script_loading import load_script

from skyreels_diffusers import SkyReelsV4Pipeline
from skyreels_diffusers.tiny_components import build_tiny_pipeline


convert_checkpoint = load_script("convert_skyreels_v4_checkpoint")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    build_tiny_pipeline().save_pretrained(folder)
    return folder


def trained_state_dict(base_folder):
    state_dict = SkyReelsV4Pipeline.from_pretrained(base_folder).transformer.state_dict()
    generator = torch.Generator().manual_seed(0)
    return {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in state_dict.items()}


def generate(pipe):
    return pipe("<text>a ball</text>", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames


def test_accelerate_checkpoint_to_sharded_hub_folder(base, tmp_path, capsys):
    trained = trained_state_dict(base)
    checkpoint = tmp_path / "checkpoint-10"
    checkpoint.mkdir()
    save_file({f"_orig_mod.{k}": v.contiguous() for k, v in trained.items()}, checkpoint / "model.safetensors")
    (tmp_path / "metrics.json").write_text(json.dumps({"sync within 1 frame": "91%"}))
    output = tmp_path / "release"
    args = [
        "--checkpoint",
        str(checkpoint),
        "--base_pipeline",
        str(base),
        "--output",
        str(output),
        "--max_shard_size",
        "100KB",
        "--trained_on",
        "tests",
        "--metrics",
        str(tmp_path / "metrics.json"),
        "--base_model",
        "org/base",
    ]
    assert convert_checkpoint.main(args) == 0, capsys.readouterr().err
    index = output / "transformer" / "diffusion_pytorch_model.safetensors.index.json"
    assert index.exists() and len(list((output / "transformer").glob("*.safetensors"))) > 1
    loaded = SkyReelsV4Pipeline.from_pretrained(output)
    for key, value in loaded.transformer.state_dict().items():
        torch.testing.assert_close(value, trained[key], msg=key)
    reference = SkyReelsV4Pipeline.from_pretrained(base)
    reference.transformer.load_state_dict(trained)
    np.testing.assert_array_equal(generate(loaded), generate(reference))

    card = ModelCard.load(output / "README.md")
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "text-to-video"
    assert card.data.license == "apache-2.0" and card.data.base_model == "org/base" and "skyreels-v4" in card.data.tags
    assert "91%" in card.text and "SkyReelsV4Pipeline.from_pretrained" in card.text


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda sd: sd.pop(next(iter(sd))), "missing keys"),
        (lambda sd: sd.update({"video_tower.extra.weight": torch.zeros(2)}), "unexpected keys"),
        (lambda sd: sd.update({"video_tower.proj_out.bias": torch.zeros(3)}), "shape mismatches"),
    ],
)
def test_tampered_checkpoints_fail_naming_the_keys(base, tmp_path, capsys, tamper, message):
    state_dict = trained_state_dict(base)
    tamper(state_dict)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, tmp_path / "ckpt.safetensors")
    args = [
        "--checkpoint",
        str(tmp_path / "ckpt.safetensors"),
        "--base_pipeline",
        str(base),
        "--output",
        str(tmp_path / "out"),
    ]
    assert convert_checkpoint.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pickle_needs_allow_pickle(base, tmp_path, capsys):
    torch.save(trained_state_dict(base), tmp_path / "ckpt.pt")
    args = ["--checkpoint", str(tmp_path / "ckpt.pt"), "--base_pipeline", str(base), "--output", str(tmp_path / "out")]
    assert convert_checkpoint.main(args) == 2 and "pickle" in capsys.readouterr().err
    assert convert_checkpoint.main([*args, "--allow-pickle"]) == 0


def test_interrupted_write_leaves_no_valid_looking_folder(base, tmp_path, monkeypatch):
    save_file({k: v.contiguous() for k, v in trained_state_dict(base).items()}, tmp_path / "ckpt.safetensors")

    def crash(self, *args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr("huggingface_hub.ModelCard.save", crash)
    args = [
        "--checkpoint",
        str(tmp_path / "ckpt.safetensors"),
        "--base_pipeline",
        str(base),
        "--output",
        str(tmp_path / "out"),
    ]
    assert convert_checkpoint.main(args) == 2
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".partial-*"))
