"""A few-step LoRA against its teacher on the synthetic world, with `evaluate.py`'s scorers.

Three settings of one pipeline (the LoRA loaded once, switched on and off):

- `student`: the LoRA at `--student_steps` steps, `guidance_scale=1` (one pass per step);
- `teacher_k`: the teacher at the same number of steps with its guidance (`--guidance_scale`);
- `teacher`: the teacher at its default steps (`--teacher_steps`) with its guidance.

Quality: text-to-video+audio (adherence, jumps, sync, knock pitch / timbre, with `evaluate.py`'s chance levels) and,
with `--tasks t2av,cross_modal`, video-to-audio and audio-to-video. Time: one clip per setting in turn (interleaved,
so load changes hit all settings alike), `--timing_repeats` rounds, median seconds per clip.

    python examples/synthetic_av/evaluate_distilled.py --model pipelines/skyreels-v4-tiny \
        --lora pipelines/skyreels-v4-tiny-4step-lora --seeds 30 --json runs/distill/eval.json

Tuning uses `--split dev`; reported numbers use the held-out test seeds (the default).
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evaluate  # noqa: E402
import world  # noqa: E402


ROWS = (
    ("adherence", "colour/shape adherence", "{:.1%}", None),
    ("motion_jumps_per_clip", "object jumps per clip (world: 0)", "{:.2f}", None),
    ("clips_with_jumps", "clips with a jump", "{:.1%}", None),
    ("shape_iou", "shape fidelity (IoU)", "{:.3f}", None),
    ("sync_within_one_frame", "T2AV: bounces with an onset within 1 frame", "{:.1%}", "sync_within_one_frame_chance"),
    ("onset_precision", "T2AV: onsets with a bounce within 1 frame", "{:.1%}", "onset_precision_chance"),
    ("silent_clips", "T2AV: clips without an onset", "{:.1%}", None),
    ("knock_pitch_matches_shape", "T2AV: knock pitch matches the shape", "{:.1%}", "knock_pitch_matches_shape_chance"),
    (
        "knock_timbre_matches_colour",
        "T2AV: knock timbre matches the colour",
        "{:.1%}",
        "knock_timbre_matches_colour_chance",
    ),
    (
        "v2a_within_one_frame",
        "V2A: true bounces with an onset within 1 frame",
        "{:.1%}",
        "v2a_within_one_frame_chance",
    ),
    (
        "a2v_within_one_frame",
        "A2V: true bounces with a video bounce within 1 frame",
        "{:.1%}",
        "a2v_within_one_frame_chance",
    ),
    ("timed_seconds_per_clip", "seconds per T2AV clip (median, interleaved)", "{:.2f}", None),
    ("transformer_passes_per_clip", "transformer passes per clip", "{:.0f}", None),
)


def settings(args) -> dict[str, dict]:
    return {
        "student": {"lora": True, "num_inference_steps": args.student_steps, "guidance_scale": 1.0},
        "teacher_k": {"lora": False, "num_inference_steps": args.student_steps, "guidance_scale": args.guidance_scale},
        "teacher": {"lora": False, "num_inference_steps": args.teacher_steps, "guidance_scale": args.guidance_scale},
    }


def use(pipe, setting: dict) -> dict:
    """Switch the LoRA on or off; the pipeline call's arguments."""
    if setting["lora"]:
        pipe.enable_lora()
    else:
        pipe.disable_lora()
    return {k: v for k, v in setting.items() if k != "lora"}


