"""A procedural audio-visual world for training and checking SkyReels-V4 end to end.

Coloured shapes move and bounce inside a box; every wall hit makes a short decaying tone whose pitch depends on
the shape and whose timbre (harmonics) depends on the colour. Captions use the structured tags. Everything is
deterministic from a seed, and the exact bounce times are returned, so audio-video sync can be measured.

    python examples/synthetic_av/world.py --out data/synthetic --num_clips 200 --seed 0

writes `data/synthetic/clips/*.mp4` (H.264 + AAC) and `data/synthetic/manifest.jsonl`
(`{"video": ..., "caption": ..., "seed": ..., "bounces": [[seconds, object], ...]}`).
"""

import argparse
import json
import os
from dataclasses import dataclass, field

import numpy as np


SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 50, 50), "green": (50, 200, 70), "blue": (60, 100, 235), "yellow": (235, 215, 50)}
PITCH_HZ = {"circle": 330.0, "square": 440.0, "triangle": 587.0}  # low, middle, high
PITCH_WORD = {"circle": "low", "square": "mid-pitched", "triangle": "high"}
# Relative amplitudes of harmonics 1..4: one timbre per colour.
TIMBRE = {
    "red": (1.0, 0.0, 0.0, 0.0),
    "green": (1.0, 0.5, 0.0, 0.0),
    "blue": (1.0, 0.0, 0.4, 0.0),
    "yellow": (1.0, 0.3, 0.3, 0.3),
}
TIMBRE_WORD = {"red": "pure", "green": "warm", "blue": "hollow", "yellow": "bright"}
BACKGROUND = (30, 30, 34)
RADIUS_RANGE = (0.12, 0.18)  # in box sizes
SPEED_RANGE = (0.35, 0.6)  # per axis, in box sizes per second: fast enough to hit walls a few times in two seconds
TONE_SECONDS, TONE_DECAY_SECONDS = 0.12, 0.03


@dataclass
class Clip:
    """One clip: `frames` `(F, H, W, 3)` uint8, mono `audio` `(samples,)` float32 in [-1, 1], and the ground truth."""

    frames: np.ndarray
    audio: np.ndarray
    fps: int
    sample_rate: int
    caption: str
    objects: list[dict]
    bounces: list[tuple[float, int]] = field(default_factory=list)  # (seconds, object index)


