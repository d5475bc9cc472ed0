"""One interface over the Diffusers VAEs the pipelines accept, reading every ratio and statistic from their configs.

Video: `AutoencoderKLHunyuanVideo15` (scaling factor) and `AutoencoderKLWan` (per-channel mean/std), both with 4x
causal temporal compression, or an image `AutoencoderKL` applied to every frame (no temporal compression; the tiny
default model uses one). Audio: `MMAudioVAE` (mel latents, decoded to a waveform by `MMAudioVocoder`) and
`AutoencoderOobleck` (waveform latents, no vocoder).
"""

import math
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, AutoencoderOobleck, MMAudioVAE
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution


@dataclass(frozen=True)
class VideoVAESpec:
    temporal_compression: int
    spatial_compression: int
    latent_channels: int


@dataclass(frozen=True)
class AudioVAESpec:
    sample_rate: int
    samples_per_latent: int
    latent_channels: int
    audio_channels: int

    def num_latents(self, seconds: float) -> int:
        """Audio latents covering `seconds` (the decoded waveform is trimmed back to it)."""
        return math.ceil(seconds * self.sample_rate / self.samples_per_latent)


def is_per_frame_vae(vae) -> bool:
    """An image `AutoencoderKL` applied to every frame alone (no temporal compression)."""
    return isinstance(vae, AutoencoderKL)


def video_vae_spec(vae) -> VideoVAESpec:
    config = vae.config
    if is_per_frame_vae(vae):  # each down block but the last halves H and W
        return VideoVAESpec(1, 2 ** (len(config.block_out_channels) - 1), config.latent_channels)
    temporal = getattr(config, "temporal_compression_ratio", None) or getattr(config, "scale_factor_temporal", None)
    spatial = getattr(config, "spatial_compression_ratio", None) or getattr(config, "scale_factor_spatial", None)
    channels = getattr(config, "latent_channels", None) or getattr(config, "z_dim", None)
    if not (temporal and spatial and channels):
        raise TypeError(
            f"`vae` must be a Diffusers video VAE whose config gives temporal/spatial compression and latent channels "
            f"(e.g. AutoencoderKLHunyuanVideo15, AutoencoderKLWan) or an image AutoencoderKL, got {type(vae).__name__}."
        )
    return VideoVAESpec(int(temporal), int(spatial), int(channels))


