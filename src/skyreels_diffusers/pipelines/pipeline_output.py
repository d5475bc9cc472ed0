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
    """

    frames: np.ndarray | torch.Tensor | list[list[PIL.Image.Image]] | None
    audio: np.ndarray | torch.Tensor | None
    audio_sample_rate: int | None
