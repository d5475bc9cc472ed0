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
"""SkyReels-V4's blocks assembled per task, and the auto blocks that choose the task from the inputs.

- `SkyReelsV4Blocks`: text-to-audio-video, text-to-video (`generate_audio=False`), text-to-audio
  (`generate_video=False`), with optional high-res keyframes.
- `SkyReelsV4InpaintBlocks`: image-to-video, frame conditions, extension, editing, references, audio reference,
  video-to-audio (`video` alone) and audio-to-video (`audio`), alone or combined.
- `SkyReelsV4AutoBlocks`: either, chosen step by step from the inputs (the default blocks of
  `SkyReelsV4ModularPipeline`).
- `SkyReelsV4RefinerBlocks`: the Refiner stage (`SkyReelsV4RefinerModularPipeline`).
"""

import copy

from diffusers.modular_pipelines import ConditionalPipelineBlocks, SequentialPipelineBlocks
from diffusers.modular_pipelines.modular_pipeline_utils import OutputParam

from .before_denoise import (
    SkyReelsV4InpaintPrepareLatentsStep,
    SkyReelsV4PrepareLatentsStep,
    SkyReelsV4RefinerPrepareLatentsStep,
    SkyReelsV4SetTimestepsStep,
)
from .decoders import SkyReelsV4DecodeStep, SkyReelsV4InpaintDecodeStep, SkyReelsV4RefinerDecodeStep
from .denoise import SkyReelsV4DenoiseStep, SkyReelsV4RefinerDenoiseStep
from .encoders import (
    MODEL_NAME,
    SkyReelsV4InpaintInputStep,
    SkyReelsV4RefinerConditionStep,
    SkyReelsV4RefinerInputStep,
    SkyReelsV4TextEncoderStep,
    SkyReelsV4TextInputStep,
    SkyReelsV4VaeEncoderStep,
)


# Any of these inputs makes a call a conditioned task (the inpainting pipeline's).
CONDITION_INPUTS = [
    "image",
    "last_image",
    "frame_conditions",
    "video",
    "mask",
    "num_condition_frames",
    "audio",
    "reference_images",
    "reference_video",
    "audio_reference",
]
OUTPUTS = [
    OutputParam.template("videos"),
    OutputParam("audio", description="waveforms `(B, channels, samples)` in [-1, 1]"),
    OutputParam("audio_sample_rate", type_hint=int),
]


class ForwardsProgressBarConfig:
    """`pipe.set_progress_bar_config` reaches the pipeline's top-level blocks; containers pass it on, so it reaches
    the denoise loop wherever it sits."""

    def set_progress_bar_config(self, **kwargs):
        for block in self.sub_blocks.values():
            if hasattr(block, "set_progress_bar_config"):
                block.set_progress_bar_config(**kwargs)


class _SkyReelsV4PipelineBlocks(ForwardsProgressBarConfig, SequentialPipelineBlocks):
    """Top-level blocks whose `init_pipeline` builds this package's modular pipeline class (Diffusers' looks the
    class up by model name inside `diffusers`, where ours is not)."""

    pipeline_class_name = "SkyReelsV4ModularPipeline"

    def init_pipeline(self, pretrained_model_name_or_path=None, components_manager=None, collection=None):
        from . import modular_pipeline

        pipeline_class = getattr(modular_pipeline, self.pipeline_class_name)
        return pipeline_class(
            copy.deepcopy(self),
            pretrained_model_name_or_path,
            components_manager=components_manager,
            collection=collection,
        )


class SkyReelsV4CoreDenoiseStep(ForwardsProgressBarConfig, SequentialPipelineBlocks):
    """Schedule, starting latents and denoising of text-to-audio-video / video / audio."""

    model_name = MODEL_NAME
    block_classes = [SkyReelsV4SetTimestepsStep, SkyReelsV4PrepareLatentsStep, SkyReelsV4DenoiseStep]
    block_names = ["set_timesteps", "prepare_latents", "denoise"]

    @property
    def description(self) -> str:
        return "Sets the schedule, prepares the starting latents and denoises them (text-to-audio-video tasks)."


class SkyReelsV4InpaintCoreDenoiseStep(ForwardsProgressBarConfig, SequentialPipelineBlocks):
    """Schedule, latents (generated or given) and denoising of the conditioned tasks."""

    model_name = MODEL_NAME
    block_classes = [SkyReelsV4SetTimestepsStep, SkyReelsV4InpaintPrepareLatentsStep, SkyReelsV4DenoiseStep]
    block_names = ["set_timesteps", "prepare_latents", "denoise"]

    @property
    def description(self) -> str:
        return "Sets the schedule, prepares the generated and given latents and denoises them (conditioned tasks)."


class SkyReelsV4Blocks(_SkyReelsV4PipelineBlocks):
    """Text-to-audio-video, text-to-video and text-to-audio, as `SkyReelsV4Pipeline` runs them."""

    model_name = MODEL_NAME
    block_classes = [
        SkyReelsV4TextInputStep,
        SkyReelsV4TextEncoderStep,
        SkyReelsV4CoreDenoiseStep,
        SkyReelsV4DecodeStep,
    ]
    block_names = ["input", "text_encoder", "denoise", "decode"]

    @property
    def description(self) -> str:
        return "SkyReels-V4 text-to-audio-video (and text-to-video, text-to-audio, high-res keyframes)."

    @property
    def outputs(self):
        return [*OUTPUTS, OutputParam("keyframes")]


