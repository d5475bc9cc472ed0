"""Fine-tune SkyReels-V4 (full or PEFT LoRA) with Accelerate: the joint video + audio model, or the Refiner.

Loss (see docs/design.md, "Training"): rectified flow in Diffusers' sigma convention,
`x_sigma = (1 - sigma) * x0 + sigma * noise`; the model predicts the velocity `noise - x0` (the paper's `z0 - eps`
with t = 1 - sigma, sign flipped because sigma runs the other way); loss = MSE(video) + MSE(audio) over the
modalities the task generates. Sigma is drawn logit-normal or uniform and then shifted like the scheduler
(`shift * s / (1 + (shift - 1) * s)`). By default one sigma is shared by video and audio, as in the paper; for a
share of samples (`--independent_noise_ratio`) the two are drawn independently, so one model learns the joint, the
conditional and the marginal distributions (UniDiffuser's recipe).

Every step draws one task for the whole batch (`--task_ratios`): t2av, t2v, t2a, i2v, interpolation, extension
(the first frames and the matching start of the soundtrack kept), audio_extension (the start of the soundtrack kept),
edit, reference_images, audio_reference, and v2a / a2v, where one modality is *given*: clean at timestep 0, not
predicted and left out of the loss. A kept audio prefix is the same per token: its latents clean at timestep 0, out
of the loss. Conditions are built by the pipelines' own functions (`build_video_condition`
on the clip's pixels, `encode_audio_track` on its soundtrack), so the model learns exactly what the pipelines ask
of it; text / condition dropout train the unconditional branch used by classifier-free guidance.

Reproducibility: the clips, task, sigmas and noise of step `s` depend only on `(--seed, s)` and the sample's place
in the global batch, so a resumed run continues exactly, and N processes see the same global batch as one.

Data: precomputed tensors (`--train_latents`, from `precompute_latents.py`) or a JSONL manifest (`--train_manifest`,
encoded once at start-up with the same code).

    accelerate launch examples/training/train_skyreels_v4.py --pretrained_model_name_or_path pipelines/skyreels-v4-tiny \
        --train_latents data/latents --output_dir runs/lora --lora_rank 16 --max_train_steps 1000

Multi-GPU / FSDP: run `accelerate config` (or use a file from `examples/training/accelerate_configs/`) and launch with
`accelerate launch --config_file ...`; the global batch is `train_batch_size x processes x accumulation`.
"""

import argparse
import json
import os
import re
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_density_for_timestep_sampling
from huggingface_hub import ModelCard, ModelCardData
from safetensors.torch import load_file
from tqdm.auto import tqdm

from skyreels_diffusers import (
    SkyReelsV4Pipeline,
    SkyReelsV4RefinerTransformer3DModel,
)
from skyreels_diffusers.pipelines.conditioning import build_refiner_condition, build_video_condition
from skyreels_diffusers.pipelines.inpainting import clean_audio_latents
from skyreels_diffusers.pipelines.preprocessing import frames_to_tensor, pixels_for_vae
from skyreels_diffusers.utils.media import export_to_video_with_audio


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from precompute_latents import load_record, precompute, read_manifest  # noqa: E402


logger = get_logger(__name__)

