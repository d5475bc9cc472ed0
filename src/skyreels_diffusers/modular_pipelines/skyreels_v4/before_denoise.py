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
"""Before-denoise blocks of SkyReels-V4: the schedule and the starting latents of each task.

The noise is drawn in the classic pipelines' order (video, keyframes, audio, then the re-injection noise), so the
same seed gives the same outputs in both forms.
"""

import torch
from diffusers.modular_pipelines import ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam
from diffusers.schedulers import FlowMatchEulerDiscreteScheduler

from ...pipelines import generation, inpainting, refining
from ...pipelines.conditioning import VideoCondition
from .encoders import MODEL_NAME
from .modular_pipeline import SkyReelsV4ModularPipeline


class SkyReelsV4SetTimestepsStep(ModularPipelineBlocks):
    """The noise schedule, shared by the video and the audio (each steps its own copy of the scheduler)."""

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
        block_state.timesteps = generation.prepare_timesteps(
            components, block_state.num_inference_steps, block_state.sigmas, components._execution_device
        )
        self.set_block_state(state, block_state)
        return components, state


# The inputs both base-stage latent steps take.
LATENT_INPUTS = [
    InputParam("batch_size", type_hint=int, required=True),
    InputParam.template("height", required=True),
    InputParam.template("width", required=True),
    InputParam("num_frames", type_hint=int, required=True),
    InputParam("fps", type_hint=float, required=True),
    InputParam("audio_duration", type_hint=float),
    InputParam("generate_audio", type_hint=bool, default=True),
    InputParam("video_lead_steps", type_hint=int, default=0),
    InputParam.template("generator"),
    InputParam("latents", type_hint=torch.Tensor, description="initial video noise"),
    InputParam("audio_latents", type_hint=torch.Tensor, description="initial audio noise"),
]

LATENT_OUTPUTS = [
    OutputParam(
        "latents", type_hint=torch.Tensor, description="fp32 video latents `(B, C, F', h, w)` (None: no video)"
    ),
    OutputParam(
        "video_condition", type_hint=torch.Tensor, description="channels after the latents `(B, C+1, F', h, w)`"
    ),
    OutputParam(
        "audio_latents", type_hint=torch.Tensor, description="fp32 audio latents `(B, C_a, L)` (None: no audio)"
    ),
    OutputParam("audio_duration", type_hint=float, description="seconds of audio"),
    OutputParam("audio_start_step", type_hint=int, description="the loop step where the audio starts"),
]


def start_audio(components, block_state, video_is_generated: bool) -> int:
    """Draws the audio noise (when generated) and returns the number of audio latents; sets `audio_duration` and
    `audio_start_step` (the audio waits `video_lead_steps` only when the video is generated too)."""
    block_state.audio_duration = block_state.audio_duration or block_state.num_frames / block_state.fps
    num_audio_latents = generation.audio_latent_count(components, block_state.audio_duration)
    if block_state.generate_audio:
        block_state.audio_latents = generation.prepare_audio_latents(
            components,
            block_state.batch_size,
            num_audio_latents,
            torch.float32,
            components._execution_device,
            block_state.generator,
            block_state.audio_latents,
        )
    block_state.audio_start_step = block_state.video_lead_steps if video_is_generated else 0
    return num_audio_latents


def video_noise(components, block_state) -> torch.Tensor:
    return generation.prepare_latents(
        components,
        block_state.batch_size,
        block_state.height,
        block_state.width,
        block_state.num_frames,
        torch.float32,
        components._execution_device,
        block_state.generator,
        block_state.latents,
    )


