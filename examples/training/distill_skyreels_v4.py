"""Distil the joint SkyReels-V4 model (video + audio together) into a few-step student: a PEFT LoRA on the transformer.

Two methods, both onto the pipeline's own k-step schedule with the teacher's guidance baked in:

`--method trajectory` (the shipped LoRA's):

1. The student's schedule is the one a user gets from `num_inference_steps=k`: the pipeline scheduler's sigmas
   `s_0 = 1 > s_1 > ... > s_k = 0` (its shift applied).
2. A bank of teacher trajectories: for each training clip (task drawn by `--task_ratios`), the frozen teacher
   integrates its flow ODE from noise with Euler, `--teacher_substeps` steps inside each student interval, with
   classifier-free guidance (`--teacher_guidance_scale`, the unconditional pass swaps in the empty prompt as the
   pipelines do), on both streams at once; the states at `s_0 .. s_k` are kept. A given modality (video-to-audio's
   video, audio-to-video's audio) stays clean at timestep 0 as in the pipelines.
3. The student (the teacher plus a LoRA, run once per step with no guidance) learns, at a state `x_i` of a
   trajectory, the velocity that takes it to the teacher's `x_{i+1}` in one Euler step:
   `loss = MSE(v_video, (x_{i+1} - x_i) / (s_{i+1} - s_i)) + MSE(v_audio, ...)` over the generated modalities.

`--method dmd` (DMD2-style distribution matching, no GAN term):

1. The student generates from fresh noise: its own Euler steps without gradient to `s_i` (a random `i` per sample,
   DMD2's backward simulation), then one step with gradient to its clean estimate `x0 = x_i - s_i v`.
2. `x0` is re-noised to a random sigma in `--dmd_sigma_range`; there the frozen teacher with CFG (the real score)
   and a fake-score critic (the teacher plus its own LoRA, `--critic_lora_rank`) each estimate the clean sample. Their
   difference, normalised per sample, is the gradient of the reverse KL to the guided teacher's distribution:
   `loss = 0.5 |x0 - stopgrad(x0 - (fake - real) / mean|x0 - real|)|^2`.
3. The critic then takes `--critic_updates` flow-matching steps on the student's samples (DMD2's two time-scale
   rule), so it tracks the student's distribution. To save compute they reuse this step's samples with fresh noise,
   where DMD2 draws new ones. `--init_lora` starts the student from a saved LoRA (e.g. the trajectory student).

So a user needs only `pipe.load_lora_weights(folder)`, `num_inference_steps=k` and `guidance_scale=1` (one pass per
step; guidance scale 1 runs no negative pass).

Cost here: trajectory regression has a fixed target, costs one student forward + backward per sample after the bank
(`2 x k x substeps` teacher passes per clip, paid once and reused every epoch), and starts from the teacher itself
(the LoRA's B matrices start at zero); its known weakness is the student's own drift between steps (it sees only
teacher states). A DMD step costs the student's rollout, two teacher passes and a critic pass, and a forward +
backward for the student and for each critic update: on the tiny default, 2.4 s per sample at 5 critic updates
against 0.27 s for a trajectory step (one thread), about 9x.

Inputs and conditions are built by the training example's own functions (`base_model_inputs`: task conditions from
the clip's pixels with the pipelines' `build_video_condition`); checkpoints, the loss log and validation are the
training example's too. Reproducibility: the bank depends only on `--seed` and the data (it is cached in the output
folder and regenerated identically if lost); each step's batch, task and intervals depend only on `(--seed, step)`,
so a resumed run continues exactly and N processes (gloo on CPU) see the same global batch as one.

    python examples/training/distill_skyreels_v4.py --pretrained_model_name_or_path pipelines/skyreels-v4-tiny \
        --train_latents runs/distill/latents --output_dir runs/distill/lora --num_student_steps 4 \
        --max_train_steps 300
"""

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from diffusers.optimization import get_scheduler
from huggingface_hub import ModelCard, ModelCardData
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from skyreels_diffusers import SkyReelsV4Pipeline
from skyreels_diffusers.pipelines.generation import default_sigmas


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_skyreels_v4 import (  # noqa: E402
    GENERATES_AUDIO,
    GENERATES_VIDEO,
    HAS_AUDIO,
    HAS_VIDEO,
    LORA_TOWERS,
    PER_CLIP_KEYS,
    add_lora,
    audio_loss,
    base_model_inputs,
    load_training_data,
    log_validation,
    make_accelerator,
    parse_task_ratios,
    record_step,
    resume,
    sample_generator,
    save_final,
    step_rng,
)


logger = get_logger(__name__)

