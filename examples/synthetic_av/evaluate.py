"""Objective metrics for clips of the synthetic audio-visual world (see `world.py`).

Every metric is printed beside its chance level or baseline:

- components: the audio VAE's round trip (pitch and timbre of each knock kept, RMS ratio) and the video VAE's
  (shape fidelity);
- text-to-video+audio: colour and shape adherence, shape fidelity (IoU of the object with the world's own shape
  fitted at its position and size), object size against the world's range, object jumps (teleports) and mid-box
  direction reversals, audio-video sync (bounces with an onset within one frame, onsets with a bounce, median
  error), and whether each knock's pitch follows the caption's shape and its timbre the colour;
- video-to-audio (the world's video given): onsets of the generated sound against the true bounces;
  audio-to-video (the world's sound given): bounces of the generated video against the true bounces;
- image-to-video frame-0 PSNR, the unmasked-region PSNR after editing, extension path error over the first new
  frames against a straight-line and a frozen object, a one-step denoiser probe, and Refiner 2x PSNR against bicubic.

    python examples/synthetic_av/evaluate.py --model pipelines/skyreels-v4-tiny --seeds 50

generates clips for held-out seeds (`TEST_SEEDS`: no training clip and no tuning decision used them) with the world's
captions and prints a Markdown table. Tuning uses `--split dev` (`DEV_SEEDS`) and never the test seeds.
"""

import argparse
import json
import os
import sys
import time

import numpy as np


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world  # noqa: E402


# Seed ranges of the world: training clips start at TRAIN_SEED (see `build_tiny_default.py`); dev seeds are for
# diagnosis and tuning; test seeds are for reported numbers only.
TRAIN_SEED = 10**6
DEV_SEED = 2 * 10**6
TEST_SEED = 3 * 10**6


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


def mismatched_pairs(truths: list, found: list) -> list[tuple]:
    """Every clip's truth paired with every other clip's output: what chance levels are scored on."""
    return [(truths[i], found[j]) for i in range(len(truths)) for j in range(len(found)) if i != j]


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


# ---------------------------------------------------------------------------------------------------------------------
# Knocks: pitch (the shape) and timbre (the colour) of one knock


KNOCK_WINDOW = 0.1  # seconds analysed after an onset (a knock decays with a 30 ms time constant)


def knock_spectrum(audio: np.ndarray, sample_rate: int, start: float):
    """Magnitude spectrum (Hann window, zero-padded) of the `KNOCK_WINDOW` after `start`, with its frequencies;
    `(None, None)` when less than half of it is left before the end of the clip."""
    audio = np.asarray(audio, np.float32).reshape(-1, np.asarray(audio).shape[-1]).mean(0)
    segment = audio[int(start * sample_rate) : int((start + KNOCK_WINDOW) * sample_rate)]
    if len(segment) < int(KNOCK_WINDOW / 2 * sample_rate):
        return None, None
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), 1 << 15))
    return spectrum, np.fft.rfftfreq(1 << 15, 1 / sample_rate)


def classify_knock(audio: np.ndarray, sample_rate: int, start: float) -> tuple[str | None, str | None] | None:
    """The shape whose pitch is within a semitone of the knock's fundamental (the strongest peak between 250 and 700
    Hz: every timbre's fundamental is its loudest harmonic), and the colour whose harmonic profile (harmonics 1-4
    relative to the fundamental) is nearest. `(None, None)` for silence; `None` when the clip ends too soon after
    `start` to tell (such knocks are not scored)."""
    spectrum, freqs = knock_spectrum(audio, sample_rate, start)
    if spectrum is None:
        return None
    band = (freqs > 250) & (freqs < 700)
    if spectrum[band].max() <= 1e-6:
        return None, None
    f0 = freqs[band][np.argmax(spectrum[band])]
    shape = min(world.PITCH_HZ, key=lambda name: abs(np.log2(f0 / world.PITCH_HZ[name])))
    if abs(12 * np.log2(f0 / world.PITCH_HZ[shape])) > 1:
        shape = None
    amplitudes = []
    for harmonic in range(1, 5):
        near = np.abs(freqs - harmonic * f0) <= 0.03 * harmonic * f0
        amplitudes.append(spectrum[near].max() if near.any() and harmonic * f0 < sample_rate / 2 else 0.0)
    profile = np.array(amplitudes) / max(amplitudes[0], 1e-12)
    colour = min(world.TIMBRE, key=lambda name: np.sum((np.array(world.TIMBRE[name]) - profile) ** 2))
    return shape, colour


def knock_matches(audio, sample_rate: int, starts: list[float], shape: str, colour: str) -> tuple[list, list]:
    """Per knock starting at `starts` (those the clip leaves room to analyse): does its pitch give `shape`, does its
    timbre give `colour`."""
    classes = [c for c in (classify_knock(audio, sample_rate, start) for start in starts) if c is not None]
    return [found == shape for found, _ in classes], [found == colour for _, found in classes]


