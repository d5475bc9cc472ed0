"""LoRA files for `SkyReelsV4*Pipeline.load_lora_weights`.

    # A trained PEFT adapter (a folder from `model.save_lora_adapter` or PEFT's `save_pretrained`) -> one file:
    python conversion/convert_lora.py export --adapter out/checkpoint/adapter --output my_lora.safetensors

    # A HunyuanVideo-style LoRA (original `double_blocks...` naming, or Diffusers' HunyuanVideo layout) -> one file
    # in this package's layout (`transformer.transformer_blocks.{i}.video...`):
    python conversion/convert_lora.py import --lora hunyuan_lora.safetensors --output my_lora.safetensors

Safetensors only; rank and alpha travel in the file's metadata, as Diffusers' own LoRA files carry them.
"""

import argparse
import json
import os
import sys

from safetensors import safe_open
from safetensors.torch import load_file

from skyreels_diffusers import SkyReelsV4LoraLoaderMixin


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import PICKLE_SUFFIXES, load_state_dict_file  # noqa: E402


PEFT_PREFIX = "base_model.model."


def read_adapter(adapter: str) -> tuple[dict, dict | None]:
    """(state dict without prefix, LoRA config metadata) of a PEFT adapter folder; safetensors only."""
    if not os.path.isdir(adapter):
        raise ValueError(f"`--adapter` {adapter!r} is not a folder.")
    files = os.listdir(adapter)
    if "adapter_model.safetensors" in files:  # PEFT's own save_pretrained
        state_dict = load_file(os.path.join(adapter, "adapter_model.safetensors"))
        with open(os.path.join(adapter, "adapter_config.json"), encoding="utf-8") as f:
            metadata = json.load(f)
        state_dict = {k.removeprefix(PEFT_PREFIX): v for k, v in state_dict.items()}
    elif "pytorch_lora_weights.safetensors" in files:  # Diffusers' save_lora_adapter
        path = os.path.join(adapter, "pytorch_lora_weights.safetensors")
        state_dict = load_file(path)
        with safe_open(path, "pt") as f:
            header = (f.metadata() or {}).get("lora_adapter_metadata")
        metadata = json.loads(header) if header else None
    elif any(name.endswith((".bin", ".pt", ".pth")) for name in files):
        raise ValueError(f"`--adapter` {adapter!r} holds only pickle weights; save the adapter with safetensors.")
    else:
        raise ValueError(
            f"`--adapter` {adapter!r} has no adapter_model.safetensors or pytorch_lora_weights.safetensors."
        )
    # PEFT names a layer `...lora_A.<adapter name>.weight` in memory; files use `...lora_A.weight`.
    return state_dict, metadata


def write(state_dict: dict, metadata: dict | None, output: str) -> None:
    if not output.endswith(".safetensors"):
        raise ValueError(f"`--output` must be a .safetensors file, got {output!r}.")
    # The prefix is added on save; clones because converted fused-qkv LoRAs share one down-projection tensor.
    layers = {k.removeprefix("transformer."): v.clone() for k, v in state_dict.items()}
    SkyReelsV4LoraLoaderMixin.save_lora_weights(
        os.path.dirname(os.path.abspath(output)),
        transformer_lora_layers=layers,
        transformer_lora_adapter_metadata=metadata,
        weight_name=os.path.basename(output),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="PEFT adapter folder -> one LoRA safetensors file")
    export.add_argument("--adapter", required=True)
    export.add_argument("--output", required=True)
    imported = commands.add_parser("import", help="HunyuanVideo-style LoRA file -> this package's layout")
    imported.add_argument("--lora", required=True)
    imported.add_argument("--output", required=True)
    imported.add_argument("--allow-pickle", action="store_true", help="accept a .bin/.pt LoRA file (trusted only)")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            state_dict, metadata = read_adapter(args.adapter)
        else:
            source = args.lora
            if args.lora.endswith(PICKLE_SUFFIXES):  # refused unless allowed; loaded with weights_only=True
                source = load_state_dict_file(args.lora, args.allow_pickle)
            state_dict, metadata = SkyReelsV4LoraLoaderMixin.lora_state_dict(source, return_lora_metadata=True)
        write(state_dict, metadata, args.output)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({len(state_dict)} tensors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