# The reference tasks carry extra model inputs and the refiner is another model: the bank covers the rest.
DISTILL_TASKS = ("t2av", "t2v", "t2a", "i2v", "interpolation", "extension", "edit", "v2a", "a2v")
DEFAULT_TASK_RATIOS = "t2av=0.5,t2v=0.05,t2a=0.05,i2v=0.1,extension=0.1,v2a=0.1,a2v=0.1"
DEFAULT_TARGET_MODULES = "to_q,to_k,to_v,to_out.0,add_q_proj,add_k_proj,add_v_proj,to_add_out,proj_out,proj_mlp"
# Random streams of the bank, apart from the training steps' (which use step numbers from 0).
BANK_CONDITION_STEP = 2**40
BANK_NOISE_STEP = 2**40 + 1
BANK_TASK_STEP = 2**40 + 2
BANK_FILE = "trajectories.safetensors"
LORA_FILE = "pytorch_lora_weights.safetensors"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("teacher and student")
    model.add_argument("--pretrained_model_name_or_path", required=True, help="SkyReelsV4Pipeline folder (teacher)")
    model.add_argument(
        "--method",
        default="trajectory",
        choices=["trajectory", "dmd"],
        help="trajectory: regression onto a bank of teacher steps (shipped); dmd: DMD2-style distribution matching",
    )
    model.add_argument("--num_student_steps", type=int, default=4, help="k: the student's inference steps")
    model.add_argument("--teacher_substeps", type=int, default=5, help="teacher Euler steps per student step")
    model.add_argument("--teacher_guidance_scale", type=float, default=5.0, help="CFG baked into the student")
    model.add_argument("--teacher_audio_guidance_scale", type=float, default=None, help="default: the video's")
    model.add_argument("--lora_rank", type=int, default=16)
    model.add_argument("--lora_alpha", type=int, default=None, help="default: the rank")
    model.add_argument("--lora_towers", default="video,audio,cross_modal", help=f"subset of {sorted(LORA_TOWERS)}")
    model.add_argument("--init_lora", default=None, help="start the student from this LoRA folder (same rank/targets)")
    dmd = parser.add_argument_group("DMD (--method dmd)")
    dmd.add_argument("--critic_updates", type=int, default=5, help="fake-score critic updates per generator step")
    dmd.add_argument(
        "--critic_lora_rank", type=int, default=None, help="the critic's LoRA rank (default: the student's)"
    )
    dmd.add_argument("--critic_learning_rate", type=float, default=None, help="default: --learning_rate")
    dmd.add_argument(
        "--dmd_sigma_range", type=float, nargs=2, default=(0.02, 0.98), help="sigmas the scores are compared at"
    )
    model.add_argument("--lora_target_modules", default=DEFAULT_TARGET_MODULES)
    data = parser.add_argument_group("data")
    data.add_argument("--train_latents", default=None, help="folder written by precompute_latents.py")
    data.add_argument("--train_manifest", default=None, help="JSONL manifest, encoded at start-up")
    data.add_argument("--height", type=int, default=None)
    data.add_argument("--width", type=int, default=None)
    data.add_argument("--num_frames", type=int, default=None)
    data.add_argument("--num_trajectories", type=int, default=256, help="teacher trajectories in the bank")
    data.add_argument("--trajectory_batch_size", type=int, default=8, help="teacher batch while building the bank")
    data.add_argument("--task_ratios", default=DEFAULT_TASK_RATIOS, help=f"comma list of task=weight, {DISTILL_TASKS}")
    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", required=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--train_batch_size", type=int, default=8, help="per process")
    train.add_argument("--max_train_steps", type=int, default=600)
    train.add_argument("--learning_rate", type=float, default=1e-3)
    train.add_argument("--adam_weight_decay", type=float, default=0.0)
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--lr_scheduler", default="cosine", help="any diffusers.optimization schedule")
    train.add_argument("--lr_warmup_steps", type=int, default=20)
    train.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"])
    io = parser.add_argument_group("checkpoints and validation")
    io.add_argument("--checkpointing_steps", type=int, default=100)
    io.add_argument("--checkpoints_total_limit", type=int, default=None)
    io.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint folder or "latest"')
    io.add_argument("--validation_prompts", nargs="*", default=[])
    io.add_argument("--validation_steps", type=int, default=200)
    io.add_argument("--logging_steps", type=int, default=10)
    io.add_argument("--report_to", default=None, help="tensorboard, wandb, ... (Accelerate trackers)")
    args = parser.parse_args(argv)
    check_args(args)
    return args


