"""The modular pipelines (`skyreels_diffusers.modular_pipelines`) against the classic ones on the tiny default: the
same seed gives identical outputs for every task, because both forms call the same step functions and the same
per-step rules; and the modular loop drives any Diffusers guider per modality, multi-pass ones included."""

import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.guiders import (
    AdaptiveProjectedGuidance,
    LTX2Guidance,
    PerturbedAttentionGuidance,
    SkipLayerGuidance,
)
from diffusers.hooks import LayerSkipConfig
from diffusers.modular_pipelines import ComponentsManager, LoopSequentialPipelineBlocks
from model_work import refused_before_model_work
from script_loading import load_script

from skyreels_diffusers import (
    SkyReelsV4InpaintPipeline,
    SkyReelsV4Pipeline,
    SkyReelsV4RefinerPipeline,
    SkyReelsV4RefinerTransformer3DModel,
)
from skyreels_diffusers.modular_pipelines import (
    SkyReelsV4AutoBlocks,
    SkyReelsV4Blocks,
    SkyReelsV4ModularPipeline,
    SkyReelsV4RefinerModularPipeline,
)


MODEL = os.path.join(os.path.dirname(__file__), "..", "pipelines", "skyreels-v4-tiny")
world = load_script("world", "examples/synthetic_av")
STEPS = 2
NUM_FRAMES = 9


@pytest.fixture(scope="module")
def clip():
    return world.render_clip(11, num_frames=NUM_FRAMES, size=64, sample_rate=16000)