def _video_latent_stats(vae, latents: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """(shift, scale) with `normalized = (raw - shift) * scale`, from per-channel statistics or a scaling factor."""
    config = vae.config
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(shape)
        std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(shape)
        return mean, 1.0 / std
    return getattr(config, "shift_factor", None) or 0.0, getattr(config, "scaling_factor", None) or 1.0


def encode_video(vae, video: torch.Tensor) -> torch.Tensor:
    """Pixels `(B, 3, F, H, W)` in [-1, 1] -> normalized latents `(B, C, (F-1)/t+1, H/s, W/s)` (posterior mode).

    Samples go through the VAE one at a time: `AutoencoderKLHunyuanVideo15` (diffusers 0.42) fails on batches > 1,
    and per-sample passes also bound the VAE's peak memory."""
    video = video.to(device=vae.device, dtype=vae.dtype)
    if is_per_frame_vae(vae):
        latents = _per_frame(lambda frames: vae.encode(frames).latent_dist.mode(), video)
    else:
        latents = torch.cat([vae.encode(sample[None]).latent_dist.mode() for sample in video])
    shift, scale = _video_latent_stats(vae, latents)
    return (latents - shift) * scale


def decode_video(vae, latents: torch.Tensor) -> torch.Tensor:
    """Normalized latents -> pixels `(B, 3, F, H, W)` in [-1, 1], one sample at a time (see `encode_video`)."""
    latents = latents.to(device=vae.device, dtype=vae.dtype)
    shift, scale = _video_latent_stats(vae, latents)
    latents = latents / scale + shift
    if is_per_frame_vae(vae):
        return _per_frame(lambda frames: vae.decode(frames).sample, latents).clamp(-1, 1)
    return torch.cat([vae.decode(sample[None]).sample for sample in latents]).clamp(-1, 1)


def _per_frame(function, video: torch.Tensor) -> torch.Tensor:
    """Apply an image function to every frame of `(B, C, F, H, W)`, frames of one sample at a time."""
    return torch.stack([function(sample.movedim(1, 0)).movedim(0, 1) for sample in video])


def audio_vae_spec(audio_vae) -> AudioVAESpec:
    if isinstance(audio_vae, MMAudioVAE):
        config = audio_vae.config
        # MMAudio's encoder halves the mel frame rate once, hence two mel hops per latent.
        return AudioVAESpec(config.sample_rate, audio_vae.latent_hop_length, config.latent_channels, 1)
    if isinstance(audio_vae, AutoencoderOobleck):
        config = audio_vae.config
        return AudioVAESpec(
            config.sampling_rate, audio_vae.hop_length, config.decoder_input_channels, config.audio_channels
        )
    raise TypeError(
        f"`audio_vae` must be a diffusers MMAudioVAE (with an MMAudioVocoder) or AutoencoderOobleck, got "
        f"{type(audio_vae).__name__}."
    )


def encode_audio(audio_vae, waveform: torch.Tensor) -> torch.Tensor:
    """Waveform `(B, channels, samples)` in [-1, 1] at the VAE's rate -> normalized latents `(B, C_a, L)`."""
    waveform = waveform.to(device=audio_vae.device, dtype=audio_vae.dtype)
    if isinstance(audio_vae, MMAudioVAE):
        return _mmaudio_encode(audio_vae, waveform.mean(dim=1)) * audio_vae.config.scaling_factor  # MMAudio is mono
    return audio_vae.encode(waveform).latent_dist.mode()


def _mmaudio_encode(audio_vae: MMAudioVAE, waveform: torch.Tensor) -> torch.Tensor:
    """`MMAudioVAE.encode(waveform).latent_dist.mode()`, also in half precision: `torch.stft` has no bfloat16 kernel
    (nor float16 on CPU), so a half-precision VAE computes its mel front end on float32 copies of the front end's
    buffers (the module itself is not changed) and encodes the mel in its own dtype."""
    if audio_vae.dtype in (torch.float32, torch.float64):
        return audio_vae.encode(waveform).latent_dist.mode()
    front_end = audio_vae.mel_converter
    buffers = {name: buffer.float() for name, buffer in front_end.named_buffers()}
    mel = torch.func.functional_call(front_end, buffers, (waveform.float(),))
    return DiagonalGaussianDistribution(audio_vae.vae.encode(mel.to(audio_vae.dtype))).mode()


def encode_audio_track(audio_vae, waveform: torch.Tensor, num_latents: int) -> torch.Tensor:
    """A soundtrack `(B, channels, samples)` at the VAE's rate -> exactly `num_latents` latents `(B, C_a, L)`: the
    waveform is padded with silence (or cut) to whole latents first, so a track of any length lines up with the
    audio latents the transformer generates for the same duration."""
    num_samples = num_latents * audio_vae_spec(audio_vae).samples_per_latent
    waveform = torch.nn.functional.pad(waveform, (0, max(0, num_samples - waveform.shape[-1])))
    return encode_audio(audio_vae, waveform[..., :num_samples])


def decode_audio(audio_vae, vocoder, latents: torch.Tensor) -> torch.Tensor:
    """Normalized latents `(B, C_a, L)` -> waveform `(B, channels, samples)`."""
    latents = latents.to(device=audio_vae.device, dtype=audio_vae.dtype)
    if isinstance(audio_vae, MMAudioVAE):
        if vocoder is None:
            raise ValueError("`vocoder` is required to turn MMAudioVAE mel spectrograms into a waveform; got None.")
        mel = audio_vae.decode(latents / audio_vae.config.scaling_factor).sample
        waveform = vocoder(mel.to(device=vocoder.device, dtype=vocoder.dtype)).sample
    else:
        waveform = audio_vae.decode(latents).sample
    return waveform.unsqueeze(1) if waveform.ndim == 2 else waveform
