"""Objective metrics for clips of the synthetic audio-visual world (see `world.py`).

- prompt adherence: the colour and shape detected in the video vs the ones the prompt asked for;
- audio-video sync: bounces are found in the video (the object's velocity flips), onsets in the audio (rising
  energy); reported as the mean |onset - bounce| in ms and the fraction of bounces with an onset within one frame;
- PSNR helpers for image-to-video frame 0, the unmasked region after editing, and Refiner super-resolution vs
  bicubic upsampling.

    python examples/synthetic_av/evaluate.py --model pipelines/skyreels-v4-tiny --seeds 50

generates one clip per seed with the world's captions and prints the table.
"""

import argparse
import os
import sys

import numpy as np


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world  # noqa: E402


def object_mask(frame: np.ndarray) -> np.ndarray:
    """Pixels that differ clearly from the background, `(H, W)` bool."""
    return np.abs(frame.astype(np.int32) - np.array(world.BACKGROUND)).sum(-1) > 60


def detect_colour_and_shape(frames: np.ndarray) -> tuple[str | None, str | None]:
    """The colour nearest to the mean object colour and the shape from how much of its bounding box it fills
    (square ~0.97, circle ~0.79, triangle ~0.5), voted over frames. `(None, None)` if nothing is visible."""
    colours, shapes = [], []
    for frame in frames:
        mask = object_mask(frame)
        if mask.sum() < 4:
            continue
        mean = frame[mask].mean(0)
        colours.append(min(world.COLOURS, key=lambda name: np.sum((np.array(world.COLOURS[name]) - mean) ** 2)))
        rows, cols = np.nonzero(mask)
        fill = mask.sum() / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))
        shapes.append("square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle")
    if not colours:
        return None, None
    return max(set(colours), key=colours.count), max(set(shapes), key=shapes.count)


def bounce_times_from_video(frames: np.ndarray, fps: float) -> list[float]:
    """Seconds at which the object's centroid velocity flips sign on either axis (one object)."""
    centroids = []
    for frame in frames:
        rows, cols = np.nonzero(object_mask(frame))
        centroids.append((cols.mean(), rows.mean()) if len(rows) else (np.nan, np.nan))
    velocity = np.diff(np.array(centroids), axis=0)
    times = []
    for axis in range(2):
        signs = np.sign(velocity[:, axis])
        for step in np.nonzero(signs[1:] * signs[:-1] < 0)[0]:
            times.append((step + 1) / fps)  # the turn happens around frame step + 1
    return sorted(times)


def audio_onsets(audio: np.ndarray, sample_rate: int, hop: int = 128, threshold: float = 0.05) -> list[float]:
    """Seconds where the short-time peak amplitude rises through `threshold` (at most one onset per 50 ms)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1, np.asarray(audio).shape[-1]).mean(0)
    frames = len(audio) // hop
    envelope = np.abs(audio[: frames * hop]).reshape(frames, hop).max(1)
    onsets, last = [], -np.inf
    for index in np.nonzero((envelope[1:] >= threshold) & (envelope[:-1] < threshold))[0]:
        seconds = (index + 1) * hop / sample_rate
        if seconds - last > 0.05:
            onsets.append(seconds)
            last = seconds
    return onsets


def sync_metrics(bounces: list[float], onsets: list[float], fps: float) -> tuple[float, float]:
    """(mean |nearest onset - bounce| in ms, fraction of bounces with an onset within one video frame)."""
    if not bounces:
        return float("nan"), float("nan")
    if not onsets:
        return float("inf"), 0.0
    errors = np.array([min(abs(o - b) for o in onsets) for b in bounces])
    return float(errors.mean() * 1000), float((errors <= 1 / fps).mean())


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of images/videos in [0, 1] (optionally over `mask` only)."""
    difference = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    mse = difference[mask].mean() if mask is not None else difference.mean()
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline folder (default: tiny random components)")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import torch

    from skyreels_diffusers import SkyReelsV4Pipeline

    if args.model:
        pipe = SkyReelsV4Pipeline.from_pretrained(args.model)
    else:
        from skyreels_diffusers.utils.tiny_components import build_tiny_pipeline

        print("NOTE: no --model: RANDOMLY INITIALISED tiny components, the metrics only exercise the evaluator.")
        pipe = build_tiny_pipeline()
    fps = pipe.transformer.config.fps
    adherence, mean_errors, within = [], [], []
    for seed in range(args.seeds):
        target = world.render_clip(seed)
        out = pipe(target.caption, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(seed))
        frames = (out.frames[0] * 255).round().astype(np.uint8)
        colour, shape = detect_colour_and_shape(frames)
        adherence.append((colour, shape) == (target.objects[0]["colour"], target.objects[0]["shape"]))
        error, fraction = sync_metrics(
            bounce_times_from_video(frames, fps), audio_onsets(out.audio[0], out.audio_sample_rate), fps
        )
        if not np.isnan(error):
            mean_errors.append(error)
            within.append(fraction)
    print("| metric | value |\n|---|---|")
    print(f"| colour/shape adherence | {100 * np.mean(adherence):.1f}% |")
    print(f"| mean abs(onset - bounce) | {np.mean(mean_errors) if mean_errors else float('nan'):.1f} ms |")
    print(f"| bounces with an onset within 1 frame | {100 * np.mean(within) if within else float('nan'):.1f}% |")


if __name__ == "__main__":
    main()