TASKS = (
    "t2av",
    "t2v",
    "t2a",
    "i2v",
    "interpolation",
    "extension",
    "audio_extension",
    "edit",
    "reference_images",
    "audio_reference",
    "v2a",
    "a2v",
)
DEFAULT_TASK_RATIOS = (
    "t2av=0.3,t2v=0.05,t2a=0.05,i2v=0.1,interpolation=0.05,extension=0.1,audio_extension=0.05,edit=0.05,"
    "reference_images=0.05,audio_reference=0.05,v2a=0.1,a2v=0.1"
)
# Which modality each task generates; the other one is given (clean, timestep 0) or absent.
GENERATES_VIDEO = {task: task not in ("t2a", "v2a") for task in TASKS}
GENERATES_AUDIO = {task: task not in ("t2v", "a2v") for task in TASKS}
HAS_VIDEO = {task: task != "t2a" for task in TASKS}
HAS_AUDIO = {task: task != "t2v" for task in TASKS}
# Tensors of `precompute_latents.py` that hold one entry per clip (the rest are shared).
PER_CLIP_KEYS = (
    "video_latents",
    "video_frames",
    "reference_latents",
    "audio_latents",
    "audio_reference_latents",
    "prompt_embeds",
    "prompt_attention_mask",
    "reference_prompt_embeds",
    "reference_prompt_attention_mask",
    "edit_keep_masks",
    "has_edit_mask",
    "low_res_latents",
)
# The parts of each layer a LoRA can train: `(single_)transformer_blocks.{i}.<part>` of the joint model.
LORA_TOWERS = ("video", "audio", "cross_modal")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--pretrained_model_name_or_path", required=True, help="SkyReelsV4Pipeline folder")
    model.add_argument("--refiner", action="store_true", help="train the Refiner instead of the joint model")
    model.add_argument(
        "--refiner_model_name_or_path",
        default=None,
        help="Refiner to start from; default: built from the pipeline's video tower",
    )
    model.add_argument("--lora_rank", type=int, default=None, help="train a PEFT LoRA of this rank (default: full)")
    model.add_argument("--lora_alpha", type=int, default=None, help="default: the rank")
    model.add_argument("--lora_towers", default="video,audio,cross_modal", help=f"subset of {sorted(LORA_TOWERS)}")
    model.add_argument("--lora_target_modules", default="to_q,to_k,to_v,to_out.0,add_q_proj,add_k_proj,add_v_proj")
    data = parser.add_argument_group("data")
    data.add_argument("--train_latents", default=None, help="folder written by precompute_latents.py")
    data.add_argument("--train_manifest", default=None, help="JSONL manifest, encoded at start-up")
    data.add_argument("--height", type=int, default=None, help="manifest clips: target height (pipeline default)")
    data.add_argument("--width", type=int, default=None)
    data.add_argument("--num_frames", type=int, default=None)
    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", required=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--train_batch_size", type=int, default=1, help="per process")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--max_train_steps", type=int, default=1000)
    train.add_argument("--learning_rate", type=float, default=1e-4)
    train.add_argument("--adam_weight_decay", type=float, default=0.0)
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--lr_scheduler", default="constant_with_warmup", help="any diffusers.optimization schedule")
    train.add_argument("--lr_warmup_steps", type=int, default=0)
    train.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"])
    train.add_argument("--gradient_checkpointing", action="store_true")
    train.add_argument("--use_ema", action="store_true")
    train.add_argument("--ema_decay", type=float, default=0.999)
    flow = parser.add_argument_group("flow matching and tasks")
    flow.add_argument("--weighting_scheme", default="logit_normal", choices=["logit_normal", "uniform"])
    flow.add_argument("--logit_mean", type=float, default=0.0)
    flow.add_argument("--logit_std", type=float, default=1.0)
    flow.add_argument("--shift", type=float, default=None, help="default: the pipeline scheduler's shift")
    flow.add_argument(
        "--independent_noise_ratio",
        type=float,
        default=0.0,
        help="share of samples whose video and audio noise levels are drawn independently",
    )
    flow.add_argument("--task_ratios", default=DEFAULT_TASK_RATIOS, help="comma list of task=weight")
    flow.add_argument("--text_dropout", type=float, default=0.1, help="P(empty prompt) per sample")
    flow.add_argument("--condition_dropout", type=float, default=0.1, help="P(no condition) per conditioned sample")
    flow.add_argument("--refiner_crop", type=int, default=None, help="Refiner: square crop, in high-res latent cells")
    flow.add_argument("--max_sparsity", type=float, default=None, help="Refiner: VSA sparsity ramp end (config)")
    flow.add_argument("--sparsity_ramp_steps", type=int, default=0, help="Refiner: steps to ramp sparsity up")
    io = parser.add_argument_group("checkpoints and validation")
    io.add_argument("--checkpointing_steps", type=int, default=500)
    io.add_argument("--checkpoints_total_limit", type=int, default=None)
    io.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint folder or "latest"')
    io.add_argument("--validation_prompts", nargs="*", default=[])
    io.add_argument("--validation_steps", type=int, default=500)
    io.add_argument("--validation_inference_steps", type=int, default=20)
    io.add_argument("--logging_steps", type=int, default=10)
    io.add_argument("--report_to", default=None, help="tensorboard, wandb, ... (Accelerate trackers)")
    args = parser.parse_args(argv)

    if (args.train_latents is None) == (args.train_manifest is None):
        parser.error("give exactly one of --train_latents and --train_manifest.")
    args.task_ratios = parse_task_ratios(args.task_ratios)
    unknown = set(args.lora_towers.split(",")) - set(LORA_TOWERS)
    if unknown:
        parser.error(f"--lora_towers accepts {sorted(LORA_TOWERS)}, got {sorted(unknown)}.")
    return args


