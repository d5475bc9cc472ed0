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
"""The one flow-matching denoising loop of SkyReels-V4, shared by every pipeline.

A call denoises *latent streams*: the video, the audio, the high-resolution keyframes (the Refiner has one video
stream). Each stream carries its own scheduler state and timesteps, so the two modalities can sit at different noise
levels in the same model call:

- a stream is *generated*: it steps through its timesteps, starting at loop iteration `start` (before that it waits
  at its first noise level, pure noise; after its last step it is clean and stays at timestep 0);
- or *given* (`scheduler=None`): clean latents at timestep 0 for the whole loop, never predicted or updated.
  Video-to-audio gives the video, audio-to-video gives the audio.

The loop reads no pipeline attributes: pipelines pass their transformer, streams, per-pass model inputs and hooks
(progress bar, interrupt flag, step callback), so it imports no pipeline and no pipeline inherits another's loop.
"""

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.guiders.guider_utils import BaseGuidance

from .validation import check_callback_output, describe


@dataclass
class PreservedLatents:
    """Known latents re-injected after every step at the next noise level, `(1 - sigma) * known + sigma * noise`
    where `keep` is 1, so those cells end exactly known (hard preservation for editing and extension)."""

    known: torch.Tensor
    keep: torch.Tensor
    noise: torch.Tensor

    def apply(self, latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return reinject_known(latents, sigma, self.known, self.keep, self.noise)


@dataclass
class CleanTokens:
    """Tokens of a stream held clean while the rest is generated (the given prefix of an audio extension): where
    `mask` `(B, L)` is True the latents are exactly `known` `(B, C, L)` at every step and the transformer sees them at
    timestep `level` (0: clean; a per-token timestep `(B, L)`)."""

    known: torch.Tensor
    mask: torch.Tensor
    level: float = 0.0

    def apply(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask[:, None], self.known.to(latents), latents)

    def timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        """The stream's (scalar) timestep per token: `level` (0 unless `known` was noised, see `with_noise`) on the
        held tokens."""
        level = torch.full((), self.level, device=self.mask.device)
        return torch.where(self.mask, level, timestep.to(self.mask.device))

    def with_noise(self, level: float, noise: torch.Tensor) -> "CleanTokens":
        """The held tokens noised to timestep `level` (`sigma = level / 1000`) and presented at it: SkyReels-V2's
        `addnoise_condition`, so that errors of a previous window are not copied exactly."""
        sigma = level / 1000
        return CleanTokens((1 - sigma) * self.known + sigma * noise.to(self.known), self.mask, level)


def reinject_known(
    latents: torch.Tensor, sigma: torch.Tensor, known: torch.Tensor, keep: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """`latents` with the `keep` cells replaced by the known latents noised to `sigma` (the level after this step)."""
    sigma = sigma.to(latents.device)
    return torch.lerp(latents, (1 - sigma) * known + sigma * noise, keep)


def stream_step_index(iteration: int, start: int, num_steps: int) -> int | None:
    """Index into a stream's timesteps of its step at loop `iteration` (it steps from `start` for `num_steps`
    iterations), or `None` when it does not step then."""
    return iteration - start if start <= iteration < start + num_steps else None


def stream_timestep(timesteps: torch.Tensor | None, iteration: int, start: int, device) -> torch.Tensor:
    """A stream's timestep at loop `iteration`: a waiting stream sits at its first, a finished or given one
    (`timesteps=None`) at 0 (clean)."""
    if timesteps is None or iteration >= start + len(timesteps):
        return torch.zeros((), device=device)
    return timesteps[max(0, iteration - start)]


def with_condition(latents: torch.Tensor, condition: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """The transformer input of a stream: its latents, then its condition channels (the video tower's condition
    and mask), in the transformer's dtype."""
    latents = latents.to(dtype)
    return latents if condition is None else torch.cat([latents, condition.to(dtype)], dim=1)


@dataclass(eq=False)  # compared by identity: fields hold tensors
class LatentStream:
    """One latent tensor of the loop and how it meets the transformer.

    Args:
        name: its name in step callbacks and in the loop's result (`"latents"`, `"audio_latents"`, ...).
        latents: fp32 latents; noise (generated) or clean latents (given).
        input_name: the transformer argument that receives it (`"hidden_states"`, `"audio_hidden_states"`, ...).
        output_name: the field of the transformer output holding its prediction (`"sample"`, ...).
        timestep_name: the transformer argument that receives its timestep, or `None` when it shares the timestep
            of the stream before it (keyframes ride on the video's).
        scheduler: its own scheduler, already `set_timesteps`; `None` makes the stream given (timestep 0, never
            updated, its prediction ignored).
        timesteps: the timesteps it steps through (the scheduler's, possibly shortened by `strength`).
        start: the loop iteration of its first step.
        condition: channels concatenated after the latents at every call (the video tower's condition and mask).
        guider: a Diffusers guider combining its conditional and unconditional predictions; `None` = no guidance.
        preserved: known latents re-injected after each step.
        clean: tokens held exactly clean at timestep 0 while the others step (its timestep is then per token).
    """

    name: str
    latents: torch.Tensor
    input_name: str
    output_name: str
    timestep_name: str | None
    scheduler: Any = None
    timesteps: torch.Tensor | None = None
    start: int = 0
    condition: torch.Tensor | None = None
    guider: BaseGuidance | None = None
    preserved: PreservedLatents | None = None
    clean: CleanTokens | None = None

    @property
    def is_given(self) -> bool:
        return self.scheduler is None

    @property
    def end(self) -> int:
        """The loop iteration after its last step (0 for a given stream)."""
        return 0 if self.is_given else self.start + len(self.timesteps)

    def step_index(self, iteration: int) -> int | None:
        """Index into `timesteps` of its step at loop `iteration`, or `None` when it does not step then."""
        return None if self.is_given else stream_step_index(iteration, self.start, len(self.timesteps))

    def timestep(self, iteration: int) -> torch.Tensor:
        """Its timestep at loop `iteration`: waiting streams sit at their first, finished and given ones at 0."""
        return stream_timestep(
            self.timesteps if not self.is_given else None, iteration, self.start, self.latents.device
        )

    def model_timestep(self, iteration: int, batch_size: int) -> torch.Tensor:
        """Its transformer timestep at loop `iteration`: `(B,)`, or `(B, L)` with clean tokens."""
        timestep = self.timestep(iteration).expand(batch_size)
        return timestep if self.clean is None else self.clean.timestep(timestep[:, None])

    def model_input(self, dtype: torch.dtype) -> torch.Tensor:
        return with_condition(self.latents, self.condition, dtype)


def num_loop_iterations(streams: list[LatentStream]) -> int:
    return max((stream.end for stream in streams), default=0)


@dataclass
class LoopHooks:
    """What the loop needs from its pipeline, passed explicitly.

    Args:
        progress_bar: a context-manager factory taking `total` (the pipeline's `progress_bar`).
        interrupted: returns True to skip the remaining steps (Diffusers' `pipe.interrupt`).
        on_timestep: told the primary stream's timestep before each step, and `None` after the loop
            (`pipe._current_timestep`).
        guidance_scales: returns `{stream name: guidance scale}` before each step, for guiders with a
            `guidance_scale` (Diffusers pipelines read theirs every step, so a step callback can change it).
        callback: `callback(step, timestep, tensors) -> dict` after each step; the returned dict may replace any of
            the tensors it was given.
        callback_tensor_inputs: the names of the tensors handed to `callback`: stream names and the names of the
            per-pass model inputs (`prompt_embeds`, `negative_prompt_embeds`, ...).
    """

    progress_bar: Callable[..., Any] = lambda total: nullcontext(_NoProgress())  # noqa: E731
    interrupted: Callable[[], bool] = lambda: False  # noqa: E731
    on_timestep: Callable[[torch.Tensor | None], None] | None = None
    guidance_scales: Callable[[], dict[str, float]] | None = None
    callback: Callable[[int, torch.Tensor, dict], dict] | None = None
    callback_tensor_inputs: list[str] = field(default_factory=list)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass


@dataclass
class PassInputs:
    """Per-pass model inputs: `conditional` for the prompt's pass, `unconditional` for guidance's negative pass.
    `callback_names` maps callback tensor names to keys of these dicts (`{"prompt_embeds": ("conditional",
    "encoder_hidden_states")}`), so a step callback may read and replace them."""

    conditional: dict[str, Any]
    unconditional: dict[str, Any] | None = None
    callback_names: dict[str, tuple[str, str]] = field(default_factory=dict)


def denoise(
    transformer: torch.nn.Module,
    streams: list[LatentStream],
    inputs: PassInputs,
    model_kwargs: dict[str, Any] | None = None,
    hooks: LoopHooks | None = None,
    batched_guidance: bool = False,
) -> dict[str, torch.Tensor]:
    """Run the flow-matching loop over `streams`; returns their final latents by stream name.

    At every iteration each stepping stream's guider (any Diffusers guider; `LTX2Guidance` by default) is asked for
    its passes through Diffusers' guider protocol (`set_state`, `prepare_inputs`, `prepare_models`); the
    transformer runs once per pass that any guider needs (the conditional pass always), and each stream combines its
    predictions with its own guider and steps its own scheduler. `model_kwargs` are passed to every call unchanged (references, keyframe
    positions, `attention_kwargs`, ...). The first generated stream is the primary one: its timestep is the one
    reported to callbacks.

    With `batched_guidance`, the conditional and unconditional passes run as one call on a batch `[unconditional; conditional]` (the order of
    Diffusers' pipelines, which FasterCache relies on), prompts padded to one length with masked tokens. Caches that
    keep one state per layer (PAB, FasterCache) need this: they must see both passes together.
    """
    hooks = hooks or LoopHooks()
    model_kwargs = model_kwargs or {}
    dtype = transformer.dtype
    batch_size = streams[0].latents.shape[0]
    num_iterations = num_loop_iterations(streams)
    primary = next((stream for stream in streams if not stream.is_given), streams[0])
    for stream in streams:
        if stream.clean is not None:
            stream.latents = stream.clean.apply(stream.latents)

    with hooks.progress_bar(total=num_iterations) as progress_bar:
        for iteration in range(num_iterations):
            if hooks.interrupted():
                continue
            stepping = [s for s in streams if s.step_index(iteration) is not None]
            scales = hooks.guidance_scales() if hooks.guidance_scales is not None else {}
            for stream in stepping:
                if stream.name in scales and hasattr(stream.guider, "guidance_scale"):
                    stream.guider.guidance_scale = scales[stream.name]
                if stream.guider is not None:
                    index = stream.step_index(iteration)
                    stream.guider.set_state(
                        step=index, num_inference_steps=len(stream.timesteps), timestep=stream.timesteps[index]
                    )
            timestep = primary.timestep(iteration)
            if hooks.on_timestep is not None:
                hooks.on_timestep(timestep)

            call = dict(model_kwargs)
            for stream in streams:
                call[stream.input_name] = stream.model_input(dtype)
                if stream.timestep_name is not None:
                    call[stream.timestep_name] = stream.model_timestep(iteration, batch_size)
            guided = [s for s in stepping if s.guider is not None]
            batches = {stream: stream.guider.prepare_inputs(guider_data(inputs)) for stream in guided}
            predictions = run_passes(transformer, call, inputs, batches, stepping, batch_size, batched_guidance)

            for stream in stepping:
                prediction = predictions[PRED_COND][stream]
                if stream in batches:
                    for batch in batches[stream]:
                        batch.noise_pred = predictions[getattr(batch, BaseGuidance._identifier_key)][stream]
                    # A cache may skip a pass for some stream (FasterCache computes the unconditional video alone):
                    # that stream then steps on its conditional prediction.
                    if all(batch.noise_pred is not None for batch in batches[stream]):
                        prediction = stream.guider(batches[stream]).pred
                t = stream.timesteps[stream.step_index(iteration)]
                stream.latents = stream.scheduler.step(prediction.float(), t, stream.latents, return_dict=False)[0]
                if stream.preserved is not None:
                    stream.latents = stream.preserved.apply(
                        stream.latents, stream.scheduler.sigmas[stream.scheduler.step_index]
                    )
                if stream.clean is not None:
                    stream.latents = stream.clean.apply(stream.latents)

            if hooks.callback is not None:
                _run_callback(hooks, iteration, timestep, streams, inputs)
            progress_bar.update()
    if hooks.on_timestep is not None:
        hooks.on_timestep(None)
    return {stream.name: stream.latents for stream in streams}


# Model inputs that are not per sample (one row per keyframe, shared by the batch): never doubled for batching.
_SHARED_INPUTS = {"keyframe_positions"}


def batch_passes(
    call: dict[str, Any], unconditional: dict[str, Any], conditional: dict[str, Any], batch_size: int
) -> dict[str, Any]:
    """One call's inputs for both guidance passes: per-sample tensors twice along the batch, the prompts
    `[unconditional; conditional]`, padded to the longer one with masked (False) tokens."""
    batched = {
        name: torch.cat([value, value]) if _is_per_sample(name, value, batch_size) else value
        for name, value in call.items()
    }
    for name in conditional:
        negative, positive = unconditional[name], conditional[name]
        if name == "encoder_attention_mask":
            continue
        if name == "encoder_hidden_states":
            length = max(negative.shape[1], positive.shape[1])
            masks = [unconditional.get("encoder_attention_mask"), conditional.get("encoder_attention_mask")]
            padded, padded_masks = [], []
            for embeds, mask in zip((negative, positive), masks):
                if mask is None:
                    mask = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
                extra = length - embeds.shape[1]
                padded.append(torch.nn.functional.pad(embeds, (0, 0, 0, extra)))
                padded_masks.append(torch.nn.functional.pad(mask.bool(), (0, extra), value=False))
            batched[name] = torch.cat(padded)
            batched["encoder_attention_mask"] = torch.cat(padded_masks)
        else:
            batched[name] = torch.cat([negative, positive])
    return batched


def _is_per_sample(name: str, value: Any, batch_size: int) -> bool:
    return torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch_size and name not in _SHARED_INPUTS


PRED_COND = "pred_cond"


def guider_data(inputs: PassInputs) -> dict[str, tuple]:
    """The prompt inputs in the layout Diffusers' guiders read in `prepare_inputs`: per input, a tuple indexed by
    pass kind, `(conditional, unconditional, perturbed, isolated)` (the extra passes of `LTX2Guidance` reuse the
    conditional inputs; two-pass guiders read the first two)."""
    data = {}
    for name, value in inputs.conditional.items():
        negative = None if inputs.unconditional is None else inputs.unconditional[name]
        data[name] = (value, negative, value, value)
    return data


def _identifiers(batches: dict) -> list[str]:
    """Every pass any guider asked for, each once, in the order the guiders listed them."""
    order = []
    for guider_batches in batches.values():
        for batch in guider_batches:
            identifier = getattr(batch, BaseGuidance._identifier_key)
            if identifier not in order:
                order.append(identifier)
    return order


# The model arguments that make each of `LTX2Guidance`'s extra passes (the conditional inputs, perturbed).
MODALITY_PASS = "pred_cond_modality"
STG_PASS = "pred_cond_stg"
STG_ARGUMENT = {
    "hidden_states": "spatio_temporal_guidance_blocks",
    "keyframe_hidden_states": "spatio_temporal_guidance_blocks",
    "audio_hidden_states": "audio_spatio_temporal_guidance_blocks",
}


def pass_arguments(identifier: str, stg_blocks: dict[str, list[int]]) -> dict[str, Any]:
    """The transformer arguments that make pass `identifier` of `LTX2Guidance`: modality isolation, or STG's blocks
    for each transformer input whose guider asked for the STG pass (`stg_blocks`: input name -> blocks)."""
    if identifier == MODALITY_PASS:
        return {"isolate_modalities": True}
    if identifier == STG_PASS:
        return {STG_ARGUMENT[name]: blocks for name, blocks in stg_blocks.items() if name in STG_ARGUMENT}
    return {}


def asks_for(guider_batches: list, identifier: str) -> bool:
    return any(getattr(batch, BaseGuidance._identifier_key) == identifier for batch in guider_batches)


def run_passes(
    transformer,
    call: dict,
    inputs: PassInputs,
    batches: dict,
    stepping: list,
    batch_size: int,
    batched: bool,
) -> dict[str, dict]:
    """One transformer call per pass that any stepping stream's guider needs (a pass both modalities need runs once,
    as LTX-2 does), each inside its own `cache_context` and between the guiders' `prepare_models` and
    `cleanup_models` (where hook-based guiders such as `SkipLayerGuidance` perturb the model). With `batched`, the
    conditional and unconditional passes run as one call. Returns `{pass: {stream: prediction or None}}`."""
    cache_context = getattr(transformer, "cache_context", None) or (lambda name: nullcontext())

    def guiders_of(identifier):  # each guider once, even when it guides two streams (video and keyframes)
        return {
            id(stream.guider): stream.guider
            for stream, guider_batches in batches.items()
            if asks_for(guider_batches, identifier)
        }.values()

    stg_blocks = {
        stream.input_name: stream.guider.spatio_temporal_guidance_blocks
        for stream, guider_batches in batches.items()
        if asks_for(guider_batches, STG_PASS)
    }
    predictions = {}
    remaining = [PRED_COND] + [i for i in _identifiers(batches) if i != PRED_COND]
    if batched and "pred_uncond" in remaining and inputs.unconditional is not None:
        remaining.remove("pred_uncond")
        remaining.remove(PRED_COND)
        for identifier in (PRED_COND, "pred_uncond"):  # the guiders count their passes
            for guider in guiders_of(identifier):
                guider.prepare_models(transformer)
        with cache_context("cond_uncond"):
            both = transformer(**batch_passes(call, inputs.unconditional, inputs.conditional, batch_size))
        for identifier in (PRED_COND, "pred_uncond"):
            for guider in guiders_of(identifier):
                guider.cleanup_models(transformer)
        predictions[PRED_COND], predictions["pred_uncond"] = {}, {}
        for stream in stepping:
            prediction = getattr(both, stream.output_name)
            # A cache may skip the unconditional half of a stream (FasterCache computes only the video's)
            negative, positive = prediction.chunk(2) if len(prediction) > batch_size else (None, prediction)
            predictions[PRED_COND][stream], predictions["pred_uncond"][stream] = positive, negative
    for identifier in remaining:
        prompt = inputs.unconditional if identifier == "pred_uncond" else inputs.conditional
        kwargs = {**call, **prompt, **pass_arguments(identifier, stg_blocks)}
        for guider in guiders_of(identifier):
            guider.prepare_models(transformer)
        with cache_context(identifier):
            output = transformer(**kwargs)
        for guider in guiders_of(identifier):
            guider.cleanup_models(transformer)
        predictions[identifier] = {stream: getattr(output, stream.output_name) for stream in stepping}
    return predictions


def _run_callback(hooks: LoopHooks, iteration: int, timestep, streams: list[LatentStream], inputs: PassInputs):
    by_name = {stream.name: stream for stream in streams}
    tensors = {}
    for name in hooks.callback_tensor_inputs:
        if name in by_name:
            tensors[name] = by_name[name].latents
        elif name in inputs.callback_names:
            which, key = inputs.callback_names[name]
            source = getattr(inputs, which)
            tensors[name] = None if source is None else source[key]
    outputs = hooks.callback(iteration, timestep, tensors)
    if outputs is None:
        return
    if not isinstance(outputs, dict):
        raise TypeError(
            f"`callback_on_step_end` must return a dict of tensors or None, got {describe(outputs)} after step "
            f"{iteration}."
        )
    # Checked as soon as the callback returns: NaN latents would otherwise give NaN frames without a word.
    for name, value in outputs.items():
        if name in by_name:
            check_callback_output(name, value, iteration, by_name[name].latents.shape)
            by_name[name].latents = value
        elif name in inputs.callback_names:
            which, key = inputs.callback_names[name]
            source = getattr(inputs, which)
            if source is not None:
                check_callback_output(name, value, iteration)
                source[key] = value
