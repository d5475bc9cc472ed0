"""Reproduce the shipped tiny default model, `pipelines/skyreels-v4-tiny`, from nothing, on a CPU.

    python examples/synthetic_av/build_tiny_default.py --work_dir runs/tiny --out pipelines/skyreels-v4-tiny

Stages (each skipped when its output already exists in `--work_dir`, so an interrupted build resumes; the training
stages also resume from their latest checkpoint). To continue a run on another machine or in another session, keep
its `vaes/`, `base/` and `continued/` (the joint model's latest checkpoints) and pass them with `--resume_from`: a
fresh `--work_dir` starts from them, rebuilds the rest, which is deterministic, and continues training exactly where
the run stopped:

1. `train_tiny_vaes.py`: the video VAE (an image `AutoencoderKL`, applied per frame) and the audio VAE
   (`AutoencoderOobleck`, 8 kHz);
2. an initial pipeline folder: those VAEs, a frozen *randomly initialised* tiny Qwen2.5-VL text encoder with its
   locally trained tokenizer, a new `SkyReelsV4Transformer3DModel` and the flow-matching scheduler;
3. the joint model's training set: `world.py` clips rendered in memory (training seeds from `evaluate.TRAIN_SEED`) at
   64x64, encoded by `examples/training/precompute_latents.py`'s `encode_clip` (no lossy MP4 round trip for the
   soundtracks);
4. the joint model: `examples/training/train_skyreels_v4.py`, full training with EMA, all tasks including
   video-to-audio and audio-to-video, with independent video and audio noise for part of the samples; then a
   continuation run from it with the extension tasks that keep a clean audio prefix weighted up
   (`--continuation_steps`);
5. the Refiner (2x super-resolution, VSA): 128x128 clips encoded the same way, then the same script with `--refiner`,
   on crops;
6. the final folder (the Refiner in its `refiner/` subfolder), its metrics from `evaluate.py` on the test seeds, and
   the model card.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys

import torch
from diffusers import AutoencoderKL, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler


HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING = os.path.join(HERE, "..", "training")
sys.path.insert(0, HERE)
import evaluate  # noqa: E402
import world  # noqa: E402


SIZE, REFINER_SIZE, NUM_FRAMES, FPS = 64, 128, 17, 16
TRANSFORMER_CONFIG = {
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "num_layers": 2,
    "num_single_layers": 2,
    "num_token_refiner_layers": 1,
    # 2x2 latent cells = 8x8 pixels per token: 64 tokens per frame. With 4x4 cells a token held 128 noisy latent
    # values, as many as its hidden width, and near pure noise the model could not place the object.
    "patch_size": 2,
    "rope_axes_dim": (8, 12, 12),
    "fps": FPS,
    "vae_temporal_compression_ratio": 1,  # the image VAE keeps every frame: video tokens on each frame
    "cross_modal_attention_heads": 4,  # all heads: audio-video sync is what this model must learn
}
# The Refiner trains on 16x16-cell crops of its 32x32-cell latents, so 2x2 patches cost it what they cost the joint
# model; at inference it sees the whole frame (4x the tokens) through Video Sparse Attention.
REFINER_PATCH_SIZE = 2
TASK_RATIOS = (
    "t2av=0.3,t2v=0.05,t2a=0.05,i2v=0.1,interpolation=0.05,extension=0.1,edit=0.05,reference_images=0.025,"
    "audio_reference=0.025,v2a=0.125,a2v=0.125"
)
INDEPENDENT_NOISE_RATIO = 0.3
# Continuation (long-form chaining): after the base run, more steps with the extension tasks that keep a clean audio
# prefix (extension: the first frames and the matching audio; audio_extension: the audio alone) weighted up, so the
# model learns to continue a soundtrack as well as a picture.
CONTINUATION_TASK_RATIOS = (
    "t2av=0.3,t2v=0.05,t2a=0.05,i2v=0.1,interpolation=0.05,extension=0.15,audio_extension=0.075,edit=0.05,"
    "reference_images=0.025,audio_reference=0.025,v2a=0.125,a2v=0.125"
)
CONTINUATION_LEARNING_RATE = 2e-4
VIDEO_VAE_STEPS, AUDIO_VAE_STEPS, AUDIO_VAE_POLISH_STEPS = 1000, 3000, 600


def run(command: list[str], env: dict | None = None) -> None:
    """Run a script of this repository with this Python and wait for it."""
    print("$", " ".join(command), flush=True)
    if subprocess.run([sys.executable, *command], env=env).returncode != 0:
        raise RuntimeError(f"failed: {' '.join(command)}")


def build_initial_pipeline(vae_dir: str, out: str, refiner_out: str, seed: int) -> None:
    """The untrained pipeline (`out`) and the untrained Refiner (`refiner_out`), each built from a new tower."""
    from skyreels_diffusers import (
        SkyReelsV4Pipeline,
        SkyReelsV4RefinerTransformer3DModel,
        SkyReelsV4Transformer3DModel,
    )
    from skyreels_diffusers.tiny_components import build_tiny_text_encoder

    text_encoder, processor = build_tiny_text_encoder(seed)
    vae = AutoencoderKL.from_pretrained(os.path.join(vae_dir, "vae"))
    audio_vae = AutoencoderOobleck.from_pretrained(os.path.join(vae_dir, "audio_vae"))

    def new_tower(**overrides):
        torch.manual_seed(seed)
        return SkyReelsV4Transformer3DModel(
            in_channels=2 * vae.config.latent_channels + 1,
            out_channels=vae.config.latent_channels,
            audio_in_channels=audio_vae.config.decoder_input_channels,
            text_embed_dim=text_encoder.config.text_config.hidden_size,
            audio_sample_rate=audio_vae.config.sampling_rate,
            audio_samples_per_latent=audio_vae.hop_length,
            **{**TRANSFORMER_CONFIG, **overrides},
        )

    refiner = SkyReelsV4RefinerTransformer3DModel.from_video_transformer(
        new_tower(patch_size=REFINER_PATCH_SIZE), temporal_upscale_factor=1
    )
    refiner.save_pretrained(refiner_out)
    transformer = new_tower()
    pipe = SkyReelsV4Pipeline(
        text_encoder=text_encoder,
        processor=processor,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=2.0),
        audio_vae=audio_vae,
        vocoder=None,
        text_hidden_layer=-1,
        default_height=SIZE,
        default_width=SIZE,
        default_num_frames=NUM_FRAMES,
    )
    pipe.save_pretrained(out)


def seed_work_dir(run_state: str, work_dir: str) -> None:
    """Copy a saved run state (`vaes/`; `base/` and `continued/`: `checkpoint-*`, `loss.jsonl`) into a fresh work
    dir. Everything else is rebuilt deterministically from the seeds: the initial pipeline (its random text encoder
    and towers are byte-identical on a rebuild) and the encoded world clips."""
    if not os.path.isdir(os.path.join(run_state, "vaes", "audio_vae")):
        raise SystemExit(f"--resume_from {run_state!r} has no vaes/audio_vae: not a saved run state.")
    print(f"resuming the run saved in {run_state}", flush=True)
    shutil.copytree(os.path.join(run_state, "vaes"), os.path.join(work_dir, "vaes"))
    for stage in ("base", "continued"):
        if os.path.isdir(os.path.join(run_state, stage)):
            shutil.copytree(os.path.join(run_state, stage), os.path.join(work_dir, stage))


def drop_local_paths(folder: str) -> None:
    """Remove the `_name_or_path` that configs keep of the folder they were loaded from (a path on this machine)."""
    for directory, _, files in os.walk(folder):
        for name in files:
            if name in ("config.json", "model_index.json"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as f:
                    config = json.load(f)
                if config.pop("_name_or_path", None) is not None:
                    with open(path, "w", encoding="utf-8") as f:
                        json.dump(config, f, indent=2, sort_keys=True)
                        f.write("\n")


def encode_world_clips(
    pipe_dir: str,
    out_dir: str,
    count: int,
    size: int,
    refiner_scale: int | None,
    first_seed: int = evaluate.TRAIN_SEED,
) -> None:
    """World clips rendered in memory (seeds from `first_seed`), encoded as training reads them."""
    from safetensors.torch import save_file

    from skyreels_diffusers import SkyReelsV4Pipeline

    sys.path.insert(0, TRAINING)
    from precompute_latents import precompute

    torch.set_num_threads(1)
    pipe = SkyReelsV4Pipeline.from_pretrained(pipe_dir)
    sample_rate = pipe.audio_spec.sample_rate

    def clips():
        for seed in range(first_seed, first_seed + count):
            clip = world.render_clip(seed, num_frames=NUM_FRAMES, size=size, fps=FPS, sample_rate=sample_rate)
            yield {"frames": clip.frames, "audio": torch.from_numpy(clip.audio)[None], "caption": clip.caption}

    tensors = precompute(pipe, clips(), size, size, NUM_FRAMES, refiner_scale=refiner_scale)
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out_dir, "latents.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="runs/tiny")
    parser.add_argument("--out", default="pipelines/skyreels-v4-tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_clips", type=int, default=3000)
    parser.add_argument("--num_refiner_clips", type=int, default=600)
    parser.add_argument("--train_steps", type=int, default=6000)
    parser.add_argument("--continuation_steps", type=int, default=1000, help="0: ship the base run as it is")
    parser.add_argument("--refiner_steps", type=int, default=3000)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--eval_seeds", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each training stage")
    parser.add_argument(
        "--resume_from",
        default=None,
        help="the work dir of an unfinished run (its vaes/ and base/ are enough): they seed an empty --work_dir, so "
        "training continues exactly where that run stopped",
    )
    args = parser.parse_args()
    work = lambda *parts: os.path.join(args.work_dir, *parts)  # noqa: E731
    os.makedirs(args.work_dir, exist_ok=True)
    if args.resume_from is not None and not os.path.isdir(work("vaes")):
        seed_work_dir(args.resume_from, args.work_dir)

    if not os.path.isdir(work("vaes", "audio_vae")):
        run(
            [
                os.path.join(HERE, "train_tiny_vaes.py"),
                "--out",
                work("vaes"),
                "--video_steps",
                str(VIDEO_VAE_STEPS),
                "--audio_steps",
                str(AUDIO_VAE_STEPS),
                "--audio_polish_steps",
                str(AUDIO_VAE_POLISH_STEPS),
                "--seed",
                str(args.seed),
            ]
        )
    if not os.path.isfile(work("init", "model_index.json")) or not os.path.isdir(work("init_refiner")):
        build_initial_pipeline(work("vaes"), work("init"), work("init_refiner"), args.seed)
    if not os.path.isfile(work("latents64", "latents.safetensors")):
        encode_world_clips(work("init"), work("latents64"), args.num_clips, SIZE, None)

    train = os.path.join(TRAINING, "train_skyreels_v4.py")
    cosine = ["--lr_scheduler", "cosine", "--lr_warmup_steps", "200"]
    common = [
        "--train_batch_size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
        "--checkpointing_steps",
        "250",
        "--checkpoints_total_limit",
        "1",
        "--resume_from_checkpoint",
        "latest",
        "--use_ema",
        "--ema_decay",
        "0.995",
    ]
    schedule = [*cosine, *common, "--pretrained_model_name_or_path", work("init")]
    threads = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    def train_joint(output: str, pretrained: str, steps: int, learning_rate: float, ratios: str, lr_schedule: list):
        """A joint-model run on the 64x64 clips, skipped when `output` is already a finished pipeline folder."""
        if os.path.isfile(os.path.join(output, "model_index.json")):
            return
        run(
            [
                train,
                "--train_latents",
                work("latents64"),
                "--output_dir",
                output,
                "--pretrained_model_name_or_path",
                pretrained,
                "--max_train_steps",
                str(steps),
                "--learning_rate",
                str(learning_rate),
                "--task_ratios",
                ratios,
                "--independent_noise_ratio",
                str(INDEPENDENT_NOISE_RATIO),
                *lr_schedule,
                *common,
            ],
            env=threads,
        )

    train_joint(work("base"), work("init"), args.train_steps, args.learning_rate, TASK_RATIOS, cosine)
    joint = work("base")
    if args.continuation_steps:  # from the base run's (EMA) weights
        joint = work("continued")
        constant = ["--lr_scheduler", "constant_with_warmup", "--lr_warmup_steps", "50"]
        train_joint(
            joint,
            work("base"),
            args.continuation_steps,
            CONTINUATION_LEARNING_RATE,
            CONTINUATION_TASK_RATIOS,
            constant,
        )

    if not os.path.isfile(work("latents128", "latents.safetensors")):
        encode_world_clips(work("init"), work("latents128"), args.num_refiner_clips, REFINER_SIZE, 2)
    if not os.path.isdir(work("refiner", "refiner")):
        run(
            [
                train,
                "--refiner",
                "--train_latents",
                work("latents128"),
                "--refiner_crop",
                "16",
                "--max_sparsity",
                "0.5",
                "--refiner_model_name_or_path",
                work("init_refiner"),
                "--output_dir",
                work("refiner"),
                "--max_train_steps",
                str(args.refiner_steps),
                "--learning_rate",
                "5e-4",
                "--sparsity_ramp_steps",
                str(args.refiner_steps // 2),
                *schedule,
            ],
            env=threads,
        )
    from skyreels_diffusers import SkyReelsV4RefinerTransformer3DModel

    refiner = SkyReelsV4RefinerTransformer3DModel.from_pretrained(work("refiner", "refiner"))
    refiner.register_to_config(default_sparsity=0.5)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    shutil.copytree(
        joint,
        args.out,
        ignore=shutil.ignore_patterns("checkpoint-*", "validation", "logs", "*.jsonl", "README.md"),
    )
    refiner.save_pretrained(os.path.join(args.out, "refiner"))
    drop_local_paths(args.out)

    metrics_path = work("metrics.json")
    run(
        [
            os.path.join(HERE, "evaluate.py"),
            "--model",
            args.out,
            "--seeds",
            str(args.eval_seeds),
            "--json",
            metrics_path,
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    with open(metrics_path, encoding="utf-8") as f:
        metrics = json.load(f)
    write_model_card(args, metrics)


# The targets of the "tiny default that shows the mission working" issue: (name, metric, test, target text).
TARGETS = (
    ("audio round trip: pitch kept", "audio_vae_pitch_kept", lambda v, m: v >= 0.98, ">= 98%"),
    ("audio round trip: timbre kept", "audio_vae_timbre_kept", lambda v, m: v >= 0.95, ">= 95%"),
    ("audio round trip: RMS ratio", "audio_vae_rms_ratio", lambda v, m: 0.8 <= v <= 1.25, "0.8-1.25"),
    ("knock pitch matches the shape (T2AV)", "knock_pitch_matches_shape", lambda v, m: v >= 0.9, ">= 90%"),
    ("knock timbre matches the colour (T2AV)", "knock_timbre_matches_colour", lambda v, m: v >= 0.8, ">= 80%"),
    ("T2AV: bounces with an onset within one frame", "sync_within_one_frame", lambda v, m: v >= 0.7, ">= 70%"),
    ("video-to-audio: the same", "v2a_within_one_frame", lambda v, m: v >= 0.9, ">= 90%"),
    ("audio-to-video: the same", "a2v_within_one_frame", lambda v, m: v >= 0.8, ">= 80%"),
    ("object jumps per clip", "motion_jumps_per_clip", lambda v, m: v <= 0.1, "<= 0.1"),
    ("shape fidelity (IoU)", "shape_iou", lambda v, m: v >= 0.85, ">= 0.85"),
    ("colour and shape adherence", "adherence", lambda v, m: v >= 0.95, ">= 95%"),
    (
        "extension path error (px)",
        "extension_path_error_px",
        lambda v, m: v < m.get("extension_straight_line_error_px", -1),
        "< straight line",
    ),
    ("Refiner 2x PSNR (dB)", "refiner_psnr", lambda v, m: v > m.get("bicubic_psnr", float("inf")), "> bicubic"),
)


def target_status(metrics: dict) -> str:
    """One line per target: the measured value, the target, met or not."""
    lines = []
    for name, key, met, target in TARGETS:
        if key in metrics:
            verdict = "met" if met(metrics[key], metrics) else "**not met**"
            lines.append(f"- {name}: {metrics[key]:.3g} (target {target}): {verdict}")
    return "\n".join(lines)


def continuation_text(args) -> str:
    """The model card's sentence on the continuation run (empty without one)."""
    if not args.continuation_steps:
        return ""
    return (
        f"Then a continuation run of {args.continuation_steps} steps from its EMA weights (AdamW "
        f"{CONTINUATION_LEARNING_RATE:g}, constant after 50 warm-up steps, EMA 0.995) with the tasks that keep a clean "
        f"audio prefix weighted up, so that the model continues a soundtrack across chained windows: "
        f"`{CONTINUATION_TASK_RATIOS}`. "
    )


