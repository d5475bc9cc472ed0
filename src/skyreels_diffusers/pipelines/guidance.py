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
"""Multimodal guidance: the per-modality guiders of the pipelines, on Diffusers' guider protocol.

Each modality is guided by its own Diffusers guider. By default that is Diffusers' `LTX2Guidance`, which combines

    pred = cond + (cfg - 1)(cond - uncond) + stg (cond - perturbed) + (modality - 1)(cond - isolated)

and an optional rescale towards the conditional prediction's standard deviation. `perturbed` is a pass whose chosen
blocks' self-attention returns its values (spatio-temporal guidance), `isolated` one without the audio<->video
exchange (modality guidance). A term at its neutral scale (1 for CFG and modality, 0 for STG) costs no pass; a pass
that both modalities need runs once. Any other Diffusers guider may be given per modality instead.
"""

import logging
import math
from dataclasses import dataclass

from diffusers.guiders import LTX2Guidance
from diffusers.guiders.guider_utils import BaseGuidance

from .validation import check_guidance_scale, check_number, describe


@dataclass
class GuidanceArguments:
    """One modality's guidance arguments as a pipeline call gives them (`None`: follow the video's value)."""

    guidance_scale: float
    stg_scale: float
    modality_scale: float
    guidance_rescale: float
    spatio_temporal_guidance_blocks: list[int] | None
    guider: BaseGuidance | None = None

    def with_defaults_from(self, video: "GuidanceArguments") -> "GuidanceArguments":
        """The audio's arguments: each one not given takes the video's value (its own guider is never inherited)."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name, value in values.items():
            if value is None and name != "guider":
                values[name] = getattr(video, name)
        return GuidanceArguments(**values)


def multimodal_guider(arguments: GuidanceArguments) -> BaseGuidance:
    """The guider of one modality: the given one, or `LTX2Guidance` with the given scales.

    Diffusers logs that guiders are experimental each time one is built; pipelines build one per modality per call,
    so the notice is held back here."""
    if arguments.guider is not None:
        return arguments.guider
    guider_logger = logging.getLogger("diffusers.guiders.guider_utils")
    level = guider_logger.level
    guider_logger.setLevel(logging.ERROR)
    try:
        return LTX2Guidance(
            guidance_scale=arguments.guidance_scale,
            stg_scale=arguments.stg_scale,
            modality_scale=arguments.modality_scale,
            guidance_rescale=arguments.guidance_rescale,
            spatio_temporal_guidance_blocks=arguments.spatio_temporal_guidance_blocks,
        )
    finally:
        guider_logger.setLevel(level)


def check_guidance_arguments(prefix: str, arguments: GuidanceArguments, num_blocks: int, limits) -> None:
    """Each guidance argument of one modality (`prefix` is "" or "audio_"), named as the caller passed it."""
    if arguments.guider is not None and not isinstance(arguments.guider, BaseGuidance):
        name = "guider" if not prefix else "audio_guider"
        raise TypeError(f"`{name}` must be a Diffusers guider (a `BaseGuidance`), got {describe(arguments.guider)}.")
    check_guidance_scale(f"{prefix}guidance_scale", arguments.guidance_scale, limits)
    check_guidance_scale(f"{prefix}stg_scale", arguments.stg_scale, limits, neutral=0.0)
    check_guidance_scale(f"{prefix}modality_scale", arguments.modality_scale, limits)
    check_number(f"{prefix}guidance_rescale", arguments.guidance_rescale, 0.0, 1.0)
    name = f"{prefix}spatio_temporal_guidance_blocks"
    blocks = arguments.spatio_temporal_guidance_blocks
    if blocks is not None:
        if not isinstance(blocks, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < num_blocks for i in blocks
        ):
            raise ValueError(
                f"`{name}` must be a list of block indices in [0, {num_blocks}) (dual-stream blocks first, then "
                f"single-stream), got {blocks!r}."
            )
    if arguments.guider is None and not math.isclose(arguments.stg_scale, 0.0) and not blocks:
        raise ValueError(
            f"`{prefix}stg_scale`={arguments.stg_scale} needs the blocks to perturb in `{name}` (e.g. [1]); set "
            f"`{prefix}stg_scale=0` to turn spatio-temporal guidance off."
        )


def needs_unconditional(guider: BaseGuidance) -> bool:
    """Whether `guider` may ask for the unconditional pass: `LTX2Guidance` when its CFG term is on, any other guider
    that lists one (`pred_uncond` among its `_input_predictions`, Diffusers' guider protocol)."""
    if isinstance(guider, LTX2Guidance):
        return guider.is_cfg_enabled()
    return "pred_uncond" in guider._input_predictions
