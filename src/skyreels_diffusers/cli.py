"""`skyreels-v4`: the command line of skyreels-diffusers.

skyreels-v4 generate --prompt "<text>A red ball bounces.</text><sfx>A knock on each bounce.</sfx>" --out clip.mp4
skyreels-v4 generate --prompt "..." --video in.mp4 --out foley.mp4      # video-to-audio: the soundtrack of a video
skyreels-v4 generate --prompt "..." --audio in.wav --out clip.mp4       # audio-to-video: a video for a soundtrack
skyreels-v4 generate --prompt "..." --image first.png --audio in.wav    # an image animated to a sound
"""

import argparse
import math
import os
import sys
import time
from pathlib import Path


# Searched in this order when `--model` is not given.
MODEL_ENV_VAR = "SKYREELS_V4_MODEL"
EMBEDDED_MODEL = Path("pipelines") / "skyreels-v4-tiny"
# `torch.Generator.manual_seed` takes a 64-bit seed.
MAX_SEED = 2**64 - 1
# `--dtype` here and in the demo: the names of `utils.precision.DTYPES`, written out so that parsing imports no torch.
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
DTYPE_HELP = (
    "auto: bfloat16 where the device computes it in hardware (CUDA, CPUs with AMX or AVX512-BF16), else float32"
)


def default_model() -> str | None:
    """`$SKYREELS_V4_MODEL`, else the repo's embedded tiny pipeline folder when run from a checkout, else None."""
    if os.environ.get(MODEL_ENV_VAR):
        return os.environ[MODEL_ENV_VAR]
    return str(EMBEDDED_MODEL) if (EMBEDDED_MODEL / "model_index.json").is_file() else None


def frames_for_duration(duration: float, fps: float, temporal_compression: int) -> int:
    """The `4k+1` frame count closest to `duration` seconds (at least one latent frame)."""
    from skyreels_diffusers.pipelines.pipeline_mixin import num_frames_for_duration

    check_duration(duration)
    return max(temporal_compression + 1, num_frames_for_duration(duration, fps, temporal_compression))


def check_duration(duration: float) -> None:
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"`--duration` must be a positive, finite number of seconds, got {duration}.")


def chains_windows(args: argparse.Namespace, pipe, num_frames: int | None) -> bool:
    """Whether `--duration` asks for more than the model's window (its default clip), so windows are chained; not
    with `--video` or `--audio`, whose clip length is the input's."""
    beyond = num_frames is not None and num_frames > pipe.config.default_num_frames
    return beyond and args.video is None and args.audio is None


def check_duration_fits(args: argparse.Namespace, pipe, num_frames: int) -> None:
    """`--duration` within the loaded pipeline's limits (`pipe.frame_limit`; chained windows:
    `pipe.limits.max_duration_seconds`), checked before generating. A size that fits no frame at all is left to the
    pipeline, whose message names `height` and `width`."""
    fps = pipe.transformer.config.fps
    if chains_windows(args, pipe, num_frames):
        longest = pipe.limits.max_duration_seconds
        if num_frames / fps > longest:
            raise ValueError(
                f"`--duration` {args.duration:g} s is too long: chained windows make at most {longest:g} s, set by "
                f"`pipe.limits.max_duration_seconds` = {longest:g}."
            )
        num_frames = pipe.config.default_num_frames  # each window must fit one call
    height = pipe.config.default_height if args.height is None else args.height
    width = pipe.config.default_width if args.width is None else args.width
    generate_audio = not args.no_audio and args.audio is None and pipe.audio_vae is not None
    most, limit = pipe.frame_limit(height, width, 1, args.video is None, generate_audio)
    if 1 <= most < num_frames:
        raise ValueError(
            f"`--duration` {args.duration:g} s is too long: at {height}x{width} this model makes at most {most / fps:g} s "
            f"({most} frames at {fps:g} fps), set by `pipe.limits.{limit}` = {getattr(pipe.limits, limit):,}."
        )


