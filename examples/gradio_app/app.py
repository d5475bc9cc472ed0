"""SkyReels-V4 demo: prompt, image or video in, an MP4 with synchronized sound out, in a Gradio page.

    python examples/gradio_app/app.py                       # the embedded tiny model, http://127.0.0.1:7860
    python examples/gradio_app/app.py --model PATH_OR_HUB_ID --refiner PATH --host 0.0.0.0 --port 7860

The model is `--model`, else `$SKYREELS_V4_MODEL`, else the repo's `pipelines/skyreels-v4-tiny` folder, else randomly
initialised tiny components (the page says so loudly: the output is noise). One pipeline is loaded; the inpainting
and refiner pipelines share its components, so the weights are in memory once.

The examples follow the loaded model: the tiny default's come from the world it was trained on
(`examples/synthetic_av/world.py`, which also renders the example clip, knock track, frames and mask at start-up);
other models' come from the `## Demo examples` section of their model card, if it has one.

`build_demo()` returns the Blocks without launching them (tests drive it; launch them with `**launch_options()`); the
validation helpers below are plain functions that raise `InputError`, turned into a readable `gr.Error` by the
handlers.
"""

import argparse
import dataclasses
import functools
import html
import importlib.util
import inspect
import itertools
import logging
import math
import os
import random
import re
import sys
import tempfile
import time
import wave
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
from skyreels_diffusers.pipelines.longform import default_overlap
from skyreels_diffusers.utils.media import export_to_video_with_audio, load_video, resample_frames
from skyreels_diffusers.utils.precision import resolve_dtype


logger = logging.getLogger("skyreels_v4_demo")

APP_DIR = Path(__file__).resolve().parent
REFINER_ENV_VAR = "SKYREELS_V4_REFINER"
# The structured-prompt tags of the paper, in the order the prompt builder composes them.
TAGS = {"text": "Visual", "sfx": "Sound effects", "dialogue": "Dialogue", "singing": "Singing", "bgm": "Music"}
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
SOUND_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac")
AUDIO_SUFFIXES = (*SOUND_SUFFIXES, *VIDEO_SUFFIXES)  # a video's sound track is audio too
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
MAX_IMAGE_SIDE = 4096
# Decoded frames of one upload (frames x width x height): 2**28 pixels is 0.8 GB as RGB, e.g. 20 s of 1080p at 30 fps.
# Checked before decoding, so a small file that expands to gigabytes is refused without using the memory.
MAX_VIDEO_PIXELS = 2**28
MAX_UPLOAD_MB = 200
KEEP_OUTPUTS = 20  # newest MP4s kept in the output folder; Gradio serves its own cached copies
MAX_PROMPT_CHARS = 4000
MAX_STEPS = 100
DEFAULT_STEPS = 30
MAX_SEED = 2**32  # what "randomize seed" draws from; any whole number >= 0 may be typed
MAX_REFERENCE_IMAGES = 3
LONG_FORM_WINDOWS = 10  # the duration slider reaches this many windows of the trained length, chained
# How messages name the uploads: the video of each tab that takes one, and the images by input name.
IMAGE_KINDS = {
    "image": "the first frame",
    "last_image": "the last frame",
    "mask_uploaded": "the mask",
    **{f"image_{i}": f"reference image {i}" for i in range(1, MAX_REFERENCE_IMAGES + 1)},
}
SOUNDTRACK = "the soundtrack"
VIDEO_KINDS = {
    "edit": "the video to edit",
    "extend": "the video to extend",
    "video_to_audio": "the video to give a soundtrack",
}
# The Refiner's spatial factor is an argument of its pipeline (its transformer's config holds only the temporal one):
# the demo uses the pipeline's default, the factor the Refiner is trained for. The base pass makes its keyframes there.
REFINE_SCALE = inspect.signature(SkyReelsV4RefinerPipeline.__call__).parameters["scale_factor"].default
REFINE_KEYFRAMES = 2
RESULT_SIDE = 320  # px: small clips are shown at the largest whole zoom that fits, pixel-exact
# Where the world of the tiny default may sit: next to this file (a Space keeps app.py at its root) or in the checkout.
WORLD_CANDIDATES = (APP_DIR / "world.py", APP_DIR.parent / "synthetic_av" / "world.py")
WORLD_EXAMPLE_SEED = 0  # the first seed searched for example clips (any seed gives a valid clip)
CARD_EXAMPLES_HEADING = "Demo examples"  # a model card section whose `- ` items are the page's example prompts

# Wide screens: inputs and settings on the left, the result beside them. Narrow ones stack the columns in page order
# (inputs, result, settings), so the result is not pushed below the whole settings panel. Small clips are scaled
# pixel-exact rather than blurred: nearest neighbour, and the player's size (`result_view`) is the clip's inside the
# block's border.
CSS = """
#result-video { box-sizing: content-box; }
#result-video video { image-rendering: pixelated; }
@media (min-width: 900px) {
  #layout { display: grid; grid-template-columns: minmax(0, 1fr) 400px; align-items: start; }
  #inputs-column { grid-column: 1; grid-row: 1; }
  #settings-column { grid-column: 1; grid-row: 2; }
  #result-column { grid-column: 2; grid-row: 1 / span 2; }
}
"""


def launch_options() -> dict:
    """What `Blocks.launch` needs besides the address (Gradio 6 takes the page's CSS at launch)."""
    return {"css": CSS, "max_file_size": f"{MAX_UPLOAD_MB}mb"}


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


def is_embedded_model(path: str | None) -> bool:
    """Whether `path` is the tiny default's folder (the one the world examples are for)."""
    if path is None or not Path(path).is_dir():
        return False
    return Path(path).resolve() in {candidate.resolve() for candidate in embedded_model_candidates()}


def resolve_refiner(refiner: str | None, model: str | None) -> str | None:
    """`refiner`, else `$SKYREELS_V4_REFINER`, else a `refiner/` folder inside a local model folder, else None."""
    if refiner:
        return refiner
    if os.environ.get(REFINER_ENV_VAR):
        return os.environ[REFINER_ENV_VAR]
    if model and (Path(model) / "refiner").is_dir():
        return str(Path(model) / "refiner")
    return None