def check_args(args) -> None:
    """Bad input -> a ValueError naming the argument."""
    if (args.train_latents is None) == (args.train_manifest is None):
        raise ValueError("Give exactly one of `--train_latents` and `--train_manifest`.")
    for name in (
        "num_student_steps",
        "teacher_substeps",
        "lora_rank",
        "num_trajectories",
        "trajectory_batch_size",
        "train_batch_size",
        "max_train_steps",
        "checkpointing_steps",
        "validation_steps",
        "logging_steps",
    ):
        value = getattr(args, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`--{name}` must be a positive integer, got {value!r}.")
    for name in ("teacher_guidance_scale", "teacher_audio_guidance_scale"):
        value = getattr(args, name)
        if value is not None and not (np.isfinite(value) and value >= 1.0):
            raise ValueError(f"`--{name}` must be a finite number >= 1 (1 = no guidance), got {value!r}.")
    if args.critic_lora_rank is None:
        args.critic_lora_rank = args.lora_rank
    if args.critic_learning_rate is None:
        args.critic_learning_rate = args.learning_rate
    for name in ("critic_updates", "critic_lora_rank"):
        value = getattr(args, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`--{name}` must be a positive integer, got {value!r}.")
    for name in ("learning_rate", "critic_learning_rate"):
        value = getattr(args, name)
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"`--{name}` must be positive, got {value!r}.")
    low, high = args.dmd_sigma_range
    if not 0 < low < high <= 1:
        raise ValueError(f"`--dmd_sigma_range` must be two sigmas with 0 < low < high <= 1, got {low!r} {high!r}.")
    if args.init_lora is not None and not os.path.isfile(os.path.join(args.init_lora, LORA_FILE)):
        raise ValueError(
            f"`--init_lora` must be a folder holding {LORA_FILE} (a LoRA this script saved), got {args.init_lora!r}."
        )
    ratios = parse_task_ratios(args.task_ratios)
    unsupported = sorted(set(ratios) - set(DISTILL_TASKS))
    if unsupported:
        raise ValueError(f"`--task_ratios`: distillation covers {DISTILL_TASKS}, got {unsupported}.")
    args.task_ratios = {task: weight for task, weight in ratios.items() if weight > 0}
    unknown = set(args.lora_towers.split(",")) - set(LORA_TOWERS)
    if unknown:
        raise ValueError(f"`--lora_towers` accepts {sorted(LORA_TOWERS)}, got {sorted(unknown)}.")
    if args.teacher_audio_guidance_scale is None:
        args.teacher_audio_guidance_scale = args.teacher_guidance_scale
    args.refiner = False  # for the training example's helpers


# ----------------------------------------------------------------------------------------------------------------
# The student's schedule and the teacher's trajectories


def student_sigmas(pipe, num_steps: int) -> torch.Tensor:
    """`s_0 .. s_k` (`k + 1` values, ending at 0): the sigmas the pipeline's scheduler steps through at
    `num_inference_steps=k` (what `prepare_timesteps` sets), read from a copy of the scheduler."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(sigmas=default_sigmas(num_steps))
    return scheduler.sigmas.float().cpu()


def condition_args(args) -> argparse.Namespace:
    """The training example's sampling options with every dropout off: the bank's and the student's inputs are the
    pipelines' conditional inputs (their sigma and noise are replaced)."""
    return argparse.Namespace(
        weighting_scheme="uniform",
        logit_mean=0.0,
        logit_std=1.0,
        independent_noise_ratio=0.0,
        text_dropout=0.0,
        condition_dropout=0.0,
    )


def bank_tasks(args) -> list[str]:
    """The task of each trajectory: counts proportional to `--task_ratios` (largest remainder), laid out task by task
    so that a teacher batch holds one task."""
    names = list(args.task_ratios)
    weights = np.array([args.task_ratios[n] for n in names], dtype=float)
    exact = weights / weights.sum() * args.num_trajectories
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: args.num_trajectories - counts.sum()]:
        counts[i] += 1
    return [name for name, count in zip(names, counts) for _ in range(count)]


def entry_inputs(task, entries, data, null_prompt, pipe, seed):
    """The conditional model inputs of bank `entries` (one task), built one by one by the training example's
    `base_model_inputs` (each entry's random choices come from `(seed, entry)` alone) and batched."""
    dataset_size = len(data["video_latents"])
    parts = []
    for entry in entries:
        clip = {k: v[entry % dataset_size] for k, v in data.items() if k in PER_CLIP_KEYS}
        inputs, _, _ = base_model_inputs(
            task, [clip], null_prompt, pipe, condition_args(None), 1.0, seed, BANK_CONDITION_STEP, int(entry)
        )
        parts.append(inputs)
    batched = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        if values[0] is None:
            batched[key] = None
        elif key in ("encoder_hidden_states", "encoder_attention_mask"):
            length = max(v.shape[1] for v in values)
            batched[key] = torch.cat([pad_tokens(v, length) for v in values])
        else:
            batched[key] = torch.cat(values)
    return batched


def pad_tokens(x: torch.Tensor, length: int) -> torch.Tensor:
    """Pad a prompt `(B, S, D)` or its mask `(B, S)` to `length` tokens (masked out)."""
    missing = length - x.shape[1]
    if missing == 0:
        return x
    return F.pad(x, (0, 0, 0, missing)) if x.dim() == 3 else F.pad(x, (0, missing), value=False)


def unconditional(inputs: dict, null_prompt) -> dict:
    """The same inputs with the empty prompt (the pipelines' negative pass)."""
    batch = inputs["encoder_hidden_states"].shape[0]
    length = max(inputs["encoder_hidden_states"].shape[1], null_prompt[0].shape[0])
    embeds = pad_tokens(null_prompt[0][None].expand(batch, -1, -1), length)
    mask = pad_tokens(null_prompt[1][None].expand(batch, -1), length)
    return {**inputs, "encoder_hidden_states": embeds, "encoder_attention_mask": mask}


