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
"""Encoder blocks of SkyReels-V4: the checks of each task (before any work), the instruction through the MLLM, and
the VAE encoding of the conditions."""

import PIL.Image
import torch
from diffusers.configuration_utils import FrozenDict
from diffusers.guiders import LTX2Guidance
from diffusers.modular_pipelines import ModularPipelineBlocks, PipelineState
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, ConfigSpec, InputParam, OutputParam
from transformers import PreTrainedModel

from ...pipelines import generation, inpainting, refining
from ...pipelines.guidance import needs_unconditional
from .modular_pipeline import SkyReelsV4ModularPipeline


MODEL_NAME = "skyreels-v4"


def guider_spec(name: str, description: str) -> ComponentSpec:
    """A Diffusers guider component: `LTX2Guidance` (CFG, STG, modality guidance, rescale) as the classic pipelines
    build it, at their default scale (5.0; the other terms off)."""
    return ComponentSpec(
        name,
        LTX2Guidance,
        description=description,
        config=FrozenDict({"guidance_scale": 5.0}),
        default_creation_method="from_config",
    )


GUIDER_SPECS = [
    guider_spec("guider", "guidance of the video (and its high-res keyframes)"),
    guider_spec("audio_guider", "guidance of the audio"),
]


def guidance_scale_of(guider) -> float:
    """The scale the shared checks validate; guiders without one count as no guidance (1.0)."""
    return float(getattr(guider, "guidance_scale", 1.0)) if guider is not None else 1.0


def check_guiders(components, guider_names) -> None:
    """Each guider must follow Diffusers' guider protocol, which the denoise loop drives."""
    for name in guider_names:
        guider = getattr(components, name, None)
        protocol = ("set_state", "prepare_inputs", "prepare_models", "cleanup_models", "num_conditions")
        if guider is not None and not all(hasattr(guider, attribute) for attribute in protocol):
            raise TypeError(f"`{name}` must be a Diffusers guider (a `BaseGuidance`), got {type(guider).__name__}.")