def display_name(path: str) -> str:
    """A model as the page names it: a Hub id as is, a local folder by its name (the server's folders stay private)."""
    return Path(path).name if Path(path).exists() else path


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
    """Sizes and durations the page offers, read from the pipeline so that any model folder gets sensible sliders.

    Durations are `num_frames / fps` (the pipelines' convention) and frame counts are the ones the causal video VAE
    makes: `1 + k * temporal_compression`."""

    height: int
    width: int
    num_frames: int
    fps: float
    size_multiple: int
    temporal_compression: int
    max_references: int
    max_audio_reference_seconds: float
    has_audio: bool
    num_blocks: int = 2  # the transformer's blocks (dual- then single-stream), for the STG block choice

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
            num_blocks=len(base.transformer.transformer_blocks) + len(base.transformer.single_transformer_blocks),
        )

    # Up to twice the trained size and clip length for one call (uploads to edit or score): beyond that a model this
    # size mostly degrades, and CPU time grows with the cube of the scale. Generated clips go further by chaining
    # windows of the trained length (`max_generated_duration`, see `DemoRunner.common_arguments`).
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
    def max_generated_frames(self) -> int:
        """The longest generated clip: `LONG_FORM_WINDOWS` windows of the trained length, chained."""
        return LONG_FORM_WINDOWS * (self.num_frames - 1) + 1

    @property
    def max_generated_duration(self) -> float:
        return self.max_generated_frames / self.fps

    @property
    def duration_step(self) -> float:
        """One latent frame: the granularity at which the causal VAE can change the clip length."""
        return self.temporal_compression / self.fps

    @property
    def min_duration(self) -> float:
        """Two latent frames, the shortest clip the demo makes (the CLI's `frames_for_duration` floor)."""
        return (self.temporal_compression + 1) / self.fps

    @property
    def default_duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def max_duration(self) -> float:
        return self.max_num_frames / self.fps

    def frame_count_rule(self) -> str:
        """The clip lengths the model makes, in words."""
        if self.temporal_compression == 1:
            return f"whole frames at {self.fps:g} fps"
        tc = self.temporal_compression
        return f"1 + {tc}k frames at {self.fps:g} fps (its video VAE compresses time {tc}x)"


@dataclasses.dataclass
class DemoModels:
    base: SkyReelsV4Pipeline
    inpaint: SkyReelsV4InpaintPipeline
    refiner: SkyReelsV4RefinerPipeline | None
    limits: Limits
    description: str  # what is loaded, shown at the top of the page
    refiner_note: str  # why refinement is (un)available
    path: str | None = None  # the model folder or Hub id, None for an in-memory or random pipeline


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
            base = SkyReelsV4Pipeline.from_pretrained(path, dtype=torch_dtype)
            description = f"Model: `{display_name(path)}`."
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
    return DemoModels(base, inpaint, refiner_pipe, limits, description, refiner_note, path)


