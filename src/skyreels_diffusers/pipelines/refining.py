# Copyright 2026 The skyreels-diffusers authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""The steps of the SkyReels-V4 Refiner as plain functions, shared by `SkyReelsV4RefinerPipeline` and the modular
Refiner blocks. Like `generation.py`, each takes `components`: a pipeline holding the components as attributes.
"""

from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from ..models.attention_video_sparse import VSA_BACKENDS
from .conditioning import build_refiner_condition, latent_frame_index
from .generation import (
    audio_spec_from_transformer,
    check_call_settings,
    check_prompt_inputs,
    decode_audio_latents,
    decode_video_latents,
    format_outputs,
)
from .preprocessing import check_frame_list, frame_size, frames_to_tensor, pixels_for_vae
from .vae_utils import encode_audio_track, encode_video
from .validation import check_choice, check_finite_tensor, check_int, check_number, check_video_work, describe


def check_refiner_inputs(
    components,
    prompt,
    negative_prompt,
    prompt_embeds,
    prompt_attention_mask,
    negative_prompt_embeds,
    negative_prompt_attention_mask,
    low_res_latents,
    video,
    keyframes,
    keyframe_indices,
    audio,
    audio_latents,
    scale_factor,
    num_inference_steps,
    sigmas,
    strength,
    guidance_scale,
    sparsity,
    vsa_backend,
    generator,
    output_type,
    return_dict,
    attention_kwargs,
    callback_on_step_end,
    callback_on_step_end_tensor_inputs,
    max_sequence_length,
) -> int:
    """Every argument, checked before any work and within `components.limits`; returns the batch size."""
    limits = components.limits
    batch_size = check_prompt_inputs(
        components,
        prompt,
        negative_prompt,
        prompt_embeds,
        prompt_attention_mask,
        negative_prompt_embeds,
        negative_prompt_attention_mask,
    )
    if batch_size > limits.max_batch:
        raise ValueError(f"{batch_size} prompts; the limit is {limits.max_batch} (`pipe.limits.max_batch`).")
    if (low_res_latents is None) == (video is None):
        raise ValueError(
            "Pass exactly one of `low_res_latents` (base pass output) or `video` (frames to refine); got "
            + ("both." if video is not None else "neither.")
        )
    scale_factor = check_int("scale_factor", scale_factor, 1, 8)
    check_number("strength", strength, 0.0, 1.0, minimum_inclusive=False)
    if sparsity is not None:
        check_number("sparsity", sparsity, 0.0, 0.999)
    check_choice("vsa_backend", vsa_backend, VSA_BACKENDS)
    check_call_settings(
        components,
        batch_size,
        num_inference_steps,
        sigmas,
        guidance_scale,
        generator,
        output_type,
        return_dict,
        attention_kwargs,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs,
        max_sequence_length,
    )
    num_steps = num_inference_steps if sigmas is None else len(sigmas)
    if int(num_steps * strength) < 1:
        raise ValueError(
            f"`strength`={strength} leaves no step of the {num_steps}-step schedule; raise `strength` or "
            "`num_inference_steps`."
        )

    spatial, temporal = components.vae_spec.spatial_compression, components.vae_spec.temporal_compression
    channels = components.vae_spec.latent_channels
    config = components.transformer.config
    if video is not None:
        source = "video"
        check_frame_list("video", video, limits)
        num_frames = len(video)
        height, width = frame_size(video) if not isinstance(video, torch.Tensor) else video.shape[2:4]
        if height % spatial or width % spatial or (num_frames - 1) % temporal:
            raise ValueError(
                f"`video` must have {temporal}k+1 frames of a size divisible by {spatial}; got {num_frames} frames "
                f"of {height}x{width}."
            )
    else:
        source = "low_res_latents"
        check_finite_tensor("low_res_latents", low_res_latents, 5, f"(B, {channels}, F, h, w)")
        if low_res_latents.shape[1] != channels or min(low_res_latents.shape[2:]) < 1:
            raise ValueError(
                f"`low_res_latents` must be low-res latents of shape (B, {channels}, F, h, w), got "
                f"{describe(low_res_latents)}."
            )
        check_batch_divides("low_res_latents", low_res_latents, batch_size)
        num_frames = (low_res_latents.shape[2] - 1) * temporal + 1
        height, width = low_res_latents.shape[3] * spatial, low_res_latents.shape[4] * spatial
    # The Refiner patchifies the upscaled latents: each side must hold whole patches, and a low-res clip smaller
    # than one patch cannot come from a base pass (whose sides are whole patches).
    latent_size = (height // spatial, width // spatial)
    target_size = (latent_size[0] * scale_factor, latent_size[1] * scale_factor)
    patch = config.patch_size
    if min(latent_size) < patch or target_size[0] % patch or target_size[1] % patch:
        raise ValueError(
            f"`{source}` is {latent_size[0]}x{latent_size[1]} latents a frame, which `scale_factor`={scale_factor} "
            f"upscales to {target_size[0]}x{target_size[1]}; the Refiner needs at least its patch size {patch} a "
            f"side before upscaling and a multiple of {patch} after."
        )
    out_frames = (num_frames - 1) * config.temporal_upscale_factor + 1
    what = f"`{source}` ({num_frames} frames of {height}x{width}) refined by `scale_factor`={scale_factor}"
    if max(height, width) * scale_factor > limits.max_side:
        raise ValueError(
            f"{what} make {height * scale_factor}x{width * scale_factor} frames; the largest side allowed is "
            f"{limits.max_side} (`pipe.limits.max_side`)."
        )
    check_video_work(limits, batch_size, [(out_frames, height * scale_factor, width * scale_factor)], what)
    if (keyframes is None) != (keyframe_indices is None):
        raise ValueError("`keyframes` and `keyframe_indices` must be given together.")
    if isinstance(keyframes, torch.Tensor):
        expected = f"(B, {channels}, K, {target_size[0]}, {target_size[1]})"
        check_finite_tensor("keyframes", keyframes, 5, expected)
        if keyframes.shape[1] != channels or tuple(keyframes.shape[-2:]) != target_size:
            raise ValueError(
                f"`keyframes` latents must have shape {expected}: the VAE's latent channels, and the low-res "
                f"latent size times `scale_factor`; got {describe(keyframes)}."
            )
        check_batch_divides("keyframes", keyframes, batch_size)
        num_keyframes = keyframes.shape[2]
    elif keyframes is not None:
        check_frame_list("keyframes", keyframes, limits)
        num_keyframes = len(keyframes)
    if keyframe_indices is not None:
        if not isinstance(keyframe_indices, (list, tuple)):
            raise TypeError(f"`keyframe_indices` must be a list of frame indices, got {describe(keyframe_indices)}.")
        for i, index in enumerate(keyframe_indices):
            check_int(f"keyframe_indices[{i}]", index, 0, num_frames - 1, why=" (frames of the low-res clip)")
        if len(set(keyframe_indices)) != len(keyframe_indices):
            raise ValueError(f"`keyframe_indices` must not repeat a frame, got {list(keyframe_indices)}.")
        if len(keyframe_indices) != num_keyframes:
            raise ValueError(
                f"`keyframes` holds {num_keyframes} keyframes but `keyframe_indices` gives {len(keyframe_indices)} "
                "frames; they must agree."
            )
    if audio_latents is not None:
        check_finite_tensor("audio_latents", audio_latents, 3, "(B, C_a, L)")
        spec = components.audio_spec or audio_spec_from_transformer(components.transformer)
        most = spec.num_latents(limits.max_audio_seconds)
        if config.audio_in_channels and audio_latents.shape[1] != config.audio_in_channels:
            raise ValueError(
                f"`audio_latents` must have {config.audio_in_channels} channels (B, C_a, L), got "
                f"{describe(audio_latents)}."
            )
        if not 1 <= audio_latents.shape[-1] <= most:
            raise ValueError(
                f"`audio_latents` holds {audio_latents.shape[-1]} latents; it takes 1 to {most} "
                f"({limits.max_audio_seconds:g} s at {spec.sample_rate} Hz, `pipe.limits.max_audio_seconds`)."
            )
        check_batch_divides("audio_latents", audio_latents, batch_size)
    if audio is not None:
        if not isinstance(audio, (np.ndarray, torch.Tensor)) or not (
            audio.dtype.is_floating_point if isinstance(audio, torch.Tensor) else audio.dtype.kind == "f"
        ):
            raise TypeError(
                f"`audio` must be a floating-point NumPy array or torch tensor `(B, channels, samples)` in "
                f"[-1, 1], got {describe(audio)}."
            )
        audio_tensor = check_finite_tensor("audio", torch.as_tensor(audio), 3, "(B, channels, samples)")
        if audio_tensor.shape[-1] == 0 or audio_tensor.shape[1] not in (1, 2):
            raise ValueError(f"`audio` needs 1 or 2 channels and at least one sample, got {describe(audio)}.")
        if (
            components.audio_spec is not None
            and audio_tensor.shape[-1] > limits.max_audio_seconds * components.audio_spec.sample_rate
        ):
            raise ValueError(f"`audio` is longer than {limits.max_audio_seconds} s (`pipe.limits.max_audio_seconds`).")
        check_batch_divides("audio", audio_tensor, batch_size)
    return batch_size


def encode_low_res_video(components, video: Any) -> torch.Tensor:
    """Frames at their own size (checked by `check_inputs`) -> low-res latents `(1, C, F', h, w)`."""
    frames = frames_to_tensor("video", video, *frame_size(video))
    return encode_video(components.vae, pixels_for_vae(frames))


def refiner_keyframe_latents(components, keyframes, keyframe_indices, target_latent_size, factor, device):
    """High-res keyframe latents `(B, C, K, H, W)` and the output latent frame each one lands on (the keyframes
    were checked by `check_inputs`)."""
    if keyframes is None:
        return None, None
    if isinstance(keyframes, torch.Tensor):
        latents = keyframes.to(device=device, dtype=torch.float32)
    else:
        spatial = components.vae_spec.spatial_compression
        pixels = frames_to_tensor(
            "keyframes", keyframes, target_latent_size[0] * spatial, target_latent_size[1] * spatial
        )
        pixels = pixels_for_vae(pixels)
        latents = torch.cat([encode_video(components.vae, pixels[:, :, i : i + 1]) for i in range(pixels.shape[2])], 2)
    temporal = components.vae_spec.temporal_compression
    return latents, [latent_frame_index(i * factor, temporal) for i in keyframe_indices]


def refiner_low_res_latents(components, low_res_latents: torch.Tensor | None, video: Any) -> torch.Tensor:
    """The low-res clip as fp32 latents `(1 or B, C, F', h, w)`: `low_res_latents`, or `video` VAE-encoded."""
    if video is not None:
        low_res_latents = encode_low_res_video(components, video)
    return low_res_latents.to(device=components._execution_device, dtype=torch.float32)


def refiner_condition(
    components,
    low_res_latents: torch.Tensor,
    keyframe_latents: torch.Tensor | None,
    keyframe_latent_indices: list[int] | None,
    scale_factor: int,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Refiner's condition channels (upsampled low-res latents with the keyframes at their frames, plus the mask)
    in the transformer's dtype, and the upsampled fp32 latents (the start of `strength < 1`)."""
    config = components.transformer.config
    if isinstance(keyframe_latents, torch.Tensor):
        keyframe_latents = repeat_to_batch(keyframe_latents, batch_size)
    condition = build_refiner_condition(
        repeat_to_batch(low_res_latents, batch_size),
        scale_factor,
        config.temporal_upscale_factor,
        keyframe_latents,
        keyframe_latent_indices,
    )
    return condition.as_channels().to(components.transformer.dtype), condition.latents


