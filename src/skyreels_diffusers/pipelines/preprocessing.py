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


def to_pil(name: str, frame: Any) -> PIL.Image.Image:
    """One frame as an RGB PIL image: PIL, NumPy `(H, W, 3)` (uint8 or float in [0, 1]) or torch `(3, H, W)`."""
    if isinstance(frame, PIL.Image.Image):
        return frame.convert("RGB")
    array = frame_to_numpy(name, frame)
    return PIL.Image.fromarray((array * 255).round().astype(np.uint8))


def frame_to_numpy(name: str, frame: Any) -> np.ndarray:
    if isinstance(frame, PIL.Image.Image):
        return np.asarray(frame.convert("RGB"), dtype=np.float32) / 255
    if isinstance(frame, torch.Tensor):
        if frame.ndim != 3 or frame.shape[0] != 3:
            raise ValueError(f"`{name}` tensors must have shape (3, H, W), got {tuple(frame.shape)}.")
        frame = frame.permute(1, 2, 0).cpu().numpy()
    if not isinstance(frame, np.ndarray):
        raise TypeError(
            f"`{name}` frames must be PIL images, NumPy arrays or torch tensors, got {type(frame).__name__}."
        )
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"`{name}` arrays must have shape (H, W, 3), got {frame.shape}.")
    return frame.astype(np.float32) / 255 if frame.dtype == np.uint8 else frame.astype(np.float32)


def frames_to_tensor(name: str, frames: Any, height: int, width: int) -> torch.Tensor:
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
        array = frame_to_numpy(name, frame)
        if array.shape[:2] != (height, width):
            image = PIL.Image.fromarray((array.clip(0, 1) * 255).round().astype(np.uint8))
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


def mask_to_tensor(mask: Any, video: Any, num_frames: int, height: int, width: int) -> torch.Tensor:
    """Edit mask -> `(1, F, height, width)` float {0, 1} (1 = keep), thresholded at 0.5; checked against the
    source video's own size and frame count before the shared resize/crop."""
    video_height, video_width = frame_to_numpy("video", video[0]).shape[:2]
    if isinstance(mask, PIL.Image.Image) or (isinstance(mask, (np.ndarray, torch.Tensor)) and mask.ndim == 2):
        masks = [mask]
    elif isinstance(mask, (list, tuple)):
        masks = list(mask)
    elif isinstance(mask, (np.ndarray, torch.Tensor)) and mask.ndim in (3, 4):
        masks = list(mask.reshape(mask.shape[0], mask.shape[-2], mask.shape[-1]))
    else:
        raise TypeError(
            "`mask` must be a PIL image, a NumPy/torch array (H, W) or (F, H, W), or a list of those; got "
            f"{type(mask).__name__}."
        )
    arrays = []
    for item in masks:
        if isinstance(item, PIL.Image.Image):
            array = np.asarray(item.convert("L"), dtype=np.float32) / 255
        else:
            array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
            array = array.astype(np.float32) / 255 if array.dtype == np.uint8 else array.astype(np.float32)
        if array.shape != (video_height, video_width):
            raise ValueError(
                f"`mask` frames must match the video size (H, W) = {(video_height, video_width)}, got {array.shape}."
            )
        arrays.append(array >= 0.5)
    if len(arrays) not in (1, num_frames):
        raise ValueError(f"`mask` must be one image or {num_frames} frames (one per video frame), got {len(arrays)}.")
    keep = []
    for array in arrays:
        if array.shape != (height, width):
            image = PIL.Image.fromarray(array.astype(np.uint8) * 255)
            array = np.asarray(PIL.ImageOps.fit(image, (width, height), PIL.Image.NEAREST)) >= 128
        keep.append(torch.from_numpy(array.astype(np.float32)))
    keep = torch.stack(keep).expand(num_frames, -1, -1) if len(keep) == 1 else torch.stack(keep)
    return keep[None]


def pixels_for_vae(frames: torch.Tensor) -> torch.Tensor:
    """Frames `(F, 3, H, W)` in [0, 1] -> one video `(1, 3, F, H, W)` in [-1, 1], the VAEs' input."""
    return (frames * 2 - 1).movedim(1, 0)[None]
