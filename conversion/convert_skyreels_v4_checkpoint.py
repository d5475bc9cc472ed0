"""A training checkpoint of this project -> a Hub-ready pipeline folder with a model card.

The checkpoint holds the trained transformer: a state-dict file (`.safetensors`), or an Accelerate checkpoint folder
(`accelerator.save_state`, whose `model.safetensors` is used). The other components and the transformer's config come
from `--base_pipeline`, the pipeline folder training started from. The output folder has `model_index.json`, every
component's config, sharded safetensors (`--max_shard_size`) and a `README.md` model card; `--push_to_hub REPO`
uploads it.

    python conversion/convert_skyreels_v4_checkpoint.py --checkpoint out/checkpoint-2000 \\
        --base_pipeline pipelines/skyreels-v4-tiny --output out/skyreels-v4-finetuned --max_shard_size 2GB \\
        --trained_on "the synthetic audio-visual world, 2000 steps" --metrics out/metrics.json
"""

import argparse
import json
import os
import sys

import torch
from huggingface_hub import ModelCard, ModelCardData

from skyreels_diffusers import SkyReelsV4Pipeline


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DTYPES, PICKLE_SUFFIXES, load_state_dict_file, save_atomically  # noqa: E402


# Wrappers that training adds in front of parameter names (torch.compile, DDP).
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def read_checkpoint(checkpoint: str, allow_pickle: bool) -> dict[str, torch.Tensor]:
    if os.path.isdir(checkpoint):
        names = sorted(os.listdir(checkpoint))
        weights = [n for n in names if n.startswith("model") and n.endswith(".safetensors")]
        weights = weights or [
            n for n in names if n.startswith(("model", "pytorch_model")) and n.endswith(PICKLE_SUFFIXES)
        ]
        if len(weights) != 1:
            raise ValueError(
                f"`--checkpoint` folder {checkpoint!r} must hold one model weights file (model.safetensors from "
                f"accelerator.save_state), found {weights or 'none'}."
            )
        checkpoint = os.path.join(checkpoint, weights[0])
    elif not os.path.isfile(checkpoint):
        raise ValueError(f"`--checkpoint` {checkpoint!r} does not exist.")
    state_dict = load_state_dict_file(checkpoint, allow_pickle)
    for prefix in WRAPPER_PREFIXES:
        state_dict = {k.removeprefix(prefix): v for k, v in state_dict.items()}
    return state_dict


def load_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load every tensor or fail naming the missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}"
        for k in sorted(set(state_dict) & set(expected))
        if state_dict[k].shape != expected[k].shape
    ]
    problems = [
        f"{label} ({len(keys)}): {keys[:8]}{' ...' if len(keys) > 8 else ''}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if keys
    ]
    if problems:
        raise ValueError("The checkpoint does not match the base transformer: " + "; ".join(problems))
    model.load_state_dict(state_dict)


def model_card(args, pipeline_class: str, metrics: dict | None) -> ModelCard:
    data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="text-to-video",
        tags=["skyreels-v4", "text-to-audio-video", "video-generation", "audio-generation", "skyreels_diffusers"],
        license=args.license,
        base_model=args.base_model,
    )
    metric_rows = "\n".join(f"| {name} | {value} |" for name, value in (metrics or {}).items())
    metrics_section = f"| metric | value |\n|---|---|\n{metric_rows}" if metrics else "No metrics were given."
    content = f"""---
{data.to_yaml()}
---

# {os.path.basename(os.path.normpath(args.output))}

A SkyReels-V4 pipeline (`{pipeline_class}`) for [skyreels-diffusers](https://pypi.org/project/skyreels-diffusers/):
video with synchronized audio from a multimodal instruction.

## Usage

```python
# pip install skyreels-diffusers
from skyreels_diffusers import {pipeline_class}
from skyreels_diffusers.utils import export_to_video_with_audio

pipe = {pipeline_class}.from_pretrained("<this repo or folder>")
out = pipe("<text>A red ball bounces in a box.</text><sfx>A knock on every bounce.</sfx>")
export_to_video_with_audio(out.frames[0], "clip.mp4", fps=out.fps, audio=out.audio[0],
                           audio_sample_rate=out.audio_sample_rate)
```

## Training

{args.trained_on or "Not stated."}

## Metrics

{metrics_section}
"""
    return ModelCard(content)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="state-dict file or Accelerate checkpoint folder")
    parser.add_argument("--base_pipeline", required=True, help="pipeline folder training started from")
    parser.add_argument("--output", required=True, help="new pipeline folder")
    parser.add_argument("--max_shard_size", default="5GB", help="largest safetensors shard, e.g. 2GB or 500MB")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="cast the transformer")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--base_model", default=None, help="Hub id of the model training started from")
    parser.add_argument("--trained_on", default=None, help="one paragraph on the training data and schedule")
    parser.add_argument("--metrics", default=None, help="a JSON file of measured metrics for the card")
    parser.add_argument("--push_to_hub", default=None, metavar="REPO", help="upload the folder to this Hub repo")
    parser.add_argument("--allow-pickle", action="store_true", help="accept .bin/.pt/.ckpt weights (trusted only)")
    args = parser.parse_args(argv)
    try:
        if os.path.exists(args.output):
            raise ValueError(f"`--output` {args.output!r} already exists; choose a new folder.")
        if not os.path.isfile(os.path.join(args.base_pipeline, "model_index.json")):
            raise ValueError(
                f"`--base_pipeline` {args.base_pipeline!r} is not a pipeline folder (no model_index.json)."
            )
        metrics = None
        if args.metrics:
            with open(args.metrics, encoding="utf-8") as f:
                metrics = json.load(f)
        state_dict = read_checkpoint(args.checkpoint, args.allow_pickle)
        pipe = SkyReelsV4Pipeline.from_pretrained(args.base_pipeline)
        load_strict(pipe.transformer, state_dict)
        if args.dtype:
            pipe.transformer.to(DTYPES[args.dtype])
        card = model_card(args, type(pipe).__name__, metrics)

        def write(folder: str) -> None:
            pipe.save_pretrained(folder, safe_serialization=True, max_shard_size=args.max_shard_size)
            card.save(os.path.join(folder, "README.md"))

        save_atomically(write, args.output)
        if args.push_to_hub:
            from huggingface_hub import create_repo, upload_folder

            create_repo(args.push_to_hub, exist_ok=True)
            upload_folder(repo_id=args.push_to_hub, folder_path=args.output)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}" + (f" and pushed it to {args.push_to_hub}" if args.push_to_hub else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