def with_states(inputs: dict, task: str, video, audio, sigma) -> dict:
    """`inputs` with the generated modalities replaced by `video` / `audio` at noise level `sigma` (per sample)."""
    out = dict(inputs)
    if GENERATES_VIDEO[task]:
        channels = video.shape[1]
        out["hidden_states"] = torch.cat([video, inputs["hidden_states"][:, channels:]], dim=1)
        out["timestep"] = sigma * 1000
    if GENERATES_AUDIO[task]:
        timestep = sigma * 1000
        if inputs["audio_timestep"].ndim == 2:  # a kept prefix (extensions): its clean latents at timestep 0
            kept = inputs["audio_timestep"] == 0
            audio = torch.where(kept[:, None], inputs["audio_hidden_states"], audio)
            timestep = torch.where(kept, 0.0, timestep[:, None])
        out["audio_hidden_states"] = audio
        out["audio_timestep"] = timestep
    return out


def both_passes(transformer, inputs: dict, uncond: dict):
    """Conditional and unconditional predictions in one batched call (prompts padded to one length)."""
    length = max(inputs["encoder_hidden_states"].shape[1], uncond["encoder_hidden_states"].shape[1])
    call = {}
    for key, value in inputs.items():
        if key in ("encoder_hidden_states", "encoder_attention_mask"):
            call[key] = torch.cat([pad_tokens(value, length), pad_tokens(uncond[key], length)])
        else:
            call[key] = torch.cat([value, value]) if torch.is_tensor(value) else value
    output = transformer(**call)
    video = output.sample.float().chunk(2) if output.sample is not None else (None, None)
    audio = output.audio_sample.float().chunk(2) if output.audio_sample is not None else (None, None)
    return video, audio


def bank_noise(entries, seed) -> list[torch.Generator]:
    """The noise of bank entries' trajectories: teacher and student start from the same."""
    return [sample_generator(seed, BANK_NOISE_STEP, int(e)) for e in entries]


def guided_velocities(transformer, task, inputs: dict, uncond: dict, args) -> dict[str, torch.Tensor]:
    """The teacher's classifier-free guided velocity of each generated modality (one batched call)."""
    (video_c, video_u), (audio_c, audio_u) = both_passes(transformer, inputs, uncond)
    guided = {}
    if GENERATES_VIDEO[task]:
        guided["video"] = video_u + args.teacher_guidance_scale * (video_c - video_u)
    if GENERATES_AUDIO[task]:
        guided["audio"] = audio_u + args.teacher_audio_guidance_scale * (audio_c - audio_u)
    return guided


def initial_states(task, inputs, data, noise: list[torch.Generator]):
    """The starting video and audio latents: noise (one generator per sample) for a generated modality, the clean
    latents for a given one, `None` for one the task lacks."""
    video = audio = None
    if HAS_VIDEO[task]:
        video = inputs["hidden_states"][:, : data["video_latents"].shape[1]].float()
        if GENERATES_VIDEO[task]:
            video = torch.stack([torch.randn(video.shape[1:], generator=g) for g in noise])
    if HAS_AUDIO[task]:
        audio = inputs["audio_hidden_states"].float()
        if GENERATES_AUDIO[task]:
            audio = torch.stack([torch.randn(audio.shape[1:], generator=g) for g in noise])
    return video, audio


@torch.no_grad()
def teacher_trajectories(transformer, task, entries, data, null_prompt, pipe, sigmas, args):
    """The teacher's states at the student's sigmas: video `(B, k + 1, C, F, h, w)` and audio `(B, k + 1, C_a, L)`
    (`None` for a modality the task lacks; a given one repeats its clean latents)."""
    inputs = entry_inputs(task, entries, data, null_prompt, pipe, args.seed)
    uncond = unconditional(inputs, null_prompt)
    batch = len(entries)
    video, audio = initial_states(task, inputs, data, bank_noise(entries, args.seed))
    video_states, audio_states = [video], [audio]
    for i in range(len(sigmas) - 1):
        fine = torch.linspace(float(sigmas[i]), float(sigmas[i + 1]), args.teacher_substeps + 1)
        for j in range(args.teacher_substeps):
            sigma = fine[j].expand(batch)
            call = with_states(inputs, task, video, audio, sigma)
            guided = guided_velocities(transformer, task, call, with_states(uncond, task, video, audio, sigma), args)
            step = float(fine[j + 1] - fine[j])
            if GENERATES_VIDEO[task]:
                video = video + step * guided["video"]
            if GENERATES_AUDIO[task]:
                audio = audio + step * guided["audio"]
        video_states.append(video)
        audio_states.append(audio)
    stack = lambda states: None if states[0] is None else torch.stack(states, dim=1)  # noqa: E731
    return stack(video_states), stack(audio_states)


def student_sample(transformer, task, entries, data, null_prompt, pipe, sigmas, args):
    """What the pipeline computes at `k` steps without guidance, from the bank's noise: one pass per step, Euler on
    the student's sigmas. Returns the final video and audio latents (`None` for a modality the task lacks)."""
    inputs = entry_inputs(task, entries, data, null_prompt, pipe, args.seed)
    video, audio = initial_states(task, inputs, data, bank_noise(entries, args.seed))
    every_step = torch.full((len(entries),), len(sigmas) - 1)
    return student_states(transformer, task, inputs, video, audio, sigmas, every_step)


