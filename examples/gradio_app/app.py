"""SkyReels-V4 demo: prompt, image or video in, an MP4 with synchronized sound out, in a Gradio page.

    python examples/gradio_app/app.py                       # the embedded tiny model, http://127.0.0.1:7860
    python examples/gradio_app/app.py --model PATH_OR_HUB_ID --refiner PATH --host 0.0.0.0 --port 7860

The model is `--model`, else `$SKYREELS_V4_MODEL`, else the repo's `pipelines/skyreels-v4-tiny` folder, else randomly
initialised tiny components (the page says so loudly: the output is noise). One pipeline is loaded; the inpainting
and refiner pipelines share its components, so the weights are in memory once.

`build_demo()` returns the Blocks without launching them (tests drive it); the validation helpers below are plain
functions that raise `InputError`, turned into a readable `gr.Error` by the handlers.
"""

import argparse
import dataclasses
import functools
import html
import inspect
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import gradio as gr
import numpy as np
import PIL.Image
import torch

from skyreels_diffusers import (
    SkyReelsV4InpaintPipeline,
    SkyReelsV4Pipeline,
    SkyReelsV4RefinerPipeline,
    SkyReelsV4RefinerTransformer3DModel,
)
from skyreels_diffusers.cli import (
    DTYPE_CHOICES,
    DTYPE_HELP,
    EMBEDDED_MODEL,
    MODEL_ENV_VAR,
    default_model,
    frames_for_duration,
)
from skyreels_diffusers.utils.media import export_to_video_with_audio, load_video, resample_frames
from skyreels_diffusers.utils.precision import resolve_dtype


logger = logging.getLogger("skyreels_v4_demo")

APP_DIR = Path(__file__).resolve().parent
REFINER_ENV_VAR = "SKYREELS_V4_REFINER"
# The structured-prompt tags of the paper, in the order the prompt builder composes them.
TAGS = {"text": "Visual", "sfx": "Sound effects", "dialogue": "Dialogue", "singing": "Singing", "bgm": "Music"}
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", *VIDEO_SUFFIXES)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
MAX_IMAGE_SIDE = 4096
# Decoded frames of one upload (frames x width x height): 2**28 pixels is 0.8 GB as RGB, e.g. 20 s of 1080p at 30 fps.
# Checked before decoding, so a small file that expands to gigabytes is refused without using the memory.
MAX_VIDEO_PIXELS = 2**28
MAX_UPLOAD_MB = 200
KEEP_OUTPUTS = 20  # newest MP4s kept in the output folder; Gradio serves its own cached copies
MAX_PROMPT_CHARS = 4000
MAX_STEPS = 100
MAX_REFERENCE_IMAGES = 3
REFINE_SCALE = 2  # the Refiner doubles the size; the base pass makes keyframes at that size
REFINE_KEYFRAMES = 2
EXAMPLE_PROMPTS = [
    "<text>A red ball bounces in a wooden box.</text><sfx>A hollow knock on every bounce.</sfx>",
    "<text>Rain on a tin roof at night, a lamp flickers.</text><sfx>Steady rain, distant thunder.</sfx>",
    "<text>A woman smiles at the camera in a cafe.</text><dialogue>Good morning!</dialogue><bgm>Soft jazz.</bgm>",
]


class InputError(ValueError):
    """A problem with what the user entered; shown in the page as is."""


# ---------------------------------------------------------------------------------------------------------------------
# Model resolution and loading
# ---------------------------------------------------------------------------------------------------------------------


def embedded_model_candidates() -> list[Path]:
    """Where the tiny default may sit: under the working directory (what the CLI looks at), next to this file (a Space
    keeps app.py at its root beside `pipelines/`), and at the root of the checkout that holds this file."""
    return [Path.cwd() / EMBEDDED_MODEL, APP_DIR / EMBEDDED_MODEL, APP_DIR.parents[1] / EMBEDDED_MODEL]


def resolve_model(model: str | None = None) -> str | None:
    """`model`, else the CLI's `default_model()` (env var, then ./pipelines/...), else the embedded folder found from
    this file's location, else None (random tiny components)."""
    if model:
        return model
    found = default_model()
    if found:
        return found
    for candidate in embedded_model_candidates():
        if (candidate / "model_index.json").is_file():
            return str(candidate)
    return None


def resolve_refiner(refiner: str | None, model: str | None) -> str | None:
    """`refiner`, else `$SKYREELS_V4_REFINER`, else a `refiner/` folder inside a local model folder, else None."""
    if refiner:
        return refiner
    if os.environ.get(REFINER_ENV_VAR):
        return os.environ[REFINER_ENV_VAR]
    if model and (Path(model) / "refiner").is_dir():
        return str(Path(model) / "refiner")
    return None


def load_refiner_transformer(path: str, dtype: torch.dtype | None = None) -> SkyReelsV4RefinerTransformer3DModel:
    """A Refiner transformer folder, or a whole Refiner pipeline folder / Hub repo (only its transformer is loaded:
    the rest is shared with the base pipeline)."""
    subfolder = None if (Path(path) / "config.json").is_file() else "transformer"
    return SkyReelsV4RefinerTransformer3DModel.from_pretrained(path, subfolder=subfolder, dtype=dtype)