def check_output_path(path: str) -> None:
    """An MP4-family file in an existing, writable folder, checked before any generation."""
    from skyreels_diffusers.utils.media import VIDEO_SUFFIXES

    if not path.lower().endswith(VIDEO_SUFFIXES):
        raise ValueError(f"`--out` must end with one of {', '.join(VIDEO_SUFFIXES)}, got {path!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"`--out`: the folder {folder!r} does not exist.")
    if not os.access(folder, os.W_OK) or os.path.isdir(path):
        raise ValueError(f"`--out`: cannot write {path!r}.")


def add_generate_arguments(generate: argparse.ArgumentParser) -> None:
    """The options of `skyreels-v4 generate` (shared with `examples/inference/generate_parallel.py`)."""
    generate.add_argument(
        "--model",
        default=None,
        help=f"pipeline folder or Hub id; default: ${MODEL_ENV_VAR}, else ./{EMBEDDED_MODEL} if present, else "
        "randomly initialised tiny components (noise, for a smoke test only)",
    )
    generate.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    generate.add_argument("--prompt", required=True, help="instruction; may use <text>, <sfx>, <dialogue>, ...")
    generate.add_argument("--negative-prompt", default=None)
    generate.add_argument("--out", default="clip.mp4", help="output MP4 path (H.264 + AAC)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--height", type=int, default=None, help="pixels; default: the model's")
    generate.add_argument("--width", type=int, default=None, help="pixels; default: the model's")
    generate.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds; default: the model's clip length. Longer: windows of that length chained (see README, Long-form)",
    )
    generate.add_argument(
        "--overlap-history",
        type=int,
        default=None,
        help="frames each chained window keeps from the one before (with its audio); default: the pipeline's",
    )
    generate.add_argument(
        "--no-crossfade",
        action="store_true",
        help="chained windows: keep each overlap exactly instead of crossfading the joins",
    )
    generate.add_argument("--steps", type=int, default=30, help="denoising steps")
    generate.add_argument(
        "--lora",
        default=None,
        help="a LoRA file or folder loaded with `load_lora_weights` (a few-step LoRA: with --steps 4 "
        "--guidance-scale 1, see its model card)",
    )
    generate.add_argument("--lora-scale", type=float, default=1.0, help="the LoRA's weight")
    guidance = generate.add_argument_group(
        "guidance", "per modality; each --audio-* option not given takes the video's value (see README, Guidance)"
    )
    guidance.add_argument("--guidance-scale", type=float, default=5.0, help="classifier-free guidance; 1 = off")
    guidance.add_argument("--audio-guidance-scale", type=float, default=None)
    guidance.add_argument(
        "--stg-scale", type=float, default=0.0, help="spatio-temporal guidance (needs --stg-blocks); 0 = off"
    )
    guidance.add_argument("--audio-stg-scale", type=float, default=None)
    guidance.add_argument("--stg-blocks", default=None, help="blocks STG perturbs, e.g. 1 or 0,1")
    guidance.add_argument("--audio-stg-blocks", default=None)
    guidance.add_argument(
        "--modality-scale", type=float, default=1.0, help="modality guidance (against a pass without A/V exchange)"
    )
    guidance.add_argument("--audio-modality-scale", type=float, default=None)
    guidance.add_argument("--guidance-rescale", type=float, default=0.0, help="0 to 1; rescale towards std(cond)")
    guidance.add_argument("--audio-guidance-rescale", type=float, default=None)
    generate.add_argument("--no-audio", action="store_true", help="video only (T2V)")
    generate.add_argument("--image", default=None, help="first frame (image-to-video); combines with --audio")
    generate.add_argument(
        "--video", default=None, help="video file: generate its soundtrack (video-to-audio); the frames are kept"
    )
    generate.add_argument(
        "--audio",
        default=None,
        help="audio file (WAV, MP3, an MP4's track, ...): generate a video for it (audio-to-video); "
        "the clip's length follows the audio",
    )
    generate.add_argument(
        "--video-lead-steps",
        type=int,
        default=0,
        help="video and audio both generated: start the audio this many steps after the video",
    )