class SkyReelsV4InpaintBlocks(_SkyReelsV4PipelineBlocks):
    """The conditioned tasks, as `SkyReelsV4InpaintPipeline` runs them."""

    model_name = MODEL_NAME
    block_classes = [
        SkyReelsV4InpaintInputStep,
        SkyReelsV4TextEncoderStep,
        SkyReelsV4VaeEncoderStep,
        SkyReelsV4InpaintCoreDenoiseStep,
        SkyReelsV4InpaintDecodeStep,
    ]
    block_names = ["input", "text_encoder", "vae_encoder", "denoise", "decode"]

    @property
    def description(self) -> str:
        return (
            "SkyReels-V4 conditioned tasks: image-to-video, frame conditions, extension, editing, references, audio "
            "reference, video-to-audio and audio-to-video."
        )

    @property
    def outputs(self):
        return OUTPUTS


class _ConditionedOrText(ForwardsProgressBarConfig, ConditionalPipelineBlocks):
    """Runs the conditioned tasks' block when any condition input is given, else the text tasks' (every auto step
    decides from the same user inputs)."""

    model_name = MODEL_NAME
    block_names = ["inpaint", "text"]
    block_trigger_inputs = CONDITION_INPUTS
    default_block_name = "text"

    def select_block(self, **kwargs) -> str | None:
        return "inpaint" if any(kwargs.get(name) is not None for name in CONDITION_INPUTS) else self.default_block_name


class SkyReelsV4AutoInputStep(_ConditionedOrText):
    """The conditioned tasks' input step when any condition is given, else text-to-audio-video's."""

    block_classes = [SkyReelsV4InpaintInputStep, SkyReelsV4TextInputStep]

    @property
    def description(self) -> str:
        return (
            "Input step: the conditioned tasks' (`SkyReelsV4InpaintInputStep`) when any of "
            f"{', '.join(CONDITION_INPUTS)} is given, else text-to-audio-video's (`SkyReelsV4TextInputStep`)."
        )


class SkyReelsV4AutoVaeEncoderStep(_ConditionedOrText):
    """The conditions' VAE encoding, for conditioned tasks only."""

    block_classes = [SkyReelsV4VaeEncoderStep]
    block_names = ["inpaint"]
    default_block_name = None

    @property
    def description(self) -> str:
        return "VAE encoder step of the conditioned tasks (skipped without condition inputs)."


class SkyReelsV4AutoCoreDenoiseStep(_ConditionedOrText):
    block_classes = [SkyReelsV4InpaintCoreDenoiseStep, SkyReelsV4CoreDenoiseStep]

    @property
    def description(self) -> str:
        return "Core denoise step: the conditioned tasks' when a condition input is given, else text-to-audio-video's."


class SkyReelsV4AutoDecodeStep(_ConditionedOrText):
    block_classes = [SkyReelsV4InpaintDecodeStep, SkyReelsV4DecodeStep]

    @property
    def description(self) -> str:
        return "Decode step: the conditioned tasks' when a condition input is given, else text-to-audio-video's."


class SkyReelsV4AutoBlocks(_SkyReelsV4PipelineBlocks):
    """Every base-stage task, each step chosen from the inputs (the default of `SkyReelsV4ModularPipeline`)."""

    model_name = MODEL_NAME
    block_classes = [
        SkyReelsV4AutoInputStep,
        SkyReelsV4TextEncoderStep,
        SkyReelsV4AutoVaeEncoderStep,
        SkyReelsV4AutoCoreDenoiseStep,
        SkyReelsV4AutoDecodeStep,
    ]
    block_names = ["input", "text_encoder", "vae_encoder", "denoise", "decode"]

    @property
    def description(self) -> str:
        return (
            "SkyReels-V4 base stage, every task: text-to-audio-video / video / audio by default; image-to-video, frame "
            "conditions, extension, editing, references, audio reference, video-to-audio and audio-to-video when "
            "their inputs are given."
        )

    @property
    def outputs(self):
        return OUTPUTS


class SkyReelsV4RefinerBlocks(_SkyReelsV4PipelineBlocks):
    """The Refiner stage, as `SkyReelsV4RefinerPipeline` runs it."""

    model_name = MODEL_NAME
    pipeline_class_name = "SkyReelsV4RefinerModularPipeline"
    block_classes = [
        SkyReelsV4RefinerInputStep,
        SkyReelsV4TextEncoderStep(guider_names=("guider",)),
        SkyReelsV4RefinerConditionStep,
        SkyReelsV4SetTimestepsStep,
        SkyReelsV4RefinerPrepareLatentsStep,
        SkyReelsV4RefinerDenoiseStep,
        SkyReelsV4RefinerDecodeStep,
    ]
    block_names = ["input", "text_encoder", "condition", "set_timesteps", "prepare_latents", "denoise", "decode"]

    @property
    def description(self) -> str:
        return (
            "SkyReels-V4 Refiner: low-res clip + high-res keyframes -> the clip at higher resolution (and frame rate)."
        )

    @property
    def outputs(self):
        return OUTPUTS
