"""What a micro model learns about motion: text-to-video on the micro world (`micro_world.py`), scored two ways.

1. **The denoiser against the best possible one.** For held-out clips noised to sigma in {0.2, ..., 0.95}, the MSE of
   the model's clean-video estimate beside that of a nearest-neighbour oracle: the exact posterior mean over
   `--oracle_clips` training clips (its floor is the set's spacing, so compare the two at high sigma, where the
   oracle is far above its floor). With many frames the oracle pools evidence along the whole path; a model that
   denoises each frame on its own cannot.
2. **Clips generated from noise** through the pipelines' own loop (`pipelines/denoising.denoise`, Euler, no
   guidance), tracked per frame at the brightest cell (a peak-centred centroid, so a faint dot is still found):
   direction reversals per clip (and those away from the walls), jumps of more than two cells, and faint frames
   (peak below the background's level + 1); beside the same scores of the world's own clips.

    python examples/synthetic_av/micro_motion_probe.py --steps 2000 --patch_size 2 --json runs/micro/p2.json
    python examples/synthetic_av/micro_motion_probe.py --steps 1000 --patch_size 2 --speed 0 0   # a static dot

Training: text-to-video (the prompt is one fixed random embedding), sigma uniform (then shifted by
`--train_shift`), velocity loss, AdamW one-cycle, 16 clips a step, one thread. Test clips come from seeds 3,000,000
and up, generated clips from 2,000,000 and up; training seeds start at 0.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file, save_file


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from micro_world import (  # noqa: E402
    PROMPT,
    fit_generated,
    generate_micro,
    micro_clip,
    micro_model,
    motion,
    track,
    train_micro,
    video_input,
)


PROBE_SIGMAS = (0.2, 0.4, 0.6, 0.8, 0.95)
TEST_SEED, SAMPLE_SEED = 3_000_000, 2_000_000


def clips(seeds, args, num_frames: int | None = None) -> torch.Tensor:
    num_frames = num_frames or args.frames
    return torch.stack([micro_clip(seed, num_frames, tuple(args.speed))[0] for seed in seeds])


def train(args):
    model = micro_model(args.patch_size, tuple(args.rope_axes_dim), args.layers, args.layers, args.heads)
    return train_micro(
        model,
        args.steps,
        audio=False,
        frames=args.frames,
        speed_range=tuple(args.speed),
        batch_size=args.batch_size,
        lr=args.lr,
        ema=args.ema,
        train_shift=args.train_shift,
        image_steps=args.image_steps,
        log_every=200,
    )


@torch.no_grad()
def denoiser_scores(model, args) -> dict:
    """x0 MSE per sigma of the model and of the nearest-neighbour oracle on held-out clips."""
    test = clips(range(TEST_SEED, TEST_SEED + 64), args)
    bank = clips(range(10**7, 10**7 + args.oracle_clips), args)
    generator = torch.Generator().manual_seed(5)
    scores = {}
    for sigma in PROBE_SIGMAS:
        noisy = (1 - sigma) * test + sigma * torch.randn(test.shape, generator=generator)
        velocity = model(
            hidden_states=video_input(noisy),
            timestep=torch.full((len(test),), sigma * 1000),
            encoder_hidden_states=PROMPT.expand(len(test), -1, -1),
        ).sample
        distances = torch.cdist(noisy.flatten(1), (1 - sigma) * bank.flatten(1)) ** 2
        weights = torch.softmax(-distances / (2 * sigma**2), dim=1)
        oracle = (weights @ bank.flatten(1)).view_as(test)
        scores[sigma] = {
            "model": float(((noisy - sigma * velocity - test) ** 2).mean()),
            "oracle": float(((oracle - test) ** 2).mean()),
        }
    return scores


def generate(model, seeds: list[int], args) -> torch.Tensor:
    return generate_micro(model, seeds, audio=False, frames=args.frames, steps=args.sample_steps, shift=args.shift)[0]


def scored_motion(video: torch.Tensor, args) -> dict:
    positions, peaks = track(video)
    return motion(positions, peaks, fit_generated(positions, tuple(args.speed))[0])


def mean_scores(rows: list[dict]) -> dict:
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--patch_size", type=int, default=4, choices=(1, 2, 4, 8))
    parser.add_argument(
        "--rope_axes_dim",
        type=int,
        nargs=3,
        default=(4, 6, 6),
        help="RoPE dims of time, height, width (their sum is the head dim)",
    )
    parser.add_argument("--layers", type=int, default=1, help="joint blocks, and as many single blocks")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (width: heads x sum of --rope_axes_dim)")
    parser.add_argument("--ema", type=float, default=0.0, help="sample and score an EMA of the weights (decay)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--speed", type=float, nargs=2, default=(0.5, 0.9), help="cells per frame, per axis")
    parser.add_argument("--image_steps", type=int, default=0, help="first train on single frames for this many steps")
    parser.add_argument("--train_shift", type=float, default=1.0)
    parser.add_argument("--shift", type=float, default=1.0, help="the sampling scheduler's shift")
    parser.add_argument("--sample_steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--oracle_clips", type=int, default=2048)
    parser.add_argument("--json", help="write the scores here")
    parser.add_argument("--save", help="save the trained (or EMA) weights here (safetensors)")
    parser.add_argument("--load", help="score these weights instead of training (the same model options)")
    args = parser.parse_args()
    if not 0 <= args.speed[0] <= args.speed[1]:
        raise ValueError(f"`--speed` must be two numbers 0 <= low <= high, got {args.speed}.")
    if args.steps < 1 or args.frames < 1 or args.samples < 1 or args.train_shift <= 0:
        raise ValueError("`--steps`, `--frames` and `--samples` must be positive, `--train_shift` above 0.")
    if not 0 <= args.image_steps < args.steps:
        raise ValueError(f"`--image_steps` must be in [0, --steps), got {args.image_steps}.")
    torch.set_num_threads(1)

    start = time.perf_counter()
    if args.load:
        model = micro_model(args.patch_size, tuple(args.rope_axes_dim), args.layers, args.layers, args.heads)
        model.load_state_dict(load_file(args.load))
        model.eval()
    else:
        model = train(args)
        if args.save:
            save_file(model.state_dict(), args.save)
    train_seconds = time.perf_counter() - start
    denoiser = denoiser_scores(model, args)
    videos = generate(model, list(range(SAMPLE_SEED, SAMPLE_SEED + args.samples)), args)
    generated = [scored_motion(video, args) for video in videos]
    world = [scored_motion(clips([TEST_SEED + i], args)[0], args) for i in range(args.samples)]
    result = {
        "args": vars(args),
        "train_seconds": round(train_seconds, 1),
        "denoiser_x0_mse": denoiser,
        "generated": mean_scores(generated),
        "world": mean_scores(world),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
