"""The micro audio-visual world and micro joint model, in latent space (no VAE): the smallest setting in which the
joint recipe can be tested end to end on one CPU thread in about a minute; and the recipe that trains it on text
alone (`train_micro`) and samples both streams from noise with the pipelines' own loop (`generate_micro`).

A bright dot moves in an 8x8 frame and bounces off the walls; the audio latents carry a click (a spike on channel 0)
at the latent where each bounce happens. Video runs at 16 fps and audio at 32 latents per second, so one frame spans
two audio latents. `tests/test_learnability.py` trains on it (video-to-audio); `micro_motion_probe.py` asks what the
model learns about motion (text-to-video).
"""

import functools

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from skyreels_diffusers import SkyReelsV4Transformer3DModel
from skyreels_diffusers.pipelines.denoising import LatentStream, PassInputs, denoise


FRAMES, GRID, FPS, AUDIO_PER_FRAME = 16, 8, 16, 2
CHANNELS, AUDIO_CHANNELS, TEXT_DIM = 4, 2, 8
SPEED_RANGE = (0.5, 0.9)  # cells per frame, per axis: a few bounces per clip; the dot is about one cell wide
PROMPT = torch.randn(1, 4, TEXT_DIM, generator=torch.Generator().manual_seed(0))  # the one caption of the world


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


