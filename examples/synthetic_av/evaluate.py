"""Objective metrics for clips of the synthetic audio-visual world (see `world.py`).

- prompt adherence: the colour and shape detected in the video vs the ones the prompt asked for;
- audio-video sync: bounces are found in the video (the object's velocity flips), onsets in the audio (rising
  energy); reported as the fraction of bounces with an onset within one frame, the fraction of onsets with a bounce
  within one frame (each beside its chance level) and the median over clips of the mean |onset - bounce| in ms;
- motion: object jumps per generated clip, and (a diagnosis) how far the model's one-step x0 estimate of a noised
  world clip puts the object from where it is, at noise levels near 1 where sampling fixes the object's path;
- image-to-video frame-0 PSNR against the VAE reconstruction of the image, the unmasked-region PSNR after editing,
  and Refiner 2x super-resolution PSNR against bicubic upsampling of the same low-res input.

    python examples/synthetic_av/evaluate.py --model pipelines/skyreels-v4-tiny --seeds 50

generates clips for held-out seeds with the world's captions and prints a Markdown table.
"""

import argparse
import json
import os
import sys

import numpy as np


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world  # noqa: E402


def object_mask(frame: np.ndarray) -> np.ndarray:
    """The object: the largest 8-connected region of pixels that differ clearly from the background, `(H, W)` bool.
    Keeping one region makes the shape and position robust to stray specks a decoder may leave elsewhere."""
    return largest_region(np.abs(frame.astype(np.int32) - np.array(world.BACKGROUND)).sum(-1) > 60)


def largest_region(mask: np.ndarray) -> np.ndarray:
    labels = np.zeros(mask.shape, np.int32)
    best, best_size = 0, 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        label = labels.max() + 1
        labels[start], stack, size = label, [start], 0
        while stack:
            y, x = stack.pop()
            size += 1
            for ny in range(max(0, y - 1), min(mask.shape[0], y + 2)):
                for nx in range(max(0, x - 1), min(mask.shape[1], x + 2)):
                    if mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = label
                        stack.append((ny, nx))
        if size > best_size:
            best, best_size = label, size
    return labels == best if best else mask


def detect_colour_and_shape(frames: np.ndarray) -> tuple[str | None, str | None]:
    """The colour nearest to the mean object colour and the shape from how much of its bounding box it fills
    (square ~0.97, circle ~0.79, triangle ~0.5), voted over frames. `(None, None)` if nothing is visible."""
    colours, shapes = [], []
    for frame in frames:
        mask = object_mask(frame)
        if mask.sum() < 4:
            continue
        mean = frame[mask].mean(0)
        colours.append(min(world.COLOURS, key=lambda name: np.sum((np.array(world.COLOURS[name]) - mean) ** 2)))
        rows, cols = np.nonzero(mask)
        fill = mask.sum() / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))
        shapes.append("square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle")
    if not colours:
        return None, None
    return max(set(colours), key=colours.count), max(set(shapes), key=shapes.count)


def centroid_track(frames: np.ndarray) -> np.ndarray:
    """`(F, 2)` (x, y) centroid of the object in each frame; NaN where no object is found."""
    centroids = []
    for frame in frames:
        rows, cols = np.nonzero(object_mask(frame))
        centroids.append((cols.mean(), rows.mean()) if len(rows) else (np.nan, np.nan))
    return np.array(centroids)


def bounce_times_from_video(frames: np.ndarray, fps: float) -> list[float]:
    """Seconds at which the object's centroid velocity flips sign on either axis (one object)."""
    return bounce_times(centroid_track(frames), fps)


def bounce_times(track: np.ndarray, fps: float) -> list[float]:
    """`bounce_times_from_video` on a `centroid_track`."""
    velocity = np.diff(track, axis=0)
    times = []
    for axis in range(2):
        signs = np.sign(velocity[:, axis])
        for step in np.nonzero(signs[1:] * signs[:-1] < 0)[0]:
            times.append((step + 1) / fps)  # the turn happens around frame step + 1
    return sorted(times)