def sibling_pipeline(cls: type, base: SkyReelsV4Pipeline, **components) -> Any:
    """`cls` on `base`'s component objects (weights shared, loaded once) and whatever of its config `cls` accepts.
    Built directly rather than with `from_pipe`, which also re-casts every module and logs about it."""
    accepted = inspect.signature(cls.__init__).parameters
    config = {k: v for k, v in base.config.items() if k in accepted and k not in base.components}
    return cls(**{**base.components, **components}, **config)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Sizes and durations the page offers, read from the pipeline so that any model folder gets sensible sliders."""

    height: int
    width: int
    num_frames: int
    fps: float
    size_multiple: int
    temporal_compression: int
    max_references: int
    max_audio_reference_seconds: float
    has_audio: bool

    @classmethod
    def from_pipelines(cls, base: SkyReelsV4Pipeline, inpaint: SkyReelsV4InpaintPipeline) -> "Limits":
        return cls(
            height=base.config.default_height,
            width=base.config.default_width,
            num_frames=base.config.default_num_frames,
            fps=float(base.transformer.config.fps),
            size_multiple=base.vae_spec.spatial_compression * base.transformer.config.patch_size,
            temporal_compression=base.vae_spec.temporal_compression,
            max_references=min(MAX_REFERENCE_IMAGES, inpaint.config.max_references),
            max_audio_reference_seconds=float(inpaint.config.max_audio_reference_seconds),
            has_audio=base.audio_vae is not None,
        )

    # Up to twice the trained size and clip length: beyond that a model this size mostly degrades, and CPU time grows
    # with the cube of the scale.
    @property
    def max_height(self) -> int:
        return 2 * self.height

    @property
    def max_width(self) -> int:
        return 2 * self.width

    @property
    def max_num_frames(self) -> int:
        return 2 * (self.num_frames - 1) + 1

    @property
    def duration_step(self) -> float:
        """One latent frame: the granularity at which the causal VAE can change the clip length."""
        return self.temporal_compression / self.fps

    @property
    def default_duration(self) -> float:
        return round((self.num_frames - 1) / self.fps, 3)

    @property
    def max_duration(self) -> float:
        return round((self.max_num_frames - 1) / self.fps, 3)


@dataclasses.dataclass
class DemoModels:
    base: SkyReelsV4Pipeline
    inpaint: SkyReelsV4InpaintPipeline
    refiner: SkyReelsV4RefinerPipeline | None
    limits: Limits
    description: str  # what is loaded, shown at the top of the page
    refiner_note: str  # why refinement is (un)available


RANDOM_MODEL_NOTE = (
    "NOTE: no trained model found, so this demo uses RANDOMLY INITIALISED tiny components: every feature runs for "
    f"real and writes real MP4s, but the picture and sound are noise. Pass --model or set ${MODEL_ENV_VAR} to use "
    "trained weights."
)


def load_models(
    model: str | SkyReelsV4Pipeline | None = None,
    refiner: Any = None,
    device: str | None = None,
    dtype: str | None = None,
) -> DemoModels:
    """The base pipeline (a folder / Hub id, an already built pipeline, or random tiny components), the inpainting
    pipeline on the same components, and the Refiner if one is found (`refiner`: a path or a Refiner transformer),
    cast to `dtype` if given ("auto": the fastest on `device`, see `skyreels_diffusers.utils.precision`)."""
    torch_dtype = resolve_dtype(dtype, device or "cpu") if dtype is not None else None
    path = None
    if isinstance(model, SkyReelsV4Pipeline):
        base, description = model, f"Model: an in-memory `{type(model).__name__}`."
    else:
        path = resolve_model(model)
        if path is None:
            from skyreels_diffusers.tiny_components import build_tiny_pipeline, build_tiny_refiner

            print(RANDOM_MODEL_NOTE, file=sys.stderr)
            base, description = build_tiny_pipeline(), f"**{RANDOM_MODEL_NOTE}**"
            refiner = refiner or build_tiny_refiner(base.transformer)  # random too, so the refine path can be tried
        else:
            # from_pretrained keeps the modules that must stay in float32 there (a plain `.to(dtype)` would not).
            base, description = SkyReelsV4Pipeline.from_pretrained(path, dtype=torch_dtype), f"Model: `{path}`."
    if path is None and torch_dtype is not None:  # an in-memory or random pipeline: cast it
        base.to(torch_dtype)
    refiner_transformer, refiner_note = _refiner_transformer(refiner, path, torch_dtype)
    inpaint = sibling_pipeline(SkyReelsV4InpaintPipeline, base)
    refiner_pipe = None
    if refiner_transformer is not None:
        refiner_pipe = sibling_pipeline(SkyReelsV4RefinerPipeline, base, transformer=refiner_transformer)
    if device:  # the inpainting pipeline holds the same modules as `base`, so it moves with it
        for pipe in (base, refiner_pipe):
            if pipe is not None:
                pipe.to(device)
    limits = Limits.from_pipelines(base, inpaint)
    return DemoModels(base, inpaint, refiner_pipe, limits, description, refiner_note)


def _refiner_transformer(refiner: Any, model_path: str | None, dtype: torch.dtype | None):
    if isinstance(refiner, SkyReelsV4RefinerTransformer3DModel):
        refiner = refiner.to(dtype) if dtype is not None else refiner
        return refiner, f"{REFINE_SCALE}x super-resolution and 2x frame rate with the Refiner."
    refiner_path = resolve_refiner(refiner, model_path)
    if refiner_path is None:
        where = f"`{model_path}/refiner`" if model_path else "a refiner folder"
        return (
            None,
            f"Refinement is unavailable: no Refiner was found (looked for --refiner, ${REFINER_ENV_VAR}, {where}).",
        )
    try:
        return load_refiner_transformer(refiner_path, dtype), f"Refiner: `{refiner_path}`."
    except (OSError, ValueError) as error:  # a broken Refiner should not take the whole demo down
        logger.warning(f"could not load the Refiner from {refiner_path}: {error}")
        return None, f"Refinement is unavailable: the Refiner at `{refiner_path}` could not be loaded ({error})."


# ---------------------------------------------------------------------------------------------------------------------
# Validation: plain functions, unit-tested; each raises InputError with a sentence the user can act on
# ---------------------------------------------------------------------------------------------------------------------


def check_prompt(prompt: str | None) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise InputError(
            "Please enter a prompt: describe the picture in <text>...</text> and the sound in <sfx>...</sfx> "
            "(the tag buttons under the prompt insert them)."
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"The prompt is {len(prompt)} characters long; please keep it under {MAX_PROMPT_CHARS}.")
    return prompt


def check_size(height: Any, width: Any, limits: Limits) -> tuple[int, int]:
    """Height and width as ints: multiples of the VAE compression x patch size, within the offered range."""
    sizes = []
    for name, value, largest in (("Height", height, limits.max_height), ("Width", width, limits.max_width)):
        if not as_number(name, value).is_integer():
            raise InputError(f"{name} must be a whole number of pixels, got {value!r}.")
        value, multiple = int(float(value)), limits.size_multiple
        if value % multiple or not multiple <= value <= largest:
            raise InputError(f"{name} must be a multiple of {multiple} between {multiple} and {largest}, got {value}.")
        sizes.append(value)
    return sizes[0], sizes[1]


def num_frames_for(duration: Any, limits: Limits) -> int:
    """Seconds -> the `4k+1` frame count the causal VAE needs, within the model's limits."""
    if duration is None or not 0 < float(duration) <= limits.max_duration + 1e-6:
        raise InputError(f"Duration must be between {limits.duration_step:g} and {limits.max_duration:g} seconds.")
    return frames_for_duration(float(duration), limits.fps, limits.temporal_compression)


