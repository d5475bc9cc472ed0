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
"""The denoise loop of SkyReels-V4 as Diffusers loop blocks: a wrapper iterating the loop steps, and per step

- before: the model inputs of this step (latents with their condition channels, each modality's timestep);
- denoiser: the guiders' passes (Diffusers' guider protocol), one transformer call per distinct pass, each
  modality's prediction combined by its own guider (`guider` for the video and its keyframes, `audio_guider`);
- after: the scheduler steps, then the known latents re-injected (editing, extension).

The video and the audio each step through the same schedule, the audio possibly `audio_start_step` steps later;
a given modality (video-to-audio's video, audio-to-video's audio) stays clean at timestep 0 and is not stepped.
The per-step rules are the functions the classic loop uses (`pipelines.denoising`), so CFG gives identical outputs.
"""

import copy

import torch
from diffusers.modular_pipelines import BlockState, LoopSequentialPipelineBlocks, ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam
from diffusers.schedulers import FlowMatchEulerDiscreteScheduler

from ...pipelines.denoising import (
    MODALITY_PASS,
    STG_PASS,
    PassInputs,
    asks_for,
    guider_data,
    pass_arguments,
    reinject_known,
    stream_step_index,
    stream_timestep,
    with_condition,
)
from .encoders import GUIDER_SPECS, MODEL_NAME


# The passes every guider makes on the unperturbed model: one transformer call each serves both modalities' guiders.
# Any other pass (skip-layer, perturbed attention) runs with its own guider's model hooks, for that guider alone.
# Passes whose inputs do not depend on the guider asking: one transformer call serves both modalities' guiders.
SHARED_PASSES = ("pred_cond", "pred_uncond", MODALITY_PASS, STG_PASS)
# The transformer input each guider guides (STG perturbs that modality's blocks)
GUIDED_INPUT = {"guider": "hidden_states", "audio_guider": "audio_hidden_states"}


def pack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Tensors of one batch side by side as `(B, N)`: the video and its keyframes share one guider combination and
    one scheduler step (both elementwise for CFG and Euler, so the result equals stepping each alone)."""
    return tensors[0] if len(tensors) == 1 else torch.cat([t.flatten(1) for t in tensors], dim=1)


def unpack(packed: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    if len(like) == 1:
        return [packed]
    sizes = [t[0].numel() for t in like]
    return [part.reshape(t.shape) for part, t in zip(packed.split(sizes, dim=1), like)]


LOOP_STATE = [
    InputParam("latents", type_hint=torch.Tensor, description="fp32 video latents (None: no video)"),
    InputParam("video_is_given", type_hint=bool, default=False, description="the video stays clean"),
    InputParam("audio_latents", type_hint=torch.Tensor, description="fp32 audio latents (None: no audio)"),
    InputParam("audio_is_given", type_hint=bool, default=False, description="the audio stays clean"),
    InputParam("audio_start_step", type_hint=int, default=0, description="loop step of the audio's first step"),
    InputParam("keyframe_latents", type_hint=torch.Tensor, description="fp32 high-res keyframe latents"),
]


class SkyReelsV4LoopBeforeDenoiser(ModularPipelineBlocks):
    """The model inputs of one step: each latent tensor with its condition channels, and each modality's timestep
    (its own step's; a modality waiting for its first step sits at its first, a finished or given one at 0)."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return "Prepares the transformer inputs of this step: latents with condition channels, per-modality timesteps."

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("transformer")]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            *LOOP_STATE,
            InputParam("video_condition", type_hint=torch.Tensor, description="the video's condition channels"),
            InputParam("keyframe_condition", type_hint=torch.Tensor, description="the keyframes' condition channels"),
            InputParam("timesteps", type_hint=torch.Tensor, required=True),
        ]

    @torch.no_grad()
    def __call__(self, components, block_state: BlockState, i: int, t: torch.Tensor):
        dtype = components.transformer.dtype
        timesteps, num_steps = block_state.timesteps, len(block_state.timesteps)
        video_steps = block_state.latents is not None and not block_state.video_is_given
        audio_steps = block_state.audio_latents is not None and not block_state.audio_is_given
        audio_start = block_state.audio_start_step
        block_state.video_step = stream_step_index(i, 0, num_steps) if video_steps else None
        block_state.audio_step = stream_step_index(i, audio_start, num_steps) if audio_steps else None

        block_state.latent_model_input = block_state.timestep = None
        if block_state.latents is not None:
            batch_size = block_state.latents.shape[0]
            block_state.latent_model_input = with_condition(block_state.latents, block_state.video_condition, dtype)
            video_timesteps = timesteps if video_steps else None
            block_state.timestep = stream_timestep(video_timesteps, i, 0, block_state.latents.device)
            block_state.timestep = block_state.timestep.expand(batch_size)
        block_state.keyframe_model_input = None
        if block_state.keyframe_latents is not None:  # the keyframes ride on the video's timestep
            block_state.keyframe_model_input = with_condition(
                block_state.keyframe_latents, block_state.keyframe_condition, dtype
            )
        block_state.audio_model_input = block_state.audio_timestep = None
        if block_state.audio_latents is not None:
            audio = block_state.audio_latents
            block_state.audio_model_input = with_condition(audio, None, dtype)
            audio_timesteps = timesteps if audio_steps else None
            audio_timestep = stream_timestep(audio_timesteps, i, audio_start, audio.device)
            block_state.audio_timestep = audio_timestep.expand(audio.shape[0])
        return components, block_state