class SkyReelsV4PrepareLatentsStep(ModularPipelineBlocks):
    """Text-to-audio-video / video / audio: the generated latents from noise, with the text-to-video condition."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return "Prepares the generated latents from noise: the video, its high-res keyframes, the audio."

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("transformer"), ComponentSpec("vae")]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            *LATENT_INPUTS,
            InputParam("generate_video", type_hint=bool, default=True),
            InputParam("keyframe_indices", type_hint=list, default=[]),
            InputParam("keyframe_height", type_hint=int),
            InputParam("keyframe_width", type_hint=int),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            *LATENT_OUTPUTS,
            OutputParam("keyframe_latents", type_hint=torch.Tensor, description="fp32 high-res keyframe latents"),
            OutputParam("keyframe_condition", type_hint=torch.Tensor, description="their condition channels"),
            OutputParam("keyframe_positions", type_hint=torch.Tensor, description="their latent-timeline positions"),
        ]

    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        if block_state.generate_video:
            block_state.latents = video_noise(components, block_state)
            block_state.video_condition = generation.text_to_video_condition(
                components, block_state.batch_size, block_state.num_frames, block_state.height, block_state.width
            )
        else:
            block_state.latents = block_state.video_condition = None
        block_state.keyframe_latents = block_state.keyframe_condition = block_state.keyframe_positions = None
        if block_state.keyframe_indices:
            keyframes = generation.prepare_keyframe_latents(
                components,
                block_state.batch_size,
                block_state.keyframe_indices,
                block_state.keyframe_height,
                block_state.keyframe_width,
                block_state.generator,
            )
            block_state.keyframe_latents, block_state.keyframe_condition, block_state.keyframe_positions = keyframes
        start_audio(components, block_state, block_state.generate_video)
        if not block_state.generate_audio:
            block_state.audio_latents = None
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4InpaintPrepareLatentsStep(ModularPipelineBlocks):
    """The conditioned tasks: generated latents start from noise; a given video (video-to-audio) or audio
    (audio-to-video) enters as clean latents, flagged `video_is_given` / `audio_is_given`."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return (
            "Prepares the video latents (generated, with the known latents to re-inject when preserving, or given for "
            "video-to-audio) and the audio latents (generated, or given for audio-to-video)."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("transformer"), ComponentSpec("vae"), ComponentSpec("audio_vae")]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            *LATENT_INPUTS,
            InputParam("video_is_given", type_hint=bool, default=False),
            InputParam("condition_latents", type_hint=torch.Tensor, required=True),
            InputParam("condition_mask", type_hint=torch.Tensor, required=True),
            InputParam("source_latents", type_hint=torch.Tensor),
            InputParam("pixel_keep_mask", type_hint=torch.Tensor),
            InputParam("condition_frames", type_hint=list, default=[]),
            InputParam("preserve_unmasked", type_hint=bool, default=False),
            InputParam("given_audio", type_hint=torch.Tensor),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            *LATENT_OUTPUTS,
            OutputParam("audio_is_given", type_hint=bool, description="audio-to-video: the audio stays clean"),
            OutputParam("preserved_latents", type_hint=torch.Tensor, description="known latents to re-inject"),
            OutputParam("preserved_mask", type_hint=torch.Tensor, description="where to re-inject them (1)"),
            OutputParam("preserved_noise", type_hint=torch.Tensor, description="their noise at every level"),
        ]

    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        dtype = components.transformer.dtype
        condition = VideoCondition(block_state.condition_latents, block_state.condition_mask)
        noise = video_noise(components, block_state)  # drawn even for a given video, as the classic pipeline does
        num_audio_latents = start_audio(components, block_state, not block_state.video_is_given)
        block_state.preserved_latents = block_state.preserved_mask = block_state.preserved_noise = None
        if block_state.video_is_given:  # the condition of a keep-everything mask is the video's own encoding
            block_state.latents = condition.latents.float()
        else:
            block_state.latents = noise
            if block_state.preserve_unmasked:
                preserved = inpainting.preserved_latents(
                    components,
                    condition,
                    block_state.source_latents,
                    block_state.pixel_keep_mask,
                    block_state.condition_frames,
                    block_state.generator,
                )
                if preserved is not None:
                    block_state.preserved_latents = preserved.known
                    block_state.preserved_mask = preserved.keep
                    block_state.preserved_noise = preserved.noise
        block_state.video_condition = condition.as_channels().to(dtype)
        block_state.audio_is_given = block_state.given_audio is not None
        if block_state.audio_is_given:
            block_state.audio_latents = inpainting.encode_given_audio(
                components, block_state.given_audio, num_audio_latents, block_state.batch_size
            )
        elif not block_state.generate_audio:
            block_state.audio_latents = None
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4RefinerPrepareLatentsStep(ModularPipelineBlocks):
    """The Refiner's starting latents: pure noise, or (`strength < 1`) the noised upsampled condition with the
    schedule shortened to its last steps."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return "Prepares the Refiner's starting latents and shortens the schedule by `strength`."

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("scheduler", FlowMatchEulerDiscreteScheduler)]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("condition_latents", type_hint=torch.Tensor, required=True),
            InputParam("video_condition", type_hint=torch.Tensor, required=True),
            InputParam("batch_size", type_hint=int, required=True),
            InputParam("timesteps", type_hint=torch.Tensor, required=True),
            InputParam("strength", type_hint=float, default=1.0),
            InputParam.template("generator"),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam("latents", type_hint=torch.Tensor, description="fp32 starting latents `(B, C, F, H, W)`"),
            OutputParam("timesteps", type_hint=torch.Tensor, description="the timesteps to run"),
        ]

    def __call__(self, components, state: PipelineState):
        block_state = self.get_block_state(state)
        condition_latents = block_state.condition_latents
        shape = (block_state.batch_size, condition_latents.shape[1], *block_state.video_condition.shape[2:])
        block_state.latents, block_state.timesteps = refining.refiner_start_latents(
            components, condition_latents, shape, block_state.timesteps, block_state.strength, block_state.generator
        )
        self.set_block_state(state, block_state)
        return components, state
