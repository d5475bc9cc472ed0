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
"""The denoise block of SkyReels-V4: one step for every task, the package's own flow-matching loop."""

import torch
from diffusers.modular_pipelines import LoopSequentialPipelineBlocks, ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam

from ...pipelines.denoising import LoopHooks, denoise
from .encoders import GUIDER_SPECS, MODEL_NAME
from .modular_pipeline import SkyReelsV4ModularPipeline


def check_guider(name: str, guider) -> None:
    """The loop combines one conditional and one unconditional prediction per stream (`guider.forward(cond,
    uncond)`); guiders that need a third prediction or hooks on the model (skip-layer, perturbed attention) do not fit
    it."""
    if guider is None:
        return
    if not hasattr(guider, "forward") or not hasattr(guider, "set_state"):
        raise TypeError(f"`{name}` must be a Diffusers guider (a `BaseGuidance`), got {type(guider).__name__}.")
    if guider.num_conditions > 2:  # 1 when disabled
        raise ValueError(
            f"`{name}` ({type(guider).__name__}) needs {guider.num_conditions} predictions per step; SkyReels-V4's loop "
            "makes a conditional and an unconditional one. Use a two-prediction guider such as "
            "ClassifierFreeGuidance, ClassifierFreeZeroStarGuidance or AdaptiveProjectedGuidance."
        )


class SkyReelsV4DenoiseStep(ModularPipelineBlocks):
    """Runs `skyreels_diffusers.pipelines.denoising.denoise` on the task's streams, with the pipeline's `guider` for
    the video (and keyframes) and `audio_guider` for the audio: swap either to change guidance per modality."""

    model_name = MODEL_NAME
    # Diffusers' progress bar of loop blocks (`pipe.set_progress_bar_config` reaches it).
    progress_bar = LoopSequentialPipelineBlocks.progress_bar
    set_progress_bar_config = LoopSequentialPipelineBlocks.set_progress_bar_config

    def __init__(self, guider_names: tuple[str, ...] = ("guider", "audio_guider")):
        self.guider_names = tuple(guider_names)
        super().__init__()

    @property
    def description(self) -> str:
        return (
            "Denoises the latent streams with SkyReels-V4's flow-matching loop (per-stream timesteps and schedulers; "
            "given streams stay clean at timestep 0), guided per modality by `guider` and `audio_guider`."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("transformer"), *(spec for spec in GUIDER_SPECS if spec.name in self.guider_names)]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("streams", type_hint=list, required=True),
            InputParam("model_kwargs", type_hint=dict, default={}),
            InputParam("prompt_embeds", type_hint=torch.Tensor, required=True),
            InputParam("prompt_attention_mask", type_hint=torch.Tensor),
            InputParam("negative_prompt_embeds", type_hint=torch.Tensor),
            InputParam("negative_prompt_attention_mask", type_hint=torch.Tensor),
            InputParam.template("attention_kwargs"),
            # Without an audio stream they stay as they were (the Refiner's clean base audio).
            InputParam("audio_latents", type_hint=torch.Tensor),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam.template("latents"),
            OutputParam("audio_latents", type_hint=torch.Tensor, description="denoised audio latents"),
            OutputParam("keyframe_latents", type_hint=torch.Tensor, description="denoised high-res keyframes"),
        ]

    @torch.no_grad()
    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        guiders = {name: getattr(components, name, None) for name in self.guider_names}
        for name, guider in guiders.items():
            check_guider(name, guider)
        for stream in block_state.streams:
            if not stream.is_given:  # the audio has its own guider; the video and its keyframes share `guider`
                stream.guider = guiders["audio_guider" if stream.name == "audio_latents" else "guider"]
        inputs = components.prompt_pass_inputs(
            block_state.prompt_embeds,
            block_state.prompt_attention_mask,
            block_state.negative_prompt_embeds,
            block_state.negative_prompt_attention_mask,
        )
        model_kwargs = {**block_state.model_kwargs, "attention_kwargs": block_state.attention_kwargs}
        result = denoise(
            components.transformer,
            block_state.streams,
            inputs,
            model_kwargs,
            LoopHooks(progress_bar=self.progress_bar),
        )
        block_state.latents = result.get("latents")
        block_state.keyframe_latents = result.get("keyframe_latents")
        block_state.audio_latents = result.get("audio_latents", block_state.audio_latents)
        self.set_block_state(state, block_state)
        return components, state
