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
"""Pixel inputs of the pipelines, the training scripts and the demo, in one place: frames (PIL, NumPy or torch)
to tensors at a target size, reference images, edit masks, and pixels in the VAE's range.

The resize policy is ours, not `VideoProcessor`'s: frames of another size are scaled to cover the target and
center-cropped (`PIL.ImageOps.fit`), never stretched, and frames already at the target size pass through exactly, so
kept pixels of an edit and the frames of video-to-audio come back bit for bit. References are scaled to fit inside
the target and padded with black, so nothing of them is cut. Outputs go through Diffusers' `VideoProcessor`.
Reading files stays in `skyreels_diffusers.utils.media`.
"""

from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

from .validation import describe


def to_pil(name: str, frame: Any, max_side: int | None = None) -> PIL.Image.Image:
    """One frame as an RGB PIL image: PIL, NumPy `(H, W, 3)` (uint8 or float in [0, 1]) or torch `(3, H, W)`."""
    if isinstance(frame, PIL.Image.Image):
        check_frame_size(name, frame.size[1], frame.size[0], max_side)
        return frame.convert("RGB")
    array = frame_to_numpy(name, frame, max_side)
    return PIL.Image.fromarray((array * 255).round().astype(np.uint8))


def frame_to_numpy(name: str, frame: Any, max_side: int | None = None) -> np.ndarray:
    """One frame -> `(H, W, 3)` float32 in [0, 1]. Refuses other shapes, empty or oversized frames (`max_side`),
    NaN or infinity, and floating-point values outside [0, 1]."""
    if isinstance(frame, PIL.Image.Image):
        check_frame_size(name, frame.size[1], frame.size[0], max_side)
        return np.asarray(frame.convert("RGB"), dtype=np.float32) / 255
    if isinstance(frame, torch.Tensor):
        if frame.ndim != 3 or frame.shape[0] != 3:
            raise ValueError(f"`{name}` tensors must have shape (3, H, W), got {tuple(frame.shape)}.")
        frame = frame.detach().permute(1, 2, 0).cpu()
        frame = (frame.float() if frame.is_floating_point() else frame).numpy()
    if not isinstance(frame, np.ndarray):
        raise TypeError(
            f"`{name}` frames must be PIL images, NumPy arrays or torch tensors, got {type(frame).__name__}."
        )
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"`{name}` arrays must have shape (H, W, 3), got {frame.shape}.")
    check_frame_size(name, frame.shape[0], frame.shape[1], max_side)
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) / 255
    if frame.dtype.kind != "f":
        raise TypeError(f"`{name}` frames must be uint8 or floating point in [0, 1], got dtype {frame.dtype}.")
    if not np.isfinite(frame).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    if frame.min() < -1e-3 or frame.max() > 1 + 1e-3:
        raise ValueError(
            f"`{name}` floating-point frames must be in [0, 1], got values in [{frame.min():.3g}, {frame.max():.3g}]."
        )
    return frame.astype(np.float32).clip(0, 1)


def check_frame_size(name: str, height: int, width: int, max_side: int | None) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"`{name}` frames must not be empty, got {height}x{width} pixels.")
    if max_side is not None and max(height, width) > max_side:
        raise ValueError(
            f"`{name}` frames are {height}x{width} pixels; the largest side allowed is {max_side} "
            "(`pipe.limits.max_side`)."
        )


def check_list(name: str, items: Any) -> list:
    """None (nothing) or a list/tuple of items."""
    if items is None:
        return []
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"`{name}` must be a list, got {type(items).__name__}.")
    return list(items)


def check_frame_list(name: str, frames: Any, limits) -> None:
    """A clip given as frames: a non-empty list of frames, or an `(F, H, W, 3)` array / `(F, 3, H, W)` tensor, of at
    most `limits.max_input_frames` frames of at most `limits.max_side` pixels a side (checked before any resize)."""
    if isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim == 4:
        count = frames.shape[0]
        if isinstance(frames, np.ndarray):
            height, width = frames.shape[1:3]
        else:
            height, width = frames.shape[2:4]
        if count:
            check_frame_size(name, height, width, limits.max_side)
    elif isinstance(frames, (list, tuple)):
        count = len(frames)
    else:
        raise TypeError(
            f"`{name}` must be a list of frames (PIL, NumPy (H, W, 3), torch (3, H, W)), a NumPy array (F, H, W, 3), a "
            f"torch tensor (F, 3, H, W) or a video file path; got {type(frames).__name__}."
        )
    if count == 0:
        raise ValueError(f"`{name}` has no frames; pass at least one frame.")
    if count > limits.max_input_frames:
        raise ValueError(
            f"`{name}` has {count} frames; the limit is {limits.max_input_frames} (`pipe.limits.max_input_frames`)."
        )


