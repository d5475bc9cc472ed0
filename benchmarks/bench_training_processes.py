"""Training throughput on a CPU's cores: samples per second of `examples/training/train_skyreels_v4.py` (full
fine-tuning of the tiny default, all tasks, EMA) with one process at one thread, one process at two threads, and two
processes at one thread each (`accelerate launch`, DDP over gloo, the shipped `ddp.yaml`), at the same global batch.
Runs are interleaved and repeated; each run's rate is taken from the wall-clock stamps of its loss log after a few
warm-up steps, so start-up (imports, loading, the DDP rendezvous) is not counted.

    python benchmarks/bench_training_processes.py                # 20 steps a run, 2 rounds (~6 min on 2 cores)
    python benchmarks/bench_training_processes.py --quick        # 6 steps, 1 round
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import report  # noqa: E402


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TRAIN = os.path.join(ROOT, "examples", "training", "train_skyreels_v4.py")
DDP_CONFIG = os.path.join(ROOT, "examples", "training", "accelerate_configs", "ddp.yaml")
WARMUP_STEPS = 3
# (processes, threads per process) of each setting; the first is the reference.
SETTINGS = {"1 process x 1 thread": (1, 1), "2 processes x 1 thread": (2, 1), "1 process x 2 threads": (1, 2)}


def encode_clips(pipeline: str, out: str, count: int) -> None:
    sys.path.insert(0, os.path.join(ROOT, "examples", "synthetic_av"))
    from build_tiny_default import SIZE, encode_world_clips

    encode_world_clips(pipeline, out, count, SIZE, None)


def samples_per_second(processes: int, threads: int, args, latents: str, out: str) -> float:
    train_args = [
        "--pretrained_model_name_or_path",
        args.pipeline,
        "--train_latents",
        latents,
        "--output_dir",
        out,
        "--max_train_steps",
        str(args.steps),
        "--train_batch_size",
        str(args.batch_size // processes),
        "--use_ema",
        "--checkpointing_steps",
        str(10**6),
    ]
    command = [sys.executable, TRAIN, *train_args]
    if processes > 1:  # port 0: Accelerate picks a free one
        launch = ["-m", "accelerate.commands.launch", "--config_file", DDP_CONFIG, "--num_processes", str(processes)]
        command = [sys.executable, *launch, "--main_process_port", "0", TRAIN, *train_args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ACCELERATE_USE_CPU": "true"}
    subprocess.run(command, env=env, check=True, capture_output=True)
    with open(os.path.join(out, "loss.jsonl"), encoding="utf-8") as f:
        stamps = [json.loads(line)["time"] for line in f]
    return (len(stamps) - WARMUP_STEPS) * args.batch_size / (stamps[-1] - stamps[WARMUP_STEPS - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default=os.path.join(ROOT, "pipelines", "skyreels-v4-tiny"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8, help="global batch (even: two processes split it)")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 6, 1
    if args.steps <= WARMUP_STEPS or args.batch_size % 2 or args.rounds < 1:
        raise ValueError(
            f"`--steps` must exceed {WARMUP_STEPS}, `--batch_size` be even and `--rounds` >= 1; got {args.steps}, "
            f"{args.batch_size} and {args.rounds}."
        )
    rates = {setting: [] for setting in SETTINGS}
    with tempfile.TemporaryDirectory() as work:
        latents = os.path.join(work, "latents")
        encode_clips(args.pipeline, latents, args.clips)
        for round_ in range(args.rounds):
            for index, (setting, (processes, threads)) in enumerate(SETTINGS.items()):
                out = os.path.join(work, f"run{round_}-{index}")
                rates[setting].append(samples_per_second(processes, threads, args, latents, out))
                print(f"round {round_}: {setting}: {rates[setting][-1]:.2f} samples/s", flush=True)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    reference, *others = SETTINGS
    base = max(rates[reference])
    for setting in SETTINGS:
        best = max(rates[setting])
        print(f"{setting:24s} best {best:6.2f} samples/s (global batch {args.batch_size})")
        if setting in others:
            report(f"training samples/s, {setting} vs {reference}", f"{best / base:.2f}x")


if __name__ == "__main__":
    main()
