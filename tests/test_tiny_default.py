"""Regression checks of the shipped tiny default model, `pipelines/skyreels-v4-tiny` (issues 7 and 18).

The thresholds sit below what the model measured on these seeds when it was trained (see its model card); a
change that breaks the flow-matching math, the masks, RoPE offsets or audio-video sync drops them to chance."""

import json
import os
import subprocess
import sys

import av
import pytest
from script_loading import load_script

from skyreels_diffusers import (
    Qwen2_5_VLImageTextProcessor,
    SkyReelsV4Pipeline,
    SkyReelsV4RefinerPipeline,
    SkyReelsV4RefinerTransformer3DModel,
)


ROOT = os.path.join(os.path.dirname(__file__), "..")
MODEL = os.path.join(ROOT, "pipelines", "skyreels-v4-tiny")
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


@pytest.mark.slow
def test_adherence_pitch_and_timbre_on_a_few_seeds(pipe):
    # Adherence: chance is 1/12 (4 colours x 3 shapes). Every knock's pitch must follow the shape and its timbre the
    # colour: a broken audio VAE, text conditioning of the audio tower or audio RoPE loses them. T2AV sync is not
    # asserted: the model's own bounces and knocks line up only slightly above chance (model card), too little to
    # test on a few seeds.
    metrics = evaluate.evaluate_t2av(pipe, SEEDS, {"num_inference_steps": 20})
    assert metrics["adherence"] >= ADHERENCE_FLOOR, metrics
    # Pitch and timbre are pooled over the knocks made, so a silent clip counts for nothing there: the share of
    # silent clips is bounded too (measured 1 of these 6 seeds; a model that stops knocking fails here).
    assert metrics["silent_clips"] <= 2 / 6, metrics
    # Measured on these seeds: pitch 1.0 (chance: each clip's knocks against the next clip's caption, 0.25), timbre
    # 1.0 (chance 0.0).
    assert metrics["knock_pitch_matches_shape"] >= 0.8, metrics
    assert metrics["knock_pitch_matches_shape"] >= metrics["knock_pitch_matches_shape_chance"] + 0.5, metrics
    assert metrics["knock_timbre_matches_colour"] >= 0.6, metrics
    assert metrics["knock_timbre_matches_colour"] >= metrics["knock_timbre_matches_colour_chance"] + 0.5, metrics


@pytest.mark.slow
def test_video_to_audio_knocks_on_the_given_bounces(pipe):
    # The cross-modal regression guard: given the world's video, the knocks land within one frame of every bounce on
    # these seeds (each clip's knocks against another clip's bounces: 0%). Broken audio-video alignment (audio RoPE,
    # cross-attention, latent timing, the given stream's timestep) falls to that chance level.
    metrics = evaluate.evaluate_cross_modal(pipe, range(4), {"num_inference_steps": 10})
    assert metrics["v2a_within_one_frame"] >= 0.8, metrics  # measured 1.0, precision 1.0
    assert metrics["v2a_within_one_frame"] >= metrics["v2a_within_one_frame_chance"] + 0.5, metrics
    # Audio-to-video is not asserted: the shipped model does not follow the soundtrack measurably. On these seeds it
    # scores 0.67 (chance 0.33), and exactly the same with the soundtrack zeroed; on seeds 0-15 (14 clips with
    # bounces) its bounces match the clip's own bounces 0.61 of the time with its own soundtrack, 0.68 with another
    # clip's, and that other clip's bounces 0.61 (model card, 50 seeds: 0.53, chance 0.44). A test above chance here
    # would pass for a pipeline that ignores the given audio.


