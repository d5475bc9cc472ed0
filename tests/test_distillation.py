"""The few-step distillation example (`examples/training/distill_skyreels_v4.py`) on tiny components, and the shipped
4-step LoRA of the tiny default."""

import os
import shutil

import pytest
import torch
from script_loading import load_script
from training_runs import launch_two_processes, losses, run_in_process


distill = load_script("distill_skyreels_v4", "examples/training")
world = load_script("world", "examples/synthetic_av")

ROOT = os.path.join(os.path.dirname(__file__), "..")
TINY_DEFAULT = os.path.join(ROOT, "pipelines", "skyreels-v4-tiny")
SHIPPED_LORA = os.path.join(ROOT, "pipelines", "skyreels-v4-tiny-4step-lora")
PROMPT = "<text>A red circle bounces around a dark box.</text><sfx>A pure low knock each time it hits a wall.</sfx>"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved tiny pipeline and a manifest of 4 world clips (9 frames, 32x32) with their sound."""
    from skyreels_diffusers.tiny_components import build_tiny_pipeline

    root = tmp_path_factory.mktemp("distill")
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
        "--num_student_steps",
        2,
        "--teacher_substeps",
        2,
        "--num_trajectories",
        6,
        "--task_ratios",
        "t2av=1,v2a=1,a2v=1",
        "--train_batch_size",
        2,
        "--lora_rank",
        4,
        "--learning_rate",
        "1e-2",
        "--checkpointing_steps",
        2,
        "--seed",
        3,
    ]


@pytest.mark.slow
def test_distillation_writes_a_lora_that_loads_changes_the_output_and_resumes_exactly(setup, tmp_path):
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    from skyreels_diffusers import SkyReelsV4Pipeline

    run_in_process(distill.main, common(setup, tmp_path / "a", 4))
    full = losses(tmp_path / "a")
    assert [r["step"] for r in full] == [1, 2, 3, 4]
    weights = load_file(tmp_path / "a" / "pytorch_lora_weights.safetensors")
    card = (tmp_path / "a" / "README.md").read_text()
    assert "num_inference_steps=2, guidance_scale=1.0" in card and "sigmas 1.0000" in card

    # The LoRA loads into a fresh pipeline as the student it saved, and changes the 2-step output.
    pipe = SkyReelsV4Pipeline.from_pretrained(setup[0] / "pipe")
    call = dict(num_inference_steps=2, guidance_scale=1.0, output_type="pt")
    base = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call)
    pipe.load_lora_weights(str(tmp_path / "a"))
    loaded = {k.removeprefix("transformer."): v for k, v in weights.items()}
    state = get_peft_model_state_dict(pipe.transformer, adapter_name=pipe.get_active_adapters()[0])
    assert state.keys() == loaded.keys() and all(torch.equal(state[k], loaded[k]) for k in state)
    student = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call)
    assert not torch.allclose(student.frames, base.frames, atol=1e-4)
    assert not torch.allclose(student.audio, base.audio, atol=1e-4)

    # Stopped after checkpoint-2 (and without the trajectory bank, which is rebuilt identically), resumed with
    # "latest": the same tasks and losses, to the last bit at one thread.
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    run_in_process(distill.main, [*common(setup, tmp_path / "b", 4), "--resume_from_checkpoint", "latest"])
    resumed = losses(tmp_path / "b")
    assert [r["step"] for r in resumed] == [3, 4]
    assert [r["task"] for r in resumed] == [r["task"] for r in full[2:]]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full[2:]], (resumed, full)
    again = load_file(tmp_path / "b" / "pytorch_lora_weights.safetensors")
    assert all(torch.equal(again[k], weights[k]) for k in weights)


@pytest.mark.slow
def test_distillation_brings_the_k_step_student_closer_to_the_teacher_than_the_teacher_at_k_steps(setup, tmp_path):
    """The objective itself, on a toy model: after some steps on two trajectories, the student at k=2 steps without
    guidance lands nearer the teacher's guided many-step result than the teacher's own guided 2-step result does."""
    from skyreels_diffusers import SkyReelsV4Pipeline

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = distill.parse_args([str(a) for a in common(setup, tmp_path, 40)])
        pipe = SkyReelsV4Pipeline.from_pretrained(setup[0] / "pipe")
        pipe.transformer.requires_grad_(False).eval()
        args.shift = pipe.scheduler.config.shift
        data = distill.load_training_data(args, pipe)
        null = (data["null_prompt_embeds"][0], data["null_prompt_attention_mask"][0].bool())
        sigmas = distill.student_sigmas(pipe, args.num_student_steps)
        entries = [0, 1]
        bank_args = distill.parse_args([str(a) for a in common(setup, tmp_path, 40)] + ["--teacher_substeps", "8"])
        video, audio = distill.teacher_trajectories(
            pipe.transformer, "t2av", entries, data, null, pipe, sigmas, bank_args
        )
        coarse = distill.parse_args([str(a) for a in common(setup, tmp_path, 40)] + ["--teacher_substeps", "1"])
        teacher_video, teacher_audio = distill.teacher_trajectories(
            pipe.transformer, "t2av", entries, data, null, pipe, sigmas, coarse
        )
        bank = {f"video.{e}": video[i] for i, e in enumerate(entries)}
        bank.update({f"audio.{e}": audio[i] for i, e in enumerate(entries)})

        def distance(v, a):
            return float(((v - video[:, -1]) ** 2).mean() + ((a - audio[:, -1]) ** 2).mean())

        before = distance(*distill.student_sample(pipe.transformer, "t2av", entries, data, null, pipe, sigmas, args))
        teacher_k = distance(teacher_video[:, -1], teacher_audio[:, -1])

        distill.add_lora(pipe.transformer, args)
        params = [p for p in pipe.transformer.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=3e-3)
        for step in range(args.max_train_steps):
            intervals = torch.tensor([step % 2, (step + 1) % 2])
            loss = distill.distillation_loss(
                pipe.transformer, "t2av", entries, intervals, bank, data, null, pipe, sigmas, args
            )
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        after = distance(*distill.student_sample(pipe.transformer, "t2av", entries, data, null, pipe, sigmas, args))
    finally:
        torch.set_num_threads(threads)
    print(
        f"distance to the many-step teacher: student before {before:.4g}, after {after:.4g}; teacher at k {teacher_k:.4g}"
    )
    assert after < 0.5 * teacher_k and after < 0.5 * before, (after, teacher_k, before)


def dmd_setup(setup, tmp_path, *extra):
    """The tiny pipeline as teacher, a student with a fresh LoRA and a critic (the teacher plus its own fresh LoRA),
    as `main` builds them for `--method dmd`."""
    import copy

    from skyreels_diffusers import SkyReelsV4Pipeline

    argv = [str(a) for a in common(setup, tmp_path, 1)] + ["--method", "dmd", *extra]
    argv[argv.index("--task_ratios") + 1] = "t2av=1,v2a=1,a2v=1,extension=1"
    args = distill.parse_args(argv)
    pipe = SkyReelsV4Pipeline.from_pretrained(setup[0] / "pipe")
    pipe.transformer.requires_grad_(False).eval()
    args.shift = pipe.scheduler.config.shift
    data = distill.load_training_data(args, pipe)
    null = (data["null_prompt_embeds"][0], data["null_prompt_attention_mask"][0].bool())
    teacher = copy.deepcopy(pipe.transformer)
    critic = copy.deepcopy(pipe.transformer)
    distill.add_lora(critic, args)
    distill.add_lora(pipe.transformer, args)
    return args, pipe, data, null, teacher, critic


@pytest.mark.parametrize("task", ["t2av", "v2a", "a2v", "extension"])
def test_dmd_pulls_the_student_only_toward_the_guided_teacher(setup, tmp_path, task):
    """DMD's gradient is the fake score minus the real one. A fresh critic is the teacher itself, so without guidance
    the student gets no gradient at all (it already is the teacher); with the teacher's CFG it does, and only its
    LoRA (the teacher and the critic stay as they are)."""
    args, pipe, data, null, teacher, critic = dmd_setup(setup, tmp_path)
    sigmas = distill.student_sigmas(pipe, args.num_student_steps)
    entries, intervals = [0, 1], torch.tensor([0, 1])

    def loss_at(guidance):
        args.teacher_guidance_scale = args.teacher_audio_guidance_scale = guidance
        noise = {stream: distill.dmd_noise(args, 0, stream, range(2)) for stream in (distill.DMD_START, 1)}
        return distill.dmd_generator_loss(
            pipe.transformer, critic, teacher, task, entries, intervals, noise, data, null, pipe, sigmas, args
        )

    unguided, _, _ = loss_at(1.0)
    guided, inputs, x0 = loss_at(5.0)
    # Zero but for rounding (the teacher runs cond + uncond as one batch, the critic one pass: other GEMM shapes).
    assert unguided.item() <= 1e-6 * guided.item()
    guided.backward()
    student = [p for n, p in pipe.transformer.named_parameters() if "lora_B" in n]
    assert guided.item() > 0 and any(p.grad is not None and p.grad.abs().sum() > 0 for p in student)
    assert all(p.grad is None for p in [*critic.parameters(), *teacher.parameters()])
    assert (
        x0.keys()
        == {"t2av": {"video", "audio"}, "v2a": {"audio"}, "a2v": {"video"}, "extension": {"video", "audio"}}[task]
    )
    fake = distill.critic_loss(
        critic, task, inputs, x0, distill.dmd_noise(args, 0, distill.DMD_CRITIC, range(2)), args
    )
    assert torch.isfinite(fake) and fake.item() > 0


@pytest.mark.slow
def test_dmd_trains_student_and_critic_writes_a_lora_and_resumes_exactly(setup, tmp_path):
    from safetensors.torch import load_file

    dmd = ["--method", "dmd", "--critic_updates", "2"]
    run_in_process(distill.main, [*common(setup, tmp_path / "a", 4), *dmd])
    full = losses(tmp_path / "a")
    assert [r["step"] for r in full] == [1, 2, 3, 4] and all(r["critic_loss"] > 0 for r in full)
    assert not (tmp_path / "a" / distill.BANK_FILE).exists()  # DMD needs no teacher trajectories
    assert "DMD2-style distribution matching" in (tmp_path / "a" / "README.md").read_text()
    weights = load_file(tmp_path / "a" / distill.LORA_FILE)
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)

    # Resumed from checkpoint-2: the student, the critic and both optimisers continue to the last bit.
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    run_in_process(distill.main, [*common(setup, tmp_path / "b", 4), *dmd, "--resume_from_checkpoint", "latest"])
    resumed = losses(tmp_path / "b")
    for key in ("step", "task", "loss", "critic_loss"):
        assert [r[key] for r in resumed] == [r[key] for r in full[2:]], key
    again = load_file(tmp_path / "b" / distill.LORA_FILE)
    assert all(torch.equal(again[k], weights[k]) for k in weights)

    # `--init_lora` starts the student from a saved LoRA of the same layers and rank, and refuses another rank.
    args, pipe, *_ = dmd_setup(setup, tmp_path / "c", "--init_lora", str(tmp_path / "a"))
    distill.load_student_lora(pipe.transformer, str(tmp_path / "a"))
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(pipe.transformer)
    assert all(torch.equal(state[k.removeprefix("transformer.")], v) for k, v in weights.items())
    _, other, *_ = dmd_setup(setup, tmp_path / "d", "--lora_rank", "2")
    with pytest.raises(ValueError, match="--init_lora"):
        distill.load_student_lora(other.transformer, str(tmp_path / "a"))


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--num_student_steps", "0", "--num_student_steps"),
        ("--critic_updates", "0", "--critic_updates"),
        ("--critic_learning_rate", "0", "--critic_learning_rate"),
        ("--init_lora", "/nonexistent", "--init_lora"),
        ("--teacher_guidance_scale", "0.5", "--teacher_guidance_scale"),
        ("--task_ratios", "reference_images=1", "--task_ratios"),
        ("--lora_towers", "video,legs", "--lora_towers"),
        ("--learning_rate", "-1", "--learning_rate"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_them(flag, value, message):
    argv = ["--pretrained_model_name_or_path", "p", "--train_latents", "d", "--output_dir", "o", flag, value]
    with pytest.raises(ValueError, match=message):
        distill.parse_args(argv)


def test_a_sigma_range_outside_0_1_is_refused():
    argv = ["--pretrained_model_name_or_path", "p", "--train_latents", "d", "--output_dir", "o"]
    with pytest.raises(ValueError, match="--dmd_sigma_range"):
        distill.parse_args([*argv, "--dmd_sigma_range", "0.5", "0.2"])


def test_exactly_one_data_source_is_required():
    with pytest.raises(ValueError, match="--train_latents"):
        distill.parse_args(["--pretrained_model_name_or_path", "p", "--output_dir", "o"])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(SHIPPED_LORA), reason="the shipped 4-step LoRA is not in this checkout")
def test_the_shipped_4_step_lora_loads_into_the_tiny_default_and_generates():
    from skyreels_diffusers import SkyReelsV4Pipeline

    pipe = SkyReelsV4Pipeline.from_pretrained(TINY_DEFAULT)
    call = dict(num_inference_steps=4, guidance_scale=1.0, output_type="pt")
    base = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call)
    pipe.load_lora_weights(SHIPPED_LORA)
    calls = []
    hook = pipe.transformer.register_forward_hook(lambda module, args, output: calls.append(1))
    out = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call)
    hook.remove()
    assert len(calls) == 4  # guidance scale 1: one pass per step, no negative pass
    assert out.frames.shape == base.frames.shape and out.audio.shape == base.audio.shape
    assert torch.isfinite(out.frames).all() and torch.isfinite(out.audio).all()
    assert (out.frames - base.frames).abs().mean() > 1e-3  # the LoRA is applied, not a no-op
    card = open(os.path.join(SHIPPED_LORA, "README.md"), encoding="utf-8").read()
    assert "num_inference_steps=4" in card and "guidance_scale=1" in card


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_processes_build_the_same_bank_and_match_one_process(setup, tmp_path):
    from safetensors.torch import load_file

    run_in_process(distill.main, common(setup, tmp_path / "one", 3))
    two = common(setup, tmp_path / "two", 3)
    two[two.index("--train_batch_size") + 1] = 1
    launch_two_processes("distill_skyreels_v4.py", two, 2)
    bank_one = load_file(tmp_path / "one" / distill.BANK_FILE)
    bank_two = load_file(tmp_path / "two" / distill.BANK_FILE)
    # Exact: the ranks are handed whole batches of entries, so each batch runs the same kernels on the same tensors
    # at one thread as in the single process.
    assert bank_one.keys() == bank_two.keys() and all(torch.equal(bank_one[k], bank_two[k]) for k in bank_one)
    first, second = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [r["task"] for r in first] == [r["task"] for r in second]
    # Step 1 runs before any update: the ranks' halves of the global batch give the one-process loss to rounding.
    torch.testing.assert_close(torch.tensor(second[0]["loss"]), torch.tensor(first[0]["loss"]), rtol=1e-5, atol=0)
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in second]), torch.tensor([r["loss"] for r in first]), rtol=2e-2, atol=0
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dmd_on_two_processes_matches_one_process(setup, tmp_path):
    dmd = ["--method", "dmd", "--critic_updates", "2"]
    run_in_process(distill.main, [*common(setup, tmp_path / "one", 3), *dmd])
    two = [*common(setup, tmp_path / "two", 3), *dmd]
    two[two.index("--train_batch_size") + 1] = 1
    launch_two_processes("distill_skyreels_v4.py", two, 2)
    first, second = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [r["task"] for r in first] == [r["task"] for r in second]
    for key in ("loss", "critic_loss"):
        torch.testing.assert_close(
            torch.tensor([r[key] for r in second]), torch.tensor([r[key] for r in first]), rtol=1e-3, atol=0
        )


def test_cli_refuses_a_missing_lora_before_loading_the_model(tmp_path, monkeypatch, capsys):
    from skyreels_diffusers import cli

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "load_pipeline", must_not_load)
    argv = ["generate", "--prompt", PROMPT, "--out", str(tmp_path / "c.mp4"), "--lora", str(tmp_path / "none")]
    assert cli.main(argv) == 2
    assert "`--lora` must be an existing LoRA file or folder" in capsys.readouterr().err
    assert cli.main([*argv[:-2], "--lora", str(tmp_path), "--lora-scale", "nan"]) == 2
    assert "`--lora-scale` must be a finite number" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(SHIPPED_LORA), reason="the shipped 4-step LoRA is not in this checkout")
def test_cli_generates_with_the_shipped_lora_at_4_steps(tmp_path):
    import av

    from skyreels_diffusers import cli

    out = tmp_path / "clip.mp4"
    argv = ["generate", "--model", TINY_DEFAULT, "--prompt", PROMPT, "--out", str(out), "--steps", "4"]
    assert cli.main([*argv, "--guidance-scale", "1", "--lora", SHIPPED_LORA]) == 0
    with av.open(str(out)) as container:
        assert container.streams.video[0].frames == 17 and container.streams.audio[0].rate == 8_000


def test_a_kept_audio_prefix_stays_clean_at_timestep_0_in_the_students_inputs():
    # Extensions keep an audio prefix (per-token timestep 0): the teacher and student states must not replace it.
    clean = torch.randn(2, 3, 6)
    kept = torch.tensor([[True, True, False, False, False, False], [True] + [False] * 5])
    inputs = {
        "hidden_states": torch.zeros(2, 5, 1, 1, 1),
        "audio_hidden_states": clean,
        "audio_timestep": torch.where(kept, 0.0, 500.0),
    }
    state = torch.randn(2, 3, 6)
    out = distill.with_states(inputs, "extension", torch.ones(2, 2, 1, 1, 1), state, torch.tensor([0.3, 0.6]))
    torch.testing.assert_close(out["audio_hidden_states"], torch.where(kept[:, None], clean, state), rtol=0, atol=0)
    expected = torch.where(kept, 0.0, torch.tensor([[300.0], [600.0]]))
    torch.testing.assert_close(out["audio_timestep"], expected)
    assert out["hidden_states"][:, :2].eq(1).all() and out["timestep"].tolist() == [300.0, 600.0]
