"""Measures of long-form generation (windows chained past the model's window, issue 30) on the synthetic world.

For each seed, a clip of `--windows` windows is made from the world's caption (T2AV) under each chaining setting, and
every measure is taken at the joins between windows and, for comparison, at the same number of points inside the
windows (the middle of each window's new frames):

- audio level step (|dB| between the RMS of the 0.1 s before and after the point, each floored at -60 dBFS);
- knocks at the joins: onsets doubled (two within 0.12 s around the point) and bounces of the video within 0.15 s of
  the point with no onset within one frame (missing);
- video: mean absolute difference between the two frames across the point, object jumps (teleports) and mid-box
  direction reversals at the point;
- sync over the whole clip (bounces with an onset within one frame, against other seeds' onsets: chance);
- drift: colour and shape adherence of each window's frames, and the audio level (RMS dBFS) from each window's start
  to the next one's, first to last.

Settings: `naive` (independent windows, cut end to end), `crossfade_only` (independent windows overlapping by the
overlap and crossfaded: what a chain without conditioning can do), `chained` (each window extends the last
`overlap` frames and the matching audio, kept exactly), `chained_crossfade`, `chained_addnoise` (kept, with
`addnoise_condition=20`) and `chained_crossfade_addnoise`.

    python examples/synthetic_av/measure_longform.py --model pipelines/skyreels-v4-tiny --split dev --seeds 2

Tuning uses `--split dev`; reported numbers use the held-out test seeds (`--split test`).
"""

import argparse
import json
import os
import sys
import time

import numpy as np


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evaluate  # noqa: E402


SETTINGS = (
    "naive",
    "crossfade_only",
    "chained",
    "chained_crossfade",
    "chained_addnoise",
    "chained_crossfade_addnoise",
)
ADDNOISE = 20.0  # SkyReels-V2's suggested addnoise_condition
NEAR = 0.15  # seconds around a point where knocks and bounces count as at it


def make_clip(pipe, caption, seed, setting, windows, overlap, call_kwargs):
    """`(frames (F, H, W, 3) uint8, audio (samples,), joins in frames)` of `windows` chained windows."""
    import torch

    from skyreels_diffusers.pipelines import longform

    window = pipe.config.default_num_frames
    overlap = 0 if setting == "naive" else overlap
    num_frames = window + (windows - 1) * (window - overlap)
    generator = torch.Generator().manual_seed(seed)
    common = {"generator": generator, "output_type": "pt", **call_kwargs}
    if setting == "crossfade_only":  # independent windows, overlapped and crossfaded
        plan = longform.ChainPlan(num_frames, window, overlap, 0.0, True)

        def independent(*tails):
            out = pipe(caption, num_frames=window, **common)
            return out.frames, out.audio

        frames, audio = longform.run_chain(
            plan, independent, independent, pipe.transformer.config.fps, pipe.audio_spec.sample_rate, pipe.progress_bar
        )
    else:
        options = {
            "chained": {"crossfade": False},
            "chained_crossfade": {"crossfade": True},
            "chained_addnoise": {"crossfade": False, "addnoise_condition": ADDNOISE},
            "chained_crossfade_addnoise": {"crossfade": True, "addnoise_condition": ADDNOISE},
        }[setting]
        out = pipe(
            caption, num_frames=num_frames, base_num_frames=window, overlap_history=overlap, **options, **common
        )
        frames, audio = out.frames, out.audio
    joins = [window + k * (window - overlap) for k in range(windows - 1)]
    frames = evaluate.to_uint8(frames[0].permute(0, 2, 3, 1).numpy())
    return frames, audio[0].mean(0).numpy(), joins


def rms_db(audio) -> float:
    """RMS level in dBFS, floored at -60."""
    return float(20 * np.log10(max(np.sqrt(np.mean(np.square(audio))), 1e-3)))


def level_step_db(audio, sample_rate, second, span=0.1) -> float:
    at, n = round(second * sample_rate), round(span * sample_rate)
    before, after = audio[max(0, at - n) : at], audio[at : at + n]
    # RMS floored at -60 dBFS: between knocks the track is near silence, where a ratio of two tiny levels means nothing
    rms = [max(np.sqrt(np.mean(np.square(part))), 1e-3) for part in (before, after)]
    return float(abs(20 * np.log10(rms[1] / rms[0])))


