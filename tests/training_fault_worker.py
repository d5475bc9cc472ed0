"""Runs the training example with a fault: SIGKILL at a chosen point of the checkpoint at step `--kill_step`.

    python tests/training_fault_worker.py {mid-write|before-rename|while-pruning} KILL_STEP -- TRAINING ARGS...

Used by tests/test_training.py to check that no checkpoint is lost and that a resumed run continues exactly."""

import os
import shutil
import signal
import sys

from script_loading import load_script


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    fault, kill_step, _, *argv = sys.argv[1:]
    train = load_script("train_skyreels_v4", "examples/training")
    staging = f"{train.STAGING_PREFIX}checkpoint-{kill_step}"
    original_save = train.save_checkpoint

    def save_checkpoint(accelerator, output_dir, step, limit):
        if step != int(kill_step):
            return original_save(accelerator, output_dir, step, limit)
        if fault == "mid-write":  # part of the state written, then the process dies
            os.makedirs(os.path.join(output_dir, staging))
            with open(os.path.join(output_dir, staging, "model.safetensors"), "wb") as f:
                f.write(b"partial")
            kill()
        if fault == "before-rename":  # the whole state written under the staging name
            os.replace = lambda *args: kill()
        if fault == "while-pruning":  # the new checkpoint in place, the old one being deleted
            remove = shutil.rmtree
            shutil.rmtree = lambda path, *args, **kwargs: (remove(path, *args, **kwargs), kill())
        original_save(accelerator, output_dir, step, limit)

    train.save_checkpoint = save_checkpoint
    train.main(argv)


if __name__ == "__main__":
    main()