def as_number(label: str, value: Any) -> float:
    """A setting as a finite float; anything else (text sent through the API, NaN) is a readable error naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{label} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise InputError(f"{label} must be a finite number, got {value!r}.")
    return number


def check_steps_and_seed(steps: Any, seed: Any) -> tuple[int, int]:
    steps_number, seed_number = as_number("Steps", steps), as_number("The seed", seed)
    if not steps_number.is_integer() or not 1 <= steps_number <= MAX_STEPS:
        raise InputError(f"Steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}.")
    if not seed_number.is_integer() or not 0 <= seed_number < 2**63:
        raise InputError(f"The seed must be a whole number >= 0, got {seed!r}.")
    return int(steps_number), int(seed_number)


def read_image(path: Any, kind: str, mode: str = "RGB") -> PIL.Image.Image | np.ndarray | None:
    """An optional uploaded image, decoded here (not by Gradio) so that a file that is not an image, or one too large,
    gets a sentence naming the field. Images given as PIL or NumPy (from Python) pass through."""
    if isinstance(path, (PIL.Image.Image, np.ndarray)):
        return path
    if not path:
        return None
    path = check_upload(path, kind, IMAGE_SUFFIXES)
    try:
        with PIL.Image.open(path) as image:
            if max(image.size) > MAX_IMAGE_SIDE:
                width, height = image.size
                raise InputError(f"{kind.capitalize()} is {width}x{height} pixels; the limit is {MAX_IMAGE_SIDE}.")
            return image.convert(mode)
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise InputError(f"{kind.capitalize()} could not be read as an image ({error}).") from None


def check_upload(path: str | None, kind: str, suffixes: tuple[str, ...], max_mb: float = MAX_UPLOAD_MB) -> str:
    """An uploaded file of an accepted type and size; `kind` names it in the message."""
    if not path:
        raise InputError(f"Please upload {kind}.")
    suffix = Path(path).suffix.lower()
    if suffix not in suffixes:
        raise InputError(f"{kind.capitalize()} must be one of {', '.join(suffixes)}; got a '{suffix or '?'}' file.")
    size_mb = os.path.getsize(path) / 2**20
    if size_mb > max_mb:
        raise InputError(f"{kind.capitalize()} is {size_mb:.0f} MB; the limit is {max_mb:g} MB.")
    return path


def read_video(path: str | None, fps: float) -> list[PIL.Image.Image]:
    """An uploaded video's frames, resampled to the model's frame rate (the model's timeline and audio assume it)."""
    path = check_upload(path, "a video", VIDEO_SUFFIXES)
    try:
        frames, source_fps = load_video(path, max_side=MAX_IMAGE_SIDE, max_pixels=MAX_VIDEO_PIXELS)
    except (ValueError, OSError) as error:
        raise InputError(f"The video could not be read: {error}") from error
    return resample_frames(frames, source_fps, fps)


def frames_for_edit(frames: list, limits: Limits) -> list:
    """The clip to edit, cut to a `4k+1` frame count; longer than the model's limit is an error, not a silent cut."""
    if len(frames) > limits.max_num_frames:
        raise InputError(
            f"The video is {len(frames) / limits.fps:.2f} s long; this model edits at most {limits.max_duration:g} s "
            f"({limits.max_num_frames} frames at {limits.fps:g} fps). Please trim it, or use the Extend tab."
        )
    temporal = limits.temporal_compression
    return frames[: (len(frames) - 1) // temporal * temporal + 1]


def mask_from_editor(editor_value: dict | None) -> np.ndarray | None:
    """Boolean `(H, W)` mask of what was painted on the first frame (any layer, any colour), or None if nothing."""
    layers = (editor_value or {}).get("layers") or []
    painted = None
    for layer in layers:
        layer = np.asarray(layer)
        if layer.ndim != 3 or layer.shape[2] != 4:
            continue
        painted = layer[..., 3] > 0 if painted is None else painted | (layer[..., 3] > 0)
    return painted if painted is not None and painted.any() else None


def mask_from_upload(image: PIL.Image.Image | np.ndarray | None) -> np.ndarray | None:
    """Boolean `(H, W)` mask from an uploaded black-and-white image: white (>= 50% grey) = regenerate."""
    if image is None:
        return None
    if isinstance(image, PIL.Image.Image):
        image = image.convert("L")
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=-1)
    return array >= 128


def edit_keep_mask(painted: np.ndarray | None, uploaded: np.ndarray | None, frame_size: tuple[int, int]) -> np.ndarray:
    """The pipeline's mask (1 = keep, 0 = regenerate) from the drawn or uploaded region to change (uploaded wins),
    checked against the video frame size `(width, height)`."""
    region = uploaded if uploaded is not None else painted
    if region is None:
        raise InputError("Please paint over the region to change on the first frame, or upload a mask image.")
    width, height = frame_size
    if region.shape != (height, width):
        raise InputError(
            f"The mask is {region.shape[1]}x{region.shape[0]} pixels but the video is {width}x{height}; the mask must "
            "have exactly the video's size."
        )
    return (~region).astype(np.float32)


def check_extension(keep_frames: Any, num_source_frames: int, num_frames: int) -> int:
    """Frames to keep from the source: at least one, at most the source's, and fewer than the output's."""
    if keep_frames is None or not float(keep_frames).is_integer() or int(keep_frames) < 1:
        raise InputError(f"Frames to keep must be a whole number >= 1, got {keep_frames!r}.")
    keep = int(keep_frames)
    if keep > num_source_frames:
        raise InputError(
            f"The video has only {num_source_frames} frames at the model's frame rate; keep at most that."
        )
    if keep >= num_frames:
        raise InputError(
            f"Keeping {keep} frames leaves nothing to generate in a {num_frames}-frame clip: raise the duration or "
            "keep fewer frames."
        )
    return keep


def check_audio_file(path: str | None, kind: str, max_seconds: float, limits: Limits) -> str:
    """A readable audio file no longer than `max_seconds`; `kind` names it in the messages."""
    if not limits.has_audio:
        raise InputError(f"This model makes no audio, so it cannot use {kind}.")
    path = check_upload(path, kind, AUDIO_SUFFIXES)
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise InputError(f"{kind.capitalize()} has no audio track.")
            duration = container.duration / av.time_base if container.duration else None
    except av.FFmpegError as error:
        raise InputError(f"{kind.capitalize()} could not be read as audio ({error}).") from error
    if duration is not None and duration > max_seconds:
        raise InputError(f"{kind.capitalize()} is {duration:.1f} s long; the limit is {max_seconds:g} s.")
    return path


def check_audio_reference(path: str | None, limits: Limits) -> str | None:
    """An optional audio reference: a readable audio file no longer than the pipeline accepts."""
    if not path:
        return None
    return check_audio_file(path, "the audio reference", limits.max_audio_reference_seconds, limits)


def compose_prompt(*parts: str) -> str:
    """One structured prompt from one text per tag (in `TAGS` order); empty parts are left out."""
    return "".join(f"<{tag}>{part.strip()}</{tag}>" for tag, part in zip(TAGS, parts) if part and part.strip())


def append_tag(prompt: str | None, tag: str) -> str:
    """Appends an empty `<tag></tag>` pair to fill in (Gradio cannot insert at the cursor)."""
    return f"{prompt or ''}<{tag}></{tag}>"


# ---------------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    seed: int
    steps: int
    guidance_scale: float
    audio_guidance_scale: float
    height: int
    width: int
    duration: float
    refine: bool
    negative_prompt: str | None


SETTING_NAMES = tuple(field.name for field in dataclasses.fields(Settings))


def check_settings(values: dict, limits: Limits) -> Settings:
    steps, seed = check_steps_and_seed(values["steps"], values["seed"])
    height, width = check_size(values["height"], values["width"], limits)
    num_frames_for(values["duration"], limits)  # checked here, converted where needed
    for name in ("guidance_scale", "audio_guidance_scale"):
        label = name.replace("_", " ").capitalize()
        if not 1 <= as_number(label, values[name]) <= 20:
            raise InputError(f"{label} must be between 1 and 20 (1 turns it off).")
    return Settings(
        seed=seed,
        steps=steps,
        guidance_scale=float(values["guidance_scale"]),
        audio_guidance_scale=float(values["audio_guidance_scale"]),
        height=height,
        width=width,
        duration=float(values["duration"]),
        refine=bool(values["refine"]),
        negative_prompt=(values["negative_prompt"] or "").strip() or None,
    )


def progress_callback(progress: Callable | None, total: int, desc: str) -> Callable:
    """A `callback_on_step_end` that moves the page's progress bar after every denoising step."""

    def callback(pipe, step: int, timestep, tensors: dict) -> dict:
        if progress is not None:
            progress((step + 1, total), desc=desc, unit="steps")
        return {}

    return callback


class DemoRunner:
    """Turns the page's inputs into pipeline calls and writes the MP4. Holds no Gradio components, so it can be tested
    without a browser."""

    def __init__(self, models: DemoModels, output_dir: str | None = None):
        self.models = models
        self.limits = models.limits
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="skyreels-v4-demo-"))
        self.output_dir.mkdir(parents=True, exist_ok=True)

    # --- one method per tab: (pipeline, call arguments, notes for the status line)

    def text_to_video(self, settings: Settings, prompt: str):
        return self.models.base, {"prompt": check_prompt(prompt)}, []

    def image_to_video(self, settings: Settings, prompt: str, image, last_image=None):
        image, last_image = read_image(image, "the first frame"), read_image(last_image, "the last frame")
        if image is None:
            raise InputError("Please upload the first frame.")
        call = {"prompt": check_prompt(prompt), "image": image, "last_image": last_image}
        return self.models.inpaint, call, ["interpolated to the last frame"] if last_image is not None else []

    def edit(self, settings: Settings, prompt: str, video: str, mask_drawn=None, mask_uploaded=None):
        prompt = check_prompt(prompt)
        frames = frames_for_edit(read_video(video, self.limits.fps), self.limits)
        uploaded = mask_from_upload(read_image(mask_uploaded, "the mask", mode="L"))
        keep = edit_keep_mask(mask_from_editor(mask_drawn), uploaded, frames[0].size)
        call = {"prompt": prompt, "video": frames, "mask": keep, "num_frames": len(frames)}
        return self.models.inpaint, call, [f"the length follows the source video ({len(frames)} frames)"]

    def extend(self, settings: Settings, prompt: str, video: str, keep_frames):
        prompt = check_prompt(prompt)
        frames = read_video(video, self.limits.fps)
        num_frames = num_frames_for(settings.duration, self.limits)
        keep = check_extension(keep_frames, len(frames), num_frames)
        call = {"prompt": prompt, "video": frames[:keep], "num_condition_frames": keep}
        return self.models.inpaint, call, [f"kept the first {keep} frames"]

    def references(self, settings: Settings, prompt: str, image_1=None, image_2=None, image_3=None, audio=None):
        prompt = check_prompt(prompt)
        images = [read_image(image, f"reference image {i}") for i, image in enumerate((image_1, image_2, image_3), 1)]
        images = [image for image in images if image is not None][: self.limits.max_references]
        audio = check_audio_reference(audio, self.limits)
        if not images and audio is None:
            raise InputError("Please add at least one reference image or an audio reference (or use the Text tab).")
        call = {"prompt": prompt, "reference_images": images or None, "audio_reference": audio}
        return self.models.inpaint, call, [f"{len(images)} reference image(s)" + (" + audio" if audio else "")]

    def video_to_audio(self, settings: Settings, prompt: str, video: str):
        prompt = check_prompt(prompt)
        if not self.limits.has_audio:
            raise InputError("This model makes no audio, so it cannot make a soundtrack.")
        frames = frames_for_edit(read_video(video, self.limits.fps), self.limits)
        call = {"prompt": prompt, "video": frames, "num_frames": len(frames)}
        return self.models.inpaint, call, [f"the soundtrack of the uploaded video ({len(frames)} frames)"]

    def audio_to_video(self, settings: Settings, prompt: str, audio: str, image=None):
        prompt = check_prompt(prompt)
        path = check_audio_file(audio, "the soundtrack", self.limits.max_duration, self.limits)
        image = read_image(image, "the first frame")
        call = {"prompt": prompt, "audio": path, "image": image, "num_frames": None}
        return (
            self.models.inpaint,
            call,
            ["the length follows the soundtrack"]
            + (["animated from the uploaded image"] if image is not None else []),
        )

    # --- shared path

    def run(self, task: str, values: dict, progress: Callable | None = None) -> tuple[str, str, str]:
        """Validates, generates and exports; returns (video path, download path, status markdown)."""
        settings = check_settings({name: values.pop(name) for name in SETTING_NAMES}, self.limits)
        if settings.refine and self.models.refiner is None:
            raise InputError(self.models.refiner_note)
        pipe, call, notes = getattr(self, task)(settings, **values)
        start = time.perf_counter()
        frames, audio, sample_rate, fps = self.generate(pipe, call, settings, progress)
        self.prune_outputs()
        path = self.output_dir / f"skyreels-v4-{task.replace('_', '-')}-seed{settings.seed}-{time.time_ns()}.mp4"
        export_to_video_with_audio(frames, path, fps=fps, audio=audio, audio_sample_rate=sample_rate)
        status = describe_result(frames, fps, sample_rate, settings, time.perf_counter() - start, notes)
        return str(path), str(path), status

    def prune_outputs(self) -> None:
        """A long-running Space must not fill its disk: drop all but the newest outputs."""
        outputs = sorted(self.output_dir.glob("*.mp4"), key=lambda path: path.stat().st_mtime)
        for path in outputs[: max(0, len(outputs) - KEEP_OUTPUTS + 1)]:
            path.unlink(missing_ok=True)

    def generate(self, pipe: SkyReelsV4Pipeline, call: dict, settings: Settings, progress: Callable | None):
        """One base pass (and the Refiner when asked); returns (frames, audio or None, sample rate or None, fps)."""
        call = {**call, **self.common_arguments(pipe, call, settings)}
        call["callback_on_step_end"] = progress_callback(progress, settings.steps, "Generating")
        if not settings.refine:
            out = pipe(**call)
            return out.frames[0], _first(out.audio), out.audio_sample_rate, int(out.fps)
        if pipe is self.models.base:  # T2AV: high-res keyframes in the same pass, as the paper does
            call.update(
                num_keyframes=REFINE_KEYFRAMES,
                keyframe_height=REFINE_SCALE * settings.height,
                keyframe_width=REFINE_SCALE * settings.width,
            )
        base = pipe(**call, output_type="latent")
        refined = self.models.refiner(
            call["prompt"],
            negative_prompt=settings.negative_prompt,
            low_res_latents=base.frames,
            keyframes=base.keyframes,
            keyframe_indices=base.keyframe_indices,
            audio_latents=base.audio,
            scale_factor=REFINE_SCALE,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            generator=torch.Generator().manual_seed(settings.seed),
            callback_on_step_end=progress_callback(progress, settings.steps, "Refining"),
        )
        return refined.frames[0], _first(refined.audio), refined.audio_sample_rate, int(refined.fps)

    def common_arguments(self, pipe: SkyReelsV4Pipeline, call: dict, settings: Settings) -> dict:
        arguments = {
            "negative_prompt": settings.negative_prompt,
            "height": settings.height,
            "width": settings.width,
            "generate_audio": self.limits.has_audio,
            "num_inference_steps": settings.steps,
            "guidance_scale": settings.guidance_scale,
            "audio_guidance_scale": settings.audio_guidance_scale,
            "generator": torch.Generator().manual_seed(settings.seed),
        }
        if "num_frames" not in call:
            arguments["num_frames"] = num_frames_for(settings.duration, self.limits)
        return arguments