def isolated_knocks(clip: world.Clip) -> list[float]:
    """Start times of the clip's knocks that no other knock overlaps within the analysis window (two hits at a
    corner, milliseconds apart, interfere and change the harmonic profile of the sum)."""
    starts = [seconds for seconds, _ in clip.bounces]
    return [t for t in starts if all(t == other or abs(t - other) > KNOCK_WINDOW for other in starts)]


# ---------------------------------------------------------------------------------------------------------------------
# Shape fidelity, object size and motion


def _shape_area_per_radius2(shape: str) -> float:
    return world.shape_mask(shape, np.array([50.0, 50.0]), 20.0, 100).sum() / 400.0


def fit_world_shape(mask: np.ndarray, shape: str) -> tuple[float, float]:
    """The world's `shape` fitted to an object mask: the radius whose area matches, placed where it overlaps most
    (a search around where the mask's centroid puts the shape's centre). Returns `(IoU, radius)`."""
    rows, cols = np.nonzero(mask)
    radius = float(np.sqrt(mask.sum() / _shape_area_per_radius2(shape)))
    # A shape's centroid is not its centre (a triangle's sits 0.2 radius lower): measure the offset on a render.
    reference = np.array([50.0, 50.0])
    ref_rows, ref_cols = np.nonzero(world.shape_mask(shape, reference, radius, 100))
    offset = np.array([ref_cols.mean(), ref_rows.mean()]) + 0.5 - reference
    guess = np.array([cols.mean(), rows.mean()]) + 0.5 - offset
    best = 0.0
    for dy in np.arange(-1.5, 1.51, 0.5):
        for dx in np.arange(-1.5, 1.51, 0.5):
            fitted = world.shape_mask(shape, guess + (dx, dy), radius, mask.shape[0])
            best = max(best, (fitted & mask).sum() / max((fitted | mask).sum(), 1))
    return float(best), radius


def shape_fidelity(frames: np.ndarray, shape: str) -> tuple[float, float]:
    """Mean IoU of the object with the world's `shape` fitted per frame, and the median fitted radius in units of the
    box size; NaNs when no object is visible."""
    ious, radii = [], []
    for frame in frames:
        mask = object_mask(frame)
        if mask.sum() >= 4:
            iou, radius = fit_world_shape(mask, shape)
            ious.append(iou)
            radii.append(radius / frame.shape[1])
    return (float(np.mean(ious)), float(np.median(radii))) if ious else (float("nan"), float("nan"))


def turns(track: np.ndarray, size: int, margin: float) -> list[tuple[int, bool]]:
    """`(frame, mid_box)` of each direction reversal (a velocity sign flip on either axis) of a `centroid_track` in a
    `size`-pixel box: `mid_box` when the object is farther than `margin` pixels beyond the largest object's reach from
    the walls, where the world never turns."""
    velocity = np.diff(track, axis=0)
    reach = world_radius_range(size)[1] + margin
    found = []
    for axis in range(2):
        signs = np.sign(velocity[:, axis])
        for step in np.nonzero(signs[1:] * signs[:-1] < 0)[0]:
            found.append((int(step + 1), bool(reach < track[step + 1, axis] < size - reach)))
    return sorted(found)


def mid_box_reversals(track: np.ndarray, size: int, margin: float) -> int:
    """The `turns` in mid-box: the wobble the world never makes (it turns only at walls)."""
    return sum(mid_box for _, mid_box in turns(track, size, margin))


def world_radius_range(size: int) -> tuple[float, float]:
    """The radii the world draws, in pixels of a `size` box."""
    return world.RADIUS_RANGE[0] * size, world.RADIUS_RANGE[1] * size


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


def encode_frames(vae, frames: np.ndarray):
    """`(F, H, W, 3)` uint8 -> the video VAE's latents `(1, C, F', h, w)`, as the pipelines encode videos."""
    import torch

    from skyreels_diffusers.pipelines.preprocessing import frames_to_tensor, pixels_for_vae
    from skyreels_diffusers.pipelines.vae_utils import encode_video

    pixels = pixels_for_vae(frames_to_tensor("frames", frames, *frames.shape[1:3]))
    with torch.no_grad():
        return encode_video(vae, pixels)


