"""Running the training examples from tests: in this process at one thread, or as 2 processes under `accelerate
launch`; and reading their loss logs. Shared by the trainer's and the distiller's tests."""

import json
import os
import subprocess
import sys

import torch
from accelerate.state import AcceleratorState, PartialState


TRAINING_EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples", "training")


def fresh_accelerate_state():
    """Accelerate keeps process state in singletons; each training run in this process starts afresh. Accelerate has
    no public API to reset them (its own tests call these private `_reset_state` methods), so the reach into private
    API is kept here, in one place."""
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def run_in_process(main, argv):
    """`main(argv)` of a training script in this process, at one torch thread: the runs it is compared with (killed
    workers, and the ranks of `accelerate launch`) run at OMP_NUM_THREADS=1, and float sums may differ in the last
    bits between thread counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main([str(a) for a in argv])
    finally:
        torch.set_num_threads(threads)
        fresh_accelerate_state()


def losses(folder):
    with open(os.path.join(folder, "loss.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def launch_two_processes(script: str, argv, global_batch: int):
    """`accelerate launch` of `examples/training/<script>` with the shipped DDP config: 2 CPU processes over gloo."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        os.path.join(TRAINING_EXAMPLES, "accelerate_configs", "ddp.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        "0",  # Accelerate picks a free one
        os.path.join(TRAINING_EXAMPLES, script),
        *map(str, argv),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"MULTI_CPU x 2 processes; global batch {global_batch}" in result.stdout