def shape_mask(shape: str, center: np.ndarray, radius: float, size: int) -> np.ndarray:
    """Boolean `(size, size)` mask of one shape (rows = y, columns = x)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = y - center[1], x - center[0]
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= radius * 0.85
    # An upward triangle: inside the bounding box and below both slanted edges.
    return (dy <= radius * 0.8) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) * 0.6)


def knock(shape: str, colour: str, sample_rate: int) -> np.ndarray:
    """The sound of one wall hit: a decaying tone, pitch from the shape, harmonics (timbre) from the colour."""
    t = np.arange(int(TONE_SECONDS * sample_rate)) / sample_rate
    tone = sum(
        weight * np.sin(2 * np.pi * PITCH_HZ[shape] * (harmonic + 1) * t)
        for harmonic, weight in enumerate(TIMBRE[colour])
    )
    return (0.5 * tone / sum(TIMBRE[colour]) * np.exp(-t / TONE_DECAY_SECONDS)).astype(np.float32)


def add_knock(audio: np.ndarray, seconds: float, shape: str, colour: str, sample_rate: int) -> None:
    """Mix one knock into `audio` (mono, in place) starting at `seconds`."""
    tone = knock(shape, colour, sample_rate)
    start = int(round(seconds * sample_rate))
    end = min(len(audio), start + len(tone))
    audio[start:end] += tone[: end - start]


def render_clip(
    seed: int,
    num_frames: int = 33,
    size: int = 64,
    fps: int = 16,
    sample_rate: int = 44100,
    num_objects: int = 1,
) -> Clip:
    """Simulate and render one clip. Motion is integrated per frame with exact wall-hit times inside the frame."""
    rng = np.random.default_rng(seed)
    objects = []
    for _ in range(num_objects):
        radius = float(rng.uniform(*RADIUS_RANGE) * size)
        objects.append(
            {
                "shape": SHAPES[rng.integers(len(SHAPES))],
                "colour": list(COLOURS)[rng.integers(len(COLOURS))],
                "radius": radius,
                "position": rng.uniform(radius, size - radius, 2),
                "velocity": rng.choice([-1, 1], 2) * rng.uniform(*SPEED_RANGE, 2) * size / fps,
            }
        )

    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    bounces = []
    for frame_index in range(num_frames):
        canvas = np.empty((size, size, 3), dtype=np.uint8)
        canvas[:] = BACKGROUND
        for index, obj in enumerate(objects):
            canvas[shape_mask(obj["shape"], obj["position"], obj["radius"], size)] = COLOURS[obj["colour"]]
            # Advance to the next frame; a wall hit at fraction `f` of the step happens at time (frame + f) / fps.
            position, velocity, radius = obj["position"], obj["velocity"], obj["radius"]
            new_position = position + velocity
            for axis in range(2):
                for wall in (radius, size - radius):
                    crossing = (new_position[axis] - wall) * (position[axis] - wall) < 0 or new_position[axis] == wall
                    if crossing:
                        fraction = (wall - position[axis]) / velocity[axis]
                        bounces.append(((frame_index + fraction) / fps, index))
                        new_position[axis] = 2 * wall - new_position[axis]
                        velocity[axis] = -velocity[axis]
            obj["position"] = new_position
        frames[frame_index] = canvas
    bounces = sorted(b for b in bounces if b[0] < num_frames / fps)

    audio = np.zeros(int(round(num_frames / fps * sample_rate)), dtype=np.float32)
    for seconds, index in bounces:
        add_knock(audio, seconds, objects[index]["shape"], objects[index]["colour"], sample_rate)
    audio = np.clip(audio, -1, 1)

    caption = " ".join(
        f"<text>A {o['colour']} {o['shape']} bounces around a dark box.</text>"
        f"<sfx>A {TIMBRE_WORD[o['colour']]} {PITCH_WORD[o['shape']]} knock each time it hits a wall.</sfx>"
        for o in objects
    )
    meta = [{"shape": o["shape"], "colour": o["colour"], "radius": o["radius"]} for o in objects]
    return Clip(frames, audio, fps, sample_rate, caption, meta, bounces)


def write_dataset(out_dir: str, num_clips: int, seed: int = 0, **clip_kwargs) -> str:
    """Render `num_clips` clips as MP4 files (H.264 + AAC) and a JSONL manifest; returns the manifest path."""
    from skyreels_diffusers.utils.media import export_to_video_with_audio

    os.makedirs(os.path.join(out_dir, "clips"), exist_ok=True)
    manifest = os.path.join(out_dir, "manifest.jsonl")
    with open(manifest, "w", encoding="utf-8") as f:
        for offset in range(num_clips):
            clip = render_clip(seed + offset, **clip_kwargs)
            name = os.path.join("clips", f"{seed + offset:06d}.mp4")
            export_to_video_with_audio(
                clip.frames,
                os.path.join(out_dir, name),
                fps=clip.fps,
                audio=clip.audio,
                audio_sample_rate=clip.sample_rate,
            )
            record = {"video": name, "caption": clip.caption, "seed": seed + offset, "objects": clip.objects}
            record["bounces"] = [[round(s, 6), i] for s, i in clip.bounces]
            f.write(json.dumps(record) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--num_clips", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_frames", type=int, default=33)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    path = write_dataset(args.out, args.num_clips, args.seed, num_frames=args.num_frames, size=args.size)
    print(f"wrote {args.num_clips} clips and {path}")


if __name__ == "__main__":
    main()