class SkyReelsV4RefinerLoopBeforeDenoiser(ModularPipelineBlocks):
    """The Refiner's model inputs: the latents with the condition channels; the clean base audio is a fixed input."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return "Prepares the Refiner's transformer inputs of this step: latents with the condition channels."

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("transformer")]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("latents", type_hint=torch.Tensor, required=True),
            InputParam("video_condition", type_hint=torch.Tensor, required=True),
        ]

    @torch.no_grad()
    def __call__(self, components, block_state: BlockState, i: int, t: torch.Tensor):
        dtype = components.transformer.dtype
        latents = block_state.latents
        block_state.video_step = i
        block_state.audio_step = None
        block_state.latent_model_input = with_condition(latents, block_state.video_condition, dtype)
        block_state.timestep = t.expand(latents.shape[0])
        return components, block_state


class SkyReelsV4LoopDenoiser(ModularPipelineBlocks):
    """Runs each stepping modality's guider through Diffusers' guider protocol: `set_state`, `prepare_inputs` (one
    batch per prediction the guider needs), a transformer call per batch inside `transformer.cache_context`, between
    `prepare_models` and `cleanup_models`, then `guider(batches)` combines them. The conditional and unconditional
    passes are shared by the two guiders; multi-pass guiders (skip-layer, perturbed attention, ...) add their own."""

    model_name = MODEL_NAME

    def __init__(self, guider_names: tuple[str, ...] = ("guider", "audio_guider")):
        self.guider_names = tuple(guider_names)
        super().__init__()

    @property
    def description(self) -> str:
        return (
            "Predicts with the transformer once per distinct guidance pass and combines each modality's predictions "
            "with its own guider (`guider`: video and keyframes; `audio_guider`: audio)."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("transformer"), *(spec for spec in GUIDER_SPECS if spec.name in self.guider_names)]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("prompt_embeds", type_hint=torch.Tensor, required=True),
            InputParam("prompt_attention_mask", type_hint=torch.Tensor),
            InputParam("negative_prompt_embeds", type_hint=torch.Tensor),
            InputParam("negative_prompt_attention_mask", type_hint=torch.Tensor),
            InputParam("timesteps", type_hint=torch.Tensor, required=True),
            InputParam("keyframe_positions", type_hint=torch.Tensor),
            InputParam("reference_latents", type_hint=torch.Tensor),
            InputParam("audio_reference_latents", type_hint=torch.Tensor),
            InputParam.template("attention_kwargs"),
        ]

    def model_inputs(self, components, block_state: BlockState) -> dict:
        """The transformer inputs shared by every pass of this step."""
        streams = {
            "hidden_states": block_state.latent_model_input,
            "timestep": block_state.timestep,
            "keyframe_hidden_states": block_state.keyframe_model_input,
            "audio_hidden_states": block_state.audio_model_input,
            "audio_timestep": block_state.audio_timestep,
        }
        return {
            **{name: value for name, value in streams.items() if value is not None},
            "keyframe_positions": block_state.keyframe_positions,
            "reference_latents": block_state.reference_latents,
            "audio_reference_latents": block_state.audio_reference_latents,
            "attention_kwargs": block_state.attention_kwargs,
        }

    def predictions(self, output, block_state: BlockState) -> dict[str, torch.Tensor]:
        """Each guider's prediction from one transformer output (the video's packed with its keyframes)."""
        video = [output.sample]
        if block_state.keyframe_model_input is not None:
            video.append(output.keyframe_sample)
        return {"guider": pack(video), "audio_guider": getattr(output, "audio_sample", None)}

    @torch.no_grad()
    def __call__(self, components, block_state: BlockState, i: int, t: torch.Tensor):
        transformer = components.transformer
        timesteps = block_state.timesteps
        steps = {"guider": block_state.video_step, "audio_guider": block_state.audio_step}
        # In the layout the guiders read (`guider_data`): (conditional, unconditional, perturbed, isolated)
        prompts = guider_data(
            PassInputs(
                {
                    "encoder_hidden_states": block_state.prompt_embeds,
                    "encoder_attention_mask": block_state.prompt_attention_mask,
                },
                {
                    "encoder_hidden_states": block_state.negative_prompt_embeds,
                    "encoder_attention_mask": block_state.negative_prompt_attention_mask,
                },
            )
        )
        shared_inputs = self.model_inputs(components, block_state)
        outputs = {}  # transformer outputs of this step by pass
        block_state.noise_pred = block_state.audio_noise_pred = None
        guiders, guider_batches = {}, {}
        for name in self.guider_names:
            step = steps[name]
            if step is None:  # this modality does not step now (given, waiting or done)
                continue
            guiders[name] = guider = getattr(components, name)
            guider.set_state(step=step, num_inference_steps=len(timesteps), timestep=timesteps[step])
            guider_batches[name] = guider.prepare_inputs(prompts)
        stg_blocks = {
            GUIDED_INPUT[name]: guiders[name].spatio_temporal_guidance_blocks
            for name, batches in guider_batches.items()
            if asks_for(batches, STG_PASS)
        }
        for name, batches in guider_batches.items():
            guider = guiders[name]
            for batch in batches:
                identifier = getattr(batch, guider._identifier_key)
                key = identifier if identifier in SHARED_PASSES else (name, identifier)
                guider.prepare_models(transformer)
                if key not in outputs:
                    prompt_inputs = {field: getattr(batch, field) for field in prompts}
                    extra = pass_arguments(identifier, stg_blocks)
                    with transformer.cache_context(identifier):
                        outputs[key] = transformer(**shared_inputs, **prompt_inputs, **extra)
                guider.cleanup_models(transformer)
                batch.noise_pred = self.predictions(outputs[key], block_state)[name]
            prediction = guider(batches).pred
            if name == "guider":
                block_state.noise_pred = prediction
            else:
                block_state.audio_noise_pred = prediction
        return components, block_state


class SkyReelsV4RefinerLoopDenoiser(SkyReelsV4LoopDenoiser):
    """The Refiner's guided prediction: one video stream, the clean base audio and VSA settings as fixed inputs."""

    def __init__(self):
        super().__init__(guider_names=("guider",))

    @property
    def inputs(self) -> list[InputParam]:
        return [
            *(
                param
                for param in super().inputs
                if "reference" not in param.name and param.name != "keyframe_positions"
            ),
            InputParam("audio_latents", type_hint=torch.Tensor, description="clean base audio latents"),
            InputParam("sparsity", type_hint=float),
            InputParam("vsa_backend", type_hint=str, default="auto"),
        ]

    def model_inputs(self, components, block_state: BlockState) -> dict:
        transformer = components.transformer
        audio = block_state.audio_latents
        audio_condition = (
            None if audio is None or not transformer.config.audio_in_channels else audio.to(transformer.dtype)
        )
        return {
            "hidden_states": block_state.latent_model_input,
            "timestep": block_state.timestep,
            "audio_latents": audio_condition,
            "sparsity": block_state.sparsity,
            "vsa_backend": block_state.vsa_backend,
            "attention_kwargs": block_state.attention_kwargs,
        }

    def predictions(self, output, block_state: BlockState) -> dict[str, torch.Tensor]:
        return {"guider": output.sample}