def _first(batch):
    return None if batch is None else batch[0]


def describe_result(frames, fps: int, sample_rate: int | None, settings: Settings, seconds: float, notes) -> str:
    height, width = np.asarray(frames[0]).shape[:2]
    sound = f"with {sample_rate / 1000:g} kHz audio" if sample_rate else "without audio (this model makes none)"
    details = "; ".join([f"seed {settings.seed}", f"{settings.steps} steps", *notes])
    return f"Done in {seconds:.1f} s: {len(frames)} frames of {width}x{height} at {fps} fps, {sound} ({details})."


def readable_errors(fn: Callable) -> Callable:
    """Every failure reaches the page as a sentence (gr.Error), never as a traceback; unexpected ones are logged."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, TypeError) as error:  # InputError, and the pipelines' own argument checks
            raise gr.Error(html.escape(str(error)), title="Please check the inputs", print_exception=False) from None
        except Exception as error:
            logger.exception("generation failed")
            raise gr.Error(
                html.escape(f"Generation failed ({type(error).__name__}): {error}"), print_exception=False
            ) from None

    return wrapper


# ---------------------------------------------------------------------------------------------------------------------
# Page
# ---------------------------------------------------------------------------------------------------------------------


def prompt_editor(tab: str, placeholder: str, builder_open: bool = False) -> gr.Textbox:
    """A prompt box with one-click tag insertion and a builder that composes the tags from separate fields."""
    prompt = gr.Textbox(label="Prompt", lines=3, placeholder=placeholder, elem_id=f"{tab}-prompt")
    with gr.Row():
        for tag in TAGS:
            button = gr.Button(f"+ <{tag}>", size="sm", min_width=60, elem_id=f"{tab}-add-{tag}")
            button.click(functools.partial(append_tag, tag=tag), inputs=prompt, outputs=prompt, queue=False)
    with gr.Accordion("Prompt builder: one field per tag", open=builder_open):
        parts = [
            gr.Textbox(label=f"{label} <{tag}>", lines=1, elem_id=f"{tab}-part-{tag}") for tag, label in TAGS.items()
        ]
        compose = gr.Button("Compose the prompt from these fields", size="sm", elem_id=f"{tab}-compose")
        compose.click(compose_prompt, inputs=parts, outputs=prompt, queue=False)
    return prompt


def settings_panel(models: DemoModels) -> dict[str, gr.components.Component]:
    limits = models.limits
    with gr.Accordion("Settings", open=True):
        with gr.Row():
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, elem_id="seed")
            steps = gr.Slider(1, MAX_STEPS, value=30, step=1, label="Steps", elem_id="steps")
        with gr.Row():
            guidance = gr.Slider(1, 20, value=5.0, step=0.5, label="Video guidance scale (1 = off)")
            audio_guidance = gr.Slider(
                1, 20, value=4.0, step=0.5, label="Audio guidance scale (1 = off)", interactive=limits.has_audio
            )
        with gr.Row():
            multiple = limits.size_multiple
            height = gr.Slider(multiple, limits.max_height, value=limits.height, step=multiple, label="Height (px)")
            width = gr.Slider(multiple, limits.max_width, value=limits.width, step=multiple, label="Width (px)")
            duration = gr.Slider(
                limits.duration_step,
                limits.max_duration,
                value=limits.default_duration,
                step=limits.duration_step,
                label=f"Duration (s, at {limits.fps:g} fps)",
            )
        refine = gr.Checkbox(
            label=f"Refine: {REFINE_SCALE}x size and 2x frame rate with the Refiner (slower)",
            value=False,
            interactive=models.refiner is not None,
            info=models.refiner_note,
            elem_id="refine",
        )
        negative = gr.Textbox(label="Negative prompt (optional)", lines=1)
    return {
        "seed": seed,
        "steps": steps,
        "guidance_scale": guidance,
        "audio_guidance_scale": audio_guidance,
        "height": height,
        "width": width,
        "duration": duration,
        "refine": refine,
        "negative_prompt": negative,
    }


def first_frame(video_path: str | None) -> PIL.Image.Image | None:
    """The first frame of an uploaded video, as the canvas to paint the edit mask on."""
    if not video_path:
        return None
    try:
        with av.open(video_path) as container:
            return next(container.decode(video=0)).to_image()
    except (av.FFmpegError, StopIteration, IndexError):
        return None  # the Generate button reports unreadable videos


def build_demo(
    model: str | SkyReelsV4Pipeline | None = None,
    refiner: Any = None,
    output_dir: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> gr.Blocks:
    """The whole page, queued (one generation at a time per model); not launched."""
    models = load_models(model, refiner, device, dtype)
    runner = DemoRunner(models, output_dir)
    limits = models.limits
    generate_buttons = {}
    # delete_cache: every hour, Gradio drops uploads and results older than a day from its own cache.
    with gr.Blocks(title="SkyReels-V4 demo", delete_cache=(3600, 86400)) as demo:
        gr.Markdown(
            "# SkyReels-V4: video with synchronized sound\nDescribe the picture in `<text>` and the sound in `<sfx>`, "
            f"`<dialogue>`, `<singing>` or `<bgm>`.\n\n{models.description}",
            elem_id="model-description",
        )
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Text → video + audio", id="t2av"):
                        t2av_prompt = prompt_editor("t2av", EXAMPLE_PROMPTS[0])
                        gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[t2av_prompt])
                        generate_buttons["text_to_video"] = ({"prompt": t2av_prompt}, _generate_button("t2av"))
                    with gr.Tab("Image → video", id="i2v"):
                        i2v_prompt = prompt_editor("i2v", "<text>What happens next.</text><sfx>...</sfx>")
                        with gr.Row():
                            image = gr.Image(label="First frame", type="filepath", sources=["upload", "clipboard"])
                            last_image = gr.Image(label="Last frame (optional)", type="filepath", sources=["upload"])
                        inputs = {"prompt": i2v_prompt, "image": image, "last_image": last_image}
                        generate_buttons["image_to_video"] = (inputs, _generate_button("i2v"))
                    with gr.Tab("Edit", id="edit"):
                        edit_prompt = prompt_editor("edit", "<text>The ball is blue.</text><sfx>...</sfx>")
                        edit_video = gr.Video(
                            label="Video to edit", sources=["upload"], height=320, elem_id="edit-video"
                        )
                        with gr.Row():
                            mask_drawn = gr.ImageEditor(
                                label="Paint over what to change (on the first frame; applies to every frame)",
                                type="numpy",
                                image_mode="RGBA",
                                sources=(),
                                transforms=(),
                                layers=False,
                                brush=gr.Brush(colors=["#ff00aa"], color_mode="fixed"),
                                elem_id="edit-mask",
                            )
                            mask_uploaded = gr.Image(
                                label="...or upload a mask (white = change, black = keep; the video's size)",
                                type="filepath",
                                image_mode="L",
                                sources=["upload"],
                            )
                        edit_video.change(first_frame, inputs=edit_video, outputs=mask_drawn, queue=False)
                        inputs = {
                            "prompt": edit_prompt,
                            "video": edit_video,
                            "mask_drawn": mask_drawn,
                            "mask_uploaded": mask_uploaded,
                        }
                        generate_buttons["edit"] = (inputs, _generate_button("edit"))
                    with gr.Tab("Extend", id="extend"):
                        extend_prompt = prompt_editor("extend", "<text>The scene continues.</text><sfx>...</sfx>")
                        extend_video = gr.Video(
                            label="Video to extend", sources=["upload"], height=320, elem_id="extend-video"
                        )
                        keep = gr.Slider(
                            1,
                            limits.max_num_frames - 1,
                            value=limits.temporal_compression + 1,
                            step=1,
                            label="Frames to keep from the start (at the model's frame rate); the duration setting "
                            "is the output length",
                        )
                        inputs = {"prompt": extend_prompt, "video": extend_video, "keep_frames": keep}
                        generate_buttons["extend"] = (inputs, _generate_button("extend"))
                    with gr.Tab("Video → audio", id="v2a"):
                        v2a_prompt = prompt_editor("v2a", "<sfx>What the video should sound like.</sfx>")
                        v2a_video = gr.Video(
                            label="Video to give a soundtrack (its frames are kept as they are)",
                            sources=["upload"],
                            height=320,
                            elem_id="v2a-video",
                        )
                        generate_buttons["video_to_audio"] = (
                            {"prompt": v2a_prompt, "video": v2a_video},
                            _generate_button("v2a"),
                        )
                    with gr.Tab("Audio → video", id="a2v"):
                        a2v_prompt = prompt_editor("a2v", "<text>What should be seen.</text>")
                        with gr.Row():
                            a2v_audio = gr.Audio(
                                label=f"Soundtrack (at most {limits.max_duration:g} s; the clip follows its length)",
                                type="filepath",
                                sources=["upload"],
                                format=None,
                                interactive=limits.has_audio,
                                elem_id="a2v-audio",
                            )
                            a2v_image = gr.Image(
                                label="First frame (optional: animate an image to the sound)",
                                type="filepath",
                                sources=["upload"],
                            )
                        generate_buttons["audio_to_video"] = (
                            {"prompt": a2v_prompt, "audio": a2v_audio, "image": a2v_image},
                            _generate_button("a2v"),
                        )
                    with gr.Tab("References", id="references"):
                        references_prompt = prompt_editor(
                            "references", "<text>@image_1 walks along a beach.</text><dialogue>@audio_1 ...</dialogue>"
                        )
                        gr.Markdown("Name references in the prompt as `@image_1`, `@image_2`, `@image_3`, `@audio_1`.")
                        with gr.Row():
                            reference_images = [
                                gr.Image(label=f"@image_{i + 1}", type="filepath", sources=["upload"])
                                for i in range(limits.max_references)
                            ]
                        audio = gr.Audio(
                            label=f"@audio_1 (optional, at most {limits.max_audio_reference_seconds:g} s)",
                            type="filepath",
                            sources=["upload"],
                            format=None,
                            interactive=limits.has_audio,
                        )
                        inputs = {"prompt": references_prompt, "audio": audio}
                        inputs.update({f"image_{i + 1}": image for i, image in enumerate(reference_images)})
                        generate_buttons["references"] = (inputs, _generate_button("references"))
                settings = settings_panel(models)
            with gr.Column(scale=2):
                video_out = gr.Video(label="Result", interactive=False, autoplay=False, elem_id="result-video")
                file_out = gr.File(label="Download MP4", interactive=False, elem_id="result-file")
                status = gr.Markdown(elem_id="status")
        for task, (inputs, button) in generate_buttons.items():
            named = {**inputs, **settings}
            button.click(
                _handler(runner, task, named),
                inputs=set(named.values()),
                outputs=[video_out, file_out, status],
                concurrency_id="generate",  # every tab shares the one model: one generation at a time
                concurrency_limit=1,
            )
    demo.queue(default_concurrency_limit=1)
    demo.runner = runner  # for tests and scripts
    return demo


def _generate_button(tab: str) -> gr.Button:
    return gr.Button("Generate", variant="primary", elem_id=f"{tab}-generate")


def _handler(runner: DemoRunner, task: str, named: dict) -> Callable:
    """A click handler taking Gradio's `{component: value}` dict (inputs given as a set), so every tab shares one
    signature with the progress tracker that Gradio injects."""

    @readable_errors
    def handler(values: dict, progress=gr.Progress()):  # noqa: B008 (Gradio's documented progress injection)
        return runner.run(task, {name: values[component] for name, component in named.items()}, progress)

    return handler


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="SkyReels-V4 Gradio demo.")
    parser.add_argument(
        "--model",
        default=None,
        help=f"pipeline folder or Hub id; default: ${MODEL_ENV_VAR}, else {EMBEDDED_MODEL} (from the working "
        "directory or the repo root), else randomly initialised tiny components (noise)",
    )
    parser.add_argument(
        "--refiner",
        default=None,
        help=f"Refiner transformer or pipeline folder / Hub id; default: ${REFINER_ENV_VAR}, else MODEL/refiner",
    )
    # Loopback unless told otherwise; Spaces set GRADIO_SERVER_NAME=0.0.0.0 themselves.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else None, help="e.g. cuda; default: cuda if present"
    )
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logger.setLevel(logging.INFO)
    demo = build_demo(args.model, args.refiner, device=args.device, dtype=args.dtype)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=f"{MAX_UPLOAD_MB}mb")


if __name__ == "__main__":
    main()