def vae_reconstruction(vae, frames: np.ndarray) -> np.ndarray:
    """`(F, H, W, 3)` uint8 -> the video VAE's reconstruction in [0, 1] (what a perfect generator could output)."""
    import torch

    from skyreels_diffusers.pipelines.vae_utils import decode_video

    with torch.no_grad():
        decoded = decode_video(vae, encode_frames(vae, frames))
    return ((decoded[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1).numpy()


def audio_round_trip(pipe, audio: np.ndarray) -> np.ndarray:
    """A mono waveform through the audio VAE and back (padded to whole latents, trimmed again)."""
    import torch

    from skyreels_diffusers.pipelines.vae_utils import decode_audio, encode_audio_track

    spec = pipe.audio_spec
    waveform = torch.from_numpy(np.asarray(audio, np.float32))[None, None].expand(-1, spec.audio_channels, -1)
    with torch.no_grad():
        latents = encode_audio_track(pipe.audio_vae, waveform, spec.num_latents(waveform.shape[-1] / spec.sample_rate))
        decoded = decode_audio(pipe.audio_vae, pipe.vocoder, latents).float()
    return decoded[0].mean(0)[: waveform.shape[-1]].numpy()


def evaluate_components(pipe, seeds) -> dict:
    """What the two VAEs can carry. Audio: each knock of the world's soundtrack after a round trip keeps its pitch
    and its timbre (by `classify_knock`), and the overall level (RMS ratio, round trip / original). Video: the shape
    fidelity of the round trip. A generator is bounded by these."""
    pitch, timbre, rms, ious = [], [], [], []
    for seed in seeds:
        clip = world_clip(pipe, seed)
        shape, colour = clip.objects[0]["shape"], clip.objects[0]["colour"]
        decoded = audio_round_trip(pipe, clip.audio)
        pitch_ok, timbre_ok = knock_matches(decoded, pipe.audio_spec.sample_rate, isolated_knocks(clip), shape, colour)
        pitch += pitch_ok
        timbre += timbre_ok
        if np.abs(clip.audio).max() > 0:
            rms.append(np.sqrt(np.mean(decoded**2) / np.mean(clip.audio**2)))
        ious.append(shape_fidelity(to_uint8(vae_reconstruction(pipe.vae, clip.frames)), shape)[0])
    return {
        "audio_vae_pitch_kept": float(np.mean(pitch)),
        "audio_vae_timbre_kept": float(np.mean(timbre)),
        "audio_vae_rms_ratio": float(np.median(rms)),
        "video_vae_shape_iou": float(np.nanmean(ious)),
    }


def evaluate_video_vae(vae, seeds, num_frames: int = 17, size: int = 64, fps: int = 16) -> dict:
    """What a video VAE keeps of world clips: the bound on any generator that decodes through it. Motion: the true
    bounces with a turn of the round trip's tracked object within one frame, beside the original frames' own (the
    tracker's ceiling) and chance (another clip's round trip); turns per clip, mid-box reversals and jumps (the
    world's: 0), frames where the object is lost. Appearance: shape IoU, size against the world's, colour kept,
    PSNR."""
    truths, originals, found, turn_counts, reversals, jumps, lost, ious, sizes, colours, psnrs = (
        [] for _ in range(11)
    )
    for seed in seeds:
        clip = world.render_clip(seed, num_frames=num_frames, size=size, fps=fps)
        decoded = to_uint8(vae_reconstruction(vae, clip.frames))
        shape, colour = clip.objects[0]["shape"], clip.objects[0]["colour"]
        track = centroid_track(decoded)
        truths.append([seconds for seconds, _ in clip.bounces])
        originals.append(bounce_times_from_video(clip.frames, fps))
        found.append(bounce_times(track, fps))
        clip_turns = turns(track, size, margin=2.0)
        turn_counts.append(len(clip_turns))
        reversals.append(sum(mid_box for _, mid_box in clip_turns))
        jumps.append(motion_jumps(track, size, fps))
        lost.append(int(np.isnan(track[:, 0]).sum()))
        iou, radius = shape_fidelity(decoded, shape)
        ious.append(iou)
        sizes.append(radius * size / clip.objects[0]["radius"])
        colours.append(detect_colour_and_shape(decoded)[0] == colour)
        psnrs.append(psnr(decoded / 255.0, clip.frames / 255.0))
    within = "sync_within_one_frame"
    return {
        "vae_bounces_kept": sync_summary(zip(truths, found), fps)[within],
        "vae_bounces_kept_original_frames": sync_summary(zip(truths, originals), fps)[within],
        "vae_bounces_kept_chance": sync_summary(mismatched_pairs(truths, found), fps)[within],
        "vae_turns_per_clip": float(np.mean(turn_counts)),
        "vae_turns_per_clip_original": float(np.mean([len(times) for times in originals])),
        "vae_mid_box_reversals_per_clip": float(np.mean(reversals)),
        "vae_jumps_per_clip": float(np.mean(jumps)),
        "vae_frames_object_lost": float(np.mean(lost)),
        "vae_shape_iou": float(np.nanmean(ious)),
        "vae_size_ratio": float(np.nanmedian(sizes)),
        "vae_colour_kept": float(np.mean(colours)),
        "vae_psnr_db": float(np.mean(psnrs)),
    }


def evaluate_t2av(pipe, seeds, call_kwargs) -> dict:
    """Text-to-video+audio with the world's captions: adherence, shape fidelity, object size, motion, sync, and
    knock pitch / timbre against the caption.

    The `*_chance` entries score every clip against *other* clips (their bounces, their captions): the level that
    spurious bounces and knocks, or a sound that ignores the caption, reach with no link at all."""
    import torch

    fps = pipe.transformer.config.fps
    size = pipe.config.default_height
    low, high = world_radius_range(size)
    adherence, jumps, reversals, ious, radii, bounces, onsets, captions, audio = ([] for _ in range(9))
    seconds, wall_bounces = [], []
    for seed in seeds:
        target = world_clip(pipe, seed)
        start = time.perf_counter()
        out = pipe(target.caption, generator=torch.Generator().manual_seed(seed), **call_kwargs)
        seconds.append(time.perf_counter() - start)
        frames = to_uint8(out.frames[0])
        shape, colour = target.objects[0]["shape"], target.objects[0]["colour"]
        adherence.append(detect_colour_and_shape(frames) == (colour, shape))
        iou, radius = shape_fidelity(frames, shape)
        ious.append(iou)
        radii.append(radius * size)
        track = centroid_track(frames)
        bounces.append(bounce_times(track, fps))
        jumps.append(motion_jumps(track, frames.shape[2], fps))
        clip_turns = turns(track, frames.shape[2], margin=2.0)
        reversals.append(sum(mid_box for _, mid_box in clip_turns))
        wall_bounces.append([frame / fps for frame, mid_box in clip_turns if not mid_box])
        onsets.append(audio_onsets(out.audio[0], out.audio_sample_rate))
        captions.append((shape, colour))
        audio.append(out.audio[0])

    sample_rate = pipe.audio_spec.sample_rate
    knocks = [knock_matches(audio[i], sample_rate, onsets[i], *captions[i]) for i in range(len(audio))]
    others = [
        knock_matches(audio[i], sample_rate, onsets[i], *captions[(i + 1) % len(audio)]) for i in range(len(audio))
    ]
    chance = sync_summary(mismatched_pairs(bounces, onsets), fps)
    # The sound cannot follow turns the world never makes: the sync at the generated turns that are at walls alone.
    at_walls = sync_summary(zip(wall_bounces, onsets), fps)
    at_walls_chance = sync_summary(mismatched_pairs(wall_bounces, onsets), fps)
    radii = np.array(radii)

    def rate(lists) -> float:
        values = [x for clip_values in lists for x in clip_values]
        return float(np.mean(values)) if values else 0.0

    return {
        "adherence": float(np.mean(adherence)),
        "shape_iou": float(np.nanmean(ious)),
        "object_radius_in_world_range": float(np.mean((radii >= 0.9 * low) & (radii <= 1.1 * high))),
        "object_radius_ratio": float(np.nanmedian(radii) / ((low + high) / 2)),
        **sync_summary(zip(bounces, onsets), fps),
        "silent_clips": float(np.mean([not clip_onsets for clip_onsets in onsets])),
        "sync_within_one_frame_chance": chance["sync_within_one_frame"],
        "onset_precision_chance": chance["onset_precision"],
        "motion_jumps_per_clip": float(np.mean(jumps)),
        "clips_with_jumps": float(np.mean(np.array(jumps) > 0)),
        "mid_box_reversals_per_clip": float(np.mean(reversals)),
        "turns_per_clip": float(np.mean([len(b) for b in bounces])),
        "sync_at_wall_turns": at_walls["sync_within_one_frame"],
        "sync_at_wall_turns_chance": at_walls_chance["sync_within_one_frame"],
        "knock_pitch_matches_shape": rate(k[0] for k in knocks),
        "knock_pitch_matches_shape_chance": rate(k[0] for k in others),
        "knock_timbre_matches_colour": rate(k[1] for k in knocks),
        "knock_timbre_matches_colour_chance": rate(k[1] for k in others),
        "seconds_per_clip": float(np.median(seconds)),
    }


def evaluate_cross_modal(pipe, seeds, call_kwargs) -> dict:
    """Video-to-audio: the world's video is given; the generated sound's onsets against the true bounce times.
    Audio-to-video: the world's soundtrack is given; the generated video's bounces (velocity flips) against the true
    bounce times. Chance: the same against other clips' bounces."""
    import torch

    from skyreels_diffusers import SkyReelsV4InpaintPipeline

    inpaint = SkyReelsV4InpaintPipeline.from_pipe(pipe)
    fps = pipe.transformer.config.fps
    truth, v2a_onsets, a2v_bounces = [], [], []
    for seed in seeds:
        clip = world_clip(pipe, seed)
        truth.append([seconds for seconds, _ in clip.bounces])
        out = inpaint(clip.caption, video=clip.frames, generator=torch.Generator().manual_seed(seed), **call_kwargs)
        v2a_onsets.append(audio_onsets(out.audio[0], out.audio_sample_rate))
        if not clip.bounces and not np.abs(clip.audio).max() > 0:
            a2v_bounces.append([])  # a clip without a bounce is silent: no soundtrack to follow, nothing to score
            continue
        out = inpaint(
            clip.caption,
            audio=clip.audio,
            audio_sample_rate=clip.sample_rate,
            num_frames=len(clip.frames),
            generator=torch.Generator().manual_seed(seed),
            **call_kwargs,
        )
        a2v_bounces.append(bounce_times(centroid_track(to_uint8(out.frames[0])), fps))

    def scored(found, name):
        matched = sync_summary(zip(truth, found), fps)
        others = sync_summary(mismatched_pairs(truth, found), fps)
        return {
            f"{name}_within_one_frame": matched["sync_within_one_frame"],
            f"{name}_within_one_frame_chance": others["sync_within_one_frame"],
            f"{name}_precision": matched["onset_precision"],
            f"{name}_median_error_ms": matched["sync_median_error_ms"],
        }

    return {**scored(v2a_onsets, "v2a"), **scored(a2v_bounces, "a2v")}


def evaluate_extension(pipe, seeds, call_kwargs, keep: int = 9, horizon: int = 4) -> dict:
    """Extension keeping the first `keep` frames of a world clip: the mean distance (px) between the object's centroid
    in the first `horizon` generated frames and the world's, beside two baselines that know only the kept frames: a
    straight line through the last two kept centroids, and the object frozen at its last kept position."""
    import torch

    from skyreels_diffusers import SkyReelsV4InpaintPipeline

    inpaint = SkyReelsV4InpaintPipeline.from_pipe(pipe)
    model, line, frozen = [], [], []
    for seed in seeds:
        clip = world_clip(pipe, seed)
        out = inpaint(
            clip.caption,
            video=clip.frames[:keep],
            num_condition_frames=keep,
            num_frames=len(clip.frames),
            generator=torch.Generator().manual_seed(seed),
            **call_kwargs,
        )
        truth = centroid_track(clip.frames)[keep : keep + horizon]
        generated = centroid_track(to_uint8(out.frames[0]))[keep : keep + horizon]
        before, last = centroid_track(clip.frames[keep - 2 : keep])
        steps = np.arange(1, horizon + 1)[:, None]
        errors = np.linalg.norm(generated - truth, axis=1)
        model.append(np.where(np.isnan(errors), clip.frames.shape[1], errors).mean())  # no object: a box width
        line.append(np.linalg.norm(last + steps * (last - before) - truth, axis=1).mean())
        frozen.append(np.linalg.norm(last - truth, axis=1).mean())
    return {
        "extension_path_error_px": float(np.mean(model)),
        "extension_straight_line_error_px": float(np.mean(line)),
        "extension_frozen_error_px": float(np.mean(frozen)),
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
        reference = vae_reconstruction(pipe.vae, clip.frames[:1])[0]
        keep = np.ones(clip.frames.shape[1:3], np.float32)
        keep[:, keep.shape[1] // 2 :] = 0
        for preserve, suffix in ((False, "model"), (True, "preserved")):
            generator = torch.Generator().manual_seed(seed)
            out = inpaint(
                clip.caption, image=clip.frames[0], preserve_unmasked=preserve, generator=generator, **call_kwargs
            )
            results[f"i2v_psnr_{suffix}"].append(psnr(out.frames[0][0], reference))
            generator = torch.Generator().manual_seed(seed)
            out = inpaint(
                clip.caption,
                video=clip.frames,
                mask=keep,
                preserve_unmasked=preserve,
                generator=generator,
                generate_audio=False,
                **call_kwargs,
            )
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

    from skyreels_diffusers.pipelines.vae_utils import encode_audio_track

    shift = pipe.scheduler.config.shift
    spec = pipe.audio_spec
    errors = {sigma: [] for sigma in sigmas}
    for seed in seeds:
        clip = world_clip(pipe, seed)
        video = encode_frames(pipe.vae, clip.frames)
        waveform = torch.from_numpy(clip.audio).float()[None, None]
        with torch.no_grad():  # the pipeline's audio length: whole latents covering the clip
            audio = encode_audio_track(pipe.audio_vae, waveform, spec.num_latents(len(clip.audio) / clip.sample_rate))
        truth = centroid_track(clip.frames)
        for sigma in sigmas:
            generator = torch.Generator().manual_seed(seed)
            noisy_video = (1 - sigma) * video + sigma * torch.randn(video.shape, generator=generator)
            noisy_audio = (1 - sigma) * audio + sigma * torch.randn(audio.shape, generator=generator)
            # The scheduler shifts custom sigmas (s -> shift s / (1 + (shift - 1) s)): pass the unshifted value.
            out = pipe(
                clip.caption,
                latents=noisy_video,
                audio_latents=noisy_audio,
                guidance_scale=1.0,
                sigmas=[sigma / (shift - (shift - 1) * sigma)],
            )
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
        low = vae_reconstruction(pipe.vae, to_uint8(low.permute(0, 2, 3, 1).numpy()))
        out = refiner_pipe(
            truth.caption,
            video=low,
            audio=torch.from_numpy(truth.audio)[None, None],
            num_inference_steps=refiner_steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(seed),
        )
        upsampled = F.interpolate(torch.from_numpy(low).permute(0, 3, 1, 2), scale_factor=2, mode="bicubic")
        refined.append(psnr(out.frames[0], truth.frames / 255.0))
        bicubic.append(psnr(upsampled.clamp(0, 1).permute(0, 2, 3, 1).numpy(), truth.frames / 255.0))
    return {"refiner_psnr": float(np.mean(refined)), "bicubic_psnr": float(np.mean(bicubic))}


METRIC_ROWS = (
    ("audio_vae_pitch_kept", "audio VAE round trip: knocks keeping their pitch (target >= 98%)", "{:.1%}"),
    ("audio_vae_timbre_kept", "audio VAE round trip: knocks keeping their timbre (target >= 95%)", "{:.1%}"),
    ("audio_vae_rms_ratio", "audio VAE round trip: RMS ratio (target 0.8-1.25)", "{:.2f}"),
    ("video_vae_shape_iou", "video VAE round trip: shape IoU", "{:.3f}"),
    ("vae_bounces_kept", "video VAE round trip: bounces with a turn within one frame", "{:.1%}"),
    ("vae_bounces_kept_original_frames", "the same on the original frames (the tracker's ceiling)", "{:.1%}"),
    ("vae_bounces_kept_chance", "the same, chance (another clip's round trip)", "{:.1%}"),
    ("vae_turns_per_clip", "video VAE round trip: turns per clip", "{:.2f}"),
    ("vae_turns_per_clip_original", "turns per clip of the original frames", "{:.2f}"),
    ("vae_mid_box_reversals_per_clip", "video VAE round trip: mid-box reversals per clip (the world: 0)", "{:.2f}"),
    ("vae_jumps_per_clip", "video VAE round trip: jumps per clip (the world: 0)", "{:.2f}"),
    ("vae_frames_object_lost", "video VAE round trip: frames per clip without the object", "{:.2f}"),
    ("vae_shape_iou", "video VAE round trip: shape IoU (target >= 0.9)", "{:.3f}"),
    ("vae_size_ratio", "video VAE round trip: object radius / the world's", "{:.2f}"),
    ("vae_colour_kept", "video VAE round trip: colour kept", "{:.1%}"),
    ("vae_psnr_db", "video VAE round trip: PSNR (dB)", "{:.2f}"),
    ("adherence", "colour/shape adherence (target >= 95%)", "{:.1%}"),
    ("shape_iou", "shape fidelity: IoU with the world's shape fitted (target >= 0.85)", "{:.3f}"),
    ("object_radius_in_world_range", "objects sized within the world's range (+-10%)", "{:.1%}"),
    ("object_radius_ratio", "median object radius / the world's mean radius", "{:.2f}"),
    ("motion_jumps_per_clip", "object jumps per clip (teleports; the world makes none; target <= 0.1)", "{:.2f}"),
    ("clips_with_jumps", "clips with a jump", "{:.1%}"),
    ("mid_box_reversals_per_clip", "direction reversals away from the walls per clip (the world: 0)", "{:.2f}"),
    ("turns_per_clip", "direction reversals per clip, at walls or not (the world: about 1.2)", "{:.2f}"),
    ("sync_within_one_frame", "T2AV: turns (all) with an audio onset within 1 frame (target >= 70%)", "{:.1%}"),
    ("sync_within_one_frame_chance", "the same, onsets of another clip (chance)", "{:.1%}"),
    ("sync_at_wall_turns", "T2AV: turns at walls with an audio onset within 1 frame", "{:.1%}"),
    ("sync_at_wall_turns_chance", "the same, onsets of another clip (chance)", "{:.1%}"),
    ("sync_median_error_ms", "T2AV: mean abs(onset - bounce) per clip, median over clips", "{:.1f} ms"),
    ("silent_clips", "T2AV: clips without an audio onset", "{:.1%}"),
    ("onset_precision", "T2AV: onsets with a bounce within 1 frame", "{:.1%}"),
    ("onset_precision_chance", "the same, bounces of another clip (chance)", "{:.1%}"),
    ("knock_pitch_matches_shape", "T2AV: knock pitch matches the caption's shape (target >= 90%)", "{:.1%}"),
    ("knock_pitch_matches_shape_chance", "the same, against another clip's caption (chance)", "{:.1%}"),
    ("knock_timbre_matches_colour", "T2AV: knock timbre matches the caption's colour (target >= 80%)", "{:.1%}"),
    ("knock_timbre_matches_colour_chance", "the same, against another clip's caption (chance)", "{:.1%}"),
    ("v2a_within_one_frame", "video-to-audio: true bounces with an onset within 1 frame (target >= 90%)", "{:.1%}"),
    ("v2a_within_one_frame_chance", "the same, another clip's bounces (chance)", "{:.1%}"),
    ("v2a_precision", "video-to-audio: onsets with a true bounce within 1 frame", "{:.1%}"),
    (
        "a2v_within_one_frame",
        "audio-to-video: true bounces with a video bounce within 1 frame (target >= 80%)",
        "{:.1%}",
    ),
    ("a2v_within_one_frame_chance", "the same, another clip's bounces (chance)", "{:.1%}"),
    ("a2v_precision", "audio-to-video: video bounces with a true bounce within 1 frame", "{:.1%}"),
    ("extension_path_error_px", "extension (9 frames kept): centroid error over the next 4 frames", "{:.1f} px"),
    ("extension_straight_line_error_px", "the same, a straight line through the last two kept frames", "{:.1f} px"),
    ("extension_frozen_error_px", "the same, the object frozen at its last kept position", "{:.1f} px"),
    *(
        (f"x0_centroid_error_px@{sigma}", f"one-step x0 estimate at sigma {sigma}: object centroid error", "{:.1f} px")
        for sigma in PROBE_SIGMAS
    ),
    ("i2v_psnr_model", "I2V frame-0 PSNR vs VAE reconstruction, model's own prediction (target >= 30)", "{:.2f} dB"),
    ("i2v_psnr_preserved", "I2V frame-0 PSNR vs VAE reconstruction, known latents re-injected", "{:.2f} dB"),
    ("edit_psnr_preserved", "edit: unmasked-region PSNR, preserve_unmasked=True", "{:.2f} dB"),
    ("edit_psnr_model", "edit: unmasked-region PSNR, model's own prediction", "{:.2f} dB"),
    ("refiner_psnr", "Refiner 2x PSNR vs the 2x render (target > bicubic)", "{:.2f} dB"),
    ("bicubic_psnr", "bicubic 2x PSNR of the same low-res input", "{:.2f} dB"),
)


CACHES = ("pab", "fbc", "magcache", "fastercache", "taylorseer", "taylorseer_lite")


def cache_config(name: str, pipe, num_inference_steps: int = 30):
    """The Diffusers cache `name` with the settings `benchmarks/bench_cache.py` measures. MagCache's ratios are
    calibrated first with Diffusers' own calibration mode, on one T2AV call of `num_inference_steps`."""
    import torch
    from diffusers.hooks import (
        FasterCacheConfig,
        FirstBlockCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
        TaylorSeerCacheConfig,
    )

    current_timestep = lambda: pipe.current_timestep  # noqa: E731
    if name == "pab":
        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2,
            cross_attention_block_skip_range=3,
            current_timestep_callback=current_timestep,
        )
    if name == "fbc":
        return FirstBlockCacheConfig(threshold=0.05)
    if name == "magcache":
        return MagCacheConfig(
            mag_ratios=calibrated_mag_ratios(pipe, num_inference_steps), num_inference_steps=num_inference_steps
        )
    if name == "fastercache":
        return FasterCacheConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(-1, 681),
            unconditional_batch_skip_range=2,
            unconditional_batch_timestep_skip_range=(-1, 781),
            current_timestep_callback=current_timestep,
            attention_weight_callback=lambda _: 0.5,
            # every input that carries both guidance passes, the audio's included
            _unconditional_conditional_input_kwargs_identifiers=(
                "hidden_states",
                "encoder_hidden_states",
                "encoder_attention_mask",
                "timestep",
                "audio_hidden_states",
                "audio_timestep",
            ),
        )
    if name == "taylorseer":
        return TaylorSeerCacheConfig(cache_interval=3, disable_cache_before_step=3, taylor_factors_dtype=torch.float32)
    if name == "taylorseer_lite":
        return TaylorSeerCacheConfig(cache_interval=3, disable_cache_before_step=3, use_lite_mode=True)
    raise ValueError(f"`name` must be one of {CACHES}, got {name!r}.")


def calibrated_mag_ratios(pipe, num_inference_steps: int) -> list[float]:
    """MagCache's per-step magnitude ratios for this model: Diffusers' calibration mode prints them at the end of a
    call (its only output), so the printed list is read back."""
    import ast
    import contextlib
    import io

    import torch
    from diffusers.hooks import MagCacheConfig

    pipe.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=num_inference_steps))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            pipe(
                "<text>A red circle bounces in a box.</text><sfx>A knock on every bounce.</sfx>",
                num_inference_steps=num_inference_steps,
                generator=torch.Generator().manual_seed(0),
                output_type="latent",
            )
    finally:
        pipe.transformer.disable_cache()
    lists = [line for line in printed.getvalue().splitlines() if line.startswith("[")]
    return ast.literal_eval(lists[-1])


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
        from skyreels_diffusers.tiny_components import build_tiny_pipeline

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
    parser.add_argument("--seeds", type=int, default=50, help="how many seeds of the split")
    parser.add_argument(
        "--split",
        default="test",
        choices=["test", "dev"],
        help=f"test: seeds from {TEST_SEED} (reported numbers); dev: from {DEV_SEED} (diagnosis, tuning); "
        f"training clips use seeds from {TRAIN_SEED}",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--refiner_steps", type=int, default=10)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument(
        "--refiner_guidance_scale",
        type=float,
        default=1.0,
        help="1 (no guidance) keeps super-resolution closest to its input",
    )
    parser.add_argument("--audio_guidance_scale", type=float, default=None)
    parser.add_argument("--stg_scale", type=float, default=0.0, help="spatio-temporal guidance, both modalities")
    parser.add_argument("--stg_blocks", default="1", help="blocks STG perturbs, comma-separated")
    parser.add_argument("--modality_scale", type=float, default=1.0, help="modality guidance, both modalities")
    parser.add_argument("--guidance_rescale", type=float, default=0.0)
    parser.add_argument("--video_lead_steps", type=int, default=0)
    parser.add_argument("--tasks", default="components,t2av,cross_modal,extension,denoiser,conditioned,refiner")
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    parser.add_argument(
        "--video_vae",
        default=None,
        help="a video VAE folder whose round trip the `video_vae` task measures (default: the pipeline's VAE)",
    )
    parser.add_argument(
        "--cache",
        choices=("none", *CACHES),
        default="none",
        help="a Diffusers cache on the transformer for the T2AV task (the settings of benchmarks/bench_cache.py)",
    )
    args = parser.parse_args()

    import torch

    torch.set_grad_enabled(False)
    pipe, refiner = load_pipelines(args.model)
    first = TEST_SEED if args.split == "test" else DEV_SEED
    seeds = range(first, first + args.seeds)
    call_kwargs = {
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "audio_guidance_scale": args.audio_guidance_scale,
        "stg_scale": args.stg_scale,
        "spatio_temporal_guidance_blocks": [int(block) for block in args.stg_blocks.split(",")],
        "modality_scale": args.modality_scale,
        "guidance_rescale": args.guidance_rescale,
    }
    tasks = args.tasks.split(",")
    metrics = {
        "seeds": f"{seeds.start}-{seeds.stop - 1}",
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "video_lead_steps": args.video_lead_steps,
        "refiner_guidance_scale": args.refiner_guidance_scale,
        "stg_scale": args.stg_scale,
        "stg_blocks": args.stg_blocks,
        "modality_scale": args.modality_scale,
        "guidance_rescale": args.guidance_rescale,
    }
    if "components" in tasks:
        metrics.update(evaluate_components(pipe, seeds))
    if "video_vae" in tasks:
        from diffusers import AutoModel

        vae = AutoModel.from_pretrained(args.video_vae) if args.video_vae else pipe.vae
        metrics["video_vae"] = args.video_vae or "the pipeline's"
        size, fps = pipe.config.default_height, int(pipe.transformer.config.fps)
        metrics.update(evaluate_video_vae(vae, seeds, pipe.config.default_num_frames, size, fps))
    if "t2av" in tasks:
        if args.cache != "none":
            pipe.transformer.enable_cache(cache_config(args.cache, pipe, args.steps))
            metrics["cache"] = args.cache
        metrics.update(evaluate_t2av(pipe, seeds, {**call_kwargs, "video_lead_steps": args.video_lead_steps}))
        if args.cache != "none":
            pipe.transformer.disable_cache()
    if "cross_modal" in tasks:
        metrics.update(evaluate_cross_modal(pipe, seeds, call_kwargs))
    if "extension" in tasks:
        metrics.update(evaluate_extension(pipe, seeds, call_kwargs))
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
