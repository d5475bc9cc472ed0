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
"""The steps every SkyReels-V4 pipeline shares, as plain functions: the checks, prompt encoding with the MLLM, the
schedule, the starting latents (video, high-res keyframes, audio) and the decoding.

Each takes `components`: any object holding the pipeline's components and settings as attributes (`transformer`,
`vae`, `audio_vae`, `vocoder`, `scheduler`, `text_encoder`, `processor`, `config`, `limits`, `vae_spec`,
`audio_spec`, `video_processor`, `_execution_device`). The classic pipelines pass themselves and the modular blocks
pass their `ModularPipeline`, so both forms run the same code and give the same outputs.
"""

import math
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.utils.torch_utils import randn_tensor

from .conditioning import build_video_condition, latent_frame_index
from .preprocessing import to_pil
from .vae_utils import AudioVAESpec, decode_audio, decode_video
from .validation import (
    GenerationLimits,
    check_bool,
    check_callback_inputs,
    check_choice,
    check_finite_tensor,
    check_generator,
    check_guidance_scale,
    check_int,
    check_number,
    check_prompt,
    check_sigmas,
    check_video_work,
    describe,
)


# What each work limit counts, in messages.
LIMIT_UNITS = {
    "max_video_pixels": "video pixels (height x width x frames x videos)",
    "max_audio_seconds": "seconds of audio generated with the clip",
}

DEFAULT_SYSTEM_PROMPT = (
    "You are a director describing a shot for a video with sound. Read the instruction: visual content in <text>, "
    "sound effects in <sfx>, speech in <dialogue>, singing in <singing>, music in <bgm>, and any reference images."
)


def build_messages(components, prompt: str, images: list) -> list[dict]:
    """The chat of one instruction: the system prompt, then the images followed by the (tagged) text."""
    return [
        {"role": "system", "content": [{"type": "text", "text": components.config.system_prompt}]},
        {"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": prompt}]},
    ]


