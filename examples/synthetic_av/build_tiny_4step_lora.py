"""Rebuild `pipelines/skyreels-v4-tiny-4step-lora/`: the tiny default distilled into a 4-step LoRA.

1. `--clips` world clips from the training seeds (`evaluate.TRAIN_SEED` up; never the dev or test seeds), encoded as
   the trainer reads them (`build_tiny_default.encode_world_clips`);
2. `examples/training/distill_skyreels_v4.py` with the shipped settings (one process, one thread): trajectory
   distillation, then DMD from that student (`--dmd_steps`; 0 ships the trajectory student);
3. `pytorch_lora_weights.safetensors`, the run's model card and `loss.jsonl` copied to `--out`.

    python examples/synthetic_av/build_tiny_4step_lora.py --work_dir runs/distill --out pipelines/skyreels-v4-tiny-4step-lora

The runs' folders (`--work_dir/lora`, `--work_dir/dmd`) keep their checkpoints: running the command again resumes
from the latest one.
"""

import argparse
import os
import shutil
import subprocess
import sys


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

# The shipped run (see the LoRA's model card).
SHIPPED = [
    "--num_student_steps",
    "4",
    "--teacher_substeps",
    "5",
    "--teacher_guidance_scale",
    "5",
    "--num_trajectories",
    "144",
    "--max_train_steps",
    "300",
    "--train_batch_size",
    "8",
    "--learning_rate",
    "1e-3",
    "--lora_rank",
    "16",
    "--checkpointing_steps",
    "100",
    "--validation_steps",
    "300",
    "--seed",
    "0",
    "--validation_prompts",
    "<text>A red circle bounces around a dark box.</text><sfx>A pure low knock each time it hits a wall.</sfx>",
]


# The DMD refinement of the shipped LoRA, from the trajectory student (see the LoRA's model card).
SHIPPED_DMD = [
    "--method",
    "dmd",
    "--num_student_steps",
    "4",
    "--teacher_guidance_scale",
    "5",
    "--num_trajectories",
    "144",
    "--train_batch_size",
    "4",
    "--learning_rate",
    "1e-4",
    "--lr_scheduler",
    "constant_with_warmup",
    "--lr_warmup_steps",
    "10",
    "--critic_updates",
    "5",
    "--critic_learning_rate",
    "1e-3",
    "--lora_rank",
    "16",
    "--checkpointing_steps",
    "50",
    "--seed",
    "0",
]


def distill(teacher: str, latents: str, run: str, settings: list[str]) -> None:
    script = os.path.join(ROOT, "examples", "training", "distill_skyreels_v4.py")
    command = [
        sys.executable,
        script,
        "--pretrained_model_name_or_path",
        teacher,
        "--train_latents",
        latents,
        "--output_dir",
        run,
        "--resume_from_checkpoint",
        "latest",
        *settings,
    ]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=os.path.join(ROOT, "pipelines", "skyreels-v4-tiny"))
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--dmd_steps", type=int, default=150, help="DMD generator steps after the trajectory run")
    args = parser.parse_args()
    if args.clips < 1:
        raise ValueError(f"`--clips` must be at least 1, got {args.clips}.")
    if args.dmd_steps < 0:
        raise ValueError(f"`--dmd_steps` must be 0 (none) or more, got {args.dmd_steps}.")

    latents = os.path.join(args.work_dir, "latents")
    if not os.path.isfile(os.path.join(latents, "latents.safetensors")):
        import build_tiny_default

        build_tiny_default.encode_world_clips(args.teacher, latents, args.clips, 64, None)
    run = os.path.join(args.work_dir, "lora")
    distill(args.teacher, latents, run, SHIPPED)
    if args.dmd_steps:
        dmd_run = os.path.join(args.work_dir, "dmd")
        distill(
            args.teacher,
            latents,
            dmd_run,
            [*SHIPPED_DMD, "--init_lora", run, "--max_train_steps", str(args.dmd_steps)],
        )
        run = dmd_run
    os.makedirs(args.out, exist_ok=True)
    for name in ("pytorch_lora_weights.safetensors", "loss.jsonl"):
        shutil.copy(os.path.join(run, name), os.path.join(args.out, name))
    if not os.path.isfile(os.path.join(args.out, "README.md")):
        shutil.copy(os.path.join(run, "README.md"), os.path.join(args.out, "README.md"))


if __name__ == "__main__":
    main()