@functools.lru_cache(maxsize=8)
def path_bank(speed_range: tuple[float, float], num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every world path along one axis on a fine grid of starts (0.02 cells) and speeds (0.005 cells per frame, both
    directions) within `speed_range`: `(starts, velocities, paths (N, num_frames))`, made once per range and length."""
    starts, speeds = np.meshgrid(np.arange(0.5, GRID - 0.5 + 1e-9, 0.02), np.arange(*speed_range, 0.005))
    starts, velocities = np.concatenate([starts.ravel()] * 2), np.concatenate([speeds.ravel(), -speeds.ravel()])
    return starts, velocities, bounce_path(starts, velocities, num_frames)


def fit_path(track: np.ndarray, speed_range: tuple[float, float] = SPEED_RANGE) -> tuple[np.ndarray, list[float]]:
    """The world path nearest to a `(F, 2)` track (least squares over `path_bank`, each axis on its own as the world
    moves them); returns its positions `(F, 2)` and its bounce times in frames."""
    starts, velocities, paths = path_bank(tuple(speed_range), len(track))
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


def fit_generated(track: np.ndarray, speed_range: tuple[float, float]) -> tuple[np.ndarray, list[float]]:
    """`fit_path` for a generated track: speeds within 10% of the world's `speed_range`."""
    low, high = speed_range
    return fit_path(track, (max(0.0, 0.9 * low), 1.1 * high + 0.01))


def track(video: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the centroid of the 3x3 cells around the brightest one, and that peak."""
    image = video.mean(0).numpy()
    rows, cols = np.mgrid[0:GRID, 0:GRID] + 0.5
    positions, peaks = [], []
    for frame in image:
        r, c = np.unravel_index(frame.argmax(), frame.shape)
        weight = np.clip(frame + 1, 0, None) * ((np.abs(rows - r - 0.5) <= 1.5) & (np.abs(cols - c - 0.5) <= 1.5))
        positions.append([(weight * cols).sum() / weight.sum(), (weight * rows).sum() / weight.sum()])
        peaks.append(frame.max())
    return np.array(positions), np.array(peaks)


def motion(positions: np.ndarray, peaks: np.ndarray, fitted: np.ndarray) -> dict:
    """Reversals, jumps and faint frames of a track, and its residual from `fitted`, the nearest world path
    (`fit_generated`): RMS and largest per frame, in cells; coherent when the largest is at most one cell and
    nothing jumps."""
    steps = np.diff(positions, axis=0)
    residual = np.linalg.norm(positions - fitted, axis=1)
    jumps = int((np.linalg.norm(steps, axis=1) > 2.0).sum())
    reversals = away = 0
    for axis in range(2):
        moving = np.abs(steps[:, axis]) > 0.1
        flips = moving[1:] & moving[:-1] & (np.sign(steps[1:, axis]) != np.sign(steps[:-1, axis]))
        reversals += int(flips.sum())
        away += int((flips & (np.abs(positions[1:-1, axis] - GRID / 2) < GRID / 2 - 1.5)).sum())
    return {
        "reversals": reversals,
        "reversals_away_from_walls": away,
        "jumps": jumps,
        "faint_frames": int((peaks < 0.0).sum()),
        "path_rms_residual": float(np.sqrt((residual**2).mean())),
        "path_max_residual": float(residual.max()),
        "coherent": float(residual.max() <= 1.0 and jumps == 0),
    }


def wall_contacts(positions: np.ndarray, margin: float = 1.2) -> list[float]:
    """Frames where a track touches a wall: per axis, a local extreme of the position within `margin` cells of the
    wall it faces. A generated clip's own wall contacts, without fitting a world path to it (on world clips they
    find the bounces: `micro_t2av.score` reports how well)."""
    contacts = []
    for axis in range(2):
        x = positions[:, axis]
        middle = x[1:-1]
        peak = (middle >= x[:-2]) & (middle >= x[2:]) & (middle > GRID - 0.5 - margin)
        trough = (middle <= x[:-2]) & (middle <= x[2:]) & (middle < 0.5 + margin)
        contacts += [float(k + 1) for k in np.nonzero(peak | trough)[0]]
    return sorted(contacts)


def click_onsets(audio: torch.Tensor) -> list[float]:
    """Frames of the clicks in audio latents `(C_a, L)`: latents whose channel 0 rises above half a click, one per
    run."""
    above = (audio[0] > 1.5).numpy()
    return [index / AUDIO_PER_FRAME for index in np.nonzero(above & ~np.roll(above, 1))[0]]


def within_one_frame(targets: list[float], found: list[float]) -> list[bool]:
    """For each target time (frames), whether any of `found` lies within one frame of it."""
    return [any(abs(time - target) <= 1 for time in found) for target in targets]


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


def video_input(latents: torch.Tensor) -> torch.Tensor:
    """The video tower's input when video is generated from text: latents, an empty condition and a zero mask."""
    return torch.cat([latents, torch.zeros_like(latents), torch.zeros_like(latents[:, :1])], dim=1)


def without_temporal_rope(model: SkyReelsV4Transformer3DModel) -> SkyReelsV4Transformer3DModel:
    """The ablation of the video's temporal RoPE: every frame's tokens at temporal position 0, so nothing but their
    content tells the frames apart (the audio keeps its positions)."""
    positions = model.video_positions

    def video_positions(*args, **kwargs):
        time_height_width = positions(*args, **kwargs)
        return torch.cat([torch.zeros_like(time_height_width[:, :1]), time_height_width[:, 1:]], dim=1)

    model.video_positions = video_positions
    return model


def train_micro(
    model: SkyReelsV4Transformer3DModel,
    steps: int,
    *,
    audio: bool = True,
    frames: int = FRAMES,
    speed_range: tuple[float, float] = SPEED_RANGE,
    batch_size: int = 16,
    lr: float = 5e-3,
    ema: float = 0.0,
    independent_noise: float = 0.3,
    train_shift: float = 1.0,
    image_steps: int = 0,
    log_every: int = 0,
) -> SkyReelsV4Transformer3DModel:
    """Text-to-video (`audio=False`) or text-to-audio-video training on world clips (training seeds from 0): every
    generated stream noised to a sigma drawn uniformly and then shifted by `train_shift` (the audio's drawn on its own
    for `independent_noise` of the samples), velocity loss on each, AdamW one-cycle. Parameters that do not require
    grad stay as they are (the cross-modal ablation). The first `image_steps` train on single frames (text-to-image,
    video only). Returns the model in eval mode, or its EMA (decay `ema`) when `ema` > 0."""
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=lr, fused=True)  # one kernel for all parameters: 5x faster on CPU
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    average = None
    if ema:
        average = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema)
        )
    generator = torch.Generator().manual_seed(1)

    def draw_sigma() -> torch.Tensor:
        uniform = torch.rand(batch_size, generator=generator)
        return train_shift * uniform / (1 + (train_shift - 1) * uniform)

    model.train()
    for step in range(steps):
        num_frames = 1 if step < image_steps else frames
        clips = [
            micro_clip(seed, num_frames, speed_range) for seed in range(step * batch_size, (step + 1) * batch_size)
        ]
        video = torch.stack([clip[0] for clip in clips])
        sigma = draw_sigma()
        noise = torch.randn(video.shape, generator=generator)
        inputs = {
            "hidden_states": video_input(
                (1 - sigma.view(-1, 1, 1, 1, 1)) * video + sigma.view(-1, 1, 1, 1, 1) * noise
            ),
            "timestep": sigma * 1000,
            "encoder_hidden_states": PROMPT.expand(batch_size, -1, -1),
        }
        with_audio = audio and num_frames > 1
        if with_audio:
            sound = torch.stack([clip[1] for clip in clips])
            independent = torch.rand(batch_size, generator=generator) < independent_noise
            audio_sigma = torch.where(independent, draw_sigma(), sigma)
            audio_noise = torch.randn(sound.shape, generator=generator)
            inputs["audio_hidden_states"] = (1 - audio_sigma.view(-1, 1, 1)) * sound + audio_sigma.view(
                -1, 1, 1
            ) * audio_noise
            inputs["audio_timestep"] = audio_sigma * 1000
        output = model(**inputs)
        loss = torch.nn.functional.mse_loss(output.sample, noise - video)
        if with_audio:
            loss = loss + torch.nn.functional.mse_loss(output.audio_sample, audio_noise - sound)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if average is not None:
            average.update_parameters(model)
        if log_every and step % log_every == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
    return (model if average is None else average.module).eval()