def mllm_prompt_embeds(
    components,
    prompts: list[str],
    images: list[list[PIL.Image.Image]],
    max_sequence_length: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    processor = components.processor
    tokenizer = getattr(processor, "tokenizer", processor)
    texts = [
        processor.apply_chat_template(build_messages(components, p, imgs), tokenize=False, add_generation_prompt=True)
        for p, imgs in zip(prompts, images)
    ]
    flat_images = [image for prompt_images in images for image in prompt_images]
    kwargs = {"images": flat_images} if flat_images else {}
    # Right padding keeps the system-prompt prefix at the same positions in every row, so it can be cropped.
    inputs = processor(text=texts, padding=True, padding_side="right", return_tensors="pt", **kwargs).to(device)

    # The system turn, identical for every prompt, is dropped when the template renders it as a prefix.
    system_text = processor.apply_chat_template(build_messages(components, "", [])[:1], tokenize=False)
    prefix = tokenizer(system_text, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
    num_prefix = prefix.shape[1]
    has_prefix = num_prefix < inputs["input_ids"].shape[1] and (inputs["input_ids"][:, :num_prefix] == prefix).all()
    keep = (num_prefix if has_prefix else 0) + max_sequence_length
    if not flat_images and inputs["input_ids"].shape[1] > keep:
        # Only the first `max_sequence_length` tokens are used: cut the rest before the encoder runs on them, as
        # Diffusers pipelines truncate at tokenization (for a causal MLLM the kept tokens' states are unchanged).
        inputs = {key: value[:, :keep] for key, value in inputs.items()}

    encoder = (
        components.text_encoder.base_model
        if hasattr(components.text_encoder, "base_model")
        else components.text_encoder
    )
    hidden_states = encoder(**inputs, output_hidden_states=True).hidden_states[components.config.text_hidden_layer]
    mask = inputs["attention_mask"].bool()
    if has_prefix:
        hidden_states, mask = hidden_states[:, num_prefix:], mask[:, num_prefix:]
    return hidden_states[:, :max_sequence_length], mask[:, :max_sequence_length]


def encode_prompt(
    components,
    prompt: str | list[str] | None,
    negative_prompt: str | list[str] | None = None,
    prompt_images: Any = None,
    do_classifier_free_guidance: bool = True,
    num_videos_per_prompt: int = 1,
    prompt_embeds: torch.Tensor | None = None,
    prompt_attention_mask: torch.Tensor | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    negative_prompt_attention_mask: torch.Tensor | None = None,
    max_sequence_length: int = 512,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    r"""
    Encodes the instruction (and the negative prompt) with the MLLM.

    Args:
        prompt (`str` or `list[str]`): the instruction, optionally with the structured tags `<text>`, `<sfx>`,
            `<dialogue>`, `<singing>`, `<bgm>`, which pass through to the text encoder unchanged.
        negative_prompt (`str` or `list[str]`, *optional*): defaults to the empty prompt.
        prompt_images: images that are part of the instruction: one image, a list shared by every prompt, or a
            list of lists (one per prompt). Video frames are given the same way, as a list of images.
        prompt_embeds, prompt_attention_mask (`torch.Tensor` of shapes `(B, S, D)`, `(B, S)`, *optional*):
            precomputed hidden states, instead of `prompt`.
        dtype (`torch.dtype`, *optional*): of the returned embeddings; defaults to the transformer's, or the text
            encoder's in a pipeline without a transformer (precomputing embeddings).

    Returns:
        `(prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask)`, each
        repeated `num_videos_per_prompt` times; the negatives are `None` without guidance.
    """
    device = device or components._execution_device
    if dtype is None:
        dtype = (components.transformer if components.transformer is not None else components.text_encoder).dtype
    if prompt_embeds is not None and prompt_images is not None:
        raise ValueError("`prompt_images` belong to `prompt`; they cannot be combined with `prompt_embeds`.")
    if prompt_embeds is None:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        images = per_prompt_images(prompt_images, len(prompts), getattr(components, "limits", None))
        prompt_embeds, prompt_attention_mask = mllm_prompt_embeds(
            components, prompts, images, max_sequence_length, device
        )
    elif prompt_attention_mask is None:
        prompt_attention_mask = torch.ones(prompt_embeds.shape[:2], dtype=torch.bool, device=device)
    batch_size = prompt_embeds.shape[0]

    if do_classifier_free_guidance and negative_prompt_embeds is None:
        negative_prompt = negative_prompt or ""
        negatives = [negative_prompt] * batch_size if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negatives) != batch_size:
            raise ValueError(
                f"`negative_prompt` must be a string or a list of {batch_size} strings (one per prompt), got a "
                f"list of {len(negatives)}."
            )
        negative_prompt_embeds, negative_prompt_attention_mask = mllm_prompt_embeds(
            components, negatives, [[] for _ in negatives], max_sequence_length, device
        )
    elif negative_prompt_embeds is not None and negative_prompt_attention_mask is None:
        negative_prompt_attention_mask = torch.ones(negative_prompt_embeds.shape[:2], dtype=torch.bool, device=device)

    prompt_embeds, prompt_attention_mask = _per_video(
        prompt_embeds, prompt_attention_mask, num_videos_per_prompt, device, dtype
    )
    negative_prompt_embeds, negative_prompt_attention_mask = _per_video(
        negative_prompt_embeds, negative_prompt_attention_mask, num_videos_per_prompt, device, dtype
    )
    return prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask


def check_prompt_inputs(
    components,
    prompt,
    negative_prompt,
    prompt_embeds,
    prompt_attention_mask,
    negative_prompt_embeds,
    negative_prompt_attention_mask,
) -> int:
    """The prompt arguments of every pipeline (text or embeddings, positive and negative); returns the number of
    prompts."""
    limits = components.limits
    if (prompt is None) == (prompt_embeds is None):
        raise ValueError(
            "Pass exactly one of `prompt` or `prompt_embeds`; got " + ("both." if prompt is not None else "neither.")
        )
    if negative_prompt is not None and negative_prompt_embeds is not None:
        raise ValueError("Pass at most one of `negative_prompt` or `negative_prompt_embeds`; got both.")
    prompts = check_prompt("prompt", prompt, limits, optional=True)
    negatives = check_prompt("negative_prompt", negative_prompt, limits, optional=True)
    num_prompts = (
        len(prompts) if prompts is not None else check_embeds(components, prompt_embeds, prompt_attention_mask)
    )
    if negative_prompt_embeds is not None:
        if (
            check_embeds(components, negative_prompt_embeds, negative_prompt_attention_mask, "negative_")
            != num_prompts
        ):
            raise ValueError(
                f"`negative_prompt_embeds` has batch {negative_prompt_embeds.shape[0]}; the prompts give "
                f"{num_prompts}."
            )
    if negatives is not None and len(negatives) not in (1, num_prompts) and not isinstance(negative_prompt, str):
        raise ValueError(
            f"`negative_prompt` must be a string or a list of {num_prompts} strings (one per prompt), got a list of "
            f"{len(negatives)}."
        )
    return num_prompts


def check_call_settings(
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
) -> None:
    """The settings every pipeline call takes: steps or sigmas, guidance, generators, output and callbacks."""
    limits = components.limits
    if sigmas is None:
        check_int(
            "num_inference_steps",
            num_inference_steps,
            1,
            limits.max_inference_steps,
            why=" (`pipe.limits.max_inference_steps`)",
        )
    else:
        check_sigmas(sigmas, limits)
    check_guidance_scale("guidance_scale", guidance_scale, limits)
    check_choice("output_type", output_type, ("np", "pt", "pil", "latent"))
    check_bool("return_dict", return_dict)
    check_int("max_sequence_length", max_sequence_length, 1, 100_000)
    check_generator(generator, batch_size)
    if attention_kwargs is not None and not isinstance(attention_kwargs, dict):
        raise TypeError(f"`attention_kwargs` must be a dict or None, got {describe(attention_kwargs)}.")
    if callback_on_step_end is not None and not callable(callback_on_step_end):
        raise TypeError(f"`callback_on_step_end` must be callable, got {describe(callback_on_step_end)}.")
    check_callback_inputs(callback_on_step_end_tensor_inputs, components._callback_tensor_inputs)


def check_generation_inputs(
    components,
    prompt,
    negative_prompt,
    prompt_embeds,
    prompt_attention_mask,
    negative_prompt_embeds,
    negative_prompt_attention_mask,
    height,
    width,
    num_frames,
    fps,
    audio_duration,
    generate_video,
    generate_audio,
    num_inference_steps,
    sigmas,
    guidance_scale,
    audio_guidance_scale,
    video_lead_steps,
    num_videos_per_prompt,
    generator,
    latents,
    audio_latents,
    output_type,
    return_dict,
    attention_kwargs,
    callback_on_step_end,
    callback_on_step_end_tensor_inputs,
    max_sequence_length,
) -> int:
    """Every argument shared by the base and the inpainting pipelines, checked before any work, within
    `components.limits`. Returns the batch size (prompts x videos per prompt)."""
    limits = components.limits
    num_prompts = check_prompt_inputs(
        components,
        prompt,
        negative_prompt,
        prompt_embeds,
        prompt_attention_mask,
        negative_prompt_embeds,
        negative_prompt_attention_mask,
    )
    videos = check_int("num_videos_per_prompt", num_videos_per_prompt, 1, limits.max_batch)
    batch_size = num_prompts * videos
    if batch_size > limits.max_batch:
        raise ValueError(
            f"{num_prompts} prompts x num_videos_per_prompt={videos} = {batch_size} videos; the limit is "
            f"{limits.max_batch} (`pipe.limits.max_batch`)."
        )
    check_bool("generate_video", generate_video)
    check_bool("generate_audio", generate_audio)
    if not (generate_video or generate_audio):
        raise ValueError("`generate_video` and `generate_audio` are both False; at least one must be True.")
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
    if generate_audio and components.audio_vae is None and output_type != "latent":
        raise ValueError("`generate_audio=True` needs an `audio_vae` component; this pipeline has none.")
    check_guidance_scale("audio_guidance_scale", audio_guidance_scale, limits)
    check_int("video_lead_steps", video_lead_steps, 0, limits.max_inference_steps)

    config = components.transformer.config
    if components.vae_spec.latent_channels != config.out_channels:
        raise ValueError(
            f"The `vae` has {components.vae_spec.latent_channels} latent channels but the transformer expects "
            f"out_channels={config.out_channels}; load matching components."
        )
    if components.audio_spec is not None and (
        (
            components.audio_spec.sample_rate,
            components.audio_spec.samples_per_latent,
            components.audio_spec.latent_channels,
        )
        != (config.audio_sample_rate, config.audio_samples_per_latent, config.audio_in_channels)
    ):
        raise ValueError(
            f"The `audio_vae` ({components.audio_spec.sample_rate} Hz, {components.audio_spec.samples_per_latent} samples per "
            f"latent, {components.audio_spec.latent_channels} channels) does not match the transformer config "
            f"({config.audio_sample_rate} Hz, {config.audio_samples_per_latent}, {config.audio_in_channels})."
        )
    multiple = components.vae_spec.spatial_compression * config.patch_size
    for name, value in (("height", height), ("width", width)):
        check_int(name, value, multiple, limits.max_side, why=f" and a multiple of {multiple}")
        if value % multiple:
            raise ValueError(
                f"`{name}` must be a multiple of {multiple} (VAE spatial compression "
                f"{components.vae_spec.spatial_compression} x patch size {config.patch_size}), got {value}."
            )
    temporal = components.vae_spec.temporal_compression
    check_int("num_frames", num_frames, 1, why=f" of the form {temporal}k+1")
    if (num_frames - 1) % temporal:
        raise ValueError(
            f"`num_frames` must be of the form {temporal}k+1 (1, {temporal + 1}, {2 * temporal + 1}, ...) for the "
            f"causal VAE, got {num_frames}."
        )
    if check_number("fps", fps) != config.fps:
        raise ValueError(
            f"`fps` must be the transformer's timeline fps {config.fps} (its audio RoPE places audio on that "
            f"timeline), got {fps!r}."
        )
    audio_follows_video = generate_audio and audio_duration is None
    if generate_video or audio_follows_video:
        most, limit = frame_limit(components, height, width, batch_size, generate_video, audio_follows_video)
        if num_frames > most:
            bound = f"`pipe.limits.{limit}` = {getattr(limits, limit):,} {LIMIT_UNITS[limit]}"
            if most < 1 and limit == "max_video_pixels":
                raise ValueError(
                    f"`height` x `width` = {height} x {width} is too large: one frame of {batch_size} video(s) "
                    f"already exceeds {bound}."
                )
            size = f" at {height}x{width} for {batch_size} video(s)" if limit == "max_video_pixels" else ""
            raise ValueError(
                f"`num_frames`={num_frames} is more than one call may make: at most {most} frames "
                f"({most / fps:g} s at {fps:g} fps){size}, set by {bound}."
            )
    video_duration = num_frames / fps
    if audio_duration is not None:
        check_number(
            "audio_duration",
            audio_duration,
            0.0,
            limits.max_audio_seconds,
            minimum_inclusive=False,
            why=" seconds (`pipe.limits.max_audio_seconds`)",
        )
        tolerance = temporal / fps  # one video latent frame
        if generate_video and generate_audio and abs(audio_duration - video_duration) > tolerance:
            raise ValueError(
                f"`audio_duration`={audio_duration}s does not match the video's {video_duration:.3f}s "
                f"({num_frames} frames at {fps} fps); joint generation accepts a difference of at most one video "
                f"latent frame ({tolerance:.3f}s). Leave it unset to use the video's duration."
            )
    if latents is not None and generate_video:
        expected = latent_shape(components, batch_size, height, width, num_frames)
        check_finite_tensor("latents", latents, 5, f"{expected}")
        if tuple(latents.shape) != expected:
            raise ValueError(f"`latents` must have shape {expected} for these settings, got {describe(latents)}.")
    if audio_latents is not None and generate_audio:
        spec = components.audio_spec or audio_spec_from_transformer(components.transformer)
        duration = video_duration if audio_duration is None else audio_duration
        expected = (batch_size, config.audio_in_channels, spec.num_latents(duration))
        check_finite_tensor("audio_latents", audio_latents, 3, f"{expected}")
        if tuple(audio_latents.shape) != expected:
            raise ValueError(
                f"`audio_latents` must have shape {expected} for these settings, got {describe(audio_latents)}."
            )
    return batch_size


def frame_limit(
    components, height: int, width: int, batch_size: int = 1, generate_video: bool = True, generate_audio: bool = True
) -> tuple[int, str]:
    """The most frames one call may make at `height x width` for `batch_size` videos within `components.limits` (of the
    VAE's form `t*k+1`; 0 when even one frame is too many), and the name of the limit that sets it:
    `"max_video_pixels"`, or `"max_audio_seconds"` when the audio generated with the clip lasts as long as it.
    The `num_frames` check and the CLI's `--duration` check both read it."""
    limits, temporal = components.limits, components.vae_spec.temporal_compression
    bounds = []
    if generate_video:
        bounds.append((limits.max_video_pixels // (batch_size * height * width), "max_video_pixels"))
    if generate_audio:
        bounds.append((math.floor(limits.max_audio_seconds * components.transformer.config.fps), "max_audio_seconds"))
    frames, limit = min(bounds)
    return ((frames - 1) // temporal * temporal + 1 if frames >= 1 else 0), limit


def check_embeds(components, embeds, mask, prefix: str = "") -> int:
    """`{prefix}prompt_embeds` `(B, S, D)` (finite) and its optional mask `(B, S)`; returns B."""
    check_finite_tensor(f"{prefix}prompt_embeds", embeds, 3, "(batch, tokens, text_embed_dim)")
    if embeds.shape[0] < 1 or embeds.shape[1] < 1:
        raise ValueError(
            f"`{prefix}prompt_embeds` must hold at least one prompt and one token, got {describe(embeds)}."
        )
    if embeds.shape[-1] != components.transformer.config.text_embed_dim:
        raise ValueError(
            f"`{prefix}prompt_embeds` must have text_embed_dim={components.transformer.config.text_embed_dim} features, "
            f"got {describe(embeds)}."
        )
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(embeds.shape[:2]):
            raise ValueError(
                f"`{prefix}prompt_attention_mask` must be a tensor of shape {tuple(embeds.shape[:2])}, got "
                f"{describe(mask)}."
            )
        empty = (~mask.bool().any(dim=1)).nonzero()
        if len(empty):  # attention over no token at all is NaN
            raise ValueError(
                f"`{prefix}prompt_attention_mask` row {int(empty[0])} has no real token (all False); every prompt "
                "needs at least one."
            )
    return embeds.shape[0]


def prepare_latents(
    components,
    batch_size: int,
    height: int,
    width: int,
    num_frames: int,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | list[torch.Generator] | None,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    shape = latent_shape(components, batch_size, height, width, num_frames)
    return noise_or_given("latents", latents, shape, generator, device, dtype)


def latent_shape(components, batch_size: int, height: int, width: int, num_frames: int) -> tuple[int, ...]:
    """`(B, C, F', h, w)` of the video latents of `num_frames` frames of `height x width`."""
    spec = components.vae_spec
    return (
        batch_size,
        spec.latent_channels,
        (num_frames - 1) // spec.temporal_compression + 1,
        height // spec.spatial_compression,
        width // spec.spatial_compression,
    )


def prepare_audio_latents(
    components,
    batch_size: int,
    num_audio_latents: int,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | list[torch.Generator] | None,
    audio_latents: torch.Tensor | None = None,
) -> torch.Tensor:
    shape = (batch_size, components.transformer.config.audio_in_channels, num_audio_latents)
    return noise_or_given("audio_latents", audio_latents, shape, generator, device, dtype)


def prepare_timesteps(components, num_inference_steps: int, sigmas: list[float] | None, device) -> torch.Tensor:
    """Sets the scheduler's noise schedule (each latent stream then steps its own copy) and returns its
    timesteps."""
    components.scheduler.set_timesteps(
        sigmas=default_sigmas(num_inference_steps) if sigmas is None else sigmas, device=device
    )
    return components.scheduler.timesteps


def decode_video_latents(components, latents: torch.Tensor) -> torch.Tensor:
    """Video latents -> frames `(B, F, 3, H, W)` in [0, 1]."""
    return components.video_processor.postprocess_video(decode_video(components.vae, latents), output_type="pt")


def decode_audio_latents(components, audio_latents: torch.Tensor, duration: float) -> torch.Tensor:
    """Audio latents -> waveform `(B, channels, samples)` in [-1, 1], trimmed to `duration` seconds."""
    waveform = decode_audio(components.audio_vae, components.vocoder, audio_latents).float()
    return waveform[..., : round(duration * components.audio_spec.sample_rate)].clamp(-1, 1)


def format_outputs(components, frames: torch.Tensor | None, audio: torch.Tensor | None, output_type: str):
    """Frames `(B, F, 3, H, W)` in [0, 1] and audio `(B, ch, N)` -> the requested `output_type`."""
    if output_type == "pt":
        return frames, audio
    if frames is not None:
        frames = frames.permute(0, 1, 3, 4, 2).float().cpu().numpy()
        if output_type == "pil":
            frames = [components.video_processor.numpy_to_pil(video) for video in frames]
    return frames, None if audio is None else audio.cpu().numpy()


def check_keyframes(
    components,
    keyframe_indices,
    num_keyframes,
    keyframe_height,
    keyframe_width,
    height,
    width,
    num_frames,
    generate_video,
    batch_size,
) -> list[int]:
    """Validate the high-res keyframe request (its pixels count in `components.limits` with the clip's); returns the
    pixel frame indices (empty without keyframes)."""
    if keyframe_indices is None and num_keyframes is None:
        for name, size in (("keyframe_height", keyframe_height), ("keyframe_width", keyframe_width)):
            if size is not None:
                raise ValueError(f"`{name}` sizes high-res keyframes; pass `num_keyframes` or `keyframe_indices`.")
        return []
    if keyframe_indices is not None and num_keyframes is not None:
        raise ValueError("Pass at most one of `keyframe_indices` or `num_keyframes`; got both.")
    if not generate_video:
        raise ValueError("High-resolution keyframes are part of the video; they need `generate_video=True`.")
    temporal = components.vae_spec.temporal_compression
    num_latent_frames = (num_frames - 1) // temporal + 1
    if num_keyframes is not None:
        check_int("num_keyframes", num_keyframes, 1, num_latent_frames, why=" (one per latent frame at most)")
        latent_indices = np.linspace(0, num_latent_frames - 1, num_keyframes).round().astype(int)
        keyframe_indices = [int(i) * temporal for i in latent_indices]
    if not isinstance(keyframe_indices, (list, tuple)) or not keyframe_indices:
        raise TypeError(
            f"`keyframe_indices` must be a non-empty list of frame indices, got {describe(keyframe_indices)}."
        )
    for i, index in enumerate(keyframe_indices):
        check_int(f"keyframe_indices[{i}]", index, 0, num_frames - 1, why=f" (frames of the {num_frames}-frame clip)")
    latent_positions = [latent_frame_index(i, temporal) for i in keyframe_indices]
    if len(set(latent_positions)) != len(latent_positions):
        raise ValueError(
            f"`keyframe_indices` {list(keyframe_indices)} fall in the same latent frames {latent_positions}; use at "
            f"most one keyframe per group of {temporal} frames."
        )
    sizes = {}
    for name, size, low in (
        ("keyframe_height", keyframe_height, height),
        ("keyframe_width", keyframe_width, width),
    ):
        sizes[name] = 2 * low if size is None else check_int(name, size, low, components.limits.max_side)
        if sizes[name] % low:
            raise ValueError(
                f"`{name}` must be an integer multiple of the video's {low} px (keyframes share the low-res RoPE "
                f"frame scaled by an integer factor), got {size!r}."
            )
    check_video_work(
        components.limits,
        batch_size,
        [(num_frames, height, width), (len(keyframe_indices), sizes["keyframe_height"], sizes["keyframe_width"])],
        f"The clip ({num_frames} frames of {height}x{width}) and its {len(keyframe_indices)} keyframes "
        f"(`keyframe_indices` / `num_keyframes`) of `keyframe_height` x `keyframe_width` = "
        f"{sizes['keyframe_height']}x{sizes['keyframe_width']}",
    )
    return [int(i) for i in keyframe_indices]


def decode_outputs(
    components,
    latents: torch.Tensor | None,
    audio_latents: torch.Tensor | None,
    keyframe_latents: torch.Tensor | None,
    audio_duration: float | None,
    output_type: str,
) -> tuple[Any, Any, int | None, Any]:
    """Denoised latents -> `(frames, audio, audio_sample_rate, keyframes)` in `output_type` (latents pass
    through for `"latent"`)."""
    if output_type == "latent":
        return latents, audio_latents, None, keyframe_latents
    frames = decode_video_latents(components, latents) if latents is not None else None
    audio = decode_audio_latents(components, audio_latents, audio_duration) if audio_latents is not None else None
    frames, audio = format_outputs(components, frames, audio, output_type)
    sample_rate = components.audio_spec.sample_rate if audio_latents is not None else None
    keyframes = None
    if keyframe_latents is not None:
        # Each keyframe is a one-frame latent video: decode them as a batch of single frames.
        single_frames = keyframe_latents.movedim(2, 1).flatten(0, 1)[:, :, None]
        decoded = (
            decode_video_latents(components, single_frames).unflatten(0, (keyframe_latents.shape[0], -1)).squeeze(2)
        )
        keyframes, _ = format_outputs(components, decoded, None, output_type)
    return frames, audio, sample_rate, keyframes


def prepare_keyframe_latents(
    components,
    batch_size: int,
    keyframe_indices: list[int],
    keyframe_height: int,
    keyframe_width: int,
    generator: torch.Generator | list[torch.Generator] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """High-res keyframes generated in the same pass as the clip: their starting noise `(B, C, K, H/s, W/s)` (fp32),
    their condition channels (black-image latent, mask 0) and their positions on the latent timeline."""
    device, dtype = components._execution_device, components.transformer.dtype
    spec = components.vae_spec
    spatial = spec.spatial_compression
    shape = (
        batch_size,
        spec.latent_channels,
        len(keyframe_indices),
        keyframe_height // spatial,
        keyframe_width // spatial,
    )
    latents = noise_or_given("keyframe_latents", None, shape, generator, device, torch.float32)
    condition = build_video_condition(components.vae, batch_size, 1, keyframe_height, keyframe_width).as_channels()
    condition = condition.expand(-1, -1, len(keyframe_indices), -1, -1).to(dtype)
    positions = torch.tensor([i / spec.temporal_compression for i in keyframe_indices], device=device)
    return latents, condition, positions


def text_to_video_condition(components, batch_size: int, num_frames: int, height: int, width: int) -> torch.Tensor:
    """The condition channels of text-to-video: no condition frame, so every latent frame holds the black-image
    latent, mask 0."""
    condition = build_video_condition(components.vae, batch_size, num_frames, height, width).as_channels()
    return condition.to(components.transformer.dtype)


def audio_latent_count(components, audio_duration: float) -> int:
    """Audio latents of `audio_duration` seconds (from the transformer config without an audio VAE)."""
    spec = components.audio_spec or audio_spec_from_transformer(components.transformer)
    return spec.num_latents(audio_duration)


def _per_video(embeds, mask, num_videos_per_prompt: int, device, dtype):
    """Embeddings and mask repeated for every video of a prompt, on `device` (embeddings in `dtype`)."""
    if embeds is None:
        return None, None
    embeds = embeds.to(device=device, dtype=dtype).repeat_interleave(num_videos_per_prompt, dim=0)
    return embeds, mask.to(device=device).bool().repeat_interleave(num_videos_per_prompt, dim=0)


def per_prompt_images(prompt_images: Any, num_prompts: int, limits: GenerationLimits | None = None) -> list[list]:
    """Normalise `prompt_images` into one list of RGB PIL images per prompt, checking each image (type, size within
    `limits.max_side`, finite values in range) and the count per prompt (`limits.max_prompt_images`)."""
    if prompt_images is None:
        return [[] for _ in range(num_prompts)]
    if not isinstance(prompt_images, (list, tuple)):
        groups = [[prompt_images]] * num_prompts
    elif prompt_images and all(isinstance(item, (list, tuple)) for item in prompt_images):
        if len(prompt_images) != num_prompts:
            raise ValueError(
                f"`prompt_images` given as a list of lists needs one list per prompt ({num_prompts}), got "
                f"{len(prompt_images)}."
            )
        groups = prompt_images
    else:
        groups = [prompt_images] * num_prompts
    max_side = limits.max_side if limits is not None else None
    if limits is not None and max(len(group) for group in groups) > limits.max_prompt_images:
        raise ValueError(
            f"`prompt_images` has {max(len(group) for group in groups)} images for one prompt; the limit is "
            f"{limits.max_prompt_images} (`pipe.limits.max_prompt_images`)."
        )
    converted = {}  # an image shared by every prompt is converted once
    for group in groups:
        for image in group:
            if id(image) not in converted:
                converted[id(image)] = to_pil("prompt_images", image, max_side)
    return [[converted[id(image)] for image in group] for group in groups]


def noise_or_given(name, given, shape, generator, device, dtype) -> torch.Tensor:
    """Fresh noise of `shape`, or the caller's own starting latents after a shape check."""

    if given is None:
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    if not isinstance(given, torch.Tensor) or tuple(given.shape) != tuple(shape):
        got = tuple(given.shape) if isinstance(given, torch.Tensor) else type(given).__name__
        raise ValueError(f"`{name}` must be a tensor of shape {tuple(shape)} for these settings, got {got}.")
    return given.to(device=device, dtype=dtype)


def audio_spec_from_transformer(transformer) -> AudioVAESpec:
    """Audio timeline from the transformer config, for `output_type="latent"` without an audio VAE."""
    config = transformer.config
    return AudioVAESpec(config.audio_sample_rate, config.audio_samples_per_latent, config.audio_in_channels, 1)


def num_frames_for_duration(duration: float, fps: float, temporal_compression: int) -> int:
    """The frame count of the form `temporal_compression * k + 1` whose duration `num_frames / fps` is closest to
    `duration` seconds (at least one frame)."""
    k = max(0, round((duration * fps - 1) / temporal_compression))
    return k * temporal_compression + 1


def default_sigmas(num_inference_steps: int) -> np.ndarray:
    """Noise levels from 1 towards 0 (the scheduler's shift is applied on top)."""
    return np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
