"""Regression checks of the shipped tiny default model, `pipelines/skyreels-v4-tiny` (issue 7).

The thresholds sit below what the model measured on these seeds when it was trained (see its model card); a
change that breaks the flow-matching math, the masks, RoPE offsets or audio-video sync drops them to chance."""

import json
import os

import av
import numpy as np
import pytest
from script_loading import load_script

from skyreels_diffusers import (
    Qwen2_5_VLImageTextProcessor,
    SkyReelsV4Pipeline,
    SkyReelsV4RefinerPipeline,
    SkyReelsV4RefinerTransformer3DModel,
)


MODEL = os.path.join(os.path.dirname(__file__), "..", "pipelines", "skyreels-v4-tiny")
evaluate = load_script("evaluate", "examples/synthetic_av")
SEEDS = range(6)
ADHERENCE_FLOOR = 0.5  # 5 of these 6 seeds when the model was trained


@pytest.fixture(scope="module")
def pipe():
    return SkyReelsV4Pipeline.from_pretrained(MODEL)


def test_folder_is_a_small_safetensors_pipeline_with_a_model_card():
    files = [os.path.join(d, f) for d, _, fs in os.walk(MODEL) for f in fs]
    assert sum(os.path.getsize(f) for f in files) <= 50 * 2**20
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
    with open(os.path.join(MODEL, "model_index.json"), encoding="utf-8") as f:
        index = json.load(f)
    assert index["_class_name"] == ["skyreels_v4_pipeline", "SkyReelsV4Pipeline"]
    card = open(os.path.join(MODEL, "README.md"), encoding="utf-8").read()
    assert "randomly initialised" in card and "colour/shape adherence" in card


def test_components_are_the_real_classes(pipe):
    assert type(pipe.processor) is Qwen2_5_VLImageTextProcessor
    assert type(pipe.vae).__name__ == "AutoencoderKL" and type(pipe.audio_vae).__name__ == "AutoencoderOobleck"
    assert type(pipe.text_encoder).__name__ == "Qwen2_5_VLForConditionalGeneration"


def test_adherence_on_a_few_seeds(pipe):
    # Chance is 1/12 (4 colours x 3 shapes). Sync is not asserted: the shipped model does not yet meet it (model card).
    metrics = evaluate.evaluate_t2av(pipe, SEEDS, {"num_inference_steps": 20})
    assert metrics["adherence"] >= ADHERENCE_FLOOR, metrics


def test_refiner_upscales_the_clip(pipe):
    # A random Refiner scores about 7 dB here. The shipped one does not beat bicubic yet (model card), so the
    # regression floor is absolute.
    refiner = SkyReelsV4RefinerPipeline.from_pipe(
        pipe, transformer=SkyReelsV4RefinerTransformer3DModel.from_pretrained(MODEL, subfolder="refiner")
    )
    metrics = evaluate.evaluate_refiner(pipe, refiner, range(2), refiner_steps=10)
    assert metrics["refiner_psnr"] >= 22, metrics


def test_image_to_video_starts_from_the_image(pipe):
    metrics = evaluate.evaluate_conditioned(pipe, range(1), {"num_inference_steps": 10})
    assert metrics["i2v_psnr_preserved"] >= 30 and np.isfinite(metrics["edit_psnr_model"]), metrics


def test_cli_main_job_uses_the_tiny_default(tmp_path, monkeypatch):
    from skyreels_diffusers import cli

    monkeypatch.chdir(os.path.join(os.path.dirname(__file__), ".."))
    monkeypatch.delenv(cli.MODEL_ENV_VAR, raising=False)
    assert cli.default_model() == str(cli.EMBEDDED_MODEL)
    out = tmp_path / "clip.mp4"
    assert (
        cli.main(["generate", "--prompt", "<text>A blue square bounces.</text>", "--out", str(out), "--steps", "4"])
        == 0
    )
    with av.open(str(out)) as container:
        assert container.streams.video[0].frames == 17 and container.streams.audio[0].rate == 16_000