def refiner_audio_latents(
    components, audio: Any, audio_latents: torch.Tensor | None, num_low_frames: int, batch_size: int
) -> torch.Tensor | None:
    """The clean base audio latents conditioning the Refiner (`audio` is encoded when no `audio_latents` are
    given), repeated to the batch; `None` without audio."""
    config = components.transformer.config
    if audio_latents is not None:
        return repeat_to_batch(audio_latents, batch_size)
    if audio is None or components.audio_vae is None or not config.audio_in_channels:
        return None
    # Padded with silence (or cut) to the clip's whole latents, like the soundtrack the base model made.
    spec = components.audio_spec
    waveform = torch.as_tensor(audio).float()
    if waveform.shape[1] != spec.audio_channels:  # mono <-> stereo, as `load_audio` converts
        waveform = waveform.mean(1, keepdim=True).expand(-1, spec.audio_channels, -1)
    encoded = encode_audio_track(components.audio_vae, waveform, spec.num_latents(num_low_frames / config.fps))
    return repeat_to_batch(encoded, batch_size)


def refiner_start_latents(
    components,
    condition_latents: torch.Tensor,
    latent_shape: tuple[int, ...],
    timesteps: torch.Tensor,
    strength: float,
    generator: torch.Generator | list[torch.Generator] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting latents `latent_shape` and the timesteps to run: pure noise over the whole schedule, or
    (`strength < 1`) the upsampled condition noised to where the shortened schedule begins (the scheduler's begin
    index is set there)."""
    noisy = randn_tensor(latent_shape, generator=generator, device=components._execution_device, dtype=torch.float32)
    if strength < 1:
        num_steps = int(len(timesteps) * strength)  # at least 1 (`check_refiner_inputs`)
        begin = len(timesteps) - num_steps
        timesteps = timesteps[begin:]
        components.scheduler.set_begin_index(begin)
        start = condition_latents.float().expand(latent_shape[0], -1, -1, -1, -1)
        noisy = components.scheduler.scale_noise(start, timesteps[:1], noisy)
    return noisy, timesteps


def decode_refiner_outputs(
    components,
    latents: torch.Tensor,
    audio: Any,
    audio_latents: torch.Tensor | None,
    num_low_frames: int,
    output_type: str,
) -> tuple[Any, Any, int | None]:
    """`(frames, audio, audio_sample_rate)`; the base audio passes through (decoded from its latents when only
    those were given)."""
    if output_type == "latent":
        return latents, audio_latents, None
    frames = decode_video_latents(components, latents)
    out_audio = None
    if audio is not None:
        out_audio = torch.as_tensor(audio)
    elif audio_latents is not None and components.audio_vae is not None:
        out_audio = decode_audio_latents(components, audio_latents, num_low_frames / components.transformer.config.fps)
    sample_rate = None if out_audio is None or components.audio_spec is None else components.audio_spec.sample_rate
    frames, out_audio = format_outputs(components, frames, out_audio, output_type)
    return frames, out_audio, sample_rate


def num_low_res_frames(components, low_res_latents: torch.Tensor) -> int:
    """Pixel frames of the low-res clip."""
    return (low_res_latents.shape[2] - 1) * components.vae_spec.temporal_compression + 1


def check_batch_divides(name: str, tensor: torch.Tensor, batch_size: int) -> None:
    """A conditioning batch is repeated to the prompts' batch when it divides it (Diffusers' image-to-image rule)."""
    if batch_size % tensor.shape[0]:
        raise ValueError(
            f"`{name}` has batch {tensor.shape[0]}, which does not divide the batch of prompts ({batch_size})."
        )


def repeat_to_batch(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A conditioning batch (checked by `check_batch_divides`) repeated to the prompts' batch."""
    return tensor.repeat_interleave(batch_size // tensor.shape[0], dim=0)
