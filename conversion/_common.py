"""Shared pieces of the conversion scripts: safe source loading and atomic folder writes."""

import json
import os
import pickle
import shutil
import tempfile

import torch
from safetensors.torch import load_file

from skyreels_diffusers.models.transformer_skyreels_v4 import tower_key_to_joint


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def load_state_dict_file(path: str, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file; pickle files only with `allow_pickle` (loaded with `weights_only=True`)."""
    if path.endswith(".safetensors"):
        return load_file(path)
    if path.endswith(PICKLE_SUFFIXES):
        if not allow_pickle:
            raise ValueError(
                f"Refusing pickle file {path!r}: pickles can run code when loaded. Convert it to safetensors, or pass "
                "--allow-pickle if you trust its source."
            )
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            # `weights_only` refuses globals other than tensors; a refused or truncated pickle is bad input.
            raise ValueError(f"Cannot load pickle file {path!r} safely: {error}") from None
    raise ValueError(f"Unsupported weights file {path!r}: expected .safetensors (or a pickle with --allow-pickle).")


def load_source(source: str, source_config: str | None, allow_pickle: bool = False) -> tuple[dict, dict]:
    """(config, state dict) of a Diffusers model folder, or of a weights file plus `source_config`."""
    if os.path.isdir(source):
        config_path = os.path.join(source, "config.json")
        files = sorted(os.listdir(source))
        weights = [f for f in files if f.endswith(".safetensors")] or [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        if not weights:
            raise ValueError(f"`--source` {source} has no weights (.safetensors).")
        state_dict = {}
        for name in weights:
            state_dict.update(load_state_dict_file(os.path.join(source, name), allow_pickle))
    elif os.path.isfile(source):
        if source_config is None:
            raise ValueError("A weights-file `--source` needs `--source_config` (the transformer's config.json).")
        config_path, state_dict = source_config, load_state_dict_file(source, allow_pickle)
    else:
        raise ValueError(f"`--source` {source!r} does not exist.")
    with open(source_config or config_path, encoding="utf-8") as f:
        return json.load(f), state_dict


def save_atomically(write, output: str) -> None:
    """Run `write(folder)` (or `write.save_pretrained(folder)` for a model) into a temporary sibling folder and rename
    it to `output` only when complete, so an interrupted run never leaves a valid-looking folder behind."""
    if os.path.exists(output):
        raise ValueError(f"`--output` {output!r} already exists; choose a new folder.")
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    prefix = f".partial-{os.path.basename(os.path.abspath(output))}-"
    remove_stale_staging(parent, prefix)
    staging = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)
    try:
        if hasattr(write, "save_pretrained"):
            write.save_pretrained(staging, safe_serialization=True)
        else:
            write(staging)
        os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(parent: str, prefix: str) -> None:
    """Remove `prefix{pid}-*` staging folders left by a killed run whose process no longer exists."""
    for name in os.listdir(parent):
        pid = name[len(prefix) :].split("-", 1)[0]
        if name.startswith(prefix) and pid.isdigit() and not process_exists(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def load_video_tower(model, converted: dict[str, torch.Tensor], audio_model=None) -> list[str]:
    """Load converted video-tower tensors (HunyuanVideo-1.5's names, shape-checked, naming the key) and an optional
    T2A audio tower into a fresh joint model; returns the target keys left at their fresh (zero-output)
    initialisation."""
    converted = {tower_key_to_joint(key, "video"): tensor for key, tensor in converted.items()}
    if audio_model is not None:
        converted.update({tower_key_to_joint(k, "audio"): v for k, v in audio_model.state_dict().items()})
    target = model.state_dict()
    for key, tensor in converted.items():
        if tensor.shape != target[key].shape:
            raise ValueError(
                f"Shape mismatch for {key}: source {tuple(tensor.shape)}, target {tuple(target[key].shape)}."
            )
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if unexpected:
        raise ValueError(f"Converted keys missing from the target model: {unexpected[:10]}")
    return missing
