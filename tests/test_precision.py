"""bfloat16 end to end: the pipelines after `.to(torch.bfloat16)` or `from_pretrained(dtype=...)`, `from_pipe`
keeping the dtype, and the choice of the fastest dtype per device."""

import pytest
import torch

from skyreels_diffusers import SkyReelsV4InpaintPipeline, SkyReelsV4Pipeline, SkyReelsV4RefinerPipeline
from skyreels_diffusers.pipelines.vae_utils import encode_audio_track
from skyreels_diffusers.tiny_components import build_tiny_pipeline, build_tiny_refiner
from skyreels_diffusers.utils import precision


PROMPT = "<text>A red ball bounces.</text><sfx>A knock.</sfx>"


def run(pipe, **kwargs):
    return pipe(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs)


@pytest.fixture(scope="module")
def pipes():
    fp32 = build_tiny_pipeline()
    bf16 = build_tiny_pipeline().to(torch.bfloat16)
    return fp32, bf16


def test_every_pipeline_runs_after_to_bfloat16_and_agrees_with_float32(pipes):
    fp32, bf16 = pipes
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    cases = [
        (SkyReelsV4Pipeline, {}),
        (SkyReelsV4InpaintPipeline, {"image": image}),
    ]
    for cls, kwargs in cases:
        a, b = run(cls.from_pipe(fp32), **kwargs), run(cls.from_pipe(bf16), **kwargs)
        assert b.frames.dtype == torch.bfloat16  # "pt" outputs come in the VAE's dtype, as in Diffusers
        assert torch.isfinite(b.frames).all() and torch.isfinite(b.audio).all()
        # Two steps of a random tiny model: bfloat16's 8-bit mantissa moves frames by a few percent at most, and the
        # waveform (mean magnitude 0.14) by 8e-4 on average (measured).
        assert (a.frames - b.frames.float()).abs().mean() < 0.02, cls.__name__
        assert (a.audio - b.audio.float()).abs().mean() < 5e-3, cls.__name__
    refiner = build_tiny_refiner(fp32.transformer)
    video = torch.rand(9, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    a = run(SkyReelsV4RefinerPipeline.from_pipe(fp32, transformer=refiner), video=video)
    b = run(SkyReelsV4RefinerPipeline.from_pipe(bf16, transformer=refiner.to(torch.bfloat16)), video=video)
    assert torch.isfinite(b.frames).all() and (a.frames - b.frames.float()).abs().mean() < 0.02


def test_audio_is_encoded_in_bfloat16_as_in_float32(pipes):
    # Audio-to-video and audio references encode a track with the audio VAE; MMAudio's mel front end (an STFT) has no
    # bfloat16 kernel on CPU, so a bfloat16 pipeline computes it in float32 (measured: latents of mean magnitude 0.12
    # move by 1.3e-3 on average).
    fp32, bf16 = pipes
    waveform = torch.rand(1, 1, 13781, generator=torch.Generator().manual_seed(0)) * 0.4 - 0.2
    expected = encode_audio_track(fp32.audio_vae, waveform, 25)
    actual = encode_audio_track(bf16.audio_vae, waveform.to(torch.bfloat16), 25)
    assert actual.dtype == torch.bfloat16
    assert (actual.float() - expected).abs().mean() < 7e-3


def test_from_pretrained_in_bfloat16_keeps_the_time_embedding_in_float32(pipes, tmp_path):
    pipes[0].save_pretrained(tmp_path)
    pipe = SkyReelsV4Pipeline.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert pipe.transformer.time_embed.timestep_embedder.linear_1.weight.dtype == torch.float32
    assert pipe.transformer.x_embedder.proj.weight.dtype == torch.bfloat16
    out = run(pipe)
    assert torch.isfinite(out.frames).all()
    # from_pipe keeps the source's dtype (Diffusers would cast the shared components to float32).
    assert SkyReelsV4InpaintPipeline.from_pipe(pipe).transformer.dtype == torch.bfloat16
    assert pipe.transformer.x_embedder.proj.weight.dtype == torch.bfloat16


def test_fastest_dtype_follows_the_hardware(monkeypatch):
    features = {"amx_bf16": False, "avx512_bf16": False}
    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: features)
    assert precision.fastest_dtype("cpu") == torch.float32
    features["amx_bf16"] = True
    assert precision.fastest_dtype("cpu") == torch.bfloat16
    assert precision.resolve_dtype("float32") == torch.float32 and precision.resolve_dtype("auto") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        precision.resolve_dtype("int8")


def test_cli_dtype_option(tmp_path, monkeypatch, capsys):
    from skyreels_diffusers.cli import DTYPE_CHOICES, main

    assert DTYPE_CHOICES == ("auto", *precision.DTYPES)  # written out in the CLI so that parsing needs no torch
    monkeypatch.delenv("SKYREELS_V4_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    prompt = ["--prompt", PROMPT, "--steps", "1", "--out", "a.mp4"]
    assert main(["generate", *prompt, "--dtype", "bfloat16"]) == 0 and (tmp_path / "a.mp4").stat().st_size > 0
    capsys.readouterr()
    with pytest.raises(SystemExit):  # argparse refuses an unknown dtype
        main(["generate", *prompt, "--dtype", "int8"])
    assert "invalid choice" in capsys.readouterr().err