def seeded_noise(generators: list[torch.Generator], *shape: int) -> torch.Tensor:
    """One noise sample of `shape` per generator, stacked: each clip's noise comes from its own seed, whatever batch
    it is sampled in."""
    return torch.cat([torch.randn(1, *shape, generator=generator) for generator in generators])


def generate_micro(
    model: SkyReelsV4Transformer3DModel,
    seeds: list[int],
    *,
    audio: bool = True,
    frames: int = FRAMES,
    steps: int = 20,
    shift: float = 1.0,
    video_lead_steps: int = 0,
    video: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One clip per seed from noise, in one batch, through `pipelines/denoising.denoise` (Euler, no guidance): video
    latents `(B, C, F, 8, 8)` and, with `audio`, audio latents `(B, C_a, F * AUDIO_PER_FRAME)`. Each clip's noise
    comes from its own seed, so a clip does not depend on the others in its batch. `video_lead_steps` starts the
    audio that many steps after the video, as the pipeline's argument of that name does. Given clean videos
    `(B, C, F, 8, 8)` are held at timestep 0 (as training saw a video at sigma 0) and only the audio is generated:
    video-to-audio."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    noise = seeded_noise(generators, CHANNELS, frames, GRID, GRID)

    def stream(name, latents, inputs, output, timestep, **options):
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps(steps)
        return LatentStream(
            name, latents, inputs, output, timestep, scheduler=scheduler, timesteps=scheduler.timesteps, **options
        )

    if video is None:
        streams = [
            stream("latents", noise, "hidden_states", "sample", "timestep", condition=video_input(noise)[:, CHANNELS:])
        ]
    else:
        if video.shape[0] != len(seeds):
            raise ValueError(f"`video` must hold one clip per seed ({len(seeds)}), got shape {tuple(video.shape)}.")
        streams = [
            LatentStream(
                "latents", video, "hidden_states", "sample", "timestep", condition=video_input(video)[:, CHANNELS:]
            )
        ]
    if audio:
        audio_noise = seeded_noise(generators, AUDIO_CHANNELS, frames * AUDIO_PER_FRAME)
        streams.append(
            stream(
                "audio_latents",
                audio_noise,
                "audio_hidden_states",
                "audio_sample",
                "audio_timestep",
                start=video_lead_steps,
            )
        )
    prompt = PROMPT.expand(len(seeds), -1, -1)
    with torch.no_grad():
        out = denoise(model, streams, PassInputs({"encoder_hidden_states": prompt}))
    return out["latents"], out["audio_latents"] if audio else None
