"""The channel-concatenation condition of SkyReels-V4 (docs/design.md, "Channel concatenation").

Video tower input = `[noisy latent (C) ; condition latent (C) ; mask (1)]`, where the mask is 1 on latent cells to
keep (conditions) and 0 on cells to generate, and latent frames that hold no condition carry the latent of a black
image (not zeros). Every inpainting-style task is a choice of mask:

| task                     | mask                                          |
|--------------------------|-----------------------------------------------|
| text-to-video            | all 0                                         |
| image-to-video           | latent frame 0 = 1                            |
| extension                | the latent frames of the first k frames = 1   |
| start-end interpolation  | first and last latent frames = 1              |
| editing / inpainting     | any spatio-temporal mask, 1 = preserved       |
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .vae_utils import encode_video, is_per_frame_vae, video_vae_spec


@dataclass
class VideoCondition:
    """`latents` `(B, C, F', h, w)` and `mask` `(B, 1, F', h, w)` (1 = keep) on the latent grid."""

    latents: torch.Tensor
    mask: torch.Tensor

    def as_channels(self) -> torch.Tensor:
        """The `C + 1` condition channels concatenated after the noisy latent."""
        return torch.cat([self.latents, self.mask], dim=1)


def latent_keep_mask(pixel_keep: torch.Tensor, temporal_compression: int, spatial_compression: int) -> torch.Tensor:
    """Pixel keep-mask `(B, 1, F, H, W)` (1 = keep, `F = 4k+1`) -> latent keep-mask `(B, 1, k+1, H/s, W/s)`.

    The region to *generate* is max-pooled, so any latent cell that touches it is generated and only cells whose
    pixels are all kept count as conditions. The causal VAE encodes pixel frame 0 alone into latent frame 0 and
    frames `4j-3 .. 4j` into latent frame j, so frame 0 is repeated to give every latent frame a full group.
    """
    generate = 1.0 - pixel_keep.float()
    first = generate[:, :, :1].expand(-1, -1, temporal_compression - 1, -1, -1)
    generate = torch.cat([first, generate], dim=2)
    kernel = (temporal_compression, spatial_compression, spatial_compression)
    return 1.0 - F.max_pool3d(generate, kernel_size=kernel, stride=kernel)


def latent_frame_index(frame_index: int, temporal_compression: int) -> int:
    """The latent frame that holds pixel frame `frame_index` of a causal VAE (frame 0 alone, then groups)."""
    return math.ceil(frame_index / temporal_compression)


def build_video_condition(
    vae,
    batch_size: int,
    num_frames: int,
    height: int,
    width: int,
    video: torch.Tensor | None = None,
    keep_mask: torch.Tensor | None = None,
    frame_conditions: list[tuple[int, torch.Tensor]] | None = None,
    video_latents: torch.Tensor | None = None,
) -> VideoCondition:
    """Build the condition latents and mask for any inpainting-style task. The pipelines and the training script
    both build every condition with this function.

    Args:
        vae: the pipeline's video VAE.
        batch_size, num_frames, height, width: the video to generate (`num_frames = 4k+1`, pixels).
        video (`torch.Tensor` of shape `(B, 3, F, H, W)` in [-1, 1], *optional*): source video for extension,
            editing and video-to-audio, with `keep_mask` (`(B, 1, F, H, W)`, 1 = keep). Regions to generate are
            blacked out before encoding; latent frames with no kept cell get the black-image latent.
        frame_conditions (list of `(pixel_frame_index, image)`, *optional*): whole-frame conditions (image-to-video,
            last frame, keyframes); `image` is `(B, 3, H, W)` in [-1, 1], encoded alone (as the causal VAE encodes
            frame 0) and placed at latent frame `ceil(index / temporal_compression)`.
        video_latents (`torch.Tensor` of shape `(B, C, F', h, w)`, *optional*): `encode_video(vae, video)`, when
            the caller has it. Latent frames whose pixels are all kept then take it instead of being encoded again
            (every frame for a per-frame image VAE; the whole clip for a video VAE when everything is kept): the
            result is the same, without the VAE pass.

    Returns:
        [`VideoCondition`] on the latent grid.
    """
    spec = video_vae_spec(vae)
    device = vae.device
    black = torch.full((1, 3, 1, height, width), -1.0, device=device)
    black_latent = encode_video(vae, black)
    num_latent_frames = (num_frames - 1) // spec.temporal_compression + 1
    latents = black_latent.expand(batch_size, -1, num_latent_frames, -1, -1).clone()
    mask = torch.zeros_like(latents[:, :1])

    if video is not None:
        keep = keep_mask.to(device=device, dtype=latents.dtype)
        mask = latent_keep_mask(keep, spec.temporal_compression, spec.spatial_compression)
        has_condition = mask.amax(dim=(1, 3, 4)).bool()  # (B, F'): latent frames holding a kept cell
        if has_condition.any():
            encoded = _encode_kept_video(vae, video.to(device), keep.bool(), video_latents, has_condition)
            latents = torch.where(has_condition[:, None, :, None, None], encoded.to(latents.dtype), latents)

    for frame_index, image in frame_conditions or []:
        latent_index = latent_frame_index(frame_index, spec.temporal_compression)
        latents[:, :, latent_index] = encode_video(vae, image[:, :, None].to(device))[:, :, 0].to(latents.dtype)
        mask[:, :, latent_index] = 1.0
    return VideoCondition(latents=latents, mask=mask)


def _encode_kept_video(vae, video, keep, video_latents, needed) -> torch.Tensor:
    """Latents of `video` with the regions to generate blacked out (values on latent frames not `needed` are
    unused). Frames kept whole take `video_latents` when given (see `build_video_condition`)."""
    masked = torch.where(keep, video, torch.full_like(video, -1.0))
    if video_latents is None:
        return encode_video(vae, masked)
    if bool(keep.all()):
        return video_latents
    if not is_per_frame_vae(vae):  # a video VAE mixes frames: only the unmasked whole clip is its own encoding
        return encode_video(vae, masked)
    encoded = video_latents.clone()
    kept_whole = keep.flatten(3).all(dim=-1).all(dim=1)  # (B, F): frame = latent frame without temporal compression
    for sample, frames in enumerate(needed & ~kept_whole):
        index = frames.nonzero()[:, 0]
        if len(index):
            encoded[sample, :, index] = encode_video(vae, masked[sample : sample + 1, :, index])[0]
    return encoded


def build_refiner_condition(
    low_res_latents: torch.Tensor,
    spatial_factor: int,
    temporal_factor: int,
    keyframe_latents: torch.Tensor | None = None,
    keyframe_latent_indices: list[int] | None = None,
) -> VideoCondition:
    """The Refiner's condition (docs/design.md, "High-resolution keyframes and the Refiner"), on the high-resolution latent grid.

    1. the low-res latents `(B, C, F, h, w)` are upsampled linearly in space (x `spatial_factor`) and time
       (`(F - 1) * temporal_factor + 1` latent frames, endpoints aligned: 2x frame interpolation keeps the `4k+1`
       pixel-frame form);
    2. at keyframe positions they are replaced by the high-res keyframe latents `(B, C, K, h*s, w*s)`;
    3. the mask is 1 on keyframe latent frames (known) and 0 elsewhere.
    """
    batch_size, _, num_frames, height, width = low_res_latents.shape
    size = ((num_frames - 1) * temporal_factor + 1, height * spatial_factor, width * spatial_factor)
    latents = F.interpolate(low_res_latents.float(), size=size, mode="trilinear", align_corners=True)
    mask = torch.zeros_like(latents[:, :1])
    if keyframe_latents is not None:
        index = torch.tensor(keyframe_latent_indices, device=latents.device)
        latents[:, :, index] = keyframe_latents.to(latents)
        mask[:, :, index] = 1.0
    return VideoCondition(latents=latents.to(low_res_latents.dtype), mask=mask.to(low_res_latents.dtype))
