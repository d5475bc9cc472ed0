from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class SkyReelsV4PipelineOutput(BaseOutput):
    """
    Output of the SkyReels-V4 pipelines.

    Args:
        frames (`np.ndarray`, `torch.Tensor`, `list[list[PIL.Image.Image]]` or `None`):
            The videos: `(batch, frames, height, width, 3)` in [0, 1] for `output_type="np"`, `(batch, frames, 3,
            height, width)` for `"pt"`, lists of PIL images for `"pil"`, or the latents `(batch, C, F, h, w)` for
            `"latent"`. `None` when no video was generated.
        audio (`np.ndarray`, `torch.Tensor` or `None`):
            The waveforms `(batch, channels, samples)` in [-1, 1] at `audio_sample_rate` (a torch tensor for `"pt"`,
            NumPy otherwise), or the audio latents `(batch, C_a, L)` for `"latent"`. `None` without audio.
        audio_sample_rate (`int` or `None`):
            Sample rate of `audio` in Hz.
        keyframes (*optional*): the high-resolution keyframes generated with the video, in the format of `frames`
            (`(batch, num_keyframes, kf_height, kf_width, 3)` for `"np"`), or their latents `(batch, C, K, hk, wk)` for
            `"latent"` (what `SkyReelsV4RefinerPipeline` consumes).
        keyframe_indices (`list[int]`, *optional*): the pixel frame each keyframe shows.
        fps (`float`, *optional*): frame rate of `frames` (the Refiner doubles the base rate when it interpolates).
    """

    frames: np.ndarray | torch.Tensor | list[list[PIL.Image.Image]] | None
    audio: np.ndarray | torch.Tensor | None
    audio_sample_rate: int | None
    keyframes: np.ndarray | torch.Tensor | list[list[PIL.Image.Image]] | None = None
    keyframe_indices: list[int] | None = None
    fps: float | None = None
