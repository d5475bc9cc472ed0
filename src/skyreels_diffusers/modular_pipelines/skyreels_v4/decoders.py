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
"""Decoder blocks of SkyReels-V4: latents back to frames and waveforms, as each task returns them."""

import torch
from diffusers import MMAudioVocoder
from diffusers.modular_pipelines import ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam

from ...pipelines import generation, inpainting, refining
from .encoders import MODEL_NAME
from .modular_pipeline import SkyReelsV4ModularPipeline


DECODED_OUTPUTS = [
    OutputParam.template("videos"),
    OutputParam("audio", description="waveforms `(B, channels, samples)` in [-1, 1]"),
    OutputParam("audio_sample_rate", type_hint=int),
]
DECODER_COMPONENTS = [
    ComponentSpec("vae"),
    ComponentSpec("audio_vae"),
    ComponentSpec("vocoder", MMAudioVocoder, description="only with an `MMAudioVAE`"),
]


class _DecodeStep(ModularPipelineBlocks):
    model_name = MODEL_NAME

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return DECODER_COMPONENTS

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return DECODED_OUTPUTS


class SkyReelsV4DecodeStep(_DecodeStep):
    """Text-to-audio-video / video / audio: the video, its high-res keyframes and the audio (`generation.decode_outputs`)."""

    @property
    def description(self) -> str:
        return "Decodes the video, the high-res keyframes and the audio (`output_type='latent'` returns latents)."

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam.template("latents"),
            InputParam("audio_latents", type_hint=torch.Tensor),
            InputParam("keyframe_latents", type_hint=torch.Tensor),
            InputParam("audio_duration", type_hint=float),
            InputParam("output_type", type_hint=str, default="np"),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [*DECODED_OUTPUTS, OutputParam("keyframes", description="the high-res keyframes")]

    @torch.no_grad()
    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        block_state.videos, block_state.audio, block_state.audio_sample_rate, block_state.keyframes = (
            generation.decode_outputs(
                components,
                block_state.latents,
                block_state.audio_latents,
                block_state.keyframe_latents,
                block_state.audio_duration,
                block_state.output_type,
            )
        )
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4InpaintDecodeStep(_DecodeStep):
    """The conditioned tasks (`inpainting.decode_inpaint_outputs`): a given video or audio is returned as given."""

    @property
    def description(self) -> str:
        return "Decodes the conditioned tasks' outputs; given frames and audio pass through, kept pixels exactly."

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam.template("latents", required=True),
            InputParam("audio_latents", type_hint=torch.Tensor),
            InputParam("audio_duration", type_hint=float),
            InputParam("output_type", type_hint=str, default="np"),
            InputParam("video_is_given", type_hint=bool, default=False),
            InputParam("video_frames", description="video-to-audio: returned as the output frames"),
            InputParam("source_frames", type_hint=torch.Tensor),
            InputParam("pixel_keep_mask", type_hint=torch.Tensor),
            InputParam("preserve_unmasked", type_hint=bool, default=False),
            InputParam("condition_mask", type_hint=torch.Tensor),
            InputParam("given_audio", type_hint=torch.Tensor, description="audio-to-video: returned as the audio"),
        ]

    @torch.no_grad()
    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        block_state.videos, block_state.audio, block_state.audio_sample_rate = inpainting.decode_inpaint_outputs(
            components,
            block_state.latents,
            block_state.audio_latents,
            block_state.audio_duration,
            block_state.output_type,
            video=block_state.video_frames,
            video_given=block_state.video_is_given,
            source_frames=block_state.source_frames,
            pixel_keep=block_state.pixel_keep_mask,
            preserve_unmasked=block_state.preserve_unmasked,
            condition_mask=block_state.condition_mask,
            given_audio=block_state.given_audio,
        )
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4RefinerDecodeStep(_DecodeStep):
    """The refined clip (`refining.decode_refiner_outputs`); the base audio passes through."""

    @property
    def description(self) -> str:
        return "Decodes the refined clip; the base audio passes through."

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam.template("latents", required=True),
            InputParam("audio", description="the base waveform, returned unchanged"),
            InputParam("audio_latents", type_hint=torch.Tensor, description="or decoded from the base audio latents"),
            InputParam("num_low_res_frames", type_hint=int, required=True),
            InputParam("output_type", type_hint=str, default="np"),
        ]

    @torch.no_grad()
    def __call__(self, components, state: PipelineState):
        block_state = self.get_block_state(state)
        block_state.videos, block_state.audio, block_state.audio_sample_rate = refining.decode_refiner_outputs(
            components,
            block_state.latents,
            block_state.audio,
            block_state.audio_latents,
            block_state.num_low_res_frames,
            block_state.output_type,
        )
        self.set_block_state(state, block_state)
        return components, state