def motion_jumps(track: np.ndarray, size: int, fps: float) -> int:
    """Frame-to-frame moves of the object (a `centroid_track` in a `size`-pixel box) longer than twice the world's
    fastest motion: teleports, which the world never makes. Counts the motion incoherence that also turns into
    spurious "bounces"."""
    limit = 2 * np.sqrt(2) * world.SPEED_RANGE[1] * size / fps
    steps = np.linalg.norm(np.diff(track, axis=0), axis=1)
    return int(np.sum(steps > limit))  # frames without an object (NaN) do not count


def audio_onsets(audio: np.ndarray, sample_rate: int, hop: int = 128, threshold: float = 0.05) -> list[float]:
    """Seconds where the short-time peak amplitude rises through `threshold` (at most one onset per 50 ms)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1, np.asarray(audio).shape[-1]).mean(0)
    frames = len(audio) // hop
    envelope = np.abs(audio[: frames * hop]).reshape(frames, hop).max(1)
    onsets, last = [], -np.inf
    for index in np.nonzero((envelope[1:] >= threshold) & (envelope[:-1] < threshold))[0]:
        seconds = (index + 1) * hop / sample_rate
        if seconds - last > 0.05:
            onsets.append(seconds)
            last = seconds
    return onsets


def sync_metrics(bounces: list[float], onsets: list[float], fps: float) -> tuple[float, float]:
    """(mean |nearest onset - bounce| in ms, fraction of bounces with an onset within one video frame)."""
    if not bounces:
        return float("nan"), float("nan")
    if not onsets:
        return float("inf"), 0.0
    errors = np.array([min(abs(o - b) for o in onsets) for b in bounces])
    return float(errors.mean() * 1000), float((errors <= 1 / fps).mean())


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of images/videos in [0, 1] (optionally over `mask` only)."""
    difference = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    mse = difference[mask].mean() if mask is not None else difference.mean()
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def onset_precision(bounces: list[float], onsets: list[float], fps: float) -> float:
    """Fraction of audio onsets with a video bounce within one frame (penalises knocks that have no bounce)."""
    if not onsets:
        return float("nan")
    if not bounces:
        return 0.0
    return float(np.mean([min(abs(o - b) for b in bounces) <= 1 / fps for o in onsets]))


def sync_summary(pairs, fps: float) -> dict:
    """Sync metrics over clips, from (bounce times, onset times) pairs."""
    errors, within, precision = [], [], []
    for bounces, onsets in pairs:
        error, fraction = sync_metrics(bounces, onsets, fps)
        if not np.isnan(error):
            errors.append(error)
            within.append(fraction)
        clip_precision = onset_precision(bounces, onsets, fps)
        if not np.isnan(clip_precision):
            precision.append(clip_precision)
    return {
        # A silent clip's error is infinite, so the mean over clips would be too; the median stays informative.
        "sync_median_error_ms": float(np.median(errors)) if errors else float("nan"),
        "sync_within_one_frame": float(np.mean(within)) if within else float("nan"),
        "onset_precision": float(np.mean(precision)) if precision else float("nan"),
        "clips_with_bounces": len(within),
    }


def world_clip(pipe, seed: int, size: int | None = None) -> world.Clip:
    """The world clip of `seed` at the pipeline's default size, length, frame rate and audio rate."""
    return world.render_clip(
        seed,
        num_frames=pipe.config.default_num_frames,
        size=size or pipe.config.default_height,
        fps=int(pipe.transformer.config.fps),
        sample_rate=pipe.audio_spec.sample_rate,
    )


def to_uint8(frames) -> np.ndarray:
    return (np.asarray(frames) * 255).round().astype(np.uint8)


def encode_frames(pipe, frames: np.ndarray):
    """`(F, H, W, 3)` uint8 -> the video VAE's latents `(1, C, F', h, w)`, as the pipelines encode videos."""
    import torch

    from skyreels_diffusers.pipelines.vae_utils import encode_video

    pixels = torch.from_numpy(frames).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]
    with torch.no_grad():
        return encode_video(pipe.vae, pixels)