@pytest.fixture(scope="module")
def classic():
    pipe = SkyReelsV4Pipeline.from_pretrained(MODEL)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def inpaint(classic):
    pipe = SkyReelsV4InpaintPipeline.from_pipe(classic)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def modular(classic):
    pipe = SkyReelsV4ModularPipeline.from_pretrained(MODEL)
    pipe.update_components(
        **{name: getattr(classic, name) for name in ("text_encoder", "transformer", "vae", "audio_vae")}
    )
    pipe.load_components(names=["processor", "scheduler"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generator():
    return torch.Generator().manual_seed(0)


def edit_mask():
    mask = np.ones((64, 64), np.float32)
    mask[16:48, 16:48] = 0
    return mask


# (task, classic pipeline fixture, call arguments given the clip); each runs both ways with the same seed.
TASKS = [
    ("t2av", "classic", lambda c: {}),
    ("t2v", "classic", lambda c: {"generate_audio": False}),
    ("t2a", "classic", lambda c: {"generate_video": False, "audio_duration": 0.5}),
    ("keyframes", "classic", lambda c: {"num_keyframes": 2, "output_type": "latent"}),
    ("video_lead_steps", "classic", lambda c: {"video_lead_steps": 1}),
    ("i2v", "inpaint", lambda c: {"image": c.frames[0]}),
    ("first_last", "inpaint", lambda c: {"image": c.frames[0], "last_image": c.frames[-1]}),
    ("extension", "inpaint", lambda c: {"video": c.frames, "num_condition_frames": 5}),
    ("edit", "inpaint", lambda c: {"video": c.frames, "mask": edit_mask()}),
    ("references", "inpaint", lambda c: {"reference_images": [c.frames[3]]}),
    ("audio_reference", "inpaint", lambda c: {"audio_reference": c.audio, "audio_reference_sample_rate": 16000}),
    ("video_to_audio", "inpaint", lambda c: {"video": c.frames}),
    ("audio_to_video", "inpaint", lambda c: {"audio": c.audio, "audio_sample_rate": 16000}),
    (
        "image_to_sound_video",
        "inpaint",
        lambda c: {"image": c.frames[0], "audio": c.audio, "audio_sample_rate": 16000},
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("task, classic_name, arguments", TASKS, ids=[t[0] for t in TASKS])
def test_modular_matches_classic(task, classic_name, arguments, request, modular, clip):
    pipe = request.getfixturevalue(classic_name)
    kwargs = {"num_inference_steps": STEPS, **arguments(clip)}
    if "video" not in kwargs and "audio" not in kwargs:
        kwargs["num_frames"] = NUM_FRAMES
    expected = pipe(clip.caption, generator=generator(), **kwargs)
    got = modular(
        prompt=clip.caption, generator=generator(), output=["videos", "audio", "audio_sample_rate"], **kwargs
    )
    for name, want in (("videos", expected.frames), ("audio", expected.audio)):
        if want is None:
            assert got[name] is None, f"{task}: {name}"
        else:
            assert np.array_equal(np.asarray(got[name]), np.asarray(want)), f"{task}: {name} differ"
    assert got["audio_sample_rate"] == expected.audio_sample_rate
    if task == "keyframes":
        keyframes = modular(prompt=clip.caption, generator=generator(), output="keyframes", **kwargs)
        assert torch.equal(keyframes, expected.keyframes)


def test_auto_blocks_choose_the_task_from_the_inputs(modular, clip):
    blocks = modular.blocks
    assert isinstance(blocks, SkyReelsV4AutoBlocks)
    choose = blocks.sub_blocks["input"].select_block
    assert choose() == "text"
    assert choose(image=clip.frames[0]) == "inpaint"
    assert choose(audio=clip.audio) == "inpaint"
    assert choose(video=clip.frames) == "inpaint"


@pytest.mark.slow
def test_guiders_are_swappable_per_modality(modular, classic, clip):
    """The audio's guider set to scale 1 equals the classic `audio_guidance_scale=1`."""
    kwargs = {"num_inference_steps": STEPS, "num_frames": NUM_FRAMES}
    expected = classic(clip.caption, generator=generator(), audio_guidance_scale=1.0, guidance_scale=3.0, **kwargs)
    video_guider, audio_guider = modular.guider, modular.audio_guider
    try:
        modular.update_components(
            guider=LTX2Guidance(guidance_scale=3.0), audio_guider=LTX2Guidance(guidance_scale=1.0)
        )
        got = modular(prompt=clip.caption, generator=generator(), output=["videos", "audio"], **kwargs)
        assert np.array_equal(got["videos"], expected.frames)
        assert np.array_equal(got["audio"], expected.audio)
    finally:
        modular.update_components(guider=video_guider, audio_guider=audio_guider)


@pytest.mark.slow
def test_multimodal_guidance_equals_the_classic_pipeline(modular, classic, clip):
    """STG, modality guidance and rescale per modality: the same passes and the same combination as the classic
    pipeline's arguments, so the same clip bit for bit."""
    kwargs = {"num_inference_steps": STEPS, "num_frames": NUM_FRAMES}
    expected = classic(
        clip.caption,
        generator=generator(),
        guidance_scale=3.0,
        audio_guidance_scale=5.0,
        stg_scale=1.0,
        spatio_temporal_guidance_blocks=[1],
        audio_stg_scale=0.5,
        audio_spatio_temporal_guidance_blocks=[0],
        modality_scale=2.0,
        guidance_rescale=0.7,
        **kwargs,
    )
    video_guider, audio_guider = modular.guider, modular.audio_guider
    try:
        modular.update_components(
            guider=LTX2Guidance(
                guidance_scale=3.0,
                stg_scale=1.0,
                spatio_temporal_guidance_blocks=[1],
                modality_scale=2.0,
                guidance_rescale=0.7,
            ),
            audio_guider=LTX2Guidance(
                guidance_scale=5.0,
                stg_scale=0.5,
                spatio_temporal_guidance_blocks=[0],
                modality_scale=2.0,
                guidance_rescale=0.7,
            ),
        )
        got = modular(prompt=clip.caption, generator=generator(), output=["videos", "audio"], **kwargs)
        assert np.array_equal(got["videos"], expected.frames)
        assert np.array_equal(got["audio"], expected.audio)
    finally:
        modular.update_components(guider=video_guider, audio_guider=audio_guider)


# Multi-pass and stateful guiders, active on every step (Diffusers' skip-layer and perturbed-attention guidance
# perturb the step whose index lies strictly inside their range, so the second of the test's two steps).
MULTI_PASS_GUIDERS = {
    "skip_layer": lambda: SkipLayerGuidance(
        guidance_scale=5.0,
        skip_layer_guidance_scale=2.0,
        skip_layer_config=LayerSkipConfig(indices=[0], fqn="transformer_blocks"),
        skip_layer_guidance_start=0.0,
        skip_layer_guidance_stop=1.0,
    ),
    "perturbed_attention": lambda: PerturbedAttentionGuidance(
        guidance_scale=5.0,
        perturbed_guidance_scale=2.0,
        perturbed_guidance_layers=[0],
        perturbed_guidance_start=0.0,
        perturbed_guidance_stop=1.0,
    ),
    "adaptive_projected": lambda: AdaptiveProjectedGuidance(
        guidance_scale=5.0, adaptive_projected_guidance_momentum=-0.5
    ),
}


@pytest.mark.parametrize("which", ["guider", "audio_guider"])
@pytest.mark.parametrize("kind", list(MULTI_PASS_GUIDERS))
def test_multi_pass_guiders_guide_their_modality(kind, which, modular, clip):
    """Any Diffusers guider runs through the loop's guider protocol: a skip-layer or perturbed-attention pass is one
    more transformer call (the conditional and unconditional passes stay shared between the two guiders), and the
    guided modality's output changes."""
    kwargs = {
        "prompt": clip.caption,
        "num_inference_steps": STEPS,
        "num_frames": NUM_FRAMES,
        "output": ["videos", "audio"],
    }
    calls = []
    hook = modular.transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    previous = getattr(modular, which)
    try:
        baseline = modular(generator=generator(), **kwargs)
        baseline_calls = len(calls)
        calls.clear()
        modular.update_components(**{which: MULTI_PASS_GUIDERS[kind]()})
        got = modular(generator=generator(), **kwargs)
    finally:
        hook.remove()
        modular.update_components(**{which: previous})
    extra_passes = 0 if kind == "adaptive_projected" else 1
    assert baseline_calls == 2 * STEPS and len(calls) == baseline_calls + extra_passes
    guided = "videos" if which == "guider" else "audio"
    assert np.isfinite(np.asarray(got["videos"])).all() and np.isfinite(np.asarray(got["audio"])).all()
    assert not np.array_equal(np.asarray(got[guided]), np.asarray(baseline[guided]))


def test_denoise_is_a_loop_of_before_denoiser_after(modular):
    """The base stage's denoise step, as Diffusers builds its own: a loop wrapper over three sub-blocks, and blocks
    that exchange named, typed values only."""
    denoise = modular.blocks.sub_blocks["denoise"].sub_blocks["text"].sub_blocks["denoise"]
    assert isinstance(denoise, LoopSequentialPipelineBlocks)
    assert list(denoise.sub_blocks) == ["before_denoiser", "denoiser", "after_denoiser"]
    opaque = {"streams", "model_kwargs", "media", "conditions", "low_res", "refiner_condition"}
    pending = [modular.blocks]
    while pending:
        block = pending.pop()
        names = {param.name for param in block.inputs} | {param.name for param in block.intermediate_outputs}
        assert not names & opaque, (type(block).__name__, names & opaque)
        pending.extend(block.sub_blocks.values())


def test_bad_input_is_refused_before_any_work(modular):
    guider = modular.guider
    try:
        modular.update_components(guider=FlowMatchEulerDiscreteScheduler())  # a component, but not a guider
        with pytest.raises(TypeError, match="`guider`"):
            modular(prompt="x", output="videos")
    finally:
        modular.update_components(guider=guider)
    # Hooks on every layer of the text encoder, transformer and VAEs: none may run before the error.
    assert all(
        getattr(modular, name, None) is not None for name in ("text_encoder", "transformer", "vae", "audio_vae")
    )
    with refused_before_model_work(modular, ValueError, "num_inference_steps"):
        modular(prompt="x", num_inference_steps=0, output="videos")
    with refused_before_model_work(modular, ValueError, "num_condition_frames"):
        modular(prompt="x", video=[np.zeros((64, 64, 3), np.uint8)] * 9, num_condition_frames=20, output="videos")


@pytest.mark.slow
def test_refiner_stage_shares_components_and_matches_classic(classic, clip):
    manager = ComponentsManager()
    base = SkyReelsV4ModularPipeline.from_pretrained(MODEL, components_manager=manager, collection="skyreels")
    base.load_components()
    refiner = SkyReelsV4RefinerModularPipeline.from_pretrained(
        MODEL, components_manager=manager, collection="skyreels"
    )
    refiner.load_components(names=["transformer"])
    shared = ("text_encoder", "processor", "vae", "audio_vae", "scheduler")
    refiner.update_components(**{name: getattr(base, name) for name in shared})
    assert isinstance(refiner.transformer, SkyReelsV4RefinerTransformer3DModel)
    assert refiner.vae is base.vae and refiner.text_encoder is base.text_encoder

    classic_refiner = SkyReelsV4RefinerPipeline.from_pipe(
        classic, transformer=SkyReelsV4RefinerTransformer3DModel.from_pretrained(os.path.join(MODEL, "refiner"))
    )
    classic_refiner.set_progress_bar_config(disable=True)
    refiner.set_progress_bar_config(disable=True)
    audio = np.asarray(clip.audio).reshape(1, -1, np.asarray(clip.audio).shape[-1])
    cases = [({}, 1.0), ({"strength": 0.5, "audio": audio}, 3.0)]  # without guidance; with CFG, strength and audio
    for extra, scale in cases:
        kwargs = {"video": list(clip.frames), "num_inference_steps": STEPS, **extra}
        expected = classic_refiner(clip.caption, generator=generator(), guidance_scale=scale, **kwargs)
        refiner.update_components(guider=LTX2Guidance(guidance_scale=scale))
        got = refiner(prompt=clip.caption, generator=generator(), output=["videos", "audio"], **kwargs)
        assert np.array_equal(got["videos"], expected.frames)
        assert (got["audio"] is None) == (expected.audio is None)
        if expected.audio is not None:
            assert np.array_equal(np.asarray(got["audio"]), np.asarray(expected.audio))


def test_blocks_init_pipeline_builds_our_pipeline():
    pipe = SkyReelsV4Blocks().init_pipeline(MODEL)
    assert isinstance(pipe, SkyReelsV4ModularPipeline)
    assert {"text_encoder", "processor", "transformer", "vae", "scheduler", "guider"} <= set(pipe.component_names)


@pytest.mark.slow
def test_compose_blocks_example_writes_an_mp4(tmp_path):
    """The README's modular example: base stage with a guider per modality, then the Refiner sharing components."""
    out = tmp_path / "modular.mp4"
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "modular", "compose_blocks.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, script, "--steps", "2", "--out", str(out)], check=True, env=env, timeout=600)
    with av.open(str(out)) as container:
        assert container.streams.video and container.streams.audio
