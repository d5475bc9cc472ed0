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
"""SkyReelsV4InpaintPipeline: every conditioned task through one interface.

Image-to-video, start-end interpolation, frame conditions, extension, masked editing and video-to-audio are choices of the
channel-concatenated condition (see `conditioning.py`): video-to-audio keeps every frame, so the video is given
whole and only the audio is generated. Audio-to-video gives the audio track instead. Reference images/frames and an
audio reference are prepended in context to the video and audio tokens.
"""

from collections.abc import Callable
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLHunyuanVideo15,
    AutoencoderKLWan,
    AutoencoderOobleck,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    MMAudioVAE,
    MMAudioVocoder,
)
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.guiders.guider_utils import BaseGuidance
from diffusers.utils import replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

from ..loaders import SkyReelsV4LoraLoaderMixin
from ..models import SkyReelsV4Transformer3DModel
from . import generation, inpainting, longform
from .denoising import denoise, num_loop_iterations
from .guidance import GuidanceArguments
from .loading import SkyReelsV4PipelineLoadingMixin
from .pipeline_mixin import DEFAULT_SYSTEM_PROMPT, SkyReelsV4PipelineMixin
from .pipeline_output import SkyReelsV4PipelineOutput


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from skyreels_diffusers import SkyReelsV4InpaintPipeline, SkyReelsV4Pipeline
        >>> from skyreels_diffusers.utils import export_to_video_with_audio

        >>> pipe = SkyReelsV4InpaintPipeline.from_pipe(SkyReelsV4Pipeline.from_pretrained("pipelines/skyreels-v4-tiny"))
        >>> foley = pipe("<sfx>A knock each time the ball hits a wall.</sfx>", video="bounce.mp4")  # video-to-audio
        >>> clip = pipe("<text>A red circle bounces.</text>", audio="knocks.wav")  # audio-to-video
        >>> export_to_video_with_audio(
        ...     clip.frames[0], "clip.mp4", fps=clip.fps, audio=clip.audio[0], audio_sample_rate=clip.audio_sample_rate
        ... )
        ```
"""


class SkyReelsV4InpaintPipeline(
    SkyReelsV4PipelineMixin,
    SkyReelsV4PipelineLoadingMixin,
    DiffusionPipeline,
    SkyReelsV4LoraLoaderMixin,
):
    r"""
    Conditioned generation with SkyReels-V4: image-to-video, start-end interpolation, frame conditions, extension, masked
    editing, reference-guided generation, video-to-audio and audio-to-video, with synchronized audio. Same
    components as [`SkyReelsV4Pipeline`] (`SkyReelsV4InpaintPipeline.from_pipe(pipe)` shares them).

    | task | inputs | generated |
    |---|---|---|
    | image-to-video | `image` | video (frame 0 kept) + audio |
    | start-end interpolation / any frames | `image` + `last_image` / `frame_conditions` | video + audio |
    | extension | `video` + `num_condition_frames` | the rest of the video + audio |
    | editing | `video` + `mask` | the masked region + audio |
    | video-to-audio (foley) | `video` alone | audio; the frames are returned as given |
    | audio-to-video | `audio` (+ any video condition above) | video; the audio is returned as given |
    | references | `reference_images`, `reference_video`, `audio_reference` | as the other inputs say |

    A modality that is given enters the transformer as clean latents at timestep 0 and is neither predicted nor
    re-noised; it conditions the other through the audio-video cross-attention.

    Inputs are resized to `(height, width)` by the same policy everywhere: scaled to cover the target and
    center-cropped (`PIL.ImageOps.fit`), so images of another aspect are cropped, never stretched. Reference
    images are instead scaled to fit inside the target and padded with black, so nothing of them is cut.

    Extra args (pipeline config):
        max_frame_conditions (`int`, defaults to 8): frame conditions allowed per call (`image`, `last_image` and
            `frame_conditions` together).
        max_references (`int`, defaults to 4): reference images plus reference-video frames allowed per call.
        max_audio_reference_seconds (`float`, defaults to 10.0): longest audio reference accepted.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae->audio_vae->vocoder"
    _optional_components = ["audio_vae", "vocoder"]
    _callback_tensor_inputs = ["latents", "audio_latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        text_encoder: PreTrainedModel,
        processor: ProcessorMixin | PreTrainedTokenizerBase,
        transformer: SkyReelsV4Transformer3DModel,
        vae: AutoencoderKLHunyuanVideo15 | AutoencoderKLWan | AutoencoderKL,
        scheduler: FlowMatchEulerDiscreteScheduler,
        audio_vae: MMAudioVAE | AutoencoderOobleck | None = None,
        vocoder: MMAudioVocoder | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        text_hidden_layer: int = -3,
        default_height: int = 480,
        default_width: int = 848,
        default_num_frames: int = 81,
        max_frame_conditions: int = 8,
        max_references: int = 4,
        max_audio_reference_seconds: float = 10.0,
    ) -> None:
        super().__init__()
        components = dict(
            text_encoder=text_encoder,
            processor=processor,
            transformer=transformer,
            vae=vae,
            scheduler=scheduler,
            audio_vae=audio_vae,
            vocoder=vocoder,
        )
        self._register(
            components,
            system_prompt=system_prompt,
            text_hidden_layer=text_hidden_layer,
            default_height=default_height,
            default_width=default_width,
            default_num_frames=default_num_frames,
            max_frame_conditions=max_frame_conditions,
            max_references=max_references,
            max_audio_reference_seconds=max_audio_reference_seconds,
        )

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        image: Any = None,
        last_image: Any = None,
        frame_conditions: list[tuple[int, Any]] | None = None,
        video: Any = None,
        num_condition_frames: int | None = None,
        mask: Any = None,
        preserve_unmasked: bool | None = None,
        audio: Any = None,
        audio_sample_rate: int | None = None,
        reference_images: list | None = None,
        reference_video: list | None = None,
        audio_reference: Any = None,
        audio_reference_sample_rate: int | None = None,
        keep_input_audio: bool = False,
        audio_condition_seconds: float | None = None,
        prompt_images: Any = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        fps: float | None = None,
        audio_duration: float | None = None,
        generate_video: bool = True,
        generate_audio: bool | None = None,
        num_inference_steps: int = 30,
        sigmas: list[float] | None = None,
        guidance_scale: float = 5.0,
        audio_guidance_scale: float | None = None,
        stg_scale: float = 0.0,
        audio_stg_scale: float | None = None,
        modality_scale: float = 1.0,
        audio_modality_scale: float | None = None,
        guidance_rescale: float = 0.0,
        audio_guidance_rescale: float | None = None,
        spatio_temporal_guidance_blocks: list[int] | None = None,
        audio_spatio_temporal_guidance_blocks: list[int] | None = None,
        guider: BaseGuidance | None = None,
        audio_guider: BaseGuidance | None = None,
        video_lead_steps: int = 0,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        audio_latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int = 512,
        batched_guidance: bool | None = None,
        base_num_frames: int | None = None,
        overlap_history: int | None = None,
        addnoise_condition: float = 0.0,
        crossfade: bool = True,
    ) -> SkyReelsV4PipelineOutput | tuple:
        r"""
        Generates (or edits) a video with synchronized audio under visual and audio conditions, or the audio of a
        given video, or the video of a given audio track. The arguments shared with [`SkyReelsV4Pipeline.__call__`]
        (prompts, sizes, steps, guidance, generator, latents, embeddings, outputs, callbacks) mean the same here;
        the base pipeline's high-resolution keyframes (`num_keyframes`, `keyframe_indices`) are not offered here.

        Args:
            image: first frame (image-to-video). PIL image, NumPy `(H, W, 3)` or torch `(3, H, W)`, in [0, 1] or uint8.
            last_image: last frame (start-end interpolation, with `image`).
            frame_conditions (`list[tuple[int, image]]`): `(pixel_frame_index, image)` pairs generalising both; frame
                `f` conditions latent frame `ceil(f / 4)` of the causal VAE. At most `max_frame_conditions` in all.
            video: a source clip: a list of PIL images, NumPy `(F, H, W, 3)`, torch `(F, 3, H, W)`, or a video file
                path (its frames are resampled to `fps` by nearest frame). With `num_condition_frames=k` it is
                extended: its first k frames are kept and the rest of `num_frames` generated. With `mask` it is
                edited. Alone, every frame is kept: video-to-audio, and the output frames are the input's.
            mask: the edit mask, 1 = keep, 0 = regenerate, the size of `video`: one image (PIL, NumPy or torch
                `(H, W)`) applied to every frame, one per frame (`(F, H, W)` or a list of images), or one of those per
                generated video, `(B, F or 1, H, W)` with B = prompts x `num_videos_per_prompt`. Values are in [0, 1]
                (soft masks are thresholded at 0.5); uint8 masks are read as [0, 255] and scaled by 1/255; NaN and
                other values outside [0, 1] are refused.
            preserve_unmasked (`bool`, *optional*): re-inject the known latents at every step and composite the
                unmasked input pixels into the output, so they are identical to the input. Defaults to True for
                editing and extension, False otherwise. When True, image / last-frame / keyframe conditions are
                re-injected too, so those frames decode to exactly the VAE reconstruction of the given images.
            audio: the soundtrack to make a video for (audio-to-video): a file path, or a waveform `(samples,)` /
                `(channels, samples)` array or tensor with `audio_sample_rate`; resampled with PyAV to the audio
                VAE's rate. Its duration must match `num_frames / fps` within one video latent frame (`num_frames`
                defaults to the audio's length). It is returned unchanged as the output audio.
            reference_images (`list`): images whose content should appear (identity, objects, style); VAE-encoded,
                prepended to the video tokens at negative temporal RoPE indices, kept clean, and also shown to the MLLM.
            reference_video (`list`): frames of a video used the same way (each frame is one reference).
            audio_reference: a file path, or a waveform `(samples,)` / `(channels, samples)` array or tensor with
                `audio_reference_sample_rate`; resampled with PyAV to the audio VAE's rate, encoded and prepended to
                the audio tokens. At most `max_audio_reference_seconds` long.
            keep_input_audio (`bool`, defaults to False): instead of generating audio (the paper's behaviour: audio
                is made from scratch, conditioned on the edited video), use the audio track of `video` (a file path)
                as the given `audio`, padded with silence to the output's duration: the generated frames follow it.
            audio_condition_seconds (`float`, *optional*): audio extension: keep the first this many seconds of the
                given soundtrack (`audio`, or the track of `video` with `keep_input_audio=True`) and generate the
                rest of the audio, alone or with a video extension (`num_condition_frames`). The whole audio latents
                inside it (the track encoded as a whole) enter the transformer clean, at timestep 0 per token, and are never updated; with
                `preserve_unmasked` (the default here) the output starts with the given samples exactly. Must be
                within the track and shorter than the clip; the track may be shorter than the clip.
            video_lead_steps (`int`, defaults to 0): when video and audio are both generated, the audio starts this
                many steps after the video (see [`SkyReelsV4Pipeline.__call__`]).
            generate_video (`bool`, defaults to True): False makes audio alone (text-to-audio); with `audio` and
                `audio_condition_seconds`, a continuation of a soundtrack. No video condition is then accepted.
            addnoise_condition (`float`, defaults to 0): noise put on the kept frames' condition channels and on a
                kept audio prefix (presented at this timestep), in timestep units 0-1000, so a continuation does not
                copy the errors of what it continues (SkyReels-V2's diffusion-forcing option). The output's kept
                pixels and samples are still the given ones with `preserve_unmasked`.
            base_num_frames, overlap_history, crossfade: long-form generation as in [`SkyReelsV4Pipeline.__call__`]:
                with `num_frames` beyond the window, the first window is this call's task (an extension of `video`,
                image-to-video, ...), the later ones extend it window by window.

        Examples:

        Returns:
            [`SkyReelsV4PipelineOutput`] or `(frames, audio, audio_sample_rate)`.
        """
        arguments = {name: value for name, value in locals().items() if name != "self"}  # for chained windows
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if callback_on_step_end_tensor_inputs is None:
            callback_on_step_end_tensor_inputs = ["latents"]
        # `None` means the default; any other value (0 included) is checked as given.
        height = self.config.default_height if height is None else height
        width = self.config.default_width if width is None else width
        fps = self.transformer.config.fps if fps is None else fps
        audio_guidance_scale = guidance_scale if audio_guidance_scale is None else audio_guidance_scale
        if generate_audio is None:  # as in `SkyReelsV4Pipeline`: audio when the pipeline can make it
            generate_audio = self.audio_vae is not None or output_type == "latent"
        batched_guidance = self.batched_guidance(batched_guidance)
        device = self._execution_device
        if (base_num_frames is not None or overlap_history is not None) and num_frames is not None:
            plan = longform.plan_chain(
                self, num_frames, base_num_frames, overlap_history, addnoise_condition, crossfade, fps, generate_audio
            )
            if plan.num_windows > 1:
                longform.check_chained_arguments(
                    arguments, longform.batch_size_of(prompt, prompt_embeds, num_videos_per_prompt)
                )
                return longform.chained_call(self, self, plan, arguments)
        longform.check_chain_options(addnoise_condition, crossfade)

        inpainting.check_audio_only(generate_video, generate_audio, arguments)

        # 1. Check inputs before any work: this pipeline's own arguments, the media (read within `self.limits`),
        # then the arguments shared with `SkyReelsV4Pipeline`; resizing and encoding come after.
        media = inpainting.check_media(
            self,
            video,
            num_condition_frames,
            mask,
            preserve_unmasked,
            audio,
            audio_sample_rate,
            reference_images,
            reference_video,
            audio_reference,
            keep_input_audio,
            height,
            width,
            num_frames,
            fps,
            audio_duration,
            generate_audio,
            audio_reference_sample_rate,
            audio_condition_seconds,
        )
        batch_size = self.check_inputs(
            prompt,
            negative_prompt,
            prompt_embeds,
            prompt_attention_mask,
            negative_prompt_embeds,
            negative_prompt_attention_mask,
            height,
            width,
            media.num_frames,
            fps,
            audio_duration,
            generate_video and not media.video_given,
            media.generate_audio,
            num_inference_steps,
            sigmas,
            guidance_scale,
            audio_guidance_scale,
            video_lead_steps,
            num_videos_per_prompt,
            generator,
            latents,
            audio_latents,
            output_type,
            return_dict,
            attention_kwargs,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            max_sequence_length,
        )
        inpainting.prepare_frames(
            self, media, image, last_image, frame_conditions, mask, num_condition_frames, height, width, batch_size
        )
        self._guidance_scale, self._audio_guidance_scale = guidance_scale, audio_guidance_scale
        guiders = self.prepare_guiders(
            GuidanceArguments(
                guidance_scale, stg_scale, modality_scale, guidance_rescale, spatio_temporal_guidance_blocks, guider
            ),
            GuidanceArguments(
                audio_guidance_scale,
                audio_stg_scale,
                audio_modality_scale,
                audio_guidance_rescale,
                audio_spatio_temporal_guidance_blocks,
                audio_guider,
            ),
            generate_video and not media.video_given,
            media.generate_audio,
        )
        self._generate_video = generate_video and not media.video_given
        self._generate_audio = media.generate_audio
        self._attention_kwargs = attention_kwargs
        self._interrupt = False

        # 2. Encode the instruction; references are part of it (their semantic path)
        prompt_images, reference_pil = inpainting.reference_prompt_images(
            self, prompt, prompt_images, media, height, width
        )
        prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask = (
            self.encode_prompt(
                prompt,
                negative_prompt,
                prompt_images=prompt_images,
                do_classifier_free_guidance=self.do_classifier_free_guidance,
                num_videos_per_prompt=num_videos_per_prompt,
                prompt_embeds=prompt_embeds,
                prompt_attention_mask=prompt_attention_mask,
                negative_prompt_embeds=negative_prompt_embeds,
                negative_prompt_attention_mask=negative_prompt_attention_mask,
                max_sequence_length=max_sequence_length,
                device=device,
                dtype=self.transformer.dtype,
            )
        )
        batch_size = prompt_embeds.shape[0]

        # 3. Timesteps
        timesteps = self.prepare_timesteps(num_inference_steps, sigmas, device)

        # 4. Conditions on the latent grid: the channel-concatenated condition, references, audio reference
        condition, source_latents, reference_latents, audio_reference_latents = inpainting.encode_conditions(
            self,
            batch_size,
            media.num_frames,
            height,
            width,
            media.video_given,
            media.source_frames,
            media.pixel_keep,
            media.frame_conditions,
            reference_pil,
            media.audio_reference,
            generate_video,
        )

        # 5. Latent streams: generated ones start from noise, given ones are clean at timestep 0
        if generate_video:
            latents = generation.prepare_latents(
                self, batch_size, height, width, media.num_frames, torch.float32, device, generator, latents
            )
        audio_duration = audio_duration or media.num_frames / fps
        num_audio_latents = generation.audio_latent_count(self, audio_duration)
        if media.generate_audio:
            audio_latents = generation.prepare_audio_latents(
                self, batch_size, num_audio_latents, torch.float32, device, generator, audio_latents
            )
        if not generate_video:
            streams = []
        elif media.video_given:  # the condition of a keep-everything mask is the video's own encoding
            streams = [self.latent_stream("video", condition.latents.float(), None, condition.as_channels())]
        else:
            preserved = None
            if media.preserve_unmasked:
                preserved = inpainting.preserved_latents(
                    self, condition, source_latents, media.pixel_keep, media.frame_conditions, generator
                )
            if addnoise_condition:
                condition_channels = inpainting.noised_condition(self, condition, addnoise_condition, generator)
            else:
                condition_channels = condition
            video_condition = condition_channels.as_channels().to(self.transformer.dtype)
            streams = [
                self.latent_stream("video", latents, timesteps, video_condition, guiders["video"], preserved=preserved)
            ]
        if media.generate_audio:
            start = 0 if media.video_given else video_lead_steps
            clean = None
            if media.audio_source is not None:
                clean = inpainting.audio_prefix_tokens(
                    self, media.audio_source, media.audio_prefix_samples, num_audio_latents, batch_size
                )
                if addnoise_condition:
                    noise = randn_tensor(clean.known.shape, generator=generator, device=device, dtype=torch.float32)
                    clean = clean.with_noise(addnoise_condition, noise)
            streams.append(
                self.latent_stream("audio", audio_latents, timesteps, None, guiders["audio"], start=start, clean=clean)
            )
        elif media.given_audio is not None:
            given = inpainting.encode_given_audio(self, media.given_audio, num_audio_latents, batch_size)
            streams.append(self.latent_stream("audio", given, None))
        self._num_timesteps = num_loop_iterations(streams)

        # 6. Denoising loop
        inputs = self.prompt_pass_inputs(
            prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask
        )
        model_kwargs = {
            "reference_latents": reference_latents,
            "audio_reference_latents": audio_reference_latents,
            "attention_kwargs": self.attention_kwargs,
        }
        hooks = self.loop_hooks(callback_on_step_end, callback_on_step_end_tensor_inputs)
        result = denoise(self.transformer, streams, inputs, model_kwargs, hooks, batched_guidance)

        # 7. Decode; given frames and audio are returned as given, unmasked pixels come from the input exactly
        frames, audio, sample_rate = inpainting.decode_inpaint_outputs(
            self,
            result.get("latents"),
            result.get("audio_latents"),
            audio_duration,
            output_type,
            video=media.video,
            video_given=media.video_given,
            source_frames=media.source_frames,
            pixel_keep=media.pixel_keep,
            preserve_unmasked=media.preserve_unmasked,
            condition_mask=None if condition is None else condition.mask,
            given_audio=media.given_audio,
            audio_prefix=None if media.audio_source is None else media.audio_source[:, : media.audio_prefix_samples],
        )
        self.maybe_free_model_hooks()

        if not return_dict:
            return (frames, audio, sample_rate)
        return SkyReelsV4PipelineOutput(frames=frames, audio=audio, audio_sample_rate=sample_rate, fps=fps)
