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
"""Encoder blocks of SkyReels-V4: the instruction (MLLM), and the inputs each task checks before any work."""

import torch
from diffusers.configuration_utils import FrozenDict
from diffusers.guiders import ClassifierFreeGuidance
from diffusers.modular_pipelines import ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, ConfigSpec, InputParam, OutputParam
from transformers import PreTrainedModel

from ...pipelines.pipeline_mixin import DEFAULT_SYSTEM_PROMPT
from .modular_pipeline import SkyReelsV4ModularPipeline


MODEL_NAME = "skyreels-v4"


def guider_spec(name: str, description: str) -> ComponentSpec:
    """A Diffusers guider component, classifier-free guidance at the classic pipelines' default scale (5.0)."""
    return ComponentSpec(
        name,
        ClassifierFreeGuidance,
        description=description,
        config=FrozenDict({"guidance_scale": 5.0}),
        default_creation_method="from_config",
    )


GUIDER_SPECS = [
    guider_spec("guider", "guidance of the video (and its high-res keyframes)"),
    guider_spec("audio_guider", "guidance of the audio"),
]


def guidance_scale_of(guider) -> float:
    """The scale the classic pipelines' checks validate; guiders without one count as no guidance (1.0)."""
    return float(getattr(guider, "guidance_scale", 1.0)) if guider is not None else 1.0


def needs_negative_prompt(components, guider_names) -> bool:
    """Whether any guider combines a conditional and an unconditional prediction (then the negative prompt is
    encoded, as `do_classifier_free_guidance` decides in the classic pipelines)."""
    guiders = [getattr(components, name, None) for name in guider_names]
    return any(g is not None and g.num_conditions > 1 for g in guiders)  # num_conditions is 1 when disabled


def model_dtype(components) -> torch.dtype:
    """The dtype of the prompt embeddings: the transformer's, or the text encoder's without one."""
    transformer = getattr(components, "transformer", None)
    return (transformer if transformer is not None else components.text_encoder).dtype


PROMPT_INPUTS = [
    InputParam.template("prompt", required=False),
    InputParam.template("negative_prompt"),
    InputParam("prompt_images", description="images (or video frames) that are part of the instruction"),
    InputParam("prompt_embeds", type_hint=torch.Tensor, description="precomputed MLLM hidden states `(B, S, D)`"),
    InputParam("prompt_attention_mask", type_hint=torch.Tensor, description="their mask `(B, S)`"),
    InputParam("negative_prompt_embeds", type_hint=torch.Tensor, description="precomputed negative hidden states"),
    InputParam("negative_prompt_attention_mask", type_hint=torch.Tensor, description="their mask"),
    InputParam("num_videos_per_prompt", type_hint=int, default=1, description="samples per prompt"),
    InputParam("max_sequence_length", type_hint=int, default=512, description="instruction tokens kept"),
]


class SkyReelsV4TextEncoderStep(ModularPipelineBlocks):
    """The instruction (with its images) through the MLLM: `SkyReelsV4PipelineMixin.encode_prompt`. The negative
    prompt is encoded when one of `guider_names` needs it (the Refiner has only the video's `guider`)."""

    model_name = MODEL_NAME

    def __init__(self, guider_names: tuple[str, ...] = ("guider", "audio_guider")):
        self.guider_names = tuple(guider_names)
        super().__init__()

    @property
    def description(self) -> str:
        return "Encodes the instruction (tags and images included) with the multimodal LLM, and the negative prompt."

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [
            ComponentSpec("text_encoder", PreTrainedModel, description="the MLLM (Qwen2.5-VL by default)"),
            ComponentSpec("processor", description="its processor or tokenizer, with a chat template"),
            *(spec for spec in GUIDER_SPECS if spec.name in self.guider_names),
        ]

    @property
    def expected_configs(self) -> list[ConfigSpec]:
        return [ConfigSpec("system_prompt", DEFAULT_SYSTEM_PROMPT), ConfigSpec("text_hidden_layer", -3)]

    @property
    def inputs(self) -> list[InputParam]:
        return PROMPT_INPUTS

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam("prompt_embeds", type_hint=torch.Tensor, kwargs_type="denoiser_input_fields"),
            OutputParam("prompt_attention_mask", type_hint=torch.Tensor, kwargs_type="denoiser_input_fields"),
            OutputParam("negative_prompt_embeds", type_hint=torch.Tensor, kwargs_type="denoiser_input_fields"),
            OutputParam("negative_prompt_attention_mask", type_hint=torch.Tensor, kwargs_type="denoiser_input_fields"),
            OutputParam("batch_size", type_hint=int, description="prompts times `num_videos_per_prompt`"),
        ]

    @torch.no_grad()
    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        (
            block_state.prompt_embeds,
            block_state.prompt_attention_mask,
            block_state.negative_prompt_embeds,
            block_state.negative_prompt_attention_mask,
        ) = components.encode_prompt(
            block_state.prompt,
            block_state.negative_prompt,
            prompt_images=block_state.prompt_images,
            do_classifier_free_guidance=needs_negative_prompt(components, self.guider_names),
            num_videos_per_prompt=block_state.num_videos_per_prompt,
            prompt_embeds=block_state.prompt_embeds,
            prompt_attention_mask=block_state.prompt_attention_mask,
            negative_prompt_embeds=block_state.negative_prompt_embeds,
            negative_prompt_attention_mask=block_state.negative_prompt_attention_mask,
            max_sequence_length=block_state.max_sequence_length,
            device=components._execution_device,
            dtype=model_dtype(components),
        )
        block_state.batch_size = block_state.prompt_embeds.shape[0]
        self.set_block_state(state, block_state)
        return components, state


