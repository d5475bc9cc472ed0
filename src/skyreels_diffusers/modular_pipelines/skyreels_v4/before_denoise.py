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
"""Before-denoise blocks of SkyReels-V4: the schedule and the latent streams of each task."""

import torch
from diffusers.modular_pipelines import ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam
from diffusers.schedulers import FlowMatchEulerDiscreteScheduler

from .encoders import MODEL_NAME
from .modular_pipeline import SkyReelsV4ModularPipeline


# The streams' own guiders are the pipeline's `guider` / `audio_guider`, set by the denoise step; the classic
# pipelines' stream builders take a guidance scale, which these blocks leave at 1 (no guidance of their own).
NO_GUIDANCE = 1.0

# The inputs both base-stage stream builders take.
STREAM_INPUTS = [
    InputParam("batch_size", type_hint=int, required=True),
    InputParam.template("height"),
    InputParam.template("width"),
    InputParam("fps", type_hint=float),
    InputParam("audio_duration", type_hint=float),
    InputParam.template("timesteps", required=True),
    InputParam("video_lead_steps", type_hint=int, default=0),
    InputParam.template("generator"),
    InputParam("latents", type_hint=torch.Tensor, description="initial video noise"),
    InputParam("audio_latents", type_hint=torch.Tensor, description="initial audio noise"),
]

STREAM_OUTPUTS = [
    OutputParam("streams", type_hint=list, description="the `LatentStream`s of the denoising loop"),
    OutputParam("model_kwargs", type_hint=dict, description="transformer inputs of every call besides the prompt"),
]


class SkyReelsV4SetTimestepsStep(ModularPipelineBlocks):
    """The noise schedule (each stream then steps its own copy of the scheduler)."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return "Sets the flow-matching schedule (SkyReels-V4's shifted sigmas unless `sigmas` are given)."

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("scheduler", FlowMatchEulerDiscreteScheduler)]

    @property
    def inputs(self) -> list[InputParam]:
        return [InputParam("num_inference_steps", type_hint=int, default=30), InputParam.template("sigmas")]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [OutputParam("timesteps", type_hint=torch.Tensor, description="the schedule's timesteps")]

    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        block_state.timesteps = components.prepare_timesteps(
            block_state.num_inference_steps, block_state.sigmas, components._execution_device
        )
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4PrepareLatentsStep(ModularPipelineBlocks):
    """Text-to-audio-video / video / audio: `SkyReelsV4Steps.prepare_streams`."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return "Prepares the generated streams from noise: the video, its high-res keyframes, the audio."

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("scheduler", FlowMatchEulerDiscreteScheduler), ComponentSpec("transformer")]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            *STREAM_INPUTS,
            InputParam("num_frames", type_hint=int),
            InputParam("generate_video", type_hint=bool, default=True),
            InputParam("generate_audio", type_hint=bool),
            InputParam("keyframe_indices", type_hint=list),
            InputParam("keyframe_height", type_hint=int),
            InputParam("keyframe_width", type_hint=int),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [*STREAM_OUTPUTS, OutputParam("audio_duration", type_hint=float)]

    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        block_state.streams, keyframe_positions, block_state.audio_duration = components.prepare_streams(
            block_state.batch_size,
            block_state.height,
            block_state.width,
            block_state.num_frames,
            block_state.fps,
            block_state.audio_duration,
            block_state.generate_video,
            block_state.generate_audio,
            block_state.timesteps,
            NO_GUIDANCE,
            NO_GUIDANCE,
            block_state.video_lead_steps,
            block_state.generator,
            block_state.latents,
            block_state.audio_latents,
            block_state.keyframe_indices,
            block_state.keyframe_height,
            block_state.keyframe_width,
        )
        block_state.model_kwargs = {"keyframe_positions": keyframe_positions}
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4InpaintPrepareLatentsStep(ModularPipelineBlocks):
    """The conditioned tasks: `SkyReelsV4InpaintSteps.prepare_inpaint_streams` (a given video or audio enters as a
    clean stream at timestep 0)."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return (
            "Prepares the video stream (generated, with known latents re-injected when preserving, or given for "
            "video-to-audio) and the audio stream (generated, or given for audio-to-video)."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("scheduler", FlowMatchEulerDiscreteScheduler), ComponentSpec("transformer")]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("media", required=True),
            InputParam("conditions", required=True),
            *STREAM_INPUTS,
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [*STREAM_OUTPUTS, OutputParam("audio_duration", type_hint=float)]

    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        conditions = block_state.conditions
        block_state.streams, block_state.audio_duration = components.prepare_inpaint_streams(
            block_state.media,
            conditions,
            block_state.batch_size,
            block_state.height,
            block_state.width,
            block_state.fps,
            block_state.audio_duration,
            block_state.timesteps,
            NO_GUIDANCE,
            NO_GUIDANCE,
            block_state.video_lead_steps,
            block_state.generator,
            block_state.latents,
            block_state.audio_latents,
        )
        block_state.model_kwargs = {
            "reference_latents": conditions.reference_latents,
            "audio_reference_latents": conditions.audio_reference_latents,
        }
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4RefinerPrepareLatentsStep(ModularPipelineBlocks):
    """The Refiner's schedule and starting stream: `SkyReelsV4RefinerSteps.prepare_refiner_stream` (pure noise, or
    the noised upsampled condition for `strength < 1`)."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return "Sets the Refiner's schedule (shortened by `strength`) and its starting video stream."

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("scheduler", FlowMatchEulerDiscreteScheduler), ComponentSpec("transformer")]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("refiner_condition", required=True),
            InputParam("batch_size", type_hint=int, required=True),
            InputParam("num_inference_steps", type_hint=int, default=30),
            InputParam.template("sigmas"),
            InputParam("strength", type_hint=float, default=1.0),
            InputParam.template("generator"),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [STREAM_OUTPUTS[0]]

    def __call__(self, components, state: PipelineState):
        block_state = self.get_block_state(state)
        stream = components.prepare_refiner_stream(
            block_state.refiner_condition,
            block_state.batch_size,
            block_state.num_inference_steps,
            block_state.sigmas,
            block_state.strength,
            NO_GUIDANCE,
            block_state.generator,
        )
        block_state.streams = [stream]
        self.set_block_state(state, block_state)
        return components, state
