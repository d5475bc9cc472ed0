"""Shared pieces of the conversion scripts: safe source loading and atomic folder writes."""

import json
import os
import shutil
import tempfile

import torch
from safetensors.torch import load_file


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def load_source(source: str, source_config: str | None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, state dict) of a HunyuanVideo-1.5 transformer; safetensors only."""
    if os.path.isdir(source):
        config_path = os.path.join(source, "config.json")
        shards = sorted(f for f in os.listdir(source) if f.endswith(".safetensors"))
        if any(f.endswith(PICKLE_SUFFIXES) for f in os.listdir(source)) and not shards:
            raise ValueError(f"`--source` {source} holds only pickle checkpoints; convert them to safetensors first.")
        if not shards:
            raise ValueError(f"`--source` {source} has no .safetensors weights.")
        state_dict = {}
        for shard in shards:
            state_dict.update(load_file(os.path.join(source, shard)))
    elif source.endswith(".safetensors") and os.path.isfile(source):
        if source_config is None:
            raise ValueError("A .safetensors `--source` needs `--source_config` (the transformer's config.json).")
        config_path, state_dict = source_config, load_file(source)
    elif os.path.isfile(source):
        raise ValueError(
            f"`--source` must be a Diffusers folder or a .safetensors file; refusing {source!r} (pickle)."
        )
    else:
        raise ValueError(f"`--source` {source!r} does not exist.")
    with open(source_config or config_path, encoding="utf-8") as f:
        return json.load(f), state_dict


def save_atomically(model, output: str) -> None:
    """Write into a temporary sibling folder and rename it, so an interrupted run leaves no valid-looking folder."""
    if os.path.exists(output):
        raise ValueError(f"`--output` {output!r} already exists; choose a new folder.")
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