def vae_reconstruction(pipe, frames: np.ndarray) -> np.ndarray:
    """`(F, H, W, 3)` uint8 -> the video VAE's reconstruction in [0, 1] (what a perfect generator could output)."""
    import torch

    from skyreels_diffusers.pipelines.vae_utils import decode_video

    with torch.no_grad():
        decoded = decode_video(pipe.vae, encode_frames(pipe, frames))
    return ((decoded[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1).numpy()


def evaluate_t2av(pipe, seeds, call_kwargs) -> dict:
    """Prompt adherence and audio-video sync of text-to-video+audio generations with the world's captions.

    The `*_chance` entries score every clip's onsets against the bounces of every *other* clip: the level that
    spurious bounces and knocks reach with no synchronisation at all."""
    import torch

    fps = pipe.transformer.config.fps
    adherence, jumps, bounces, onsets = [], [], [], []
    for seed in seeds:
        target = world_clip(pipe, seed)
        out = pipe(target.caption, generator=torch.Generator().manual_seed(seed), **call_kwargs)
        frames = to_uint8(out.frames[0])
        adherence.append(detect_colour_and_shape(frames) == (target.objects[0]["colour"], target.objects[0]["shape"]))
        track = centroid_track(frames)
        bounces.append(bounce_times(track, fps))
        jumps.append(motion_jumps(track, frames.shape[2], fps))
        onsets.append(audio_onsets(out.audio[0], out.audio_sample_rate))

    mismatched = [(bounces[i], onsets[j]) for i in range(len(onsets)) for j in range(len(onsets)) if i != j]
    chance = sync_summary(mismatched, fps)
    return {
        "adherence": float(np.mean(adherence)),
        **sync_summary(zip(bounces, onsets), fps),
        "silent_clips": float(np.mean([not clip_onsets for clip_onsets in onsets])),
        "sync_within_one_frame_chance": chance["sync_within_one_frame"],
        "onset_precision_chance": chance["onset_precision"],
        "motion_jumps_per_clip": float(np.mean(jumps)),
    }


def evaluate_conditioned(pipe, seeds, call_kwargs) -> dict:
    """Image-to-video frame-0 PSNR against the VAE reconstruction, and the unmasked-region PSNR after editing
    (the right half regenerated), each with and without re-injecting the known latents (`preserve_unmasked`)."""
    import torch

    from skyreels_diffusers import SkyReelsV4InpaintPipeline

    inpaint = SkyReelsV4InpaintPipeline.from_pipe(pipe)
    results = {"i2v_psnr_model": [], "i2v_psnr_preserved": [], "edit_psnr_model": [], "edit_psnr_preserved": []}
    for seed in seeds:
        clip = world_clip(pipe, seed)
        reference = vae_reconstruction(pipe, clip.frames[:1])[0]
        keep = np.ones(clip.frames.shape[1:3], np.float32)
        keep[:, keep.shape[1] // 2 :] = 0
        for preserve, suffix in ((False, "model"), (True, "preserved")):
            generator = torch.Generator().manual_seed(seed)
            out = inpaint(clip.caption, image=clip.frames[0], preserve_unmasked=preserve, generator=generator,
                          **call_kwargs)  # fmt: skip
            results[f"i2v_psnr_{suffix}"].append(psnr(out.frames[0][0], reference))
            generator = torch.Generator().manual_seed(seed)
            out = inpaint(clip.caption, video=clip.frames, mask=keep, preserve_unmasked=preserve,
                          generator=generator, generate_audio=False, **call_kwargs)  # fmt: skip
            region = np.broadcast_to(keep.astype(bool)[None, :, :, None], clip.frames.shape)
            results[f"edit_psnr_{suffix}"].append(psnr(out.frames[0], clip.frames / 255.0, region))
    return {name: float(np.mean(values)) for name, values in results.items()}


PROBE_SIGMAS = (0.9, 0.95, 0.97)


def evaluate_denoiser(pipe, seeds, sigmas=PROBE_SIGMAS) -> dict:
    """Where sampling goes wrong. Each held-out world clip (its video and audio latents) is noised to a fixed sigma
    and denoised in one step without guidance: the schedule `[sigma]` is one Euler step to 0, which lands on the
    model's x0 estimate. Scored by the mean distance in pixels between the estimate's object centroid and the
    clip's per frame (a frame where the estimate shows no object counts as the box's width).

    Sampling fixes the object's path in its first steps. Near sigma 1 a single frame holds too little signal to place
    the object; a denoiser can only do it by pooling the evidence along the path across frames. One that cannot
    places it frame by frame, and the sampled clip jumps however well later steps denoise."""
    import torch
    import torch.nn.functional as F

    from skyreels_diffusers.pipelines.vae_utils import encode_audio

    shift = pipe.scheduler.config.shift
    spec = pipe.audio_spec
    errors = {sigma: [] for sigma in sigmas}
    for seed in seeds:
        clip = world_clip(pipe, seed)
        # The pipeline's audio length: whole latents covering the clip, the waveform zero-padded to fill them.
        num_samples = -(-len(clip.audio) // spec.samples_per_latent) * spec.samples_per_latent
        waveform = F.pad(torch.from_numpy(clip.audio).float(), (0, num_samples - len(clip.audio)))
        video = encode_frames(pipe, clip.frames)
        with torch.no_grad():
            audio = encode_audio(pipe.audio_vae, waveform[None, None])
        truth = centroid_track(clip.frames)
        for sigma in sigmas:
            generator = torch.Generator().manual_seed(seed)
            noisy_video = (1 - sigma) * video + sigma * torch.randn(video.shape, generator=generator)
            noisy_audio = (1 - sigma) * audio + sigma * torch.randn(audio.shape, generator=generator)
            # The scheduler shifts custom sigmas (s -> shift s / (1 + (shift - 1) s)): pass the unshifted value.
            out = pipe(clip.caption, latents=noisy_video, audio_latents=noisy_audio, guidance_scale=1.0,
                       sigmas=[sigma / (shift - (shift - 1) * sigma)])  # fmt: skip
            distances = np.linalg.norm(centroid_track(to_uint8(out.frames[0])) - truth, axis=1)
            missing = np.isnan(distances) & ~np.isnan(truth[:, 0])
            errors[sigma].append(np.nanmean(np.where(missing, clip.frames.shape[1], distances)))
    return {f"x0_centroid_error_px@{sigma}": float(np.mean(values)) for sigma, values in errors.items()}


def evaluate_refiner(pipe, refiner_pipe, seeds, refiner_steps: int, guidance_scale: float = 1.0) -> dict:
    """Refiner 2x super-resolution PSNR against the world rendered at 2x, and bicubic upsampling of the same
    low-res input (the VAE reconstruction of the 2x render downsampled by area averaging)."""
    import torch
    import torch.nn.functional as F

    size = 2 * pipe.config.default_height
    refined, bicubic = [], []
    for seed in seeds:
        truth = world_clip(pipe, seed, size=size)
        high = torch.from_numpy(truth.frames).float().permute(0, 3, 1, 2) / 255
        low = F.interpolate(high, scale_factor=0.5, mode="area")
        low = vae_reconstruction(pipe, to_uint8(low.permute(0, 2, 3, 1).numpy()))
        out = refiner_pipe(truth.caption, video=low, audio=torch.from_numpy(truth.audio)[None, None],
                           num_inference_steps=refiner_steps, guidance_scale=guidance_scale,
                           generator=torch.Generator().manual_seed(seed))  # fmt: skip
        upsampled = F.interpolate(torch.from_numpy(low).permute(0, 3, 1, 2), scale_factor=2, mode="bicubic")
        refined.append(psnr(out.frames[0], truth.frames / 255.0))
        bicubic.append(psnr(upsampled.clamp(0, 1).permute(0, 2, 3, 1).numpy(), truth.frames / 255.0))
    return {"refiner_psnr": float(np.mean(refined)), "bicubic_psnr": float(np.mean(bicubic))}


METRIC_ROWS = (
    ("adherence", "colour/shape adherence (target >= 90%)", "{:.1%}"),
    ("sync_within_one_frame", "bounces with an audio onset within 1 frame (target >= 80%)", "{:.1%}"),
    ("sync_within_one_frame_chance", "the same, onsets of another clip (chance)", "{:.1%}"),
    ("sync_median_error_ms", "mean abs(onset - bounce) per clip, median over clips", "{:.1f} ms"),
    ("silent_clips", "clips without an audio onset", "{:.1%}"),
    ("onset_precision", "onsets with a bounce within 1 frame", "{:.1%}"),
    ("onset_precision_chance", "the same, bounces of another clip (chance)", "{:.1%}"),
    ("motion_jumps_per_clip", "object jumps per clip (teleports; the world makes none)", "{:.2f}"),
    *((f"x0_centroid_error_px@{sigma}", f"one-step x0 estimate at sigma {sigma}: object centroid error", "{:.1f} px")
      for sigma in PROBE_SIGMAS),
    ("i2v_psnr_model", "I2V frame-0 PSNR vs VAE reconstruction, model's own prediction (target >= 30)",
     "{:.2f} dB"),
    ("i2v_psnr_preserved", "I2V frame-0 PSNR vs VAE reconstruction, known latents re-injected", "{:.2f} dB"),
    ("edit_psnr_preserved", "edit: unmasked-region PSNR, preserve_unmasked=True", "{:.2f} dB"),
    ("edit_psnr_model", "edit: unmasked-region PSNR, model's own prediction", "{:.2f} dB"),
    ("refiner_psnr", "Refiner 2x PSNR vs the 2x render (target > bicubic)", "{:.2f} dB"),
    ("bicubic_psnr", "bicubic 2x PSNR of the same low-res input", "{:.2f} dB"),
)  # fmt: skip


def metrics_table(metrics: dict) -> str:
    """A Markdown table of the metrics present in `metrics`."""
    lines = ["| metric | value |", "|---|---|"]
    for key, label, fmt in METRIC_ROWS:
        if key in metrics:
            lines.append(f"| {label} | {fmt.format(metrics[key])} |")
    return "\n".join(lines)


def load_pipelines(model: str | None):
    """The pipeline (and its Refiner pipeline, when the folder has `refiner/`)."""
    from skyreels_diffusers import SkyReelsV4Pipeline, SkyReelsV4RefinerPipeline, SkyReelsV4RefinerTransformer3DModel

    if model is None:
        from skyreels_diffusers.utils.tiny_components import build_tiny_pipeline

        print("NOTE: no --model: RANDOMLY INITIALISED tiny components, the metrics only exercise the evaluator.")
        return build_tiny_pipeline(), None
    pipe = SkyReelsV4Pipeline.from_pretrained(model)
    refiner = None
    if os.path.isdir(os.path.join(model, "refiner")):
        transformer = SkyReelsV4RefinerTransformer3DModel.from_pretrained(model, subfolder="refiner")
        refiner = SkyReelsV4RefinerPipeline.from_pipe(pipe, transformer=transformer)
    return pipe, refiner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline folder (default: tiny random components)")
    parser.add_argument("--seeds", type=int, default=50, help="seeds 0..N-1 (training uses seeds from 10**6)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--refiner_steps", type=int, default=10)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--refiner_guidance_scale", type=float, default=1.0,
                        help="1 (no guidance) keeps super-resolution closest to its input")  # fmt: skip
    parser.add_argument("--audio_guidance_scale", type=float, default=None)
    parser.add_argument("--tasks", default="t2av,denoiser,conditioned,refiner")
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    args = parser.parse_args()

    import torch

    torch.set_grad_enabled(False)
    pipe, refiner = load_pipelines(args.model)
    seeds = range(args.seeds)
    call_kwargs = {"num_inference_steps": args.steps, "guidance_scale": args.guidance_scale,
                   "audio_guidance_scale": args.audio_guidance_scale}  # fmt: skip
    tasks = args.tasks.split(",")
    metrics = {"seeds": args.seeds, "steps": args.steps, "guidance_scale": args.guidance_scale,
               "refiner_guidance_scale": args.refiner_guidance_scale}  # fmt: skip
    if "t2av" in tasks:
        metrics.update(evaluate_t2av(pipe, seeds, call_kwargs))
    if "denoiser" in tasks:
        metrics.update(evaluate_denoiser(pipe, seeds))
    if "conditioned" in tasks:
        metrics.update(evaluate_conditioned(pipe, seeds, call_kwargs))
    if "refiner" in tasks and refiner is not None:
        metrics.update(evaluate_refiner(pipe, refiner, seeds, args.refiner_steps, args.refiner_guidance_scale))
    print(metrics_table(metrics))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=1)


if __name__ == "__main__":
    main()