def frames_to_tensor(name: str, frames: Any, height: int, width: int, max_side: int | None = None) -> torch.Tensor:
    """Frames -> `(F, 3, height, width)` float in [0, 1]. Frames of another size are scaled to cover the target
    and center-cropped; frames already at the target size are taken exactly as given."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    elif isinstance(frames, torch.Tensor) and frames.ndim == 4:
        frames = list(frames)
    if not isinstance(frames, (list, tuple)) or not frames:
        raise TypeError(
            f"`{name}` must be a non-empty list of frames (PIL, NumPy (H, W, 3), torch (3, H, W)), a NumPy array "
            f"(F, H, W, 3) or a torch tensor (F, 3, H, W); got {type(frames).__name__}."
        )
    out = []
    for frame in frames:
        array = frame_to_numpy(name, frame, max_side)
        if array.shape[:2] != (height, width):
            image = PIL.Image.fromarray((array * 255).round().astype(np.uint8))
            array = np.asarray(PIL.ImageOps.fit(image, (width, height), PIL.Image.BICUBIC), dtype=np.float32) / 255
        out.append(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1))
    return torch.stack(out)


def frame_size(frames: Any) -> tuple[int, int]:
    """(height, width) of the first frame."""
    return frame_to_numpy("video", frames[0]).shape[:2]


def fit_with_black_padding(image: PIL.Image.Image, height: int, width: int) -> PIL.Image.Image:
    """References keep their whole content: scaled to fit inside the target and padded with black."""
    if image.size == (width, height):
        return image
    return PIL.ImageOps.pad(image, (width, height), PIL.Image.BICUBIC, color=(0, 0, 0))


def mask_to_tensor(
    mask: Any, video: Any, num_frames: int, height: int, width: int, batch_size: int = 1
) -> torch.Tensor:
    """Edit mask -> `(B, F, height, width)` float {0, 1} (1 = keep), thresholded at 0.5, with B = 1 or `batch_size`.

    Accepted: one image (PIL, NumPy or torch `(H, W)`) applied to every frame; one per frame (`(F, H, W)` or a list of
    images); or one of those per generated video, `(batch_size, F or 1, H, W)`. Values are in [0, 1], or uint8 in
    [0, 255] (scaled by 1/255). Checked against the source video's own size and frame count before the shared
    resize/crop."""
    video_height, video_width = frame_to_numpy("video", video[0]).shape[:2]
    if isinstance(mask, PIL.Image.Image) or (isinstance(mask, (np.ndarray, torch.Tensor)) and mask.ndim == 2):
        per_video = [[mask]]
    elif isinstance(mask, (list, tuple)) or (isinstance(mask, (np.ndarray, torch.Tensor)) and mask.ndim == 3):
        per_video = [list(mask)]
    elif isinstance(mask, (np.ndarray, torch.Tensor)) and mask.ndim == 4:
        if mask.shape[0] not in (1, batch_size):
            raise ValueError(
                f"`mask` of shape {tuple(mask.shape)} holds {mask.shape[0]} masks (B, F, H, W); it takes B = 1 (one "
                f"for every video) or one per generated video (B = {batch_size}: prompts x `num_videos_per_prompt`)."
            )
        per_video = [list(video_mask) for video_mask in mask]
    else:
        raise TypeError(
            "`mask` must be a PIL image, a NumPy/torch array (H, W), (F, H, W) or (B, F, H, W), or a list of images; "
            f"got {describe(mask)}."
        )
    keep = []
    for items in per_video:
        if len(items) not in (1, num_frames):
            raise ValueError(
                f"`mask` must be one image or {num_frames} frames (one per video frame), got {len(items)}."
            )
        frames = []
        for item in items:
            array = mask_values(item)
            if array.shape != (video_height, video_width):
                raise ValueError(
                    f"`mask` frames must match the video size (H, W) = {(video_height, video_width)}, got "
                    f"{array.shape}."
                )
            array = array >= 0.5
            if array.shape != (height, width):
                image = PIL.Image.fromarray(array.astype(np.uint8) * 255)
                array = np.asarray(PIL.ImageOps.fit(image, (width, height), PIL.Image.NEAREST)) >= 128
            frames.append(torch.from_numpy(array.astype(np.float32)))
        keep.append(torch.stack(frames).expand(num_frames, -1, -1))
    return torch.stack(keep)


def mask_values(item: Any) -> np.ndarray:
    """One mask frame as float32 in [0, 1]: PIL (as grey levels), uint8 (scaled by 1/255), bool, or numbers in [0, 1];
    NaN and values outside [0, 1] are refused, since thresholding would silently turn them into keep or regenerate."""
    if isinstance(item, PIL.Image.Image):
        return np.asarray(item.convert("L"), dtype=np.float32) / 255
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu()
        item = item.float() if item.is_floating_point() else item
    array = np.asarray(item)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    dtype = array.dtype
    if dtype.kind not in "biuf":
        raise TypeError(f"`mask` values must be numbers in [0, 1] (or uint8), got dtype {dtype}.")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError("`mask` contains NaN or infinite values; it takes values in [0, 1] (1 = keep).")
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(
            f"`mask` values must be in [0, 1] (1 = keep, 0 = regenerate; uint8 masks in [0, 255] are scaled by 1/255), "
            f"got {dtype} values in [{array.min():g}, {array.max():g}]."
        )
    return array


def pixels_for_vae(frames: torch.Tensor) -> torch.Tensor:
    """Frames `(F, 3, H, W)` in [0, 1] -> one video `(1, 3, F, H, W)` in [-1, 1], the VAEs' input."""
    return (frames * 2 - 1).movedim(1, 0)[None]