def bank_fingerprint(args, sigmas, dataset_size: int) -> str:
    return json.dumps(
        {
            "teacher": os.path.abspath(args.pretrained_model_name_or_path),
            "data": os.path.abspath(args.train_latents or args.train_manifest),
            "dataset_size": dataset_size,
            "seed": args.seed,
            "sigmas": [round(float(s), 6) for s in sigmas],
            "substeps": args.teacher_substeps,
            "guidance": [args.teacher_guidance_scale, args.teacher_audio_guidance_scale],
            "tasks": args.task_ratios,
            "num_trajectories": args.num_trajectories,
        },
        sort_keys=True,
    )


def build_bank(accelerator, transformer, data, null_prompt, pipe, sigmas, args) -> dict[str, torch.Tensor]:
    """The teacher trajectories, cached in `output_dir/trajectories.safetensors` (reused when its fingerprint
    matches). Processes share the work batch by batch, then every process reads the merged file."""
    path = os.path.join(args.output_dir, BANK_FILE)
    fingerprint = bank_fingerprint(args, sigmas, len(data["video_latents"]))
    if os.path.isfile(path) and os.path.isfile(path + ".json"):
        with open(path + ".json", encoding="utf-8") as f:
            if f.read() == fingerprint:
                return load_file(path)
    tasks = bank_tasks(args)
    batches = []
    for task in dict.fromkeys(tasks):
        entries = [e for e, t in enumerate(tasks) if t == task]
        batches += [
            (task, entries[i : i + args.trajectory_batch_size])
            for i in range(0, len(entries), args.trajectory_batch_size)
        ]
    mine = batches[accelerator.process_index :: accelerator.num_processes]
    shard = {}
    start = time.perf_counter()
    for task, entries in tqdm(mine, desc="teacher trajectories", disable=not accelerator.is_local_main_process):
        video, audio = teacher_trajectories(transformer, task, entries, data, null_prompt, pipe, sigmas, args)
        for i, entry in enumerate(entries):
            if video is not None:
                shard[f"video.{entry}"] = video[i].contiguous()
            if audio is not None:
                shard[f"audio.{entry}"] = audio[i].contiguous()
    shard_path = os.path.join(args.output_dir, f"{BANK_FILE}.shard-{accelerator.process_index}")
    save_file(shard, shard_path, metadata={"seconds": str(time.perf_counter() - start)})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        merged, seconds = {}, 0.0
        for rank in range(accelerator.num_processes):
            part = f"{path}.shard-{rank}"
            merged.update(load_file(part))
            with safe_open(part, "pt") as f:
                seconds += float(f.metadata()["seconds"])
            os.remove(part)
        save_file(merged, path, metadata={"seconds": str(seconds)})
        with open(path + ".json", "w", encoding="utf-8") as f:
            f.write(fingerprint)
        logger.info(f"teacher trajectories: {len(tasks)} in {seconds:.0f} s (all processes)")
    accelerator.wait_for_everyone()
    return load_file(path)


# ----------------------------------------------------------------------------------------------------------------
# Training


def training_batch(args, step: int, tasks: list[str], global_size: int):
    """The task, bank entries and interval indices of `step`, identical on every process."""
    rng = step_rng(args.seed, step)
    present = list(dict.fromkeys(tasks))
    weights = np.array([args.task_ratios[t] for t in present])
    task = present[rng.choice(len(present), p=weights / weights.sum())]
    candidates = [e for e, t in enumerate(tasks) if t == task]
    entries = rng.choice(candidates, size=global_size, replace=global_size > len(candidates))
    intervals = rng.integers(0, args.num_student_steps, size=global_size)
    return task, entries, intervals


def distillation_loss(transformer, task, entries, intervals, bank, data, null_prompt, pipe, sigmas, args):
    """Velocity regression onto the teacher's step from `s_i` to `s_{i+1}`, per generated modality."""
    inputs = entry_inputs(task, entries, data, null_prompt, pipe, args.seed)
    index = torch.as_tensor(intervals)
    s_now, s_next = sigmas[index], sigmas[index + 1]
    delta = s_next - s_now
    video = audio = video_target = audio_target = None
    if HAS_VIDEO[task]:
        states = torch.stack([bank[f"video.{int(e)}"] for e in entries])
        rows = torch.arange(len(entries))
        video = states[rows, index]
        video_target = (states[rows, index + 1] - video) / delta.view(-1, 1, 1, 1, 1)
    if HAS_AUDIO[task]:
        states = torch.stack([bank[f"audio.{int(e)}"] for e in entries])
        rows = torch.arange(len(entries))
        audio = states[rows, index]
        audio_target = (states[rows, index + 1] - audio) / delta.view(-1, 1, 1)
    call = with_states(inputs, task, video, audio, s_now)
    output = transformer(**call)
    loss = 0.0
    if GENERATES_VIDEO[task]:
        loss = loss + F.mse_loss(output.sample.float(), video_target.to(output.sample.device))
    if GENERATES_AUDIO[task]:
        target = audio_target.to(output.audio_sample.device)
        loss = loss + audio_loss(output.audio_sample.float(), target, call["audio_timestep"])
    return loss


