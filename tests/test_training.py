"""The training example (`examples/training/`) on a few clips of the synthetic world, with tiny real components."""

import json
import os
import shutil

import pytest
import torch
from script_loading import load_script
from training_runs import launch_two_processes, losses, run_in_process


train = load_script("train_skyreels_v4", "examples/training")
world = load_script("world", "examples/synthetic_av")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved tiny Wan + Oobleck pipeline, and a manifest of 4 world clips (9 frames, 32x32) with their sound."""
    from skyreels_diffusers.tiny_components import build_tiny_pipeline

    root = tmp_path_factory.mktemp("training")
    build_tiny_pipeline(video_vae="wan", audio_vae="oobleck").save_pretrained(root / "pipe")
    manifest = world.write_dataset(str(root / "data"), 4, seed=10, num_frames=9, size=32)
    return root, manifest


def common(setup, out, steps):
    root, manifest = setup
    return [
        "--pretrained_model_name_or_path",
        root / "pipe",
        "--train_manifest",
        manifest,
        "--output_dir",
        out,
        "--max_train_steps",
        steps,
        "--train_batch_size",
        2,
        "--checkpointing_steps",
        2,
        "--seed",
        3,
    ]


def test_full_training_checkpoints_and_resumes_exactly(setup, tmp_path):
    run_in_process(train.main, [*common(setup, tmp_path / "a", 4), "--use_ema", "--learning_rate", "1e-3"])
    full = losses(tmp_path / "a")
    assert [r["step"] for r in full] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in full)
    assert os.path.isdir(tmp_path / "a" / "checkpoint-2") and os.path.isdir(tmp_path / "a" / "checkpoint-4")
    assert os.path.isfile(tmp_path / "a" / "transformer" / "diffusion_pytorch_model.safetensors")
    card = (tmp_path / "a" / "README.md").read_text()
    assert "full fine-tuning" in card and "EMA" in card

    # A run stopped after checkpoint-2, resumed with "latest", continues with the same losses.
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    run_in_process(
        train.main,
        [
            *common(setup, tmp_path / "b", 4),
            "--use_ema",
            "--learning_rate",
            "1e-3",
            "--resume_from_checkpoint",
            "latest",
        ],
    )
    resumed = losses(tmp_path / "b")
    assert [r["step"] for r in resumed] == [3, 4]
    assert [r["task"] for r in resumed] == [r["task"] for r in full[2:]]
    # Both runs at one thread: equal to the last bit (measured).
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full[2:]], (resumed, full)


@pytest.fixture(scope="module")
def uninterrupted(setup, tmp_path_factory):
    """Losses of a 4-step run checkpointed every 2 steps, keeping one checkpoint."""
    out = tmp_path_factory.mktemp("uninterrupted")
    run_in_process(train.main, [*common(setup, out, 4), "--checkpoints_total_limit", 1, "--learning_rate", "1e-3"])
    return losses(out)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["mid-write", "before-rename", "while-pruning"])
def test_a_kill_while_checkpointing_loses_nothing_and_the_run_resumes_exactly(setup, uninterrupted, fault, tmp_path):
    import subprocess
    import sys

    args = [*common(setup, tmp_path, 4), "--checkpoints_total_limit", 1, "--learning_rate", "1e-3"]
    worker = os.path.join(os.path.dirname(__file__), "training_fault_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, worker, fault, "4", "--", *map(str, args)], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    # A whole checkpoint survives: the old one (killed before the new one was in place) or the new one.
    complete = [name for name in os.listdir(tmp_path) if train.CHECKPOINT_NAME.match(name)]
    assert complete == (["checkpoint-4"] if fault == "while-pruning" else ["checkpoint-2"]), complete

    # The log ends with a line cut short by the kill; the resumed run drops it and every later step's record.
    with open(tmp_path / "loss.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 4, "lo')
    run_in_process(train.main, [*args, "--resume_from_checkpoint", "latest"])
    resumed = losses(tmp_path)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    # The killed worker, the resumed run and the uninterrupted one all run at one thread: equal to the last bit
    # (measured).
    assert [r["loss"] for r in resumed] == [r["loss"] for r in uninterrupted], (resumed, uninterrupted)
    checkpoints = [name for name in os.listdir(tmp_path) if "checkpoint" in name]
    assert checkpoints == ["checkpoint-4"], checkpoints  # the limit holds, and no staging folder is left


def test_lora_training_saves_loadable_weights(setup, tmp_path):
    from skyreels_diffusers import SkyReelsV4Pipeline

    run_in_process(
        train.main,
        [
            *common(setup, tmp_path, 2),
            "--lora_rank",
            4,
            "--lora_towers",
            "video,cross_modal",
            "--learning_rate",
            "1e-2",
        ],
    )
    weights = tmp_path / "pytorch_lora_weights.safetensors"
    assert weights.is_file() and "lora" in (tmp_path / "README.md").read_text()
    pipe = SkyReelsV4Pipeline.from_pretrained(setup[0] / "pipe")
    pipe.load_lora_weights(str(weights))
    assert pipe.get_active_adapters()


def test_refiner_training_with_crops_and_sparsity(setup, tmp_path, monkeypatch):
    """The Refiner trains on `--refiner_crop` crops, with VSA sparsity ramped up to `--max_sparsity`: observed in the
    calls to video sparse attention (the token grid each one attends over, and its sparsity)."""
    import skyreels_diffusers.models.transformer_skyreels_v4_refiner as refiner_module

    seen = []
    original = refiner_module.video_sparse_attention

    def recording(query, key, value, video_grid, **kwargs):
        seen.append((tuple(video_grid), kwargs["sparsity"]))
        return original(query, key, value, video_grid, **kwargs)

    monkeypatch.setattr(refiner_module, "video_sparse_attention", recording)
    run_in_process(
        train.main,
        [
            *common(setup, tmp_path, 2),
            "--refiner",
            "--refiner_crop",
            4,
            "--max_sparsity",
            0.5,
            "--sparsity_ramp_steps",
            2,
        ],
    )
    assert (tmp_path / "refiner" / "config.json").is_file()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in losses(tmp_path))
    config = json.loads((tmp_path / "refiner" / "config.json").read_text())
    patch = config["patch_size"]
    # Every attention call sees a 4x4-latent crop (the clips' high-res grid is larger: 8x8 latents)...
    assert seen and {grid[1:] for grid, _ in seen} == {(4 // patch, 4 // patch)}, seen
    # ... at the ramp's sparsity: half of 0.5 in the first step, all of it in the second.
    sparsities = [sparsity for _, sparsity in seen]
    half = len(sparsities) // 2
    assert sparsities[:half] == [0.25] * half and sparsities[half:] == [0.5] * half, sparsities


precompute = load_script("precompute_latents", "examples/training")


@pytest.fixture(scope="module", params=["image", "wan"])
def encoded_clip(request, tmp_path_factory):
    """One world clip encoded by `precompute_latents.py` (as training reads it), the pipeline that encoded it (a
    per-frame image VAE, or a causal video VAE), and the clip's frames and soundtrack as a user would pass them."""
    from skyreels_diffusers import SkyReelsV4InpaintPipeline
    from skyreels_diffusers.tiny_components import build_tiny_pipeline
    from skyreels_diffusers.utils.media import load_video_audio

    root = tmp_path_factory.mktemp(f"clip-{request.param}")
    manifest = world.write_dataset(str(root), 1, seed=11, num_frames=9, size=32, sample_rate=16_000)
    pipe = SkyReelsV4InpaintPipeline.from_pipe(build_tiny_pipeline(video_vae=request.param, audio_vae="oobleck"))
    record = precompute.read_manifest(manifest)[0]
    clip = precompute.encode_clip(pipe, precompute.load_record(pipe, record, 9), 32, 32, 9)
    table = precompute.encode_captions(pipe, [record["caption"]], 512)
    clip["prompt_embeds"], clip["prompt_attention_mask"] = table[record["caption"]]
    _, _, audio = load_video_audio(record["video"], pipe.audio_spec.sample_rate, num_channels=1)
    return pipe, clip, record["caption"], audio


