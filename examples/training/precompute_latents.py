"""Encode a training manifest once with the pipeline's VAEs and MLLM, so training reads tensors instead of media.

Manifest: one JSON object per line, paths relative to the manifest's folder:

    {"video": "clips/0001.mp4", "caption": "<text>...</text><sfx>...</sfx>",
     "mask": "masks/0001.png",                # optional: edit mask, image or video, white = keep
     "reference_images": ["refs/0001.png"],   # optional: the first one is used as the reference image
     "audio_reference": "refs/0001.wav"}      # optional: else the clip's own audio is the audio reference

Every clip is resampled to the model's frame rate (nearest frame), scaled to cover `--height x --width` and
center-cropped (the pipelines' resize policy), cut to its first `--num_frames` frames (4k+1) and its audio to the
same duration. Output (`--output_dir`):

- `latents.safetensors`: `video_latents (N, C, F', h, w)`, `video_frames (N, F, H, W, 3)` uint8 (the training
  script builds every task's condition from these pixels with the pipelines' own function), `reference_latents
  (N, C, 1, h, w)`, `audio_latents` and `audio_reference_latents` `(N, C_a, L)`, `prompt_embeds (N, S, D)` +
  `prompt_attention_mask (N, S)`, `reference_prompt_embeds (N, S', D)` + mask (the caption read together with the
  reference image, as the pipeline reads it), `null_prompt_embeds (1, S, D)` + mask (the empty prompt, for text
  dropout),
  `edit_keep_masks (N, 1, F, H, W)` (pixels, 1 = keep) + `has_edit_mask (N,)`, and with `--refiner_scale s`:
  `low_res_latents` of the clip downsampled s times (Refiner training);
- `metadata.json`: sizes, fps, sample rate and the captions.

    python examples/training/precompute_latents.py --pretrained_model_name_or_path pipelines/skyreels-v4-tiny \
        --manifest data/synthetic/manifest.jsonl --output_dir data/synthetic/latents --height 64 --width 64 \
        --num_frames 17
"""

import argparse
import json
import os

import PIL.Image
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from skyreels_diffusers import SkyReelsV4Pipeline
from skyreels_diffusers.pipelines.preprocessing import (
    fit_with_black_padding,
    frames_to_tensor,
    mask_to_tensor,
    pixels_for_vae,
)
from skyreels_diffusers.pipelines.vae_utils import encode_audio_track, encode_video
from skyreels_diffusers.utils.media import load_audio, load_video, load_video_audio, resample_frames


def read_manifest(path: str) -> list[dict]:
    """Records with absolute paths; every record needs `video` and `caption`."""
    root = os.path.dirname(os.path.abspath(path))
    records = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            missing = [key for key in ("video", "caption") if key not in record]
            if missing:
                raise ValueError(f"`manifest` line {line_number} has no {missing}: every record needs both.")
            for key in ("video", "mask", "audio_reference"):
                if record.get(key):
                    record[key] = os.path.join(root, record[key])
            record["reference_images"] = [os.path.join(root, p) for p in record.get("reference_images", [])]
            records.append(record)
    if not records:
        raise ValueError(f"`manifest` {path!r} has no records.")
    return records


def load_record(pipe: SkyReelsV4Pipeline, record: dict, num_frames: int) -> dict:
    """One manifest record read from its files: the clip's frames resampled to the model's frame rate and cut to
    `num_frames`, its soundtrack at the audio VAE's rate cut or padded to the same duration, and the optional
    reference image, audio reference and edit mask (see `encode_clip`)."""
    sample_rate, channels = pipe.audio_spec.sample_rate, pipe.audio_spec.audio_channels
    fps = pipe.transformer.config.fps
    frames, file_fps, audio = load_video_audio(record["video"], sample_rate, num_channels=channels)
    frames = resample_frames(frames, file_fps, fps)
    if len(frames) < num_frames:
        raise ValueError(
            f"{record['video']!r} has {len(frames)} frames at {fps} fps; `--num_frames` asks for {num_frames}."
        )
    clip = {"frames": frames[:num_frames], "audio": audio, "caption": record["caption"]}
    if record["reference_images"]:
        clip["reference_image"] = PIL.Image.open(record["reference_images"][0]).convert("RGB")
    if record.get("audio_reference"):
        clip["audio_reference"] = load_audio(record["audio_reference"], sample_rate, num_channels=channels)
    if record.get("mask"):
        clip["mask"] = (
            load_video(record["mask"])[0]
            if record["mask"].endswith((".mp4", ".mov", ".webm"))
            else [PIL.Image.open(record["mask"]).convert("L")]
        )
    return clip