def table(results: dict, names: list[str]) -> str:
    lines = ["| metric | " + " | ".join(names) + " | chance |", "|---" * (len(names) + 2) + "|"]
    for key, label, fmt, chance in ROWS:
        if not any(key in results[n] for n in names):
            continue
        cells = [fmt.format(results[n][key]) if key in results[n] else "" for n in names]
        chances = " / ".join(fmt.format(results[n][chance]) for n in names if chance in results[n]) if chance else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {chances} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the teacher pipeline folder")
    parser.add_argument("--lora", required=True, help="the few-step LoRA (file or folder)")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--split", default="test", choices=["test", "dev"])
    parser.add_argument("--student_steps", type=int, default=4)
    parser.add_argument("--teacher_steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=5.0, help="the teacher's")
    parser.add_argument("--tasks", default="t2av,cross_modal", help="t2av, cross_modal, or none (timing only)")
    parser.add_argument("--timing_repeats", type=int, default=3)
    parser.add_argument("--settings", default="student,teacher_k,teacher")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    for name in ("seeds", "student_steps", "teacher_steps", "timing_repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"`--{name}` must be at least 1, got {getattr(args, name)}.")
    unknown = set(args.tasks.split(",")) - {"t2av", "cross_modal", "none"}
    if unknown:
        raise ValueError(f"`--tasks` accepts t2av and cross_modal, got {sorted(unknown)}.")

    import torch

    from skyreels_diffusers import SkyReelsV4Pipeline

    torch.set_grad_enabled(False)
    pipe = SkyReelsV4Pipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(args.lora, adapter_name="few_step")
    first = evaluate.TEST_SEED if args.split == "test" else evaluate.DEV_SEED
    seeds = range(first, first + args.seeds)
    all_settings = settings(args)
    names = args.settings.split(",")
    bad = set(names) - set(all_settings)
    if bad:
        raise ValueError(f"`--settings` accepts {sorted(all_settings)}, got {sorted(bad)}.")
    results = {name: {} for name in names}
    info = {
        "seeds": f"{seeds.start}-{seeds.stop - 1}",
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_before": os.getloadavg(),
    }

    def dump():
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"info": info, "settings": all_settings, "results": results}, f, indent=1)

    for name in names:
        call = use(pipe, all_settings[name])
        passes = call["num_inference_steps"] * (2 if call["guidance_scale"] != 1 else 1)
        results[name]["transformer_passes_per_clip"] = passes
        start = time.perf_counter()
        if "t2av" in args.tasks:
            results[name].update(evaluate.evaluate_t2av(pipe, seeds, call))
        if "cross_modal" in args.tasks:
            results[name].update(evaluate.evaluate_cross_modal(pipe, seeds, call))
        results[name]["evaluation_seconds"] = time.perf_counter() - start
        print(name, json.dumps(results[name]), flush=True)
        dump()

    # Interleaved timing: one T2AV clip per setting in turn, the same prompt and seed. `student_fused`: the student
    # with the LoRA fused into the weights (`fuse_lora`), which removes the adapter layers' own cost.
    caption = world.render_clip(seeds.start, num_frames=pipe.config.default_num_frames).caption
    fused = SkyReelsV4Pipeline.from_pretrained(args.model)
    fused.set_progress_bar_config(disable=True)
    fused.load_lora_weights(args.lora)
    fused.fuse_lora()
    timed = {name: (pipe, all_settings[name]) for name in names}
    timed["student_fused"] = (fused, {**all_settings["student"], "lora": None})
    names = [*names, "student_fused"]
    results["student_fused"] = {"transformer_passes_per_clip": args.student_steps}
    times = {name: [] for name in names}
    for _ in range(args.timing_repeats):
        for name in names:
            target, setting = timed[name]
            call = (
                use(target, setting)
                if setting["lora"] is not None
                else {k: v for k, v in setting.items() if k != "lora"}
            )
            start = time.perf_counter()
            target(caption, generator=torch.Generator().manual_seed(0), **call)
            times[name].append(time.perf_counter() - start)
    for name in names:
        results[name]["timed_seconds_per_clip"] = float(np.median(times[name]))
        results[name]["timed_seconds_all"] = times[name]
    info["load_after"] = os.getloadavg()
    dump()
    print(info)
    print(table(results, names))


if __name__ == "__main__":
    main()