def test_denoiser_probe_of_an_exact_denoiser_finds_the_object(pipe):
    # A transformer that returns the exact velocity (noisy - x0) / sigma makes the probe's one-step schedule land on
    # x0 itself: the object then sits where the world put it, up to the VAE. And the model must see the requested
    # noise levels: the scheduler shifts custom sigmas, which the probe has to undo.
    import torch

    from skyreels_diffusers.models.transformer_skyreels_v4 import SkyReelsV4TransformerOutput

    x0 = evaluate.encode_frames(pipe.vae, evaluate.world_clip(pipe, 0).frames)

    timesteps = []

    def exact_velocity(module, args, kwargs, output):
        timesteps.append(float(kwargs["timestep"][0]))
        sigma = kwargs["timestep"].float().view(-1, 1, 1, 1, 1) / 1000
        video = (kwargs["hidden_states"][:, : x0.shape[1]] - x0) / sigma
        return SkyReelsV4TransformerOutput(sample=video, audio_sample=torch.zeros_like(output.audio_sample))

    handle = pipe.transformer.register_forward_hook(exact_velocity, with_kwargs=True)
    try:
        metrics = evaluate.evaluate_denoiser(pipe, range(1), sigmas=(0.5, 0.97))
    finally:
        handle.remove()
    assert timesteps == pytest.approx([500.0, 970.0])
    assert max(metrics.values()) < 1.0, metrics


@pytest.mark.slow
def test_refiner_upscales_the_clip(pipe):
    # A random Refiner scores about 7 dB here. The shipped one does not beat bicubic upsampling of the same low-res
    # input yet (model card): measured 26.8 dB against bicubic's 28.8 dB on seeds 0-1 (2.0 and 2.2 dB below; seeds
    # 2-3: 1.9 and 3.1 dB below). So it is held to an absolute floor and to a bounded gap below bicubic.
    refiner = SkyReelsV4RefinerPipeline.from_pipe(
        pipe, transformer=SkyReelsV4RefinerTransformer3DModel.from_pretrained(MODEL, subfolder="refiner")
    )
    metrics = evaluate.evaluate_refiner(pipe, refiner, range(2), refiner_steps=10)
    assert metrics["refiner_psnr"] >= 24, metrics
    assert metrics["refiner_psnr"] >= metrics["bicubic_psnr"] - 2.5, metrics


@pytest.mark.slow
def test_image_to_video_starts_from_the_image(pipe):
    for seed in range(2):
        metrics = evaluate.evaluate_conditioned(pipe, [seed], {"num_inference_steps": 10})
        # With the known latents re-injected, frame 0 is the VAE reconstruction of the image up to float rounding:
        # measured 146.3 and 146.5 dB on seeds 0 and 1 (an error of 1e-4 would give 80 dB).
        assert metrics["i2v_psnr_preserved"] >= 100 and metrics["edit_psnr_preserved"] >= 100, (seed, metrics)
        if seed == 0:
            # The target (30 dB) holds for the model's own frame 0 on seed 0 (37.4 dB; seed 1: 25.9 dB;
            # untrained 18.4), not only with the known latents re-injected.
            assert metrics["i2v_psnr_model"] >= 30, metrics
            assert metrics["edit_psnr_model"] >= 22, metrics  # 27.6 dB (seed 1: 22.3); the untrained model 18.3


@pytest.mark.slow
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
        assert container.streams.video[0].frames == 17 and container.streams.audio[0].rate == 8_000


@pytest.mark.parametrize(
    "options, message",
    [
        # Past the 17-frame window, windows are chained up to `max_duration_seconds` (issue 30)
        (
            ["--duration", "1e9"],
            "`--duration` 1e+09 s is too long: chained windows make at most 600 s, set by "
            "`pipe.limits.max_duration_seconds` = 600.",
        ),
        # 512x512 frames: the tiny default's 2,228,224 pixels (32 x its 64x64x17 clip) hold 8 frames, less than the
        # window each chained call makes
        (
            ["--duration", "2", "--height", "512", "--width", "512"],
            "`--duration` 2 s is too long: at 512x512 this model makes at most 0.5 s (8 frames at 16 fps), set by "
            "`pipe.limits.max_video_pixels` = 2,228,224.",
        ),
    ],
)
def test_cli_duration_names_the_longest_allowed(options, message, tmp_path, monkeypatch, capsys):
    from skyreels_diffusers import SkyReelsV4Pipeline, cli

    monkeypatch.setattr(SkyReelsV4Pipeline, "__call__", lambda *args, **kwargs: pytest.fail("generation started"))
    command = ["generate", "--prompt", "<text>A red ball.</text>", "--out", str(tmp_path / "clip.mp4")]
    assert cli.main([*command, "--model", MODEL, "--dtype", "float32", *options]) == 2
    error = capsys.readouterr().err
    assert message in error, error