def write_model_card(args, metrics: dict) -> None:
    from evaluate import metrics_table  # noqa: E402

    size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs) / 2**20
    audio_vae = AutoencoderOobleck.load_config(os.path.join(args.out, "audio_vae"))
    sample_rate, samples_per_latent = audio_vae["sampling_rate"], math.prod(audio_vae["downsampling_ratios"])
    text = f"""---
license: apache-2.0
library_name: diffusers
tags: [skyreels-v4, text-to-video, text-to-audio, video-to-audio, tiny, synthetic]
---

# SkyReels-V4 tiny default ({size_mb:.1f} MB)

A tiny SkyReels-V4 trained from scratch on a CPU, on the procedural audio-visual world of
`examples/synthetic_av/world.py`: one coloured shape (red, green, blue, yellow; circle, square, triangle) bounces
in a dark box, and each wall hit makes a knock whose pitch follows the shape and whose timbre follows the colour.
It produces {SIZE}x{SIZE} clips of {NUM_FRAMES} frames at {FPS} fps with {sample_rate // 1000} kHz mono sound,
and a 2x Refiner ({REFINER_SIZE}x{REFINER_SIZE}) in `refiner/`. It exists to prove the whole stack end to end
offline, not to make pretty videos.

## Components
- `text_encoder`: a tiny `Qwen2_5_VLForConditionalGeneration` that is **randomly initialised and frozen** (never
  trained); its tokenizer is a byte-level BPE trained locally. The transformer learns to read its hidden states.
- `vae`: an image `AutoencoderKL` (4x spatial, 8 channels) that the pipelines apply frame by frame (no temporal
  compression, so video tokens sit on every frame), `audio_vae`: `AutoencoderOobleck` ({sample_rate // 1000} kHz mono,
  {samples_per_latent} samples per latent), both trained here by `examples/synthetic_av/train_tiny_vaes.py`.
- `transformer`: `SkyReelsV4Transformer3DModel` ({TRANSFORMER_CONFIG}).
- `refiner/`: `SkyReelsV4RefinerTransformer3DModel` (built with `from_video_transformer` from an untrained
  tower like the joint model's but with {REFINER_PATCH_SIZE}x{REFINER_PATCH_SIZE} patches, and trained on its own),
  VSA at sparsity 0.5.

## Training (reproduce with one command)
```
python examples/synthetic_av/build_tiny_default.py --work_dir runs/tiny --out pipelines/skyreels-v4-tiny
```
{args.num_clips} training clips for the joint model (seeds from 1,000,000 up) and {args.num_refiner_clips} at
{REFINER_SIZE}x{REFINER_SIZE} for the Refiner. The joint model: {args.train_steps} steps (batch {args.batch_size},
AdamW 1e-3, cosine, EMA 0.995) on every task, with the video and audio noise levels drawn independently for
{INDEPENDENT_NOISE_RATIO:.0%} of the samples; task shares `{TASK_RATIOS}`. {continuation_text(args)}The Refiner: {args.refiner_steps} steps
(5e-4, sparsity ramped to 0.5). Before them, {VIDEO_VAE_STEPS} steps for the video VAE and
{AUDIO_VAE_STEPS} + {AUDIO_VAE_POLISH_STEPS} for the audio VAE. All on a 2-core CPU.

## Metrics ({args.eval_seeds} held-out test seeds {metrics.get("seeds", "")}, `examples/synthetic_av/evaluate.py`)

No training clip and no tuning decision used these seeds. A chance level is the same score with each clip's output
paired with another clip's truth. The guidance behind these figures: classifier-free guidance 5 on both modalities
(`evaluate.py`'s default) and the other terms off (`stg_scale=0`, `modality_scale=1`, `guidance_rescale=0`, the
pipeline's defaults; the repository README, "Multimodal guidance", says why).

{metrics_table(metrics)}

## The targets
{target_status(metrics)}

## Use
```py
from skyreels_diffusers import SkyReelsV4Pipeline
pipe = SkyReelsV4Pipeline.from_pretrained("pipelines/skyreels-v4-tiny")
out = pipe("<text>A red circle bounces around a dark box.</text><sfx>A pure low knock each time it hits a wall.</sfx>")
```
"""
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