def parse_task_ratios(text: str) -> dict[str, float]:
    ratios = {}
    for item in text.split(","):
        name, _, weight = item.partition("=")
        if name.strip() not in TASKS:
            raise ValueError(f"`--task_ratios` names tasks from {TASKS}, got {name.strip()!r}.")
        ratios[name.strip()] = float(weight)
    if sum(ratios.values()) <= 0 or min(ratios.values()) < 0:
        raise ValueError(f"`--task_ratios` must be non-negative with a positive sum, got {ratios}.")
    return ratios


# ----------------------------------------------------------------------------------------------------------------
# Deterministic sampling: everything about step `s` comes from (seed, s, sample index).


def step_rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, step])


def sample_generator(seed: int, step: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, index]).generate_state(1)[0]))


def global_batch(seed: int, step: int, global_size: int, dataset_size: int, task_ratios: dict[str, float]):
    """The clip indices and the task of micro-step `step`, identical on every process."""
    rng = step_rng(seed, step)
    indices = rng.choice(dataset_size, size=global_size, replace=global_size > dataset_size)
    names = list(task_ratios)
    weights = np.array([task_ratios[n] for n in names])
    return indices, names[rng.choice(len(names), p=weights / weights.sum())]


def sample_sigma(generator: torch.Generator, args, shift: float) -> float:
    density = compute_density_for_timestep_sampling(
        args.weighting_scheme, 1, args.logit_mean, args.logit_std, generator=generator
    )
    return float(shift * density / (1 + (shift - 1) * density))


# ----------------------------------------------------------------------------------------------------------------
# Task inputs