def check_shared_inputs(components, block_state, num_frames, generate_video, generate_audio) -> int:
    """The checks every base-stage call shares (`SkyReelsV4PipelineMixin.check_inputs`), with the guiders' scales
    standing for `guidance_scale` / `audio_guidance_scale`; returns the batch size."""
    return components.check_inputs(
        block_state.prompt,
        block_state.negative_prompt,
        block_state.prompt_embeds,
        block_state.prompt_attention_mask,
        block_state.negative_prompt_embeds,
        block_state.negative_prompt_attention_mask,
        block_state.height,
        block_state.width,
        num_frames,
        block_state.fps,
        block_state.audio_duration,
        generate_video,
        generate_audio,
        block_state.num_inference_steps,
        block_state.sigmas,
        guidance_scale_of(components.guider),
        guidance_scale_of(components.audio_guider),
        block_state.video_lead_steps,
        block_state.num_videos_per_prompt,
        block_state.generator,
        block_state.latents,
        block_state.audio_latents,
        block_state.output_type,
        True,
        block_state.attention_kwargs,
        None,
        [],
        block_state.max_sequence_length,
    )


SIZE_CONFIGS = [
    ConfigSpec("default_height", 480),
    ConfigSpec("default_width", 848),
    ConfigSpec("default_num_frames", 81),
]

GENERATION_INPUTS = [
    *PROMPT_INPUTS,
    InputParam.template("height"),
    InputParam.template("width"),
    InputParam("num_frames", type_hint=int, description="`4k+1` frames; defaults to the pipeline config"),
    InputParam("fps", type_hint=float, description="must equal the transformer's timeline fps (its default)"),
    InputParam("audio_duration", type_hint=float, description="seconds of audio; defaults to the video's"),
    InputParam("generate_audio", type_hint=bool, description="defaults to whether an `audio_vae` is loaded"),
    InputParam("num_inference_steps", type_hint=int, default=30, description="denoising steps"),
    InputParam.template("sigmas"),
    InputParam("video_lead_steps", type_hint=int, default=0, description="audio starts this many steps later"),
    InputParam.template("generator"),
    InputParam("latents", type_hint=torch.Tensor, description="initial video noise `(B, C, F', h, w)`"),
    InputParam("audio_latents", type_hint=torch.Tensor, description="initial audio noise `(B, C_a, L)`"),
    InputParam("output_type", type_hint=str, default="np", description="`np`, `pt`, `pil` or `latent`"),
    InputParam.template("attention_kwargs"),
]


def resolve_defaults(components, block_state) -> None:
    """`None` means the default (the pipeline config, the transformer's fps, audio when an `audio_vae` exists)."""
    config = components.config
    block_state.height = config.default_height if block_state.height is None else block_state.height
    block_state.width = config.default_width if block_state.width is None else block_state.width
    block_state.fps = components.transformer.config.fps if block_state.fps is None else block_state.fps
    if block_state.generate_audio is None:
        block_state.generate_audio = components.audio_vae is not None or block_state.output_type == "latent"