def point_measures(frames, audio, sample_rate, fps, points) -> dict:
    """Each measure at frame indices `points` (the first frame after the point)."""
    track = evaluate.centroid_track(frames)
    size = frames.shape[2]
    limit = 2 * np.sqrt(2) * evaluate.world.SPEED_RANGE[1] * size / fps
    steps = np.linalg.norm(np.diff(track, axis=0), axis=1)
    velocity = np.diff(track, axis=0)
    reach = evaluate.world_radius_range(size)[1] + 2.0
    onsets = np.array(evaluate.audio_onsets(audio, sample_rate))
    bounces = evaluate.bounce_times(track, fps)
    result = {"level_step_db": [], "frame_difference": [], "jumps": [], "reversals": [], "doubled": [], "missing": []}
    for point in points:
        second = point / fps
        result["level_step_db"].append(level_step_db(audio, sample_rate, second))
        result["frame_difference"].append(float(np.abs(frames[point].astype(float) - frames[point - 1]).mean()))
        result["jumps"].append(int(steps[point - 1] > limit))
        flips = 0
        for axis in range(2):  # a reversal at the point: the velocity turns between the steps around it
            turned = velocity[point - 2, axis] * velocity[point - 1, axis] < 0 if point >= 2 else False
            flips += int(turned and reach < track[point - 1, axis] < size - reach)
        result["reversals"].append(flips)
        near = onsets[np.abs(onsets - second) <= NEAR] if len(onsets) else onsets
        result["doubled"].append(int(np.any(np.diff(near) < 0.12)) if len(near) > 1 else 0)
        near_bounces = [b for b in bounces if abs(b - second) <= NEAR]
        result["missing"].extend(
            [float(not len(onsets) or np.min(np.abs(onsets - b)) > 1 / fps) for b in near_bounces]
        )
    return result


def measure(pipe, seeds, settings, windows, overlap, call_kwargs) -> dict:
    fps = pipe.transformer.config.fps
    sample_rate = pipe.audio_spec.sample_rate
    window = pipe.config.default_num_frames
    results = {}
    for setting in settings:
        joins, inside, drift, levels, pairs, seconds = {}, {}, [], [], [], []
        for seed in seeds:
            target = evaluate.world_clip(pipe, seed)
            start = time.perf_counter()
            frames, audio, join_points = make_clip(pipe, target.caption, seed, setting, windows, overlap, call_kwargs)
            seconds.append(time.perf_counter() - start)
            new = window - (0 if setting == "naive" else overlap)
            middles = [window // 2] + [point + new // 2 for point in join_points]
            middles = middles[: len(join_points)]
            for store, points in ((joins, join_points), (inside, middles)):
                for key, values in point_measures(frames, audio, sample_rate, fps, points).items():
                    store.setdefault(key, []).extend(values)
            expected = (target.objects[0]["colour"], target.objects[0]["shape"])
            starts = [0, *join_points]
            drift.append(
                [evaluate.detect_colour_and_shape(frames[begin : begin + window]) == expected for begin in starts]
            )
            bounds = [round(begin / fps * sample_rate) for begin in [*starts, len(frames)]]
            levels.append([rms_db(audio[a:b]) for a, b in zip(bounds, bounds[1:])])
            pairs.append((evaluate.bounce_times_from_video(frames, fps), evaluate.audio_onsets(audio, sample_rate)))
        sync = evaluate.sync_summary(pairs, fps)
        chance = evaluate.sync_summary(evaluate.mismatched_pairs(*zip(*pairs)), fps)
        row = {f"join_{key}": float(np.mean(values)) if values else float("nan") for key, values in joins.items()}
        row.update(
            {f"inside_{key}": float(np.mean(values)) if values else float("nan") for key, values in inside.items()}
        )
        row.update(
            {
                "sync_within_one_frame": sync["sync_within_one_frame"],
                "sync_within_one_frame_chance": chance["sync_within_one_frame"],
                "adherence_per_window": [float(x) for x in np.mean(np.array(drift, float), axis=0)],
                "audio_rms_db_per_window": [round(float(x), 1) for x in np.mean(np.array(levels), axis=0)],
                "seconds_per_clip": float(np.median(seconds)),
            }
        )
        results[setting] = row
        print(setting, json.dumps(row), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pipelines/skyreels-v4-tiny")
    parser.add_argument("--split", default="test", choices=["test", "dev"])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--skip_seeds", type=int, default=0, help="start this many seeds into the split")
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--overlap", type=int, default=None, help="frames; default: the pipeline's default overlap")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch

    from skyreels_diffusers import SkyReelsV4Pipeline
    from skyreels_diffusers.pipelines.longform import default_overlap

    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    pipe = SkyReelsV4Pipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    first = evaluate.TEST_SEED if args.split == "test" else evaluate.DEV_SEED
    seeds = range(first + args.skip_seeds, first + args.skip_seeds + args.seeds)
    overlap = default_overlap(pipe) if args.overlap is None else args.overlap
    call_kwargs = {"num_inference_steps": args.steps, "guidance_scale": args.guidance_scale}
    results = measure(pipe, seeds, args.settings.split(","), args.windows, overlap, call_kwargs)
    meta = {"seeds": f"{seeds.start}-{seeds.stop - 1}", "windows": args.windows, "overlap": overlap, **call_kwargs}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
