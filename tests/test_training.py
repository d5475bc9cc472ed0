"""The training example (`examples/training/`) on a few clips of the synthetic world, with tiny real components."""

import json
import os
import shutil

import pytest
import torch
from accelerate.state import AcceleratorState, PartialState
from script_loading import load_script


train = load_script("train_skyreels_v4", "examples/training")
world = load_script("world", "examples/synthetic_av")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved tiny Wan + Oobleck pipeline, and a manifest of 4 world clips (9 frames, 32x32) with their sound."""
    from skyreels_diffusers.utils.tiny_components import build_tiny_pipeline

    root = tmp_path_factory.mktemp("training")
    build_tiny_pipeline(video_vae="wan", audio_vae="oobleck").save_pretrained(root / "pipe")
    manifest = world.write_dataset(str(root / "data"), 4, seed=10, num_frames=9, size=32)
    return root, manifest


def run(argv):
    train.main([str(a) for a in argv])
    # Accelerate keeps process state in singletons; each run in this process starts afresh.
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def losses(folder):
    with open(os.path.join(folder, "loss.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def common(setup, out, steps):
    root, manifest = setup
    return ["--pretrained_model_name_or_path", root / "pipe", "--train_manifest", manifest, "--output_dir", out,
            "--max_train_steps", steps, "--train_batch_size", 2, "--checkpointing_steps", 2, "--seed", 3]  # fmt: skip


def test_full_training_checkpoints_and_resumes_exactly(setup, tmp_path):
    run([*common(setup, tmp_path / "a", 4), "--use_ema", "--learning_rate", "1e-3"])
    full = losses(tmp_path / "a")
    assert [r["step"] for r in full] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in full)
    assert os.path.isdir(tmp_path / "a" / "checkpoint-2") and os.path.isdir(tmp_path / "a" / "checkpoint-4")
    assert os.path.isfile(tmp_path / "a" / "transformer" / "diffusion_pytorch_model.safetensors")
    card = (tmp_path / "a" / "README.md").read_text()
    assert "full fine-tuning" in card and "EMA" in card

    # A run stopped after checkpoint-2, resumed with "latest", continues with the same losses.
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    run(
        [
            *common(setup, tmp_path / "b", 4),
            "--use_ema",
            "--learning_rate",
            "1e-3",
            "--resume_from_checkpoint",
            "latest",
        ]
    )
    resumed = losses(tmp_path / "b")
    assert [r["step"] for r in resumed] == [3, 4]
    assert [r["task"] for r in resumed] == [r["task"] for r in full[2:]]
    torch.testing.assert_close(torch.tensor([r["loss"] for r in resumed]), torch.tensor([r["loss"] for r in full[2:]]))


def test_lora_training_saves_loadable_weights(setup, tmp_path):
    from skyreels_diffusers import SkyReelsV4Pipeline

    run(
        [
            *common(setup, tmp_path, 2),
            "--lora_rank",
            4,
            "--lora_towers",
            "video,cross_modal",
            "--learning_rate",
            "1e-2",
        ]
    )
    weights = tmp_path / "pytorch_lora_weights.safetensors"
    assert weights.is_file() and "lora" in (tmp_path / "README.md").read_text()
    pipe = SkyReelsV4Pipeline.from_pretrained(setup[0] / "pipe")
    pipe.load_lora_weights(str(weights))
    assert pipe.get_active_adapters()


def test_refiner_training_with_crops_and_sparsity(setup, tmp_path):
    run([*common(setup, tmp_path, 2), "--refiner", "--refiner_crop", 4, "--max_sparsity", 0.5,
         "--sparsity_ramp_steps", 2])  # fmt: skip
    assert (tmp_path / "refiner" / "config.json").is_file()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in losses(tmp_path))


def test_task_inputs_follow_the_pipeline_conditions():
    clip = {
        "video_latents": torch.randn(4, 3, 2, 2), "last_frame_latents": torch.randn(4, 2, 2),
        "edit_keep_masks": torch.zeros(1, 3, 2, 2), "has_edit_mask": torch.tensor(0.0),
    }  # fmt: skip
    black = torch.full((4, 2, 2), -0.5)
    generator = torch.Generator().manual_seed(0)
    i2v = train.video_condition("i2v", clip, black, generator, dropout=False)
    assert i2v.shape == (5, 3, 2, 2)
    assert torch.equal(i2v[:4, 0], clip["video_latents"][:, 0]) and torch.equal(
        i2v[:4, 1:], black[:, None].expand(-1, 2, -1, -1)
    )
    assert i2v[4, 0].eq(1).all() and i2v[4, 1:].eq(0).all()
    interpolation = train.video_condition("interpolation", clip, black, generator, dropout=False)
    assert torch.equal(interpolation[:4, -1], clip["last_frame_latents"]) and interpolation[4, -1].eq(1).all()
    dropped = train.video_condition("i2v", clip, black, generator, dropout=True)
    assert dropped[4].eq(0).all() and torch.equal(dropped[:4], black[:, None].expand(-1, 3, -1, -1))


def test_bad_task_ratios_are_rejected():
    with pytest.raises(ValueError, match="--task_ratios"):
        train.parse_task_ratios("t2av=1,dance=1")
    with pytest.raises(ValueError, match="--task_ratios"):
        train.parse_task_ratios("t2av=0")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(argv):
    """`accelerate launch` with the shipped DDP config, 2 CPU processes over gloo."""
    import subprocess
    import sys

    root = os.path.join(os.path.dirname(__file__), "..", "examples", "training")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               os.path.join(root, "accelerate_configs", "ddp.yaml"), "--num_processes", "2", "--main_process_port",
               str(free_port()), os.path.join(root, "train_skyreels_v4.py"), *map(str, argv)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MULTI_CPU x 2 processes; global batch 4" in result.stdout


def test_two_process_ddp_matches_one_process_and_resumes(setup, tmp_path):
    root, manifest = setup
    args = ["--pretrained_model_name_or_path", root / "pipe", "--train_manifest", manifest, "--seed", 5,
            "--learning_rate", "1e-3", "--checkpointing_steps", 2]  # fmt: skip
    run([*args, "--output_dir", tmp_path / "one", "--max_train_steps", 3, "--train_batch_size", 4])
    launch_two_processes([*args, "--output_dir", tmp_path / "two", "--max_train_steps", 2, "--train_batch_size", 2])
    assert sorted(p for p in os.listdir(tmp_path / "two") if p.startswith("checkpoint-")) == ["checkpoint-2"]
    launch_two_processes([*args, "--output_dir", tmp_path / "two", "--max_train_steps", 3, "--train_batch_size", 2,
                          "--resume_from_checkpoint", "latest"])  # fmt: skip
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [r["step"] for r in two] == [1, 2, 3] and [r["task"] for r in two] == [r["task"] for r in one]
    torch.testing.assert_close(torch.tensor([r["loss"] for r in two]), torch.tensor([r["loss"] for r in one]),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