def _refiner_transformer(refiner: Any, model_path: str | None, dtype: torch.dtype | None):
    if isinstance(refiner, SkyReelsV4RefinerTransformer3DModel):
        refiner = refiner.to(dtype) if dtype is not None else refiner
        return refiner, "Refiner: an in-memory transformer."
    refiner_path = resolve_refiner(refiner, model_path)
    if refiner_path is None:
        where = f"`{display_name(model_path)}/refiner`" if model_path else "a refiner folder"
        return (
            None,
            f"Refinement is unavailable: no Refiner was found (looked for --refiner, ${REFINER_ENV_VAR}, {where}).",
        )
    inside = model_path is not None and Path(refiner_path) == Path(model_path) / "refiner"
    name = f"`{display_name(model_path)}/refiner`" if inside else f"`{display_name(refiner_path)}`"
    try:
        return load_refiner_transformer(refiner_path, dtype), f"Refiner: {name}."
    except (OSError, ValueError) as error:  # a broken Refiner should not take the whole demo down
        logger.warning(f"could not load the Refiner from {refiner_path}: {error}")
        return None, (
            f"Refinement is unavailable: the Refiner {name} could not be loaded ({without_server_paths(str(error))})."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Examples: from the world the tiny default was trained on, else from the model card
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DemoExamples:
    rows: dict[str, list[dict]]  # task -> examples, each {input name: value} for that tab's inputs
    note: str  # one line on what the loaded model can make (markdown), or ""
    card: str | None  # the model card's text (markdown, without its metadata), shown at the bottom of the page


def load_model_card(model: str | None) -> str | None:
    """The text of a model folder's README.md or of a Hub repo's card, without its metadata; None if there is none."""
    if model is None:
        return None
    from huggingface_hub import ModelCard

    local = Path(model) / "README.md"
    if Path(model).exists() and not local.is_file():
        return None
    try:
        return ModelCard.load(str(local) if local.is_file() else model).text
    except Exception as error:  # no card, offline, or not a Hub id: the page just goes without examples
        logger.info(f"no model card for {model}: {error}")
        return None


def card_examples(card: str | None) -> list[str]:
    """The prompts listed under a `## Demo examples` heading of a model card, one `- ` item each (backticks around a
    prompt are dropped)."""
    prompts, inside = [], False
    for line in (card or "").splitlines():
        line = line.strip()
        if line.startswith("#"):
            inside = line.lstrip("#").strip().lower() == CARD_EXAMPLES_HEADING.lower()
        elif inside and line.startswith(("- ", "* ")):
            prompts.append(line[2:].strip().strip("`").strip())
    return [prompt for prompt in prompts if prompt]


def load_world():
    """The procedural world module of the tiny default (`world.py`), or None where it is not shipped."""
    for path in WORLD_CANDIDATES:
        if path.is_file():
            spec = importlib.util.spec_from_file_location("synthetic_av_world", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    return None


def world_note(world) -> str:
    """One line on what the tiny default was trained on, from the world's own lists, with a link to its card."""
    colours, shapes = list(world.COLOURS), [f"{shape}s" for shape in world.SHAPES]
    return (
        f"This tiny model knows one world: a {', '.join(colours[:-1])} or {colours[-1]} shape "
        f"({', '.join(shapes[:-1])} or {shapes[-1]}) bouncing in a dark box, with a knock at every wall hit (pitch from "
        "the shape, timbre from the colour); it can draw nothing else. See its [model card](#model-card)."
    )


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> str:
    """Mono 16-bit WAV, which every browser plays."""
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(sample_rate)
        file.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return str(path)


def world_examples(world, limits: Limits, folder: Path) -> dict[str, list[dict]]:
    """One example per tab (one per colour for text -> video) from the world: its captions, and clips, a knock track,
    frames and an edit mask rendered into `folder` at the model's size, length and frame rate."""
    folder.mkdir(parents=True, exist_ok=True)
    size, fps = min(limits.height, limits.width), round(limits.fps)

    def clip_of(colour: str, shape: str):
        """The first world clip (from `WORLD_EXAMPLE_SEED`) with this colour and shape (one in twelve seeds)."""
        for seed in itertools.count(WORLD_EXAMPLE_SEED):
            objects = world.render_clip(seed, num_frames=1, size=size, fps=fps).objects
            if (objects[0]["colour"], objects[0]["shape"]) == (colour, shape):
                return world.render_clip(seed, num_frames=limits.num_frames, size=size, fps=fps)

    colours, shapes = list(world.COLOURS), world.SHAPES
    clips = [clip_of(colour, shapes[i % len(shapes)]) for i, colour in enumerate(colours)]
    # The edit example turns the first clip's shape into the second clip's colour: a caption the world writes itself.
    recoloured = clip_of(colours[1], shapes[0])

    def video(index: int, with_audio: bool = True) -> str:
        clip = clips[index]
        path = folder / f"world-{index}{'' if with_audio else '-silent'}.mp4"
        audio = clip.audio if with_audio else None
        rate = clip.sample_rate if with_audio else None
        return export_to_video_with_audio(clip.frames, path, fps=clip.fps, audio=audio, audio_sample_rate=rate)

    def image(index: int, frame: int, name: str) -> str:
        path = folder / f"world-{index}-{name}.png"
        PIL.Image.fromarray(clips[index].frames[frame]).save(path)
        return str(path)

    def knocks(index: int) -> str:
        return write_wav(folder / f"world-{index}-knocks.wav", clips[index].audio, clips[index].sample_rate)

    # White wherever the first clip's shape passes: the region to repaint in every frame.
    region = (clips[0].frames != np.array(world.BACKGROUND, np.uint8)).any(axis=-1).any(axis=0)
    mask = folder / "world-0-mask.png"
    PIL.Image.fromarray((region * 255).astype(np.uint8)).save(mask)
    tc = limits.temporal_compression
    keep = 1 + (limits.num_frames - 1) // 2 // tc * tc  # about half the clip, on the VAE's frame grid
    return {
        "text_to_video": [{"prompt": clip.caption} for clip in clips],
        "image_to_video": [{"prompt": clips[1].caption, "image": image(1, 0, "first-frame")}],
        "edit": [{"prompt": recoloured.caption, "video": video(0), "mask_uploaded": str(mask)}],
        "extend": [{"prompt": clips[2].caption, "video": video(2), "keep_frames": keep}],
        "video_to_audio": [{"prompt": clips[3].caption, "video": video(3, with_audio=False)}],
        "audio_to_video": [{"prompt": clips[1].caption, "audio": knocks(1)}],
        "references": [
            {"prompt": clips[2].caption, "image_1": image(2, limits.num_frames // 2, "reference"), "audio": knocks(2)}
        ],
    }


def demo_examples(models: DemoModels, folder: Path) -> DemoExamples:
    """The tiny default: its world's examples (and media) and a note on what it knows. Other models: the prompts of
    their card's `## Demo examples` section for the prompt-only tab, or none."""
    card = load_model_card(models.path)
    world = load_world() if is_embedded_model(models.path) else None
    if world is not None:
        return DemoExamples(world_examples(world, models.limits, folder), world_note(world), card)
    if is_embedded_model(models.path):
        logger.warning(f"world.py was not found ({', '.join(map(str, WORLD_CANDIDATES))}): no examples")
    prompts = card_examples(card)
    note = "Examples from the model's [card](#model-card)." if prompts else ""
    return DemoExamples({"text_to_video": [{"prompt": prompt} for prompt in prompts]} if prompts else {}, note, card)


# ---------------------------------------------------------------------------------------------------------------------
# Validation: plain functions, unit-tested; each raises InputError with a sentence the user can act on
# ---------------------------------------------------------------------------------------------------------------------

# An absolute path of at least one folder, and an OS error number: what deeper code (PyAV, PIL, the file system) puts in
# its messages. The visitor needs neither the server's folders nor errno; the file name stays.
SERVER_PATH = re.compile(r"(?<![\w.~:/\\-])(?:[A-Za-z]:)?[/\\](?:[^\s'\"/\\<>]+[/\\])+")
ERRNO = re.compile(r"\[Errno -?\d+\]\s*")


def without_server_paths(message: str) -> str:
    return ERRNO.sub("", SERVER_PATH.sub("", message))


def accepted(suffixes: tuple[str, ...]) -> str:
    return ", ".join(suffix.lstrip(".").upper() for suffix in suffixes)


def unreadable(kind: str, path: str, what: str, formats: str) -> InputError:
    """The sentence for an upload that does not decode; the decoder's own message holds the server's path of the
    upload and an errno, so it goes to the log only."""
    return InputError(f"{kind.capitalize()} ({Path(path).name}) is not {what} we can read ({formats}).")


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
    """Seconds -> the nearest frame count the model makes (`1 + k * temporal compression`), within its limits."""
    if duration is None or not 0 < as_number("Duration", duration) <= limits.max_generated_duration + 1e-6:
        raise InputError(
            f"Duration must be between {limits.min_duration:.3g} and {limits.max_generated_duration:.3g} seconds, got "
            f"{duration!r}."
        )
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
    except PIL.Image.DecompressionBombError as error:  # PIL's message states the size and the limit, no path
        raise InputError(f"{kind.capitalize()} is too large: {error}") from None
    except (OSError, ValueError) as error:
        logger.info(f"unreadable image {path}: {error}")
        raise unreadable(kind, path, "an image", accepted(IMAGE_SUFFIXES)) from None


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


def first_frame(video_path: str | None) -> PIL.Image.Image | None:
    """The first frame of a video file (the canvas to paint the edit mask on), or None if it does not decode."""
    if not video_path:
        return None
    try:
        with av.open(video_path) as container:
            return next(container.decode(video=0)).to_image()
    except (av.FFmpegError, StopIteration, IndexError, OSError):
        return None


def check_video_file(path: str | None, kind: str) -> str:
    """An uploaded file that decodes as a video (at least its first frame)."""
    path = check_upload(path, kind, VIDEO_SUFFIXES)
    if first_frame(path) is None:
        raise unreadable(kind, path, "a video", accepted(VIDEO_SUFFIXES))
    return path


def read_video(path: str | None, fps: float, kind: str = "the video") -> list[PIL.Image.Image]:
    """An uploaded video's frames, resampled to the model's frame rate (the model's timeline and audio assume it)."""
    path = check_video_file(path, kind)
    try:
        frames, source_fps = load_video(path, max_side=MAX_IMAGE_SIDE, max_pixels=MAX_VIDEO_PIXELS)
    except av.FFmpegError as error:  # a file that breaks off after its first frames
        logger.info(f"unreadable video {path}: {error}")
        raise unreadable(kind, path, "a video", accepted(VIDEO_SUFFIXES)) from None
    except (ValueError, OSError) as error:  # the library's limits: its message says which, about `path`
        message = str(error).replace("`path`", "it").replace(repr(path), Path(path).name)
        raise InputError(f"{kind.capitalize()} could not be used: {without_server_paths(message)}") from None
    return resample_frames(frames, source_fps, fps)


def frames_for_edit(frames: list, limits: Limits) -> list:
    """The clip to edit, cut to a frame count the model makes; longer than the model's limit is an error, not a silent
    cut."""
    if len(frames) > limits.max_num_frames:
        raise InputError(
            f"The video is {len(frames) / limits.fps:.2f} s long; this model edits at most {limits.max_duration:.3g} s "
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
                raise InputError(f"{kind.capitalize()} ({Path(path).name}) has no sound track.")
            duration = container.duration / av.time_base if container.duration else None
    except (av.FFmpegError, OSError) as error:
        logger.info(f"unreadable audio {path}: {error}")
        raise unreadable(kind, path, "audio", f"{accepted(SOUND_SUFFIXES)}, or a video with sound") from None
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
# Settings: one panel; each tab shows (and uses) the groups that apply to it
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    seed: int
    randomize_seed: bool
    steps: int
    guidance_scale: float
    audio_guidance_scale: float
    stg_scale: float
    stg_block: int
    modality_scale: float
    guidance_rescale: float
    height: int
    width: int
    duration: float
    refine: bool
    negative_prompt: str | None


SETTING_NAMES = tuple(field.name for field in dataclasses.fields(Settings))
# Settings that only some tabs use, by group. A hidden group keeps the model's default (`setting_defaults`), so a value
# set on another tab never leaks into a tab that does not show it. A new group is added here, in `TAB_SETTINGS`, in
# `settings_panel`, in `Settings` and in `DemoRunner.common_arguments`.
SETTING_GROUPS = {
    "size": ("height", "width"),
    "duration": ("duration",),
    "video_guidance": ("guidance_scale",),
    "audio_guidance": ("audio_guidance_scale",),
    "advanced_guidance": ("stg_scale", "stg_block", "modality_scale", "guidance_rescale"),
    "refine": ("refine",),
}
ALL_GROUPS = frozenset(SETTING_GROUPS)
# Given streams are not generated, so their guidance does not apply; a length that follows an upload has no duration;
# video-to-audio returns the uploaded frames as they are (no size, no refinement).
TAB_SETTINGS = {
    "text_to_video": ALL_GROUPS,
    "image_to_video": ALL_GROUPS,
    "edit": ALL_GROUPS - {"duration"},
    "extend": ALL_GROUPS,
    "video_to_audio": frozenset({"audio_guidance", "advanced_guidance"}),
    "audio_to_video": ALL_GROUPS - {"duration", "audio_guidance"},
    "references": ALL_GROUPS,
}


def shown_settings(task: str, limits: Limits) -> frozenset[str]:
    """The setting groups tab `task` shows; a model without audio has no audio guidance anywhere."""
    return TAB_SETTINGS[task] - (frozenset() if limits.has_audio else {"audio_guidance"})


def setting_defaults(limits: Limits) -> dict[str, Any]:
    """The settings' starting values, and the values of those a tab does not show."""
    return {
        "seed": 0,
        "randomize_seed": True,
        "steps": DEFAULT_STEPS,
        "guidance_scale": 5.0,
        "audio_guidance_scale": 4.0,
        "stg_scale": 0.0,
        "stg_block": 0,
        "modality_scale": 1.0,
        "guidance_rescale": 0.0,
        "height": limits.height,
        "width": limits.width,
        "duration": limits.default_duration,
        "refine": False,
        "negative_prompt": "",
    }


def check_settings(values: dict, limits: Limits, task: str = "text_to_video") -> Settings:
    """The settings tab `task` uses, checked; the ones it does not show take their defaults."""
    shown, defaults = shown_settings(task, limits), setting_defaults(limits)
    hidden = {name for group, names in SETTING_GROUPS.items() if group not in shown for name in names}
    values = {name: defaults[name] if name in hidden else value for name, value in values.items()}
    steps, seed = check_steps_and_seed(values["steps"], values["seed"])
    height, width = check_size(values["height"], values["width"], limits)
    num_frames_for(values["duration"], limits)  # checked here, converted where needed
    for name in ("guidance_scale", "audio_guidance_scale"):
        label = name.replace("_", " ").capitalize()
        if not 1 <= as_number(label, values[name]) <= 20:
            raise InputError(f"{label} must be between 1 and 20 (1 turns it off).")
    for label, name, low, high, off in (
        ("STG scale", "stg_scale", 0, 5, 0),
        ("Modality scale", "modality_scale", 1, 5, 1),
        ("Guidance rescale", "guidance_rescale", 0, 1, 0),
    ):
        if not low <= as_number(label, values[name]) <= high:
            raise InputError(f"{label} must be between {low} and {high} ({off} turns it off).")
    stg_block = as_number("STG block", values["stg_block"])
    if stg_block != int(stg_block) or not 0 <= stg_block < limits.num_blocks:
        raise InputError(f"STG block must be a whole number from 0 to {limits.num_blocks - 1}.")
    return Settings(
        seed=seed,
        randomize_seed=bool(values["randomize_seed"]),
        steps=steps,
        guidance_scale=float(values["guidance_scale"]),
        audio_guidance_scale=float(values["audio_guidance_scale"]),
        stg_scale=float(values["stg_scale"]),
        stg_block=int(stg_block),
        modality_scale=float(values["modality_scale"]),
        guidance_rescale=float(values["guidance_rescale"]),
        height=height,
        width=width,
        duration=float(values["duration"]),
        refine=bool(values["refine"]),
        negative_prompt=(values["negative_prompt"] or "").strip() or None,
    )


def refine_label(models: DemoModels) -> str:
    """What the loaded Refiner does, from its config (frame rate) and the demo's scale (size)."""
    if models.refiner is None:
        return "Refine with a Refiner"
    limits, scale = models.limits, REFINE_SCALE
    temporal = models.refiner.transformer.config.temporal_upscale_factor
    size = f"{limits.width}x{limits.height} → {scale * limits.width}x{scale * limits.height} at the default size"
    fps = limits.fps
    rate = f"{temporal}x frame rate ({fps:g} → {temporal * fps:g} fps)" if temporal > 1 else "same frame rate"
    return f"Refine: {scale}x size ({size}), {rate}"


def refine_info(models: DemoModels, seconds_per_step: dict[str, float]) -> str:
    """The Refiner's cost, once a refined run has measured it (before that, where it comes from)."""
    if models.refiner is None:
        return models.refiner_note
    if "refine" not in seconds_per_step:
        return f"{models.refiner_note} Slower: a second pass at the larger size, timed on the first refined run."
    refine, base = seconds_per_step["refine"], seconds_per_step.get("base")
    without = f"; the base pass takes {base:.2f} s per step" if base is not None else ""
    return (
        f"Slower: about {refine:.2f} s more per step here (measured on the first refined run{without}), e.g. "
        f"{DEFAULT_STEPS * refine:.0f} s more at {DEFAULT_STEPS} steps."
    )


# ---------------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------------


def progress_callback(progress: Callable | None, total: int, desc: str) -> Callable:
    """A `callback_on_step_end` that moves the page's progress bar after every denoising step."""

    def callback(pipe, step: int, timestep, tensors: dict) -> dict:
        if progress is not None:
            progress((step + 1, total), desc=desc, unit="steps")
        return {}

    return callback


@dataclasses.dataclass(frozen=True)
class Result:
    """One generated clip: the MP4, the status line, and what the page shows about it."""

    path: str
    status: str
    seed: int
    width: int
    height: int


class DemoRunner:
    """Turns the page's inputs into pipeline calls and writes the MP4. Holds no Gradio components, so it can be tested
    without a browser."""

    def __init__(self, models: DemoModels, output_dir: str | None = None):
        self.models = models
        self.limits = models.limits
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="skyreels-v4-demo-"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.seconds_per_step: dict[str, float] = {}  # "base" and "refine", measured on their first run

    # --- one method per tab: (pipeline, call arguments, notes for the status line)

    def text_to_video(self, settings: Settings, prompt: str):
        return self.models.base, {"prompt": check_prompt(prompt)}, []

    def image_to_video(self, settings: Settings, prompt: str, image, last_image=None):
        image, last_image = read_image(image, IMAGE_KINDS["image"]), read_image(last_image, IMAGE_KINDS["last_image"])
        if image is None:
            raise InputError("Please upload the first frame.")
        call = {"prompt": check_prompt(prompt), "image": image, "last_image": last_image}
        return self.models.inpaint, call, ["interpolated to the last frame"] if last_image is not None else []

    def edit(self, settings: Settings, prompt: str, video: str, mask_drawn=None, mask_uploaded=None):
        prompt = check_prompt(prompt)
        frames = frames_for_edit(read_video(video, self.limits.fps, VIDEO_KINDS["edit"]), self.limits)
        uploaded = mask_from_upload(read_image(mask_uploaded, IMAGE_KINDS["mask_uploaded"], mode="L"))
        keep = edit_keep_mask(mask_from_editor(mask_drawn), uploaded, frames[0].size)
        call = {"prompt": prompt, "video": frames, "mask": keep, "num_frames": len(frames)}
        return self.models.inpaint, call, [f"the length follows the source video ({len(frames)} frames)"]

    def extend(self, settings: Settings, prompt: str, video: str, keep_frames):
        prompt = check_prompt(prompt)
        frames = read_video(video, self.limits.fps, VIDEO_KINDS["extend"])
        num_frames = num_frames_for(settings.duration, self.limits)
        keep = check_extension(keep_frames, len(frames), num_frames)
        call = {"prompt": prompt, "video": frames[:keep], "num_condition_frames": keep}
        return self.models.inpaint, call, [f"kept the first {keep} frames"]

    def references(self, settings: Settings, prompt: str, image_1=None, image_2=None, image_3=None, audio=None):
        prompt = check_prompt(prompt)
        images = [
            read_image(image, IMAGE_KINDS[f"image_{i}"]) for i, image in enumerate((image_1, image_2, image_3), 1)
        ]
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
        frames = frames_for_edit(read_video(video, self.limits.fps, VIDEO_KINDS["video_to_audio"]), self.limits)
        call = {"prompt": prompt, "video": frames, "num_frames": len(frames)}
        return self.models.inpaint, call, [f"the soundtrack of the uploaded video ({len(frames)} frames)"]

    def audio_to_video(self, settings: Settings, prompt: str, audio: str, image=None):
        prompt = check_prompt(prompt)
        path = check_audio_file(audio, SOUNDTRACK, self.limits.max_duration, self.limits)
        image = read_image(image, IMAGE_KINDS["image"])
        call = {"prompt": prompt, "audio": path, "image": image, "num_frames": None}
        return (
            self.models.inpaint,
            call,
            ["the length follows the soundtrack"]
            + (["animated from the uploaded image"] if image is not None else []),
        )

    # --- shared path

    def run(self, task: str, values: dict, progress: Callable | None = None) -> Result:
        """Validates, generates and exports one tab's request (`values`: its inputs and the settings by name)."""
        settings = check_settings({name: values.pop(name) for name in SETTING_NAMES}, self.limits, task)
        if settings.refine and self.models.refiner is None:
            raise InputError(self.models.refiner_note)
        if settings.randomize_seed:
            settings = dataclasses.replace(settings, seed=random.randrange(MAX_SEED))
        pipe, call, notes = getattr(self, task)(settings, **values)
        if "duration" in shown_settings(task, self.limits):
            notes = [*notes, *self.rounding_note(settings.duration)]
        start = time.perf_counter()
        frames, audio, sample_rate, fps = self.generate(pipe, call, settings, progress)
        self.prune_outputs()
        path = self.output_dir / f"skyreels-v4-{task.replace('_', '-')}-seed{settings.seed}-{time.time_ns()}.mp4"
        export_to_video_with_audio(frames, path, fps=fps, audio=audio, audio_sample_rate=sample_rate)
        status = describe_result(frames, fps, sample_rate, settings, time.perf_counter() - start, notes)
        height, width = np.asarray(frames[0]).shape[:2]
        return Result(str(path), status, settings.seed, width, height)

    def rounding_note(self, duration: float) -> list[str]:
        """A note when the asked duration is not one the model makes (the slider only offers those)."""
        num_frames = num_frames_for(duration, self.limits)
        if abs(num_frames / self.limits.fps - duration) < 1e-3:
            return []
        return [f"{duration:g} s rounded to {num_frames} frames: the model makes {self.limits.frame_count_rule()}"]

    def prune_outputs(self) -> None:
        """A long-running Space must not fill its disk: drop all but the newest outputs."""
        outputs = sorted(self.output_dir.glob("*.mp4"), key=lambda path: path.stat().st_mtime)
        for path in outputs[: max(0, len(outputs) - KEEP_OUTPUTS + 1)]:
            path.unlink(missing_ok=True)

    def timed(self, name: str, steps: int, fn: Callable, **call):
        """`fn(**call)`, and its seconds per step the first time `name` runs (the page's time estimates)."""
        start = time.perf_counter()
        out = fn(**call)
        self.seconds_per_step.setdefault(name, (time.perf_counter() - start) / steps)
        return out

    def generate(self, pipe: SkyReelsV4Pipeline, call: dict, settings: Settings, progress: Callable | None):
        """One base pass (and the Refiner when asked); returns (frames, audio or None, sample rate or None, fps)."""
        call = {**call, **self.common_arguments(pipe, call, settings)}
        call["callback_on_step_end"] = progress_callback(progress, settings.steps, "Generating")
        if not settings.refine:
            out = self.timed("base", settings.steps, pipe, **call)
            return out.frames[0], _first(out.audio), out.audio_sample_rate, int(out.fps)
        if pipe is self.models.base:  # T2AV: high-res keyframes in the same pass, as the paper does
            call.update(
                num_keyframes=REFINE_KEYFRAMES,
                keyframe_height=REFINE_SCALE * settings.height,
                keyframe_width=REFINE_SCALE * settings.width,
            )
        base = pipe(**call, output_type="latent")
        refined = self.timed(
            "refine",
            settings.steps,
            self.models.refiner,
            prompt=call["prompt"],
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
            "stg_scale": settings.stg_scale,
            "spatio_temporal_guidance_blocks": [settings.stg_block] if settings.stg_scale else None,
            "modality_scale": settings.modality_scale,
            "guidance_rescale": settings.guidance_rescale,
            "generator": torch.Generator().manual_seed(settings.seed),
        }
        if "num_frames" not in call:
            arguments["num_frames"] = num_frames_for(settings.duration, self.limits)
            if arguments["num_frames"] > self.limits.num_frames:  # long-form: windows chained
                if settings.refine:
                    raise InputError("The Refiner works on one window: turn it off for clips past the trained length.")
                arguments["overlap_history"] = default_overlap(pipe)
        return arguments


def _first(batch):
    return None if batch is None else batch[0]


def describe_result(frames, fps: int, sample_rate: int | None, settings: Settings, seconds: float, notes) -> str:
    height, width = np.asarray(frames[0]).shape[:2]
    sound = f"with {sample_rate / 1000:g} kHz audio" if sample_rate else "without audio (this model makes none)"
    details = "; ".join([f"seed {settings.seed}", f"{settings.steps} steps", *notes])
    clip = f"{len(frames)} frames ({len(frames) / fps:.2f} s) of {width}x{height} at {fps} fps"
    return f"Done in {seconds:.1f} s: {clip}, {sound} ({details})."


def toast(title: str, message: str) -> str:
    """A toast's text. Gradio 6 heads every toast with its kind ("Error", "Warning") and shows no `title`, so the title
    leads the message; both are escaped, and server paths are taken out of the message."""
    return f"<strong>{html.escape(title)}</strong><br>{html.escape(without_server_paths(message))}"


def page_error(title: str, message: str) -> gr.Error:
    return gr.Error(toast(title, message), title=title, print_exception=False)


def readable_errors(fn: Callable) -> Callable:
    """Every failure reaches the page as a sentence (gr.Error), never as a traceback; unexpected ones are logged."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, TypeError) as error:  # InputError, and the pipelines' own argument checks
            raise page_error("Please check the inputs", str(error)) from None
        except Exception as error:
            logger.exception("generation failed")
            raise page_error("Generation failed", f"{type(error).__name__}: {error}") from None

    return wrapper


def upload_checker(task: str, name: str, limits: Limits) -> Callable[[str], Any] | None:
    """The check that tab `task`'s Generate makes of its upload `name`, to run as soon as it is uploaded."""
    if name == "video":
        return functools.partial(check_video_file, kind=VIDEO_KINDS[task])
    if name == "audio" and task == "audio_to_video":
        return functools.partial(check_audio_file, kind=SOUNDTRACK, max_seconds=limits.max_duration, limits=limits)
    if name == "audio":
        return functools.partial(check_audio_reference, limits=limits)
    if name in IMAGE_KINDS:
        return functools.partial(read_image, kind=IMAGE_KINDS[name])
    return None


def upload_check(check: Callable[[str], Any]) -> Callable:
    """An upload handler: a file that `check` refuses is taken out of its box (which could not show it anyway), with a
    warning that says why; a good one is left as it is. It takes the unprocessed upload (`{"path": ...}`), since
    Gradio's own image preprocessing fails, with the server's path in its message, on a file that is no image."""

    def handler(upload: dict | str | None):
        path = upload.get("path") if isinstance(upload, dict) else upload
        if not path:
            return gr.skip()
        try:
            check(path)
        except InputError as error:
            gr.Warning(toast("This upload cannot be used", str(error)))
            return None
        return gr.skip()

    return handler


# ---------------------------------------------------------------------------------------------------------------------
# Page
# ---------------------------------------------------------------------------------------------------------------------

# Tab id -> (label, the DemoRunner method it calls).
TABS = {
    "t2av": ("Text → video + audio", "text_to_video"),
    "i2v": ("Image → video", "image_to_video"),
    "edit": ("Edit", "edit"),
    "extend": ("Extend", "extend"),
    "v2a": ("Video → audio", "video_to_audio"),
    "a2v": ("Audio → video", "audio_to_video"),
    "references": ("References", "references"),
}
# The hint in an empty prompt box when the model offers no example for that tab.
PLACEHOLDERS = {
    "text_to_video": "<text>What is seen.</text><sfx>What is heard.</sfx>",
    "image_to_video": "<text>What happens next.</text><sfx>...</sfx>",
    "edit": "<text>The edited scene.</text><sfx>...</sfx>",
    "extend": "<text>The scene continues.</text><sfx>...</sfx>",
    "video_to_audio": "<sfx>What the video should sound like.</sfx>",
    "audio_to_video": "<text>What should be seen.</text>",
    "references": "<text>@image_1 walks along a beach.</text><dialogue>@audio_1 ...</dialogue>",
}


def prompt_editor(tab: str, placeholder: str, value: str = "") -> gr.Textbox:
    """A prompt box with one-click tag insertion and a builder that composes the tags from separate fields."""
    prompt = gr.Textbox(label="Prompt", lines=3, value=value, placeholder=placeholder, elem_id=f"{tab}-prompt")
    with gr.Row():
        for tag in TAGS:
            button = gr.Button(f"+ <{tag}>", size="sm", min_width=60, elem_id=f"{tab}-add-{tag}")
            button.click(functools.partial(append_tag, tag=tag), inputs=prompt, outputs=prompt, queue=False)
    with gr.Accordion("Prompt builder: one field per tag", open=False):
        parts = [
            gr.Textbox(label=f"{label} <{tag}>", lines=1, elem_id=f"{tab}-part-{tag}") for tag, label in TAGS.items()
        ]
        compose = gr.Button("Compose the prompt from these fields", size="sm", elem_id=f"{tab}-compose")
        compose.click(compose_prompt, inputs=parts, outputs=prompt, queue=False)
    return prompt


def settings_panel(models: DemoModels) -> dict[str, gr.components.Component]:
    """Every setting once, by its `Settings` name, each with a one-line explanation; `show_settings` hides the groups a
    tab does not use (the first tab's are shown to begin with)."""
    limits, defaults = models.limits, setting_defaults(models.limits)
    shown = shown_settings("text_to_video", limits)
    settings = {}

    def add(cls: type, name: str, *args, **kwargs) -> None:
        group = next((group for group, names in SETTING_GROUPS.items() if name in names), None)
        visible = group is None or group in shown
        element = f"setting-{name.replace('_', '-')}"
        settings[name] = cls(*args, value=defaults[name], visible=visible, elem_id=element, **kwargs)

    with gr.Accordion("Settings", open=True, elem_id="settings"):
        with gr.Row():
            info = "The same seed and settings give the same clip; the seed of the last run is shown here."
            add(gr.Number, "seed", label="Seed", precision=0, minimum=0, info=info)
            info = "A new seed for every run; turn off to repeat the seed above."
            add(gr.Checkbox, "randomize_seed", label="Randomize seed", info=info)
        info = "Denoising steps: more is slower and usually cleaner."
        add(gr.Slider, "steps", 1, MAX_STEPS, step=1, label="Steps", info=info)
        with gr.Row():
            info = "How closely the picture follows the prompt; 1 turns it off (half the work per step)."
            add(gr.Slider, "guidance_scale", 1, 20, step=0.5, label="Video guidance scale", info=info)
            info = "How closely the sound follows the prompt; 1 turns it off."
            add(gr.Slider, "audio_guidance_scale", 1, 20, step=0.5, label="Audio guidance scale", info=info)
        with gr.Accordion("Advanced guidance", open=False, elem_id="advanced-guidance"):
            info = "Extra guidance terms for both picture and sound; each costs one more pass per step when on."
            gr.Markdown(info)
            with gr.Row():
                info = (
                    "Spatio-temporal guidance: steer away from a pass whose chosen block ignores its context; 0 = off."
                )
                add(gr.Slider, "stg_scale", 0, 5, step=0.25, label="STG scale", info=info)
                info = "The block that pass perturbs (dual-stream blocks first)."
                add(gr.Slider, "stg_block", 0, limits.num_blocks - 1, step=1, label="STG block", info=info)
            with gr.Row():
                info = "Steer away from a pass where picture and sound do not see each other (sync); 1 = off."
                add(gr.Slider, "modality_scale", 1, 5, step=0.25, label="Modality guidance", info=info)
                info = "Pull the guided prediction's spread back towards the unguided one's; 0 = off."
                add(gr.Slider, "guidance_rescale", 0, 1, step=0.05, label="Guidance rescale", info=info)
        with gr.Row():
            step = limits.size_multiple
            info = f"In steps of {step} px; the model was trained at {limits.width}x{limits.height}."
            add(gr.Slider, "height", step, limits.max_height, step=step, label="Height (px)", info=info)
            add(gr.Slider, "width", step, limits.max_width, step=step, label="Width (px)", info=info)
        info = (
            f"Rounded to the clip lengths the model makes: {limits.frame_count_rule()}; it was trained on "
            f"{limits.num_frames} frames ({limits.default_duration:.3g} s)."
        )
        info += " Longer clips chain windows of that length, each continuing the last one's picture and sound."
        span = (limits.min_duration, limits.max_generated_duration)
        add(gr.Slider, "duration", *span, step=limits.duration_step, label="Duration (s)", info=info)
        info = refine_info(models, {})
        add(gr.Checkbox, "refine", label=refine_label(models), interactive=models.refiner is not None, info=info)
        info = "What to steer away from (used where guidance is above 1)."
        add(gr.Textbox, "negative_prompt", label="Negative prompt (optional)", lines=1, info=info)
    return settings


def show_settings(task: str, limits: Limits) -> list:
    """Visibility updates of the grouped settings (in `SETTING_GROUPS` order) for tab `task`."""
    shown = shown_settings(task, limits)
    return [gr.update(visible=group in shown) for group, names in SETTING_GROUPS.items() for _ in names]


def result_view(result: Result) -> dict:
    """The result player's size and label: small clips at the largest whole zoom within `RESULT_SIDE` px (pixel-exact
    through the page's CSS), and the clip's own size stated."""
    zoom = max(1, RESULT_SIDE // max(result.width, result.height))
    shown = f", shown at {zoom}x" if zoom > 1 else ""
    label = f"Result: {result.width}x{result.height} px{shown}"
    return {"height": zoom * result.height, "width": zoom * result.width, "label": label}


def audio_upload(label: str, elem_id: str, limits: Limits) -> gr.Audio:
    # format=None: the file is passed on as uploaded (no re-encoding); a model without audio cannot take any.
    return gr.Audio(
        label=label, type="filepath", sources=["upload"], format=None, interactive=limits.has_audio, elem_id=elem_id
    )


def tab_inputs(tab: str, task: str, models: DemoModels, examples: DemoExamples) -> dict[str, gr.components.Component]:
    """One tab's inputs by the name its `DemoRunner` method takes. The first example's prompt is the prompt box's
    hint, and the text tab's starting prompt, so that Generate works on the first click; the other tabs also need an
    upload (their example brings one)."""
    limits = models.limits
    rows = examples.rows.get(task, [])
    first_prompt = rows[0]["prompt"] if rows else ""
    value = first_prompt if task == "text_to_video" else ""
    inputs = {"prompt": prompt_editor(tab, first_prompt or PLACEHOLDERS[task], value=value)}
    if task == "image_to_video":
        with gr.Row():
            inputs["image"] = gr.Image(
                label="First frame", type="filepath", sources=["upload", "clipboard"], elem_id="i2v-image"
            )
            inputs["last_image"] = gr.Image(label="Last frame (optional)", type="filepath", sources=["upload"])
    elif task in VIDEO_KINDS:
        label = VIDEO_KINDS[task].removeprefix("the ").capitalize()
        if task == "video_to_audio":
            label += " (its frames are kept as they are)"
        inputs["video"] = gr.Video(label=label, sources=["upload"], height=320, elem_id=f"{tab}-video")
    if task == "edit":
        gr.Markdown(
            "**Mask**: paint over what to change on the first frame (it applies to every frame), or upload a "
            "black-and-white image of the video's size (white = change, black = keep)."
        )
        with gr.Row():
            inputs["mask_drawn"] = gr.ImageEditor(
                label="Paint",
                type="numpy",
                image_mode="RGBA",
                sources=(),
                transforms=(),
                layers=False,
                brush=gr.Brush(colors=["#ff00aa"], color_mode="fixed"),
                elem_id="edit-mask",
            )
            inputs["mask_uploaded"] = gr.Image(
                label="...or upload a mask",
                type="filepath",
                image_mode="L",
                sources=["upload"],
                elem_id="edit-mask-file",
            )
        inputs["video"].change(first_frame, inputs=inputs["video"], outputs=inputs["mask_drawn"], queue=False)
    if task == "extend":
        inputs["keep_frames"] = gr.Slider(
            1,
            limits.max_num_frames - 1,
            value=limits.temporal_compression + 1,
            step=1,
            label="Frames to keep from the start",
            info=f"At the model's {limits.fps:g} fps; the Duration setting is the length of the whole result.",
            elem_id="extend-keep",
        )
    if task == "audio_to_video":
        with gr.Row():
            label = f"Soundtrack (at most {limits.max_duration:.3g} s; the clip follows its length)"
            inputs["audio"] = audio_upload(label, "a2v-audio", limits)
            inputs["image"] = gr.Image(
                label="First frame (optional: animate an image to the sound)",
                type="filepath",
                sources=["upload"],
                elem_id="a2v-image",
            )
    if task == "references":
        gr.Markdown("Name references in the prompt as `@image_1`, `@image_2`, `@image_3`, `@audio_1`.")
        with gr.Row():
            for i in range(limits.max_references):
                inputs[f"image_{i + 1}"] = gr.Image(
                    label=f"@image_{i + 1}", type="filepath", sources=["upload"], elem_id=f"references-image-{i + 1}"
                )
        label = f"@audio_1 (optional, at most {limits.max_audio_reference_seconds:g} s)"
        inputs["audio"] = audio_upload(label, "references-audio", limits)
    for name, component in inputs.items():
        check = upload_checker(task, name, limits)
        if check is not None:
            # Queued (its own concurrency group, so it does not wait for a generation): toasts come through the queue.
            component.upload(upload_check(check), component, component, preprocess=False)
    return inputs


def build_demo(
    model: str | SkyReelsV4Pipeline | None = None,
    refiner: Any = None,
    output_dir: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> gr.Blocks:
    """The whole page, queued (one generation at a time per model); not launched (launch with `launch_options()`)."""
    models = load_models(model, refiner, device, dtype)
    runner = DemoRunner(models, output_dir)
    examples = demo_examples(models, runner.output_dir / "examples")
    limits = models.limits
    tabs, generate_buttons = {}, {}
    # delete_cache: every hour, Gradio drops uploads and results older than a day from its own cache.
    with gr.Blocks(title="SkyReels-V4 demo", delete_cache=(3600, 86400)) as demo:
        header = (
            "# SkyReels-V4: video with synchronized sound\nDescribe the picture in `<text>` and the sound in `<sfx>`, "
            f"`<dialogue>`, `<singing>` or `<bgm>`.\n\n{models.description}"
        )
        gr.Markdown(header, elem_id="model-description")
        if examples.note:
            gr.Markdown(examples.note, elem_id="model-note")
        with gr.Row(elem_id="layout"):
            with gr.Column(scale=3, elem_id="inputs-column"):
                with gr.Tabs():
                    for tab, (label, task) in TABS.items():
                        with gr.Tab(label, id=tab) as tabs[task]:
                            inputs = tab_inputs(tab, task, models, examples)
                            button = gr.Button("Generate", variant="primary", elem_id=f"{tab}-generate")
                            generate_buttons[task] = (inputs, button)
                            rows = examples.rows.get(task, [])
                            if rows:
                                names = list(rows[0])
                                gr.Examples(
                                    [[row[name] for name in names] for row in rows],
                                    inputs=[inputs[name] for name in names],
                                    elem_id=f"{tab}-examples",
                                )
            with gr.Column(scale=2, elem_id="result-column"):
                video_out = gr.Video(
                    label="Result", interactive=False, autoplay=False, height=RESULT_SIDE, elem_id="result-video"
                )
                file_out = gr.File(label="Download MP4", interactive=False, elem_id="result-file")
                # The one place for progress and for the last result's description.
                status = gr.Markdown(elem_id="status", min_height=48)
            with gr.Column(scale=3, elem_id="settings-column"):
                settings = settings_panel(models)
        if examples.card:
            with gr.Accordion("Model card", open=False, elem_id="model-card"):
                gr.Markdown(examples.card)

        grouped = [settings[name] for names in SETTING_GROUPS.values() for name in names]
        for task, tab in tabs.items():
            tab.select(functools.partial(show_settings, task, limits), outputs=grouped, queue=False)
        last_result = gr.State(None)  # the last good Result: an error leaves it, and the page, as they are

        def show_result(result: Result) -> tuple:
            view = result_view(result)
            refine = gr.update(info=refine_info(models, runner.seconds_per_step))
            return gr.update(value=result.path, **view), result.path, result.status, result.seed, refine

        for task, (inputs, button) in generate_buttons.items():
            named = {**inputs, **settings}
            # Blank the status first, so that the progress bar is drawn there alone, not over the last description.
            run = button.click(lambda: "", outputs=status, queue=False, show_progress="hidden").then(
                _handler(runner, task, named),
                inputs=set(named.values()),
                outputs=last_result,
                show_progress_on=status,
                concurrency_id="generate",  # every tab shares the one model: one generation at a time
                concurrency_limit=1,
            )
            run.success(
                show_result,
                inputs=last_result,
                outputs=[video_out, file_out, status, settings["seed"], settings["refine"]],
                show_progress="hidden",
            )
            # After an error (its toast says what went wrong) the status describes the result still shown.
            run.failure(lambda result: result.status if result else "", last_result, status, show_progress="hidden")
    demo.queue(default_concurrency_limit=1)
    demo.runner = runner  # for tests and scripts
    demo.examples = examples
    return demo


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
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_options())


if __name__ == "__main__":
    main()
