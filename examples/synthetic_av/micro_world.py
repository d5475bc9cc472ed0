"""The micro audio-visual world and micro joint model, in latent space (no VAE): the smallest setting in which the
joint recipe can be tested end to end on one CPU thread in about a minute.

A bright dot moves in an 8x8 frame and bounces off the walls; the audio latents carry a click (a spike on channel 0)
at the latent where each bounce happens. Video runs at 16 fps and audio at 32 latents per second, so one frame spans
two audio latents. `tests/test_learnability.py` trains on it (video-to-audio); `micro_motion_probe.py` asks what the
model learns about motion (text-to-video).
"""

import numpy as np
import torch

from skyreels_diffusers import SkyReelsV4Transformer3DModel


FRAMES, GRID, FPS, AUDIO_PER_FRAME = 16, 8, 16, 2
CHANNELS, AUDIO_CHANNELS, TEXT_DIM = 4, 2, 8
SPEED_RANGE = (0.5, 0.9)  # cells per frame, per axis: a few bounces per clip; the dot is about one cell wide


def micro_clip(
    seed: int, num_frames: int = FRAMES, speed_range: tuple[float, float] = SPEED_RANGE
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Video latents `(C, F, 8, 8)`, audio latents `(C_a, 2F)` and the bounce times in frames."""
    rng = np.random.default_rng(seed)
    position = rng.uniform(1, GRID - 1, 2)
    velocity = rng.choice([-1, 1], 2) * rng.uniform(*speed_range, 2)
    rows, cols = np.mgrid[0:GRID, 0:GRID] + 0.5
    video, bounces = np.empty((num_frames, GRID, GRID), np.float32), []
    for frame in range(num_frames):
        video[frame] = np.exp(-((cols - position[0]) ** 2 + (rows - position[1]) ** 2) / 0.8)
        new = position + velocity
        for axis in range(2):
            for wall in (0.5, GRID - 0.5):
                if (new[axis] - wall) * (position[axis] - wall) < 0:
                    bounces.append(frame + (wall - position[axis]) / velocity[axis])
                    new[axis] = 2 * wall - new[axis]
                    velocity[axis] = -velocity[axis]
        position = new
    audio = np.zeros((AUDIO_CHANNELS, num_frames * AUDIO_PER_FRAME), np.float32)
    for time in bounces:
        audio[0, min(int(time * AUDIO_PER_FRAME), audio.shape[1] - 1)] = 3.0
    video = np.repeat(video[None] * 4 - 1, CHANNELS, axis=0)  # the dot on every channel, background at -1
    return torch.from_numpy(video), torch.from_numpy(audio), sorted(bounces)


def bounce_path(start: np.ndarray, velocity: np.ndarray, num_frames: int) -> np.ndarray:
    """Closed form of `micro_clip`'s motion along one axis: positions `(..., num_frames)` of paths starting at `start`
    with `velocity` (cells per frame, arrays of one shape), reflected at the walls 0.5 and GRID - 0.5."""
    span = GRID - 1.0
    unfolded = np.mod(start[..., None] - 0.5 + velocity[..., None] * np.arange(num_frames), 2 * span)
    return 0.5 + np.where(unfolded <= span, unfolded, 2 * span - unfolded)


def fit_path(track: np.ndarray, speed_range: tuple[float, float] = SPEED_RANGE) -> tuple[np.ndarray, list[float]]:
    """The world path nearest to a `(F, 2)` track (least squares over a fine grid of starts and speeds, each axis on
    its own as the world moves them); returns its positions `(F, 2)` and its bounce times in frames."""
    starts, speeds = np.meshgrid(np.arange(0.5, GRID - 0.5 + 1e-9, 0.02), np.arange(*speed_range, 0.005))
    starts, velocities = np.concatenate([starts.ravel()] * 2), np.concatenate([speeds.ravel(), -speeds.ravel()])
    paths = bounce_path(starts, velocities, len(track))
    fitted, bounces, span = np.empty_like(track), [], GRID - 1.0
    for axis in range(2):
        best = int(np.argmin(((paths - track[:, axis]) ** 2).sum(1)))
        fitted[:, axis] = paths[best]
        # Wall hits: where the unfolded path start - 0.5 + v t crosses a multiple of the span between the walls.
        offset, velocity = starts[best] - 0.5, velocities[best]
        crossings = np.arange(-2 * len(track), 2 * len(track) + 1) * span
        times = (crossings - offset) / velocity
        bounces += [float(t) for t in times if 0 < t < len(track) - 1]
    return fitted, sorted(bounces)


def micro_model(
    patch_size: int = 4,
    rope_axes_dim: tuple[int, int, int] = (4, 6, 6),
    num_layers: int = 1,
    num_single_layers: int = 1,
    num_attention_heads: int = 4,
) -> SkyReelsV4Transformer3DModel:
    """The micro joint model; `rope_axes_dim` (time, height, width) sums to the head dim."""
    torch.manual_seed(0)
    return SkyReelsV4Transformer3DModel(
        in_channels=2 * CHANNELS + 1,
        out_channels=CHANNELS,
        audio_in_channels=AUDIO_CHANNELS,
        num_attention_heads=num_attention_heads,
        attention_head_dim=sum(rope_axes_dim),
        num_layers=num_layers,
        num_single_layers=num_single_layers,
        num_token_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=patch_size,
        text_embed_dim=TEXT_DIM,
        rope_axes_dim=rope_axes_dim,
        fps=FPS,
        vae_temporal_compression_ratio=1,
        audio_sample_rate=FPS * AUDIO_PER_FRAME * 100,
        audio_samples_per_latent=100,
        cross_modal_attention_heads=num_attention_heads,
    )