def random_keep_box(generator: torch.Generator, frames: int, height: int, width: int) -> torch.Tensor:
    """Pixel keep-mask `(1, 1, F, H, W)`: 1 everywhere except one random box (at least a quarter of each side)."""
    keep = torch.ones(1, 1, frames, height, width)
    sizes = [int(torch.randint(max(1, n // 4), n + 1, (1,), generator=generator)) for n in (frames, height, width)]
    starts = [
        int(torch.randint(0, n - s + 1, (1,), generator=generator)) for n, s in zip((frames, height, width), sizes)
    ]
    keep[..., starts[0] : starts[0] + sizes[0], starts[1] : starts[1] + sizes[1], starts[2] : starts[2] + sizes[2]] = 0
    return keep


def clip_pixels(clip: dict) -> torch.Tensor:
    """The clip's frames `(F, H, W, 3)` uint8 -> `(1, 3, F, H, W)` in [-1, 1], as the pipelines convert them."""
    return pixels_for_vae(frames_to_tensor("video", clip["video_frames"].numpy(), *clip["video_frames"].shape[1:3]))


def task_condition_inputs(task: str, clip: dict, generator: torch.Generator) -> dict:
    """The inputs of `build_video_condition` for `task`, made from the clip's pixels exactly as the inpainting
    pipeline makes them from its arguments: `image` (i2v), `image` + `last_image` (interpolation), `video` +
    `num_condition_frames` (extension, a random count), `video` + `mask` (edit: the manifest's mask or a random box),
    `video` alone (v2a: every frame kept). Other tasks have no condition frames."""
    if task not in ("i2v", "interpolation", "extension", "edit", "v2a"):
        return {}
    num_frames, height, width = clip["video_frames"].shape[:3]
    pixels = clip_pixels(clip)
    if task in ("i2v", "interpolation"):
        conditions = [(0, pixels[:, :, 0])]
        if task == "interpolation":
            conditions.append((num_frames - 1, pixels[:, :, -1]))
        return {"frame_conditions": conditions}
    keep = torch.ones(1, 1, num_frames, height, width)
    if task == "extension":
        keep[:, :, int(torch.randint(1, num_frames, (1,), generator=generator)) :] = 0
    elif task == "edit":
        has_mask = clip["has_edit_mask"] > 0
        keep = clip["edit_keep_masks"][None].float() if has_mask else random_keep_box(generator, *keep.shape[2:])
    return {"video": pixels, "keep_mask": keep, "video_latents": clip["video_latents"][None]}


def video_condition(task: str, clip: dict, vae, generator: torch.Generator, dropout: bool) -> tuple[torch.Tensor, int]:
    """`(C + 1, F, h, w)` condition channels of one sample, built by the pipelines' `build_video_condition`, and the
    frames an extension keeps (0 for other tasks)."""
    num_frames, height, width = clip["video_frames"].shape[:3]
    inputs = {} if dropout else task_condition_inputs(task, clip, generator)
    kept = int(inputs["keep_mask"][0, 0, :, 0, 0].sum()) if task == "extension" and inputs else 0
    return build_video_condition(vae, 1, num_frames, height, width, **inputs).as_channels()[0], kept


def clean_audio_count(task, components, clip, kept_frames: int, generator: torch.Generator, dropout: bool) -> int:
    """The audio latents an extension keeps clean: those inside the kept frames' duration (extension, counted as
    the inpainting pipeline counts `audio_condition_seconds`), or a random count (audio_extension)."""
    if dropout or task not in ("extension", "audio_extension"):
        return 0
    if task == "extension":
        return clean_audio_latents(components.audio_spec, kept_frames / components.transformer.config.fps)
    return int(torch.randint(1, clip["audio_latents"].shape[-1], (1,), generator=generator))


def base_model_inputs(task, clips, null_prompt, components, args, shift, seed, step, offset):
    """Noisy inputs, targets and conditions of the joint model for one micro-batch (`components`: the pipeline, for
    its VAE and timelines). A given modality (v2a: video, a2v: audio) enters clean at sigma 0 and has no target; a
    kept audio prefix (extensions) is clean at timestep 0 per token (`audio_timestep` `(B, L)`)."""
    has_video, has_audio = HAS_VIDEO[task], HAS_AUDIO[task]
    generates_video, generates_audio = GENERATES_VIDEO[task], GENERATES_AUDIO[task]
    noisy_video, conditions, video_targets, noisy_audio, audio_targets, prompts, masks = ([] for _ in range(7))
    video_sigmas, audio_sigmas = [], []
    per_token_audio = task in ("extension", "audio_extension")
    for i, clip in enumerate(clips):
        generator = sample_generator(seed, step, offset + i)
        sigma = sample_sigma(generator, args, shift)
        independent = bool(torch.rand(1, generator=generator) < args.independent_noise_ratio)
        audio_sigma = sample_sigma(generator, args, shift) if independent else sigma
        video_sigma = sigma if generates_video else 0.0
        audio_sigma = audio_sigma if generates_audio else 0.0
        video_sigmas.append(video_sigma)
        drop_text = bool(torch.rand(1, generator=generator) < args.text_dropout)
        drop_condition = bool(torch.rand(1, generator=generator) < args.condition_dropout)
        prompt = "reference_prompt" if task == "reference_images" else "prompt"  # the MLLM also reads the reference
        prompts.append(null_prompt[0] if drop_text else clip[f"{prompt}_embeds"])
        masks.append(null_prompt[1] if drop_text else clip[f"{prompt}_attention_mask"])
        if has_video:
            x0 = clip["video_latents"]
            noise = torch.randn(x0.shape, generator=generator)
            noisy_video.append((1 - video_sigma) * x0 + video_sigma * noise)
            video_targets.append(noise - x0)
            # Video-to-audio keeps its condition under dropout: the given video is not a droppable hint.
            drop = drop_condition and task != "v2a"
            condition, kept_frames = video_condition(task, clip, components.vae, generator, drop)
            conditions.append(condition)
        if has_audio:
            a0 = clip["audio_latents"]
            noise = torch.randn(a0.shape, generator=generator)
            if per_token_audio:  # the kept prefix: clean, at timestep 0
                num_clean = clean_audio_count(task, components, clip, kept_frames, generator, drop_condition)
                audio_sigma = torch.where(torch.arange(a0.shape[-1]) < num_clean, 0.0, audio_sigma)
            noisy_audio.append((1 - audio_sigma) * a0 + audio_sigma * noise)
            audio_targets.append(noise - a0)
        audio_sigmas.append(torch.as_tensor(audio_sigma, dtype=torch.float32))
    stack = lambda xs: torch.stack(xs) if xs else None  # noqa: E731
    # Prompts differ in length (the null prompt, prompts read with a reference image): pad to the longest, masked.
    length = max(p.shape[0] for p in prompts)
    prompts = [F.pad(p, (0, 0, 0, length - p.shape[0])) for p in prompts]
    masks = [F.pad(m, (0, length - m.shape[0]), value=False) for m in masks]
    inputs = {
        "hidden_states": torch.cat([stack(noisy_video), stack(conditions)], dim=1) if has_video else None,
        "audio_hidden_states": stack(noisy_audio),
        "timestep": torch.tensor(video_sigmas) * 1000 if has_video else None,
        "audio_timestep": torch.stack(audio_sigmas) * 1000 if has_audio else None,
        "encoder_hidden_states": stack(prompts),
        "encoder_attention_mask": stack(masks),
    }
    if task == "reference_images":
        inputs["reference_latents"] = stack([clip["reference_latents"] for clip in clips])
    if task == "audio_reference":
        inputs["audio_reference_latents"] = stack([clip["audio_reference_latents"] for clip in clips])
    return inputs, stack(video_targets) if generates_video else None, stack(audio_targets) if generates_audio else None


def audio_loss(prediction: torch.Tensor, target: torch.Tensor, audio_timestep: torch.Tensor) -> torch.Tensor:
    """MSE of the audio velocity over the generated latents: a kept prefix (timestep 0 per token) is left out."""
    if audio_timestep.ndim == 1:
        return F.mse_loss(prediction.float(), target.to(prediction.device))
    generated = (audio_timestep > 0)[:, None].expand_as(prediction)
    return F.mse_loss(prediction.float()[generated], target.to(prediction.device)[generated])


def refiner_model_inputs(clips, null_prompt, args, shift, seed, step, offset, sparsity, spatial_factor):
    """Noisy high-res latents + the Refiner condition (upsampled low-res latents, random keyframes), optionally
    cropped to `--refiner_crop` latent cells at the same place in both grids."""
    noisy, targets, conditions, sigmas, prompts, masks, audio = ([] for _ in range(7))
    for i, clip in enumerate(clips):
        generator = sample_generator(seed, step, offset + i)
        sigma = sample_sigma(generator, args, shift)
        sigmas.append(sigma)
        drop_text = bool(torch.rand(1, generator=generator) < args.text_dropout)
        prompts.append(null_prompt[0] if drop_text else clip["prompt_embeds"])
        masks.append(null_prompt[1] if drop_text else clip["prompt_attention_mask"])
        x0 = clip["video_latents"]
        num_keyframes = int(torch.randint(0, 3, (1,), generator=generator))
        keyframe_indices = sorted(torch.randperm(x0.shape[1], generator=generator)[:num_keyframes].tolist())
        condition = build_refiner_condition(
            clip["low_res_latents"][None],
            spatial_factor,
            1,
            x0[None][:, :, keyframe_indices] if keyframe_indices else None,
            keyframe_indices or None,
        ).as_channels()[0]
        noise = torch.randn(x0.shape, generator=generator)
        x_sigma, target = (1 - sigma) * x0 + sigma * noise, noise - x0
        if args.refiner_crop:
            size = args.refiner_crop
            top, left = (
                int(torch.randint(0, (n - size) // spatial_factor + 1, (1,), generator=generator)) * spatial_factor
                for n in x0.shape[-2:]
            )
            x_sigma, target, condition = (
                t[..., top : top + size, left : left + size] for t in (x_sigma, target, condition)
            )
        noisy.append(x_sigma)
        targets.append(target)
        conditions.append(condition)
        audio.append(clip["audio_latents"])
    inputs = {
        "hidden_states": torch.cat([torch.stack(noisy), torch.stack(conditions)], dim=1),
        "timestep": torch.tensor(sigmas) * 1000,
        "encoder_hidden_states": torch.stack(prompts),
        "encoder_attention_mask": torch.stack(masks),
        "audio_latents": torch.stack(audio),
        "sparsity": sparsity,
        "vsa_backend": "gather",  # flex_attention has no CPU backward; gather has autograd everywhere
    }
    return inputs, torch.stack(targets)


# ----------------------------------------------------------------------------------------------------------------
# Model setup, checkpoints, validation and the model card


def add_lora(transformer, args) -> None:
    from peft import LoraConfig

    towers = "|".join(args.lora_towers.split(","))
    modules = "|".join(m.replace(".", r"\.") for m in args.lora_target_modules.split(","))
    config = LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha or args.lora_rank,
        init_lora_weights="gaussian",
        target_modules=rf"^(single_)?transformer_blocks\.\d+\.({towers})\..*\.({modules})$"
        if not args.refiner
        else rf"^.*\.({modules})$",
    )
    transformer.requires_grad_(False)
    transformer.add_adapter(config)


def load_training_data(args, pipe) -> dict[str, torch.Tensor]:
    if args.train_latents:
        return load_file(os.path.join(args.train_latents, "latents.safetensors"))
    num_frames = args.num_frames or pipe.config.default_num_frames
    clips = (load_record(pipe, record, num_frames) for record in read_manifest(args.train_manifest))
    return precompute(
        pipe,
        clips,
        args.height or pipe.config.default_height,
        args.width or pipe.config.default_width,
        num_frames,
        refiner_scale=2 if args.refiner else None,
    )


CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
STAGING_PREFIX = ".staging-"


def complete_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """`(step, path)` of every complete checkpoint, oldest first. A checkpoint is written under a staging name and
    renamed into place only when whole, so a folder named `checkpoint-N` is complete."""
    if not os.path.isdir(output_dir):
        return []
    found = (CHECKPOINT_NAME.match(name) for name in os.listdir(output_dir))
    return sorted((int(m.group(1)), os.path.join(output_dir, m.group(0))) for m in found if m)


def latest_checkpoint(output_dir: str) -> str | None:
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def save_checkpoint(accelerator, output_dir: str, step: int, limit: int | None) -> None:
    """Write the training state to a staging folder, rename it to `checkpoint-{step}` once complete (a kill leaves
    either the old checkpoints or the new one, never a partial `checkpoint-*`), and only then delete the oldest
    complete checkpoints beyond `limit`."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    staging = os.path.join(output_dir, f"{STAGING_PREFIX}checkpoint-{step}")
    if accelerator.is_main_process and os.path.isdir(staging):
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(staging)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.isdir(final):  # the same step saved again after a resume
            shutil.rmtree(final)
        os.replace(staging, final)
        for _, path in complete_checkpoints(output_dir)[: -limit if limit else 0]:
            shutil.rmtree(path)
    accelerator.wait_for_everyone()


def remove_partial_checkpoints(output_dir: str) -> None:
    """Staging folders left by a run killed while it saved."""
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            if name.startswith(STAGING_PREFIX):
                shutil.rmtree(os.path.join(output_dir, name))


def truncate_loss_log(path: str, step: int) -> None:
    """Keep the loss records of steps up to `step` (a resumed run writes the later ones again); a line cut short by a
    kill is dropped."""
    if not os.path.isfile(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(temporary, path)


@torch.no_grad()
def resume(accelerator, args, log_path: str) -> int:
    """Resume from `--resume_from_checkpoint` (a folder or "latest") and return the step reached (0 for a new run).
    Partial checkpoints of an interrupted save are removed first, and the loss log is cut back to the step, so a
    resumed run's log reads as an uninterrupted one."""
    global_step = 0
    if accelerator.is_main_process:
        remove_partial_checkpoints(args.output_dir)
    if args.resume_from_checkpoint:
        path = (
            latest_checkpoint(args.output_dir)
            if args.resume_from_checkpoint == "latest"
            else args.resume_from_checkpoint
        )
        if path is None:
            logger.info("no checkpoint to resume from: starting a new run")
        else:
            accelerator.load_state(path)
            global_step = int(os.path.basename(path.rstrip("/")).split("-")[1])
            logger.info(f"resumed from {path} at step {global_step}")
    if accelerator.is_main_process:
        truncate_loss_log(log_path, global_step)
    return global_step


def record_step(
    accelerator, args, progress, losses: list, log_path: str, step: int, loss: float, task, lr_scheduler, extra=None
):
    """After optimiser step `step`: its loss in `losses`, the loss log (with the `extra` values), the trackers and
    the progress bar, and a checkpoint when one is due."""
    progress.update(1)
    losses.append(loss)
    extra = extra or {}
    if accelerator.is_main_process:
        with open(log_path, "a", encoding="utf-8") as f:
            record = {"step": step, "loss": loss, "task": task, **extra, "time": round(time.time(), 3)}
            f.write(json.dumps(record) + "\n")
    accelerator.log({"loss": loss, "lr": lr_scheduler.get_last_lr()[0], **extra}, step=step)
    if step % args.logging_steps == 0:
        progress.set_postfix(loss=float(np.mean(losses[-args.logging_steps :])))
    if step % args.checkpointing_steps == 0 or step == args.max_train_steps:
        save_checkpoint(accelerator, args.output_dir, step, args.checkpoints_total_limit)


def log_validation(pipe, transformer, args, step: int, accelerator, **call_kwargs) -> list[str]:
    """Generate each validation prompt (seeded) with the current weights; write MP4s with sound. `call_kwargs` go to
    the pipeline call (the distillation example runs its student at `guidance_scale=1`)."""
    pipe.transformer = accelerator.unwrap_model(transformer).eval()
    folder = os.path.join(args.output_dir, "validation")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, prompt in enumerate(args.validation_prompts):
        out = pipe(
            prompt,
            num_inference_steps=args.validation_inference_steps,
            generator=torch.Generator().manual_seed(args.seed + i),
            **call_kwargs,
        )
        path = os.path.join(folder, f"step-{step:06d}-{i}.mp4")
        export_to_video_with_audio(
            out.frames[0],
            path,
            fps=pipe.transformer.config.fps,
            audio=out.audio[0],
            audio_sample_rate=out.audio_sample_rate,
        )
        paths.append(path)
    transformer.train()
    logger.info(f"validation clips: {paths}")
    return paths


def write_model_card(args, losses: list[float], validation: list[str]) -> None:
    kind = "Refiner" if args.refiner else "joint video + audio model"
    method = (
        f"a PEFT LoRA (rank {args.lora_rank}, towers: {args.lora_towers})" if args.lora_rank else "full fine-tuning"
    )
    description = (
        f"SkyReels-V4 {kind} trained with `examples/training/train_skyreels_v4.py` ({method}) from "
        f"`{args.pretrained_model_name_or_path}` for {args.max_train_steps} steps at learning rate {args.learning_rate} "
        f"(global batch {args.global_batch_size}; tasks {args.task_ratios}; text dropout {args.text_dropout}; "
        f"{'EMA ' + str(args.ema_decay) if args.use_ema else 'no EMA'}). Final training loss (mean of the last "
        f"{min(len(losses), 100)} steps): {np.mean(losses[-100:]):.4f}."
    )
    if validation:
        description += "\n\nValidation clips: " + ", ".join(
            f"`{os.path.relpath(p, args.output_dir)}`" for p in validation
        )
    tags = ["skyreels-v4", "text-to-video", "text-to-audio", "diffusers-training"] + (
        ["lora"] if args.lora_rank else []
    )
    data = ModelCardData(
        license="apache-2.0", library_name="diffusers", tags=tags, base_model=args.pretrained_model_name_or_path
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# SkyReels-V4 {kind}\n\n{description}\n")
    card.save(os.path.join(args.output_dir, "README.md"))


# ----------------------------------------------------------------------------------------------------------------


def make_accelerator(args, **kwargs) -> Accelerator:
    """The Accelerator of a training run (precision, trackers, logs in `output_dir`; `kwargs` add to them), with the
    seed set and the output folder made."""
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")
        ),
        **kwargs,
    )
    set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    return accelerator


def main(argv=None) -> None:
    args = parse_args(argv)
    accelerator = make_accelerator(
        args,
        # t2v and t2a steps leave one tower (and the exchange) without gradients, which DDP must be told about
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        gradient_accumulation_steps=args.gradient_accumulation_steps,
    )

    with accelerator.main_process_first():  # Diffusers copies the folder's pipeline stub into a shared module cache
        pipe = SkyReelsV4Pipeline.from_pretrained(args.pretrained_model_name_or_path)
    for module in (pipe.text_encoder, pipe.vae, pipe.audio_vae, pipe.vocoder):
        if module is not None:
            module.requires_grad_(False)
    if args.refiner:
        transformer = (
            SkyReelsV4RefinerTransformer3DModel.from_pretrained(args.refiner_model_name_or_path)
            if args.refiner_model_name_or_path
            else SkyReelsV4RefinerTransformer3DModel.from_video_transformer(
                pipe.transformer, temporal_upscale_factor=1
            )
        )
        if transformer.config.temporal_upscale_factor != 1:
            raise ValueError(
                "--refiner trains spatial super-resolution: the Refiner's temporal_upscale_factor must be 1."
            )
    else:
        transformer = pipe.transformer
    if args.lora_rank:
        add_lora(transformer, args)
    if args.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    ema = EMAModel(transformer.parameters(), decay=args.ema_decay) if args.use_ema else None

    data = load_training_data(args, pipe)
    dataset_size = len(data["video_latents"])
    null_prompt = (data["null_prompt_embeds"][0], data["null_prompt_attention_mask"][0].bool())
    shift = args.shift or pipe.scheduler.config.shift
    spatial_factor = None
    if args.refiner:
        if "low_res_latents" not in data:
            raise ValueError("--refiner needs `low_res_latents`: precompute with --refiner_scale.")
        spatial_factor = data["video_latents"].shape[-1] // data["low_res_latents"].shape[-1]
    max_sparsity = (
        args.max_sparsity if args.max_sparsity is not None else getattr(transformer.config, "default_sparsity", 0.0)
    )

    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    transformer, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    args.global_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    accelerator.print(
        f"{accelerator.distributed_type} x {accelerator.num_processes} processes; global batch {args.global_batch_size}"
    )
    log_path = os.path.join(args.output_dir, "loss.jsonl")
    global_step = resume(accelerator, args, log_path)
    if accelerator.is_main_process:
        accelerator.init_trackers("skyreels-v4", config={k: str(v) for k, v in vars(args).items()})

    losses, validation = [], []
    progress = tqdm(range(global_step, args.max_train_steps), disable=not accelerator.is_local_main_process)
    local_size, rank = args.train_batch_size, accelerator.process_index
    while global_step < args.max_train_steps:
        step_loss = 0.0
        for micro in range(args.gradient_accumulation_steps):
            micro_step = global_step * args.gradient_accumulation_steps + micro
            indices, task = global_batch(
                args.seed, micro_step, local_size * accelerator.num_processes, dataset_size, args.task_ratios
            )
            task = "refiner" if args.refiner else task
            offset = rank * local_size
            clips = [
                {k: v[j] for k, v in data.items() if k in PER_CLIP_KEYS} for j in indices[offset : offset + local_size]
            ]
            with accelerator.accumulate(transformer):
                if args.refiner:
                    ramp = min(1.0, (global_step + 1) / args.sparsity_ramp_steps) if args.sparsity_ramp_steps else 1.0
                    inputs, target = refiner_model_inputs(
                        clips,
                        null_prompt,
                        args,
                        shift,
                        args.seed,
                        micro_step,
                        offset,
                        max_sparsity * ramp,
                        spatial_factor,
                    )
                    inputs = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
                    prediction = transformer(**inputs).sample
                    loss = F.mse_loss(prediction.float(), target.to(prediction.device).float())
                else:
                    inputs, video_target, audio_target = base_model_inputs(
                        task, clips, null_prompt, pipe, args, shift, args.seed, micro_step, offset
                    )
                    inputs = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
                    output = transformer(**inputs)
                    loss = 0.0
                    if video_target is not None:
                        loss = loss + F.mse_loss(output.sample.float(), video_target.to(accelerator.device))
                    if audio_target is not None:
                        loss = loss + audio_loss(output.audio_sample, audio_target, inputs["audio_timestep"])
                if loss.requires_grad:  # a step whose task reaches no trained part (t2a with a video-only LoRA)
                    accelerator.backward(loss)  # trains nothing; every process draws the same task
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += accelerator.reduce(loss.detach(), "mean").item() / args.gradient_accumulation_steps

        global_step += 1
        if ema is not None:
            ema.step(params)
        record_step(accelerator, args, progress, losses, log_path, global_step, step_loss, task, lr_scheduler)
        if (
            args.validation_prompts
            and not args.refiner
            and accelerator.is_main_process
            and (global_step % args.validation_steps == 0 or global_step == args.max_train_steps)
        ):
            validation = log_validation(pipe, transformer, args, global_step, accelerator)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(transformer)
        if ema is not None:
            ema.copy_to(model.parameters())
        save_final(model, pipe, args)
        write_model_card(args, losses, validation)
    accelerator.end_training()


def save_final(model, pipe, args) -> None:
    """LoRA -> `pytorch_lora_weights.safetensors` (load with `pipe.load_lora_weights`); full joint model -> a whole
    pipeline folder; Refiner -> `refiner/`."""
    if args.lora_rank:
        from peft.utils import get_peft_model_state_dict

        SkyReelsV4Pipeline.save_lora_weights(args.output_dir, transformer_lora_layers=get_peft_model_state_dict(model))
    elif args.refiner:
        model.save_pretrained(os.path.join(args.output_dir, "refiner"))
    else:
        pipe.transformer = model
        pipe.save_pretrained(args.output_dir)


if __name__ == "__main__":
    main()