def block_list(option: str, text: str | None) -> list[int] | None:
    """`--stg-blocks 0,2` -> [0, 2]."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"`{option}` must be block indices separated by commas, e.g. 1 or 0,2; got {text!r}."
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skyreels-v4", description="SkyReels-V4 video + audio generation.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_generate_arguments(
        commands.add_parser(
            "generate", help="text (+ an image, a video or a soundtrack) -> MP4 with synchronized audio"
        )
    )
    return parser


def load_pipeline(model: str | None, dtype: str = "float32", device: str = "cpu"):
    """`SkyReelsV4Pipeline` from `model`, else from `default_model()`, else tiny random components (with a note), on
    `device` in `dtype` ("auto": the fastest there, see `skyreels_diffusers.utils.precision`)."""
    from skyreels_diffusers import SkyReelsV4Pipeline
    from skyreels_diffusers.utils.precision import resolve_dtype

    torch_dtype = resolve_dtype(dtype, device)
    model = model or default_model()
    if model is not None:
        return SkyReelsV4Pipeline.from_pretrained(model, dtype=torch_dtype).to(device)
    from skyreels_diffusers.tiny_components import build_tiny_pipeline

    print(
        "NOTE: no trained model found, so this run uses RANDOMLY INITIALISED tiny components: it exercises the "
        f"whole pipeline and writes a real MP4, but the picture and sound are noise. Pass --model or set "
        f"${MODEL_ENV_VAR} to use trained weights.",
        file=sys.stderr,
    )
    return build_tiny_pipeline().to(device, torch_dtype)


GUIDANCE_OPTIONS = (
    "guidance_scale",
    "audio_guidance_scale",
    "stg_scale",
    "audio_stg_scale",
    "modality_scale",
    "audio_modality_scale",
    "guidance_rescale",
    "audio_guidance_rescale",
)


def generate(args: argparse.Namespace, pipe=None, write: bool = True) -> Path | None:
    """Run `skyreels-v4 generate`: with `args.model`'s pipeline unless `pipe` is given; `write=False` generates
    without writing (the other ranks of a context-parallel run)."""
    import torch

    from skyreels_diffusers.utils.media import export_to_video_with_audio

    # Every option is checked before the model loads, so a typo costs no generation.
    if write:
        check_output_path(args.out)
    for name in GUIDANCE_OPTIONS:  # float() accepts "nan" and "inf"; the pipeline says so
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"`--{name.replace('_', '-')}` must be a finite number, got {value}.")
    stg_blocks = block_list("--stg-blocks", args.stg_blocks)
    audio_stg_blocks = block_list("--audio-stg-blocks", args.audio_stg_blocks)
    if args.duration is not None:
        check_duration(args.duration)
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"`--seed` must be an integer from 0 to 2**64-1 = {MAX_SEED}, got {args.seed}.")
    conditions = {"image": args.image, "video": args.video, "audio": args.audio}
    for name, path in conditions.items():
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"`--{name}` must be an existing file, got {path!r}.")
    lora = getattr(args, "lora", None)
    lora_scale = getattr(args, "lora_scale", 1.0)
    if lora is not None and not os.path.exists(lora):
        raise ValueError(f"`--lora` must be an existing LoRA file or folder, got {lora!r}.")
    if not math.isfinite(lora_scale):
        raise ValueError(f"`--lora-scale` must be a finite number, got {lora_scale}.")
    pipe = pipe if pipe is not None else load_pipeline(args.model, args.dtype)
    if lora is not None:
        pipe.load_lora_weights(lora, adapter_name="cli")
        pipe.set_adapters(["cli"], [lora_scale])
    fps = pipe.transformer.config.fps
    num_frames = None
    if args.duration is not None:
        num_frames = frames_for_duration(args.duration, fps, pipe.vae_spec.temporal_compression)
        check_duration_fits(args, pipe, num_frames)
    call = {
        "negative_prompt": args.negative_prompt,
        "height": args.height,
        "width": args.width,
        "num_frames": num_frames,
        "generate_audio": not args.no_audio,
        "num_inference_steps": args.steps,
        **{name: getattr(args, name) for name in GUIDANCE_OPTIONS},
        "spatio_temporal_guidance_blocks": stg_blocks,
        "audio_spatio_temporal_guidance_blocks": audio_stg_blocks,
        "video_lead_steps": args.video_lead_steps,
        "generator": torch.Generator().manual_seed(args.seed),
    }
    if chains_windows(args, pipe, num_frames):
        from skyreels_diffusers.pipelines.longform import default_overlap

        overlap = default_overlap(pipe) if args.overlap_history is None else args.overlap_history
        call.update(overlap_history=overlap, crossfade=not args.no_crossfade)
    if any(value is not None for value in conditions.values()):
        from skyreels_diffusers import SkyReelsV4InpaintPipeline

        if args.image is not None:
            import PIL.Image

            conditions["image"] = PIL.Image.open(args.image).convert("RGB")
        pipe = SkyReelsV4InpaintPipeline.from_pipe(pipe)
        call.update({name: value for name, value in conditions.items() if value is not None})
    start = time.perf_counter()
    output = pipe(args.prompt, **call)
    seconds = time.perf_counter() - start
    if not write:
        return None
    audio = None if output.audio is None else output.audio[0]
    path = export_to_video_with_audio(
        output.frames[0], args.out, fps=fps, audio=audio, audio_sample_rate=output.audio_sample_rate
    )
    print(f"wrote {path} ({len(output.frames[0])} frames at {fps} fps, in {seconds:.1f}s)")
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            generate(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"skyreels-v4: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