@pytest.mark.slow
def test_cli_same_seed_gives_the_same_mp4_bytes(tmp_path):
    # Two separate runs, one confined to a single core: the encoder must not depend on the cores it sees (x264 picks
    # its thread count, and so its output, from them unless told). torch runs one thread in both, because its float
    # results may differ in the last bits between thread counts, and then the pixels would differ before encoding.
    command = [sys.executable, "-m", "skyreels_diffusers.cli", "generate", "--prompt", "<text>A red ball.</text>"]
    command += ["--steps", "2", "--seed", "7", "--dtype", "float32", "--height", "128", "--width", "128"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outputs = []
    for pin in (False, True):
        outputs.append(tmp_path / f"run{pin}.mp4")
        preexec = (lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) if pin else None
        subprocess.run([*command, "--out", str(outputs[-1])], check=True, cwd=ROOT, preexec_fn=preexec, env=env)
    assert outputs[0].read_bytes() == outputs[1].read_bytes()


def test_a_saved_run_state_seeds_a_fresh_work_dir(tmp_path):
    build = load_script("build_tiny_default", "examples/synthetic_av")
    state = tmp_path / "state"
    (state / "vaes" / "audio_vae").mkdir(parents=True)
    (state / "vaes" / "audio_vae" / "config.json").write_text("{}")
    (state / "base" / "checkpoint-250").mkdir(parents=True)
    (state / "base" / "checkpoint-250" / "model.safetensors").write_bytes(b"weights")
    (state / "continued" / "checkpoint-500").mkdir(parents=True)
    (state / "continued" / "checkpoint-500" / "model.safetensors").write_bytes(b"continued")
    build.seed_work_dir(str(state), str(tmp_path / "work"))
    assert (tmp_path / "work" / "continued" / "checkpoint-500" / "model.safetensors").read_bytes() == b"continued"
    assert (tmp_path / "work" / "vaes" / "audio_vae" / "config.json").read_text() == "{}"
    assert (tmp_path / "work" / "base" / "checkpoint-250" / "model.safetensors").read_bytes() == b"weights"
    with pytest.raises(SystemExit, match="not a saved run state"):
        build.seed_work_dir(str(tmp_path / "work" / "base"), str(tmp_path / "other"))


def test_video_vae_round_trip_keeps_bounces_shape_and_colour_and_fails_an_untrained_vae(pipe):
    """The evaluator of a video VAE's round trip: the shipped VAE keeps the world's bounces (as well as tracking the
    original frames does), its shapes and colours; an untrained causal VAE of the real class keeps none of it."""
    from skyreels_diffusers.tiny_components import build_tiny_video_vae

    seeds = range(evaluate.TEST_SEED, evaluate.TEST_SEED + 4)
    shipped = evaluate.evaluate_video_vae(pipe.vae, seeds)
    assert shipped["vae_bounces_kept"] >= shipped["vae_bounces_kept_original_frames"] - 0.1
    assert shipped["vae_shape_iou"] >= 0.9 and shipped["vae_colour_kept"] == 1.0
    assert shipped["vae_jumps_per_clip"] == 0 and shipped["vae_mid_box_reversals_per_clip"] == 0
    untrained = evaluate.evaluate_video_vae(build_tiny_video_vae("hunyuanvideo15"), seeds)
    assert untrained["vae_colour_kept"] < 0.5 and untrained["vae_psnr_db"] < shipped["vae_psnr_db"] - 10