def needs_negative_prompt(components, guider_names) -> bool:
    """Whether any guider asks for the unconditional pass (then the negative prompt is encoded, as
    `do_classifier_free_guidance` decides in the classic pipelines)."""
    guiders = [getattr(components, name, None) for name in guider_names]
    return any(guider is not None and needs_unconditional(guider) for guider in guiders)


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
    """The instruction (with its images) through the MLLM. The negative prompt is encoded when one of
    `guider_names` needs it (the Refiner has only the video's `guider`)."""

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
        return [ConfigSpec("system_prompt", generation.DEFAULT_SYSTEM_PROMPT), ConfigSpec("text_hidden_layer", -3)]

    @property
    def inputs(self) -> list[InputParam]:
        return PROMPT_INPUTS

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam("prompt_embeds", type_hint=torch.Tensor, description="instruction hidden states `(B, S, D)`"),
            OutputParam("prompt_attention_mask", type_hint=torch.Tensor, description="their mask `(B, S)`"),
            OutputParam("negative_prompt_embeds", type_hint=torch.Tensor, description="None without guidance"),
            OutputParam("negative_prompt_attention_mask", type_hint=torch.Tensor, description="their mask"),
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
        ) = generation.encode_prompt(
            components,
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
    """The checks every base-stage call shares (`generation.check_generation_inputs`), with the guiders' scales
    standing for `guidance_scale` / `audio_guidance_scale`; returns the batch size."""
    check_guiders(components, ("guider", "audio_guider"))
    return generation.check_generation_inputs(
        components,
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

# What both base-stage input steps resolve.
RESOLVED_OUTPUTS = [
    OutputParam("height", type_hint=int, description="video height in pixels"),
    OutputParam("width", type_hint=int, description="video width in pixels"),
    OutputParam("num_frames", type_hint=int, description="frames of the clip"),
    OutputParam("fps", type_hint=float, description="frames per second (the transformer's timeline)"),
    OutputParam("generate_audio", type_hint=bool, description="whether audio is generated"),
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
        return [
            *RESOLVED_OUTPUTS,
            OutputParam("keyframe_indices", type_hint=list, description="checked pixel frame indices (empty: none)"),
            OutputParam("keyframe_height", type_hint=int, description="keyframe height in pixels"),
            OutputParam("keyframe_width", type_hint=int, description="keyframe width in pixels"),
        ]

    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        resolve_defaults(components, block_state)
        if block_state.num_frames is None:
            block_state.num_frames = components.config.default_num_frames
        batch_size = check_shared_inputs(
            components, block_state, block_state.num_frames, block_state.generate_video, block_state.generate_audio
        )
        block_state.keyframe_indices = generation.check_keyframes(
            components,
            block_state.keyframe_indices,
            block_state.num_keyframes,
            block_state.keyframe_height,
            block_state.keyframe_width,
            block_state.height,
            block_state.width,
            block_state.num_frames,
            block_state.generate_video,
            batch_size,
        )
        if block_state.keyframe_height is None:
            block_state.keyframe_height = 2 * block_state.height
        if block_state.keyframe_width is None:
            block_state.keyframe_width = 2 * block_state.width
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
            *RESOLVED_OUTPUTS,
            OutputParam("video_is_given", type_hint=bool, description="video-to-audio: every frame is given"),
            OutputParam("video_frames", description="the source video's frames as read (a file is decoded)"),
            OutputParam(
                "source_frames", type_hint=torch.Tensor, description="the source at the clip's size `(F, 3, H, W)`"
            ),
            OutputParam(
                "pixel_keep_mask",
                type_hint=torch.Tensor,
                description="extension/editing keep-mask `(1 or B, 1, F, H, W)`",
            ),
            OutputParam(
                "condition_frames", type_hint=list, description="`(pixel_frame_index, (1, 3, H, W) in [-1, 1])` pairs"
            ),
            OutputParam("preserve_unmasked", type_hint=bool, description="re-inject and composite the kept cells"),
            OutputParam(
                "given_audio", type_hint=torch.Tensor, description="audio-to-video's track `(channels, samples)`"
            ),
            OutputParam("audio_reference_waveform", type_hint=torch.Tensor, description="`(channels, samples)`"),
            OutputParam(
                "reference_frames", type_hint=list[PIL.Image.Image], description="the references at the clip's size"
            ),
            OutputParam("prompt_images", description="the instruction's images followed by the references"),
        ]

    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        resolve_defaults(components, block_state)
        media = inpainting.check_media(
            components,
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
        inpainting.prepare_frames(
            components,
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
        block_state.prompt_images, block_state.reference_frames = inpainting.reference_prompt_images(
            components, block_state.prompt, block_state.prompt_images, media, block_state.height, block_state.width
        )
        block_state.num_frames = media.num_frames
        block_state.generate_audio = media.generate_audio
        block_state.video_is_given = media.video_given
        block_state.video_frames = media.video
        block_state.source_frames = media.source_frames
        block_state.pixel_keep_mask = media.pixel_keep
        block_state.condition_frames = media.frame_conditions
        block_state.preserve_unmasked = media.preserve_unmasked
        block_state.given_audio = media.given_audio
        block_state.audio_reference_waveform = media.audio_reference
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4VaeEncoderStep(ModularPipelineBlocks):
    """The conditions of the inpainting tasks on the latent grid (`inpainting.encode_conditions`)."""

    model_name = MODEL_NAME

    @property
    def description(self) -> str:
        return (
            "VAE-encodes the conditions: the channel-concatenated video condition (frames kept, mask), the source, the "
            "references and the audio reference."
        )

    @property
    def expected_components(self) -> list[ComponentSpec]:
        return [ComponentSpec("vae"), ComponentSpec("audio_vae")]

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("batch_size", type_hint=int, required=True),
            InputParam("num_frames", type_hint=int, required=True),
            InputParam.template("height", required=True),
            InputParam.template("width", required=True),
            InputParam("video_is_given", type_hint=bool, default=False),
            InputParam("source_frames", type_hint=torch.Tensor),
            InputParam("pixel_keep_mask", type_hint=torch.Tensor),
            InputParam("condition_frames", type_hint=list, default=[]),
            InputParam("reference_frames", type_hint=list, default=[]),
            InputParam("audio_reference_waveform", type_hint=torch.Tensor),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam(
                "condition_latents",
                type_hint=torch.Tensor,
                description="kept latents, black elsewhere `(B, C, F', h, w)`",
            ),
            OutputParam("condition_mask", type_hint=torch.Tensor, description="1 = keep `(B, 1, F', h, w)`"),
            OutputParam("source_latents", type_hint=torch.Tensor, description="the whole source's latents"),
            OutputParam("reference_latents", type_hint=torch.Tensor, description="references `(B, C, R, h, w)`"),
            OutputParam("audio_reference_latents", type_hint=torch.Tensor, description="`(B, C_a, L_ref)`"),
        ]

    @torch.no_grad()
    def __call__(self, components: SkyReelsV4ModularPipeline, state: PipelineState):
        block_state = self.get_block_state(state)
        condition, source_latents, reference_latents, audio_reference_latents = inpainting.encode_conditions(
            components,
            block_state.batch_size,
            block_state.num_frames,
            block_state.height,
            block_state.width,
            block_state.video_is_given,
            block_state.source_frames,
            block_state.pixel_keep_mask,
            block_state.condition_frames,
            block_state.reference_frames,
            block_state.audio_reference_waveform,
        )
        block_state.condition_latents, block_state.condition_mask = condition.latents, condition.mask
        block_state.source_latents = source_latents
        block_state.reference_latents = reference_latents
        block_state.audio_reference_latents = audio_reference_latents
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4RefinerInputStep(ModularPipelineBlocks):
    """The Refiner's checks (`refining.check_refiner_inputs`), then its low-res input as latents."""

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
        return [
            OutputParam("low_res_latents", type_hint=torch.Tensor, description="fp32 `(1 or B, C, F', h, w)`"),
            OutputParam("num_low_res_frames", type_hint=int, description="pixel frames of the low-res clip"),
            OutputParam(
                "keyframe_condition_latents",
                type_hint=torch.Tensor,
                description="high-res keyframes at the target size",
            ),
            OutputParam("keyframe_latent_indices", type_hint=list, description="output latent frame of each"),
        ]

    def __call__(self, components, state: PipelineState):
        block_state = self.get_block_state(state)
        check_guiders(components, ("guider",))
        refining.check_refiner_inputs(
            components,
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
        low_res = refining.refiner_low_res_latents(components, block_state.low_res_latents, block_state.video)
        target_latent_size = (low_res.shape[3] * block_state.scale_factor, low_res.shape[4] * block_state.scale_factor)
        block_state.keyframe_condition_latents, block_state.keyframe_latent_indices = (
            refining.refiner_keyframe_latents(
                components,
                block_state.keyframes,
                block_state.keyframe_indices,
                target_latent_size,
                components.transformer.config.temporal_upscale_factor,
                components._execution_device,
            )
        )
        block_state.low_res_latents = low_res
        block_state.num_low_res_frames = refining.num_low_res_frames(components, low_res)
        self.set_block_state(state, block_state)
        return components, state


class SkyReelsV4RefinerConditionStep(ModularPipelineBlocks):
    """The Refiner's condition (`refining.refiner_condition`) and the clean base audio latents."""

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
            InputParam("low_res_latents", type_hint=torch.Tensor, required=True),
            InputParam("num_low_res_frames", type_hint=int, required=True),
            InputParam("keyframe_condition_latents", type_hint=torch.Tensor),
            InputParam("keyframe_latent_indices", type_hint=list),
            InputParam("scale_factor", type_hint=int, default=2),
            InputParam("batch_size", type_hint=int, required=True),
            InputParam("audio"),
            InputParam("audio_latents", type_hint=torch.Tensor),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [
            OutputParam(
                "video_condition", type_hint=torch.Tensor, description="condition channels `(B, C+1, F, H, W)`"
            ),
            OutputParam("condition_latents", type_hint=torch.Tensor, description="the upsampled fp32 latents"),
            OutputParam("audio_latents", type_hint=torch.Tensor, description="clean base audio latents `(B, C_a, L)`"),
        ]

    @torch.no_grad()
    def __call__(self, components, state: PipelineState):
        block_state = self.get_block_state(state)
        block_state.video_condition, block_state.condition_latents = refining.refiner_condition(
            components,
            block_state.low_res_latents,
            block_state.keyframe_condition_latents,
            block_state.keyframe_latent_indices,
            block_state.scale_factor,
            block_state.batch_size,
        )
        block_state.audio_latents = refining.refiner_audio_latents(
            components,
            block_state.audio,
            block_state.audio_latents,
            block_state.num_low_res_frames,
            block_state.batch_size,
        )
        self.set_block_state(state, block_state)
        return components, state