def load_student_lora(transformer, folder: str) -> None:
    """Set the student's LoRA to a saved one (e.g. a trajectory-distilled student that DMD then refines)."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    state = {
        key.removeprefix("transformer."): value for key, value in load_file(os.path.join(folder, LORA_FILE)).items()
    }
    shapes = lambda weights: {key: tuple(value.shape) for key, value in weights.items()}  # noqa: E731
    if shapes(state) != shapes(get_peft_model_state_dict(transformer)):
        raise ValueError(
            f"`--init_lora` {folder!r} holds a LoRA of other layers or rank than `--lora_rank` {transformer.peft_config['default'].r}, "
            f"`--lora_towers` and `--lora_target_modules` give."
        )
    set_peft_model_state_dict(transformer, state)


# ----------------------------------------------------------------------------------------------------------------
# DMD2-style distribution matching (`--method dmd`)

# Random streams of a DMD step, per sample: the student's starting noise, the noise that re-noises its sample for the
# score difference, and one stream per critic update.
DMD_START, DMD_SCORE, DMD_CRITIC = 0, 1, 2


def dmd_noise(args, step: int, stream: int, indices) -> list[torch.Generator]:
    return [sample_generator(args.seed, step, stream * 2**32 + int(i)) for i in indices]


def generated(task, video, audio) -> dict[str, torch.Tensor]:
    """The generated modalities of a task, by name."""
    states = {"video": video if GENERATES_VIDEO[task] else None, "audio": audio if GENERATES_AUDIO[task] else None}
    return {name: x for name, x in states.items() if x is not None}


def per_sample(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.view(-1, *([1] * (x.dim() - 1))).to(x)


def velocities(output) -> dict[str, torch.Tensor]:
    return {"video": output.sample, "audio": output.audio_sample}


def student_states(transformer, task, inputs, video, audio, sigmas, intervals):
    """The student's own states at `s_i`, `i = intervals[b]` per sample (DMD2's backward simulation): its Euler steps
    from noise without gradient, sample `b` stopping after `intervals[b]` steps."""
    with torch.no_grad():
        for j in range(int(intervals.max())):
            output = transformer(**with_states(inputs, task, video, audio, sigmas[j].expand(len(intervals))))
            advance = torch.as_tensor(intervals) > j
            step = float(sigmas[j + 1] - sigmas[j])
            if GENERATES_VIDEO[task]:
                moved = video + step * output.sample.float()
                video = torch.where(per_sample(advance, video).bool(), moved, video)
            if GENERATES_AUDIO[task]:
                moved = audio + step * output.audio_sample.float()
                audio = torch.where(per_sample(advance, audio).bool(), moved, audio)
    return video, audio


def renoise(x0: dict, sigma: torch.Tensor, noise: list[torch.Generator]) -> tuple[dict, dict]:
    """`(1 - sigma) x0 + sigma n` per modality (flow matching's path), and the noise `n` drawn."""
    drawn = {name: torch.stack([torch.randn(x.shape[1:], generator=g) for g in noise]) for name, x in x0.items()}
    noisy = {name: (1 - per_sample(sigma, x)) * x + per_sample(sigma, x) * drawn[name] for name, x in x0.items()}
    return noisy, drawn


def dmd_sigmas(args, noise: list[torch.Generator]) -> torch.Tensor:
    low, high = args.dmd_sigma_range
    return torch.stack([low + (high - low) * torch.rand((), generator=g) for g in noise])


def denoised(call: dict, velocity: dict, states: dict) -> dict:
    """Each generated modality's clean estimate `x - sigma v` from its velocity at the state `call` holds (a kept
    audio prefix, at timestep 0, is its clean input: the estimate keeps it)."""
    out = {}
    for name, x in states.items():
        if name == "video":
            out[name] = x - per_sample(call["timestep"] / 1000, x) * velocity[name].float()
        else:
            timestep = call["audio_timestep"]
            timestep = timestep[:, None] if timestep.ndim == 2 else per_sample(timestep, x)
            out[name] = call["audio_hidden_states"].float() - timestep / 1000 * velocity[name].float()
    return out


def modality_mse(prediction: dict, target: dict, call: dict) -> torch.Tensor:
    """MSE over the generated modalities (a kept audio prefix left out)."""
    loss = 0.0
    for name, x in prediction.items():
        if name == "video":
            loss = loss + F.mse_loss(x.float(), target[name])
        else:
            loss = loss + audio_loss(x.float(), target[name], call["audio_timestep"])
    return loss


def dmd_generator_loss(
    student, critic, teacher, task, entries, intervals, noise, data, null_prompt, pipe, sigmas, args
):
    """The distribution matching loss of one batch, and what the critic then trains on.

    The student generates (from fresh noise, its own states at `s_i`, one step with gradient to its clean estimate
    `x0`); `x0` is re-noised to a random sigma, and there the frozen teacher with CFG (the real score) and the critic
    (the fake score: the student's own distribution) each give a clean estimate. Their difference, normalised per
    sample by the mean distance to the real estimate (DMD), is the gradient of the reverse KL from the student's
    distribution to the guided teacher's: `loss = 0.5 * |x0 - stopgrad(x0 - grad)|^2`."""
    inputs = entry_inputs(task, entries, data, null_prompt, pipe, args.seed)
    video, audio = initial_states(task, inputs, data, noise[DMD_START])
    video, audio = student_states(student, task, inputs, video, audio, sigmas, intervals)
    call = with_states(inputs, task, video, audio, sigmas[torch.as_tensor(intervals)])
    x0 = denoised(call, velocities(student(**call)), generated(task, video, audio))

    sigma = dmd_sigmas(args, noise[DMD_SCORE])
    noisy, _ = renoise({name: x.detach() for name, x in x0.items()}, sigma, noise[DMD_SCORE])
    uncond = unconditional(inputs, null_prompt)
    with torch.no_grad():
        scored = with_states(inputs, task, noisy.get("video"), noisy.get("audio"), sigma)
        unscored = with_states(uncond, task, noisy.get("video"), noisy.get("audio"), sigma)
        real = denoised(scored, guided_velocities(teacher, task, scored, unscored, args), noisy)
        fake = denoised(scored, velocities(critic(**scored)), noisy)
    targets = {}
    for name, x in x0.items():
        scale = (x.detach() - real[name]).abs().flatten(1).mean(1).clamp_min(1e-6)
        targets[name] = (x.detach() - (fake[name] - real[name]) / per_sample(scale, x)).detach()
    loss = 0.5 * modality_mse(x0, targets, call)
    return loss, inputs, {name: x.detach() for name, x in x0.items()}


def critic_loss(critic, task, inputs, x0: dict, noise, args) -> torch.Tensor:
    """The critic's flow matching loss on the student's samples: it tracks the student's own distribution."""
    sigma = dmd_sigmas(args, noise)
    noisy, drawn = renoise(x0, sigma, noise)
    call = with_states(inputs, task, noisy.get("video"), noisy.get("audio"), sigma)
    output = velocities(critic(**call))
    prediction = {name: output[name] for name in x0}
    return modality_mse(prediction, {name: drawn[name] - x for name, x in x0.items()}, call)


def write_model_card(args, sigmas, losses: list[float], validation: list[str], bank_seconds: float, train_seconds):
    schedule = ", ".join(f"{float(s):.4f}" for s in sigmas)
    method = (
        "trajectory distillation onto the pipeline's own schedule"
        if args.method == "trajectory"
        else "DMD2-style distribution matching on the pipeline's own schedule"
    )
    description = (
        f"A {args.num_student_steps}-step student of `{args.pretrained_model_name_or_path}`, distilled by "
        f"`examples/training/distill_skyreels_v4.py` ({method}, "
        f"teacher guidance {args.teacher_guidance_scale} (video) / {args.teacher_audio_guidance_scale} (audio) baked "
        f"in): a PEFT LoRA of rank {args.lora_rank} on the towers {args.lora_towers} "
        f"({args.lora_target_modules}).\n\n"
        "## Use\n\n"
        "```py\n"
        "from skyreels_diffusers import SkyReelsV4Pipeline\n\n"
        f'pipe = SkyReelsV4Pipeline.from_pretrained("{args.pretrained_model_name_or_path}")\n'
        f'pipe.load_lora_weights("{args.output_dir}")\n'
        f"out = pipe(prompt, num_inference_steps={args.num_student_steps}, guidance_scale=1.0)\n"
        "```\n\n"
        f"Schedule: the pipeline scheduler's own at `num_inference_steps={args.num_student_steps}` "
        f"(FlowMatchEulerDiscreteScheduler, shift {args.shift}): sigmas {schedule}. `guidance_scale=1` runs one "
        "transformer pass per step (no negative pass); the guidance is in the weights.\n\n"
        "## Training\n\n"
        + (
            f"{args.num_trajectories} teacher trajectories ({args.teacher_substeps} Euler steps per student step, "
            f"tasks {args.task_ratios}), {bank_seconds:.0f} s; then "
            if args.method == "trajectory"
            else f"From {args.init_lora or 'the teacher'}: a fake-score critic (LoRA rank {args.critic_lora_rank}, "
            f"{args.critic_updates} updates per generator step, AdamW {args.critic_learning_rate}), scores compared "
            f"at sigmas {args.dmd_sigma_range[0]}-{args.dmd_sigma_range[1]}, tasks {args.task_ratios}; "
        )
        + f"{args.max_train_steps} steps of batch "
        f"{args.global_batch_size}, AdamW {args.learning_rate} ({args.lr_scheduler}), {train_seconds:.0f} s "
        f"(this run; {args.num_processes} process(es)). Final loss (mean of the last {min(len(losses), 50)} steps): "
        f"{np.mean(losses[-50:]) if losses else float('nan'):.4f}.\n"
    )
    if validation:
        description += "\nValidation clips: " + ", ".join(
            f"`{os.path.relpath(p, args.output_dir)}`" for p in validation
        )
    data = ModelCardData(
        license="apache-2.0",
        library_name="diffusers",
        tags=["skyreels-v4", "text-to-video", "text-to-audio", "lora", "distillation", "few-step"],
        base_model=args.pretrained_model_name_or_path,
    )
    card = ModelCard(
        f"---\n{data.to_yaml()}\n---\n\n# SkyReels-V4 {args.num_student_steps}-step LoRA\n\n{description}\n"
    )
    card.save(os.path.join(args.output_dir, "README.md"))


def main(argv=None) -> None:
    args = parse_args(argv)
    accelerator = make_accelerator(args)
    accelerator.wait_for_everyone()

    with accelerator.main_process_first():
        pipe = SkyReelsV4Pipeline.from_pretrained(args.pretrained_model_name_or_path)
    for module in (pipe.text_encoder, pipe.vae, pipe.audio_vae, pipe.vocoder, pipe.transformer):
        if module is not None:
            module.requires_grad_(False)
    transformer = pipe.transformer.eval()
    args.shift = pipe.scheduler.config.shift
    sigmas = student_sigmas(pipe, args.num_student_steps)
    data = load_training_data(args, pipe)
    null_prompt = (data["null_prompt_embeds"][0], data["null_prompt_attention_mask"][0].bool())

    start = time.perf_counter()
    bank = None
    if args.method == "trajectory":
        bank = build_bank(accelerator, transformer, data, null_prompt, pipe, sigmas, args)
    bank_seconds = time.perf_counter() - start
    tasks = bank_tasks(args)  # DMD draws its conditions from the same entries

    teacher = critic = None
    if args.method == "dmd":  # the real score (frozen), and the fake score: the teacher plus its own LoRA
        teacher = copy.deepcopy(transformer)
        critic = copy.deepcopy(transformer)
        add_lora(critic, argparse.Namespace(**{**vars(args), "lora_rank": args.critic_lora_rank, "lora_alpha": None}))
        critic.train()
    add_lora(transformer, args)
    if args.init_lora:
        load_student_lora(transformer, args.init_lora)
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    transformer, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    if critic is not None:
        critic_params = [p for p in critic.parameters() if p.requires_grad]
        critic_optimizer = torch.optim.AdamW(critic_params, lr=args.critic_learning_rate)
        critic, critic_optimizer = accelerator.prepare(critic, critic_optimizer)
    args.num_processes = accelerator.num_processes
    args.global_batch_size = args.train_batch_size * accelerator.num_processes
    accelerator.print(
        f"{accelerator.distributed_type} x {accelerator.num_processes} processes; global batch {args.global_batch_size}"
    )

    log_path = os.path.join(args.output_dir, "loss.jsonl")
    global_step = resume(accelerator, args, log_path)
    if accelerator.is_main_process:
        accelerator.init_trackers("skyreels-v4-distill", config={k: str(v) for k, v in vars(args).items()})

    # Validation runs the student as users do: k steps, no guidance.
    args.validation_inference_steps = args.num_student_steps
    losses, validation = [], []
    progress = tqdm(range(global_step, args.max_train_steps), disable=not accelerator.is_local_main_process)
    local_size, rank = args.train_batch_size, accelerator.process_index
    start = time.perf_counter()
    while global_step < args.max_train_steps:
        task, entries, intervals = training_batch(args, global_step, tasks, args.global_batch_size)
        mine = slice(rank * local_size, (rank + 1) * local_size)
        extra = None
        if args.method == "trajectory":
            loss = distillation_loss(
                transformer, task, entries[mine], intervals[mine], bank, data, null_prompt, pipe, sigmas, args
            )
        else:
            positions = range(mine.start, mine.stop)  # each sample's random streams follow its place in the batch
            noise = {stream: dmd_noise(args, global_step, stream, positions) for stream in (DMD_START, DMD_SCORE)}
            loss, inputs, x0 = dmd_generator_loss(
                transformer, critic, teacher, task, entries[mine], intervals[mine], noise, data, null_prompt, pipe,
                sigmas, args,
            )  # fmt: skip
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_loss = accelerator.reduce(loss.detach(), "mean").item()
        if args.method == "dmd":
            # The critic follows the student's new samples (DMD2's two time-scale update), here on this step's.
            critic_losses = []
            for update in range(args.critic_updates):
                update_noise = dmd_noise(args, global_step, DMD_CRITIC + update, positions)
                fake_loss = critic_loss(critic, task, inputs, x0, update_noise, args)
                accelerator.backward(fake_loss)
                accelerator.clip_grad_norm_(critic_params, args.max_grad_norm)
                critic_optimizer.step()
                critic_optimizer.zero_grad(set_to_none=True)
                critic_losses.append(accelerator.reduce(fake_loss.detach(), "mean").item())
            extra = {"critic_loss": float(np.mean(critic_losses))}

        global_step += 1
        record_step(accelerator, args, progress, losses, log_path, global_step, step_loss, task, lr_scheduler, extra)
        if (
            args.validation_prompts
            and accelerator.is_main_process
            and (global_step % args.validation_steps == 0 or global_step == args.max_train_steps)
        ):
            validation = log_validation(pipe, transformer, args, global_step, accelerator, guidance_scale=1.0)
    train_seconds = time.perf_counter() - start

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_final(accelerator.unwrap_model(transformer), pipe, args)
        write_model_card(args, sigmas, losses, validation, bank_seconds, train_seconds)
    accelerator.end_training()


if __name__ == "__main__":
    main()