@torch.no_grad()
def encode_clip(
    pipe: SkyReelsV4Pipeline,
    clip: dict,
    height: int,
    width: int,
    num_frames: int,
    refiner_scale: int | None = None,
    max_sequence_length: int = 512,
) -> dict[str, torch.Tensor]:
    """One clip -> its tensors (without the caption's embedding, which is encoded once per unique caption).

    `clip`: `frames` (`num_frames` frames: PIL, NumPy or torch), `audio` (`(channels, samples)` at the audio VAE's
    rate, or None for silence), `caption`, and optionally `reference_image` (else a frame of the clip is the
    reference), `audio_reference` (else the clip's own sound) and `mask` (an edit mask: image or frames, white = keep).
    """
    sample_rate = pipe.audio_spec.sample_rate
    fps = pipe.transformer.config.fps
    frames = frames_to_tensor("video", clip["frames"][:num_frames], height, width)
    samples = round(num_frames * sample_rate / fps)
    audio = clip.get("audio")
    if audio is None:
        audio = torch.zeros(pipe.audio_spec.audio_channels, samples)
    audio = F.pad(audio[:, :samples], (0, max(0, samples - audio.shape[1])))

    video = pixels_for_vae(frames)
    num_audio_latents = pipe.audio_spec.num_latents(num_frames / fps)
    out = {
        "video_latents": encode_video(pipe.vae, video)[0],
        "video_frames": (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1),
        "audio_latents": encode_audio_track(pipe.audio_vae, audio[None], num_audio_latents)[0],
    }
    # The reference image takes both of the pipeline's paths: its latents are prepended to the video tokens, and the
    # MLLM reads it with the caption.
    image = clip.get("reference_image") or PIL.Image.fromarray(out["video_frames"][num_frames // 2].numpy())
    image = fit_with_black_padding(image, height, width)
    out["reference_latents"] = encode_video(
        pipe.vae, pixels_for_vae(frames_to_tensor("reference_images", [image], height, width))
    )[0]
    embeds, mask = pipe.encode_prompt(
        clip["caption"],
        prompt_images=[image],
        do_classifier_free_guidance=False,
        max_sequence_length=max_sequence_length,
        dtype=torch.float32,
    )[:2]
    out["reference_prompt_embeds"], out["reference_prompt_attention_mask"] = embeds[0], mask[0]
    if clip.get("audio_reference") is not None:
        reference = clip["audio_reference"]
        reference = F.pad(reference[:, :samples], (0, max(0, samples - reference.shape[1])))
        out["audio_reference_latents"] = encode_audio_track(pipe.audio_vae, reference[None], num_audio_latents)[0]
    else:
        out["audio_reference_latents"] = out["audio_latents"]

    if clip.get("mask") is not None:
        out["edit_keep_masks"] = mask_to_tensor(clip["mask"], frames, num_frames, height, width).to(torch.uint8)
        out["has_edit_mask"] = torch.tensor(1.0)
    else:
        out["edit_keep_masks"] = torch.ones(1, num_frames, height, width, dtype=torch.uint8)
        out["has_edit_mask"] = torch.tensor(0.0)

    if refiner_scale:
        low = F.interpolate(frames, scale_factor=1 / refiner_scale, mode="area")
        out["low_res_latents"] = encode_video(pipe.vae, pixels_for_vae(low))[0]
    return out


@torch.no_grad()
def encode_captions(pipe: SkyReelsV4Pipeline, captions: list[str], max_sequence_length: int):
    """Unique captions (and the empty prompt) -> embeddings padded to one length `S`, with boolean masks."""
    unique = sorted(set(captions)) + [""]
    encoded = [
        pipe.encode_prompt(
            c, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length, dtype=torch.float32
        )[:2]
        for c in unique
    ]
    length = max(embeds.shape[1] for embeds, _ in encoded)
    table = {}
    for caption, (embeds, mask) in zip(unique, encoded):
        pad = length - embeds.shape[1]
        table[caption] = (F.pad(embeds[0], (0, 0, 0, pad)), F.pad(mask[0], (0, pad), value=False))
    return table


def precompute(pipe, clips, height, width, num_frames, max_sequence_length=512, refiner_scale=None):
    """Clips (dicts as `encode_clip` takes them; `load_record` reads them from a manifest) -> the tensors described in
    the module docstring."""
    temporal = pipe.vae_spec.temporal_compression
    if (num_frames - 1) % temporal:
        raise ValueError(f"`num_frames` must be {temporal}k+1 for the video VAE, got {num_frames}.")
    clips = list(clips)
    per_clip = [
        encode_clip(pipe, c, height, width, num_frames, refiner_scale, max_sequence_length)
        for c in tqdm(clips, "encoding")
    ]
    # Prompts read with a reference image differ in length: pad them to the longest, masked.
    length = max(clip["reference_prompt_embeds"].shape[0] for clip in per_clip)
    for clip in per_clip:
        pad = length - clip["reference_prompt_embeds"].shape[0]
        clip["reference_prompt_embeds"] = F.pad(clip["reference_prompt_embeds"], (0, 0, 0, pad))
        clip["reference_prompt_attention_mask"] = F.pad(clip["reference_prompt_attention_mask"], (0, pad), value=False)
    tensors = {key: torch.stack([clip[key] for clip in per_clip]).contiguous() for key in per_clip[0]}
    table = encode_captions(pipe, [c["caption"] for c in clips], max_sequence_length)
    tensors["prompt_embeds"] = torch.stack([table[c["caption"]][0] for c in clips])
    tensors["prompt_attention_mask"] = torch.stack([table[c["caption"]][1] for c in clips])
    tensors["null_prompt_embeds"], tensors["null_prompt_attention_mask"] = (x[None] for x in table[""])
    return tensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained_model_name_or_path", required=True, help="pipeline folder")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--num_frames", type=int, required=True, help="4k+1 frames per clip")
    parser.add_argument("--max_sequence_length", type=int, default=512)
    parser.add_argument("--refiner_scale", type=int, default=None, help="also encode the clip downsampled this much")
    args = parser.parse_args()

    pipe = SkyReelsV4Pipeline.from_pretrained(args.pretrained_model_name_or_path)
    records = read_manifest(args.manifest)
    clips = (load_record(pipe, record, args.num_frames) for record in records)
    tensors = precompute(
        pipe, clips, args.height, args.width, args.num_frames, args.max_sequence_length, args.refiner_scale
    )
    os.makedirs(args.output_dir, exist_ok=True)
    save_file(
        {k: v.float() if v.is_floating_point() else v.contiguous() for k, v in tensors.items()},
        os.path.join(args.output_dir, "latents.safetensors"),
    )
    metadata = {
        "height": args.height,
        "width": args.width,
        "num_frames": args.num_frames,
        "fps": pipe.transformer.config.fps,
        "sample_rate": pipe.audio_spec.sample_rate,
        "refiner_scale": args.refiner_scale,
        "captions": [r["caption"] for r in records],
    }
    with open(os.path.join(args.output_dir, "metadata.json"), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=1)
    print(f"wrote {len(records)} clips to {args.output_dir}")


if __name__ == "__main__":
    main()