def first_transformer_call(pipe, call):
    seen = {}

    def capture(module, args, kwargs):
        seen.setdefault("kwargs", kwargs)

    handle = pipe.transformer.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        call()
    finally:
        handle.remove()
    return seen["kwargs"]


@pytest.mark.parametrize("task", train.TASKS)
def test_training_and_the_pipelines_give_the_model_identical_conditions(encoded_clip, task):
    """For every task, the trainer's model inputs (all but the noise) equal what the pipelines pass for the same
    clip: the condition channels and mask, given modalities (clean, timestep 0), references."""
    from skyreels_diffusers import SkyReelsV4Pipeline

    pipe, clip, caption, audio = encoded_clip
    frames = clip["video_frames"].numpy()
    # The random parts of a task (extension length, edit box) come from the generator: the same seed twice gives
    # the trainer's choice, which the pipeline call below repeats.
    trainer_inputs = train.task_condition_inputs(task, clip, torch.Generator().manual_seed(4))
    condition, _ = train.video_condition(task, clip, pipe.vae, torch.Generator().manual_seed(4), dropout=False)
    args = train.parse_args(
        [
            "--pretrained_model_name_or_path",
            "x",
            "--train_latents",
            "x",
            "--output_dir",
            "x",
            "--text_dropout",
            "0",
            "--condition_dropout",
            "0",
        ]
    )
    null = (clip["prompt_embeds"] * 0, clip["prompt_attention_mask"])
    trained, _, _ = train.base_model_inputs(task, [clip], null, pipe, args, 1.0, 4, 0, 0)

    call = {"num_inference_steps": 1, "guidance_scale": 1.0, "num_frames": 9, "height": 32, "width": 32}
    if task == "i2v":
        call["image"] = frames[0]
    elif task == "interpolation":
        call.update(image=frames[0], last_image=frames[-1])
    elif task in ("extension", "edit", "v2a"):
        call["video"] = frames
        keep = trainer_inputs["keep_mask"][0, 0]
        if task == "extension":
            call["num_condition_frames"] = int(keep[:, 0, 0].sum())
        elif task == "edit":
            call["mask"] = keep.numpy()
    elif task == "a2v":
        call.update(audio=audio, audio_sample_rate=pipe.audio_spec.sample_rate)
    if task in ("extension", "audio_extension"):  # the start of the soundtrack, as many latents as the trainer kept
        num_clean = int(trained["audio_timestep"][0].eq(0).sum())
        assert num_clean > 0
        rate = pipe.audio_spec.sample_rate
        seconds = num_clean * pipe.audio_spec.samples_per_latent / rate
        call.update(audio=audio, audio_sample_rate=rate, audio_condition_seconds=seconds)
    elif task == "reference_images":
        call["reference_images"] = [frames[len(frames) // 2]]
    elif task == "audio_reference":
        call.update(audio_reference=audio, audio_reference_sample_rate=pipe.audio_spec.sample_rate)
    if task in ("t2av", "t2v", "t2a"):
        base = SkyReelsV4Pipeline.from_pipe(pipe)
        options = {"t2v": {"generate_audio": False}, "t2a": {"generate_video": False}}.get(task, {})
        seen = first_transformer_call(base, lambda: base(caption, **call, **options))
    else:
        seen = first_transformer_call(pipe, lambda: pipe(caption, **call))

    channels = pipe.vae_spec.latent_channels
    if trained["hidden_states"] is None:
        assert seen.get("hidden_states") is None
    else:
        torch.testing.assert_close(seen["hidden_states"][0, channels:], condition, rtol=0, atol=0)
    if task == "v2a":  # the given video: clean latents at timestep 0, in both
        torch.testing.assert_close(
            seen["hidden_states"][:, :channels], trained["hidden_states"][:, :channels], rtol=0, atol=0
        )
        assert not seen["timestep"].any() and not trained["timestep"].any()
    if task == "a2v":  # the given soundtrack
        torch.testing.assert_close(seen["audio_hidden_states"], trained["audio_hidden_states"], rtol=0, atol=0)
        assert not seen["audio_timestep"].any() and not trained["audio_timestep"].any()
    if task in ("extension", "audio_extension"):  # the kept audio prefix: the same latents at timestep 0 per token
        assert (
            trained["audio_timestep"].shape
            == seen["audio_timestep"].shape
            == trained["audio_hidden_states"].shape[::2]
        )
        torch.testing.assert_close(seen["audio_timestep"].eq(0), trained["audio_timestep"].eq(0), rtol=0, atol=0)
        clean = trained["audio_timestep"].eq(0)[:, None].expand_as(trained["audio_hidden_states"])
        torch.testing.assert_close(
            seen["audio_hidden_states"][clean], trained["audio_hidden_states"][clean], rtol=0, atol=0
        )
    for key in ("reference_latents", "audio_reference_latents"):
        if trained.get(key) is not None:
            torch.testing.assert_close(seen[key], trained[key], rtol=0, atol=0)
    torch.testing.assert_close(seen["encoder_hidden_states"], trained["encoder_hidden_states"], rtol=0, atol=0)


def test_given_modalities_have_no_loss_and_independent_noise_splits_the_sigmas(encoded_clip):
    pipe, clip, _, _ = encoded_clip
    null = (clip["prompt_embeds"] * 0, clip["prompt_attention_mask"])

    def inputs(task, ratio, step):
        args = train.parse_args(
            [
                "--pretrained_model_name_or_path",
                "x",
                "--train_latents",
                "x",
                "--output_dir",
                "x",
                "--independent_noise_ratio",
                str(ratio),
            ]
        )
        return train.base_model_inputs(task, [clip, clip], null, pipe, args, 1.0, 0, step, 0)

    v2a, video_target, audio_target = inputs("v2a", 0.0, 0)
    assert video_target is None and audio_target is not None and not v2a["timestep"].any()
    assert torch.equal(v2a["hidden_states"][0, : pipe.vae_spec.latent_channels], clip["video_latents"])
    a2v, video_target, audio_target = inputs("a2v", 0.0, 0)
    assert audio_target is None and video_target is not None and not a2v["audio_timestep"].any()
    shared = [inputs("t2av", 0.0, step)[0] for step in range(4)]
    assert all(torch.equal(x["timestep"], x["audio_timestep"]) for x in shared)
    split = [inputs("t2av", 1.0, step)[0] for step in range(4)]
    assert all(not torch.equal(x["timestep"], x["audio_timestep"]) for x in split)


def test_bad_task_ratios_are_rejected():
    with pytest.raises(ValueError, match="--task_ratios"):
        train.parse_task_ratios("t2av=1,dance=1")
    with pytest.raises(ValueError, match="--task_ratios"):
        train.parse_task_ratios("t2av=0")


@pytest.mark.slow
@pytest.mark.timeout(900)  # two `accelerate launch` runs of 2 processes, each limited to 300 s
def test_two_process_ddp_matches_one_process_and_resumes(setup, tmp_path):
    root, manifest = setup
    args = [
        "--pretrained_model_name_or_path",
        root / "pipe",
        "--train_manifest",
        manifest,
        "--seed",
        5,
        "--learning_rate",
        "1e-3",
        "--checkpointing_steps",
        2,
    ]
    run_in_process(
        train.main, [*args, "--output_dir", tmp_path / "one", "--max_train_steps", 3, "--train_batch_size", 4]
    )
    launch_two_processes(
        "train_skyreels_v4.py",
        [*args, "--output_dir", tmp_path / "two", "--max_train_steps", 2, "--train_batch_size", 2],
        4,
    )
    assert sorted(p for p in os.listdir(tmp_path / "two") if p.startswith("checkpoint-")) == ["checkpoint-2"]
    launch_two_processes(
        "train_skyreels_v4.py",
        [
            *args,
            "--output_dir",
            tmp_path / "two",
            "--max_train_steps",
            3,
            "--train_batch_size",
            2,
            "--resume_from_checkpoint",
            "latest",
        ],
        4,
    )
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [r["step"] for r in two] == [1, 2, 3] and [r["task"] for r in two] == [r["task"] for r in one]
    one_losses, two_losses = torch.tensor([r["loss"] for r in one]), torch.tensor([r["loss"] for r in two])
    # Step 1 runs before any update: the two ranks' halves of the global batch give the one-process loss to float
    # rounding (a wrong split of the batch changes it by percents).
    torch.testing.assert_close(two_losses[0], one_losses[0], rtol=1e-5, atol=0)
    # Later steps follow the same updates in another rounding: averaging two half-batch gradients is not the same
    # sum as one whole-batch gradient, and Adam turns sign flips of near-zero gradients (the zero-initialised
    # cross-modal outputs) into learning-rate-sized weight differences. Measured: 3.5e-3 relative at step 3 (after the
    # two-process resume), 1e-4 at step 2.
    torch.testing.assert_close(two_losses, one_losses, rtol=2e-2, atol=0)


def test_extensions_keep_the_matching_audio_prefix_out_of_the_loss(encoded_clip):
    """Issue 30: the extension task keeps the audio of its kept frames (clean at timestep 0 per token), the
    audio_extension task a random prefix of the soundtrack alone; the loss leaves the kept latents out."""
    from skyreels_diffusers.pipelines.inpainting import clean_audio_latents

    pipe, clip, _, _ = encoded_clip
    null = (clip["prompt_embeds"] * 0, clip["prompt_attention_mask"])
    args = train.parse_args(["--pretrained_model_name_or_path", "x", "--train_latents", "x", "--output_dir", "x"])
    args.condition_dropout = 0.0
    for step in range(3):
        extension, _, target = train.base_model_inputs("extension", [clip], null, pipe, args, 1.0, 0, step, 0)
        clean = extension["audio_timestep"][0].eq(0)
        assert clean.any() and extension["audio_timestep"][0, ~clean].gt(0).all()
        if pipe.vae_spec.temporal_compression == 1:  # one latent frame per frame: the kept frames are countable
            kept_frames = int(extension["hidden_states"][0, -1, :, 0, 0].sum())
            assert int(clean.sum()) == clean_audio_latents(pipe.audio_spec, kept_frames / 16)
        torch.testing.assert_close(
            extension["audio_hidden_states"][0][:, clean], clip["audio_latents"][:, clean], rtol=0, atol=0
        )
        audio_only, _, _ = train.base_model_inputs("audio_extension", [clip], null, pipe, args, 1.0, 0, step, 0)
        assert audio_only["audio_timestep"][0].eq(0).any() and not audio_only["hidden_states"][0, -1].any()
    wrong_on_prefix = target.clone()
    wrong_on_prefix[:, :, clean] += 5.0
    assert train.audio_loss(wrong_on_prefix, target, extension["audio_timestep"]) == 0
    assert train.audio_loss(target + 1.0, target, extension["audio_timestep"]) == 1