class SkyReelsV4TextInputStep(ModularPipelineBlocks):
    """Text-to-audio-video, text-to-video and text-to-audio: the defaults and every check, before any work."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return "Resolves the defaults and checks the inputs of text-to-audio-video / text-to-video / text-to-audio."

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("transformer"), ComponentSpec("vae"), ComponentSpec("audio_vae"), *GUIDER_SPECS]

    @property
    def expected_configs(self) -> list[ConfigSpec]:
        return SIZE_CONFIGS

    @property
    def inputs(self) -> list[InputParam]:
        return [
            *GENERATION_INPUTS,
            InputParam("generate_video", type_hint=bool, default=True, description="False for text-to-audio"),
            InputParam("keyframe_indices", type_hint=list, description="pixel frames also made at high resolution"),
            InputParam("num_keyframes", type_hint=int, description="or this many keyframes spread evenly"),
            InputParam("keyframe_height", type_hint=int, description="defaults to twice the video's"),
            InputParam("keyframe_width", type_hint=int, description="defaults to twice the video's"),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [OutputParam("keyframe_indices", type_hint=list, description="checked pixel frame indices")]

    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        resolve_defaults(components, block_state)
        config = components.config
        num_frames = config.default_num_frames if block_state.num_frames is None else block_state.num_frames
        block_state.num_frames = num_frames
        batch_size = check_shared_inputs(
            components, block_state, num_frames, block_state.generate_video, block_state.generate_audio
        )
        block_state.keyframe_indices = components.check_keyframes(
            block_state.keyframe_indices,
            block_state.num_keyframes,
            block_state.keyframe_height,
            block_state.keyframe_width,
            block_state.height,
            block_state.width,
            num_frames,
            block_state.generate_video,
            batch_size,
        )
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4InpaintInputStep(ModularPipelineBlocks):
    """The inpainting tasks, video-to-audio and audio-to-video: the media are checked and read (within
    `pipe.limits`) and resolved to the clip, then the shared checks; the references join the instruction's images."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return (
            "Checks and reads the media of the conditioned tasks (image-to-video, frame conditions, extension, editing, "
            "references, audio reference, video-to-audio, audio-to-video) and adds the references to the instruction."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("transformer"), ComponentSpec("vae"), ComponentSpec("audio_vae"), *GUIDER_SPECS]

    @property
    def expected_configs(self) -> list[ConfigSpec]:
        return [
            *SIZE_CONFIGS,
            ConfigSpec("max_frame_conditions", 8),
            ConfigSpec("max_references", 4),
            ConfigSpec("max_audio_reference_seconds", 10.0),
        ]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            *GENERATION_INPUTS,
            InputParam("image", description="first frame (image-to-video)"),
            InputParam("last_image", description="last frame"),
            InputParam("frame_conditions", type_hint=list, description="`(pixel_frame_index, image)` pairs"),
            InputParam("video", description="a source clip (frames or a file): extension, editing, video-to-audio"),
            InputParam("num_condition_frames", type_hint=int, description="extension: source frames kept"),
            InputParam("mask", description="editing: 1 = keep, 0 = regenerate"),
            InputParam("preserve_unmasked", type_hint=bool, description="keep unmasked pixels exactly"),
            InputParam("audio", description="audio-to-video: a file, or a waveform with `audio_sample_rate`"),
            InputParam("audio_sample_rate", type_hint=int),
            InputParam("reference_images", type_hint=list, description="images whose content should appear"),
            InputParam("reference_video", type_hint=list, description="frames used as references"),
            InputParam("audio_reference", description="a voice or sound to imitate"),
            InputParam("audio_reference_sample_rate", type_hint=int),
            InputParam("keep_input_audio", type_hint=bool, default=False, description="use `video`'s own track"),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam("media", description="the checked media resolved to the clip (`InpaintMedia`)"),
            OutputParam("reference_pil", type_hint=list, description="the references at the clip's size"),
        ]

    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        resolve_defaults(components, block_state)
        media = components.check_media(
            block_state.video,
            block_state.num_condition_frames,
            block_state.mask,
            block_state.preserve_unmasked,
            block_state.audio,
            block_state.audio_sample_rate,
            block_state.reference_images,
            block_state.reference_video,
            block_state.audio_reference,
            block_state.keep_input_audio,
            block_state.height,
            block_state.width,
            block_state.num_frames,
            block_state.fps,
            block_state.audio_duration,
            block_state.generate_audio,
            block_state.audio_reference_sample_rate,
        )
        batch_size = check_shared_inputs(
            components, block_state, media.num_frames, not media.video_given, media.generate_audio
        )
        components.prepare_frames(
            media,
            block_state.image,
            block_state.last_image,
            block_state.frame_conditions,
            block_state.mask,
            block_state.num_condition_frames,
            block_state.height,
            block_state.width,
            batch_size,
        )
        block_state.num_frames = media.num_frames
        block_state.prompt_images, block_state.reference_pil = components.reference_prompt_images(
            block_state.prompt, block_state.prompt_images, media, block_state.height, block_state.width
        )
        block_state.media = media
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4VaeEncoderStep(ModularPipelineBlocks):
    """The conditions of the inpainting tasks on the latent grid: `SkyReelsV4InpaintSteps.prepare_conditions`."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return (
            "VAE-encodes the conditions: the channel-concatenated video condition (frames kept, mask), the references "
            "and the audio reference (read by the input step)."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("vae"), ComponentSpec("audio_vae")]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("media", required=True),
            InputParam("reference_pil", type_hint=list, default=[]),
            InputParam("batch_size", type_hint=int, required=True),
            InputParam.template("height"),
            InputParam.template("width"),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam("conditions", description="`InpaintConditions`: video condition, references, audio reference")
        ]

    @torch.no_grad()
    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        block_state.conditions = components.prepare_conditions(
            block_state.media,
            block_state.batch_size,
            block_state.height,
            block_state.width,
            block_state.reference_pil,
        )
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4RefinerInputStep(ModularPipelineBlocks):
    """The Refiner's checks (`SkyReelsV4RefinerSteps.check_inputs`), then its low-res input as latents:
    `prepare_low_res`."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return "Checks the Refiner's inputs and brings the low-res clip and the high-res keyframes to latents."

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("transformer"), ComponentSpec("vae"), ComponentSpec("audio_vae"), GUIDER_SPECS[0]]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            *(param for param in PROMPT_INPUTS if param.name not in ("prompt_images", "num_videos_per_prompt")),
            InputParam("low_res_latents", type_hint=torch.Tensor, description="the base stage's video latents"),
            InputParam("video", description="or a low-res video (frames)"),
            InputParam("keyframes", description="high-res keyframes (latents or images)"),
            InputParam("keyframe_indices", type_hint=list, description="their low-res pixel frame indices"),
            InputParam("audio", description="the base waveform `(B, channels, samples)`"),
            InputParam("audio_latents", type_hint=torch.Tensor, description="or the base audio latents"),
            InputParam("scale_factor", type_hint=int, default=2),
            InputParam("num_inference_steps", type_hint=int, default=30),
            InputParam.template("sigmas"),
            InputParam("strength", type_hint=float, default=1.0),
            InputParam("sparsity", type_hint=float, description="VSA sparsity; defaults to the Refiner's config"),
            InputParam("vsa_backend", type_hint=str, default="auto"),
            InputParam.template("generator"),
            InputParam("output_type", type_hint=str, default="np"),
            InputParam.template("attention_kwargs"),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [OutputParam("low_res", description="`RefinerLowRes`: low-res latents and keyframes")]

    def __call__(self, components, state: PipelineState):
        block_state = self.get_block_state(state)
        components.check_inputs(
            block_state.prompt,
            block_state.negative_prompt,
            block_state.prompt_embeds,
            block_state.prompt_attention_mask,
            block_state.negative_prompt_embeds,
            block_state.negative_prompt_attention_mask,
            block_state.low_res_latents,
            block_state.video,
            block_state.keyframes,
            block_state.keyframe_indices,
            block_state.audio,
            block_state.audio_latents,
            block_state.scale_factor,
            block_state.num_inference_steps,
            block_state.sigmas,
            block_state.strength,
            guidance_scale_of(components.guider),
            block_state.sparsity,
            block_state.vsa_backend,
            block_state.generator,
            block_state.output_type,
            True,
            block_state.attention_kwargs,
            None,
            [],
            block_state.max_sequence_length,
        )
        block_state.low_res = components.prepare_low_res(
            block_state.low_res_latents,
            block_state.video,
            block_state.keyframes,
            block_state.keyframe_indices,
            block_state.scale_factor,
        )
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4RefinerConditionStep(ModularPipelineBlocks):
    """The Refiner's condition: `SkyReelsV4RefinerSteps.prepare_refiner_condition`."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return (
            "Builds the Refiner's condition (upsampled low-res latents, keyframes, mask) and the base audio latents."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("transformer"), ComponentSpec("audio_vae")]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("low_res", required=True),
            InputParam("batch_size", type_hint=int, required=True),
            InputParam("audio"),
            InputParam("audio_latents", type_hint=torch.Tensor),
            InputParam("sparsity", type_hint=float),
            InputParam("vsa_backend", type_hint=str, default="auto"),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam("refiner_condition", description="`RefinerCondition`"),
            OutputParam("model_kwargs", type_hint=dict, description="the clean base audio and the VSA settings"),
        ]

    @torch.no_grad()
    def __call__(self, components, state: PipelineState):
        block_state = self.get_block_state(state)
        condition = components.prepare_refiner_condition(
            block_state.low_res, block_state.batch_size, block_state.audio, block_state.audio_latents
        )
        block_state.refiner_condition = condition
        block_state.model_kwargs = {
            "audio_latents": condition.audio_condition,
            "sparsity": block_state.sparsity,
            "vsa_backend": block_state.vsa_backend,
        }
        self.set_block_state(state, block_state)
        return components, state