class SkyReelsV4LoopAfterDenoiser(ModularPipelineBlocks):
    """Steps each stepping modality's scheduler with its guided prediction, then re-injects the known latents
    (hard preservation of editing and extension) at the next noise level."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return "Steps the schedulers (the video's with its keyframes, the audio's) and re-injects the known latents."

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("scheduler", FlowMatchEulerDiscreteScheduler)]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("timesteps", type_hint=torch.Tensor, required=True),
            InputParam("preserved_latents", type_hint=torch.Tensor, description="known latents to re-inject"),
            InputParam("preserved_mask", type_hint=torch.Tensor, description="where (1)"),
            InputParam("preserved_noise", type_hint=torch.Tensor, description="their noise"),
        ]

    @torch.no_grad()
    def __call__(self, components, block_state: BlockState, i: int, t: torch.Tensor):
        timesteps = block_state.timesteps
        if block_state.video_step is not None:
            scheduler = components.scheduler
            video = [block_state.latents]
            if block_state.keyframe_latents is not None:
                video.append(block_state.keyframe_latents)
            step_t = timesteps[block_state.video_step]
            stepped = scheduler.step(block_state.noise_pred.float(), step_t, pack(video), return_dict=False)[0]
            latents, *keyframes = unpack(stepped, video)
            if block_state.preserved_latents is not None:
                sigma = scheduler.sigmas[scheduler.step_index]
                latents = reinject_known(
                    latents,
                    sigma,
                    block_state.preserved_latents,
                    block_state.preserved_mask,
                    block_state.preserved_noise,
                )
            block_state.latents = latents
            if keyframes:
                block_state.keyframe_latents = keyframes[0]
        if block_state.audio_step is not None:
            step_t = timesteps[block_state.audio_step]
            block_state.audio_latents = block_state.audio_scheduler.step(
                block_state.audio_noise_pred.float(), step_t, block_state.audio_latents, return_dict=False
            )[0]
        return components, block_state


class SkyReelsV4DenoiseLoopWrapper(LoopSequentialPipelineBlocks):
    """Iterates the loop steps: as many as the schedule has, plus the audio's late start (`audio_start_step`) when
    both modalities are generated. The video steps `scheduler`; the audio a copy of it, made here, since it may sit at
    another step of the same schedule."""

    model_name = MODEL_NAME
    denoises_audio = True  # the Refiner's audio is a fixed input, never stepped

    @property
    def description(self) -> str:
        return (
            "Denoises the latents over `timesteps`; each step runs the sub-blocks `before_denoiser`, `denoiser` and "
            "`after_denoiser`."
        )

    @property
    def loop_expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("scheduler", FlowMatchEulerDiscreteScheduler)]

    @property
    def loop_inputs(self) -> list[InputParam]:
        return [*LOOP_STATE, InputParam("timesteps", type_hint=torch.Tensor, required=True)]

    @property
    def loop_intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam("latents", type_hint=torch.Tensor, description="denoised video latents"),
            OutputParam("audio_latents", type_hint=torch.Tensor, description="denoised audio latents"),
            OutputParam("keyframe_latents", type_hint=torch.Tensor, description="denoised high-res keyframes"),
        ]

    @torch.no_grad()
    def __call__(self, components, state: PipelineState):
        block_state = self.get_block_state(state)
        num_steps = len(block_state.timesteps)
        video_steps = block_state.latents is not None and not block_state.video_is_given
        audio_steps = self.denoises_audio and block_state.audio_latents is not None and not block_state.audio_is_given
        video_end = num_steps if video_steps else 0
        audio_end = block_state.audio_start_step + num_steps if audio_steps else 0
        block_state.audio_scheduler = copy.deepcopy(components.scheduler) if audio_steps else None
        with self.progress_bar(total=max(video_end, audio_end)) as progress_bar:
            for i in range(max(video_end, audio_end)):
                start = 0 if video_steps else block_state.audio_start_step
                t = stream_timestep(block_state.timesteps, i, start, block_state.timesteps.device)
                components, block_state = self.loop_step(components, block_state, i=i, t=t)
                progress_bar.update()
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4DenoiseStep(SkyReelsV4DenoiseLoopWrapper):
    """The denoise loop of every base-stage task."""

    block_classes = [SkyReelsV4LoopBeforeDenoiser, SkyReelsV4LoopDenoiser, SkyReelsV4LoopAfterDenoiser]
    block_names = ["before_denoiser", "denoiser", "after_denoiser"]

    @property
    def description(self) -> str:
        return (
            "Denoise loop of SkyReels-V4's base stage: per step, the model inputs (`before_denoiser`), the guided "
            "predictions of `guider` and `audio_guider` (`denoiser`) and the scheduler steps (`after_denoiser`)."
        )


class SkyReelsV4RefinerDenoiseStep(SkyReelsV4DenoiseLoopWrapper):
    """The Refiner's denoise loop: one video stream guided by `guider`."""

    denoises_audio = False
    block_classes = [SkyReelsV4RefinerLoopBeforeDenoiser, SkyReelsV4RefinerLoopDenoiser, SkyReelsV4LoopAfterDenoiser]
    block_names = ["before_denoiser", "denoiser", "after_denoiser"]

    @property
    def description(self) -> str:
        return "Denoise loop of the SkyReels-V4 Refiner, guided by `guider`."
