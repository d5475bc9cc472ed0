import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline
from model_work import refused_before_model_work

from skyreels_diffusers import GenerationLimits, SkyReelsV4Pipeline
from skyreels_diffusers.pipelines import generation
from skyreels_diffusers.tiny_components import CAPTION_TAG_TOKENS, build_tiny_pipeline


PROMPT = "<text>A red ball bounces in a box.</text><sfx>A knock on every bounce.</sfx>"
# 9 frames at 16 fps = 0.5625 s of audio at 44.1 kHz.
NUM_SAMPLES = round(9 / 16 * 44100)


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline()


def run(pipe, prompt=PROMPT, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", 2)
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), **kwargs)


class CountCalls:
    def __init__(self, module):
        self.count = 0
        self.handle = module.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.count += 1


@pytest.mark.parametrize("output_type", ["np", "pt", "pil", "latent"])
def test_t2av_output_types(pipe, output_type):
    out = run(pipe, output_type=output_type)
    if output_type == "np":
        assert out.frames.shape == (1, 9, 32, 32, 3) and out.frames.dtype == np.float32
        assert 0 <= out.frames.min() and out.frames.max() <= 1
        assert isinstance(out.audio, np.ndarray) and out.audio.shape == (1, 1, NUM_SAMPLES)
    elif output_type == "pt":
        assert out.frames.shape == (1, 9, 3, 32, 32) and isinstance(out.audio, torch.Tensor)
        assert out.audio.shape == (1, 1, NUM_SAMPLES)
    elif output_type == "pil":
        assert len(out.frames) == 1 and len(out.frames[0]) == 9
        assert all(isinstance(f, PIL.Image.Image) and f.size == (32, 32) for f in out.frames[0])
    else:
        assert out.frames.shape == (1, 8, 3, 8, 8)  # latent channels 8, 3 latent frames, 4x spatial
        assert out.audio.shape == (1, 8, 25)  # ceil(0.5625 s * 44100 / 1024)
        assert out.audio_sample_rate is None
    if output_type != "latent":
        assert out.audio_sample_rate == 44100
        assert np.abs(np.asarray(out.audio)).max() <= 1


def test_t2v_and_t2a_from_the_same_pipeline(pipe):
    video_only = run(pipe, generate_audio=False)
    assert video_only.frames.shape == (1, 9, 32, 32, 3) and video_only.audio is None
    audio_only = run(pipe, generate_video=False, audio_duration=1.0)
    assert audio_only.frames is None and audio_only.audio.shape == (1, 1, 44100)


@pytest.mark.parametrize(
    "video_vae, audio_vae", [("wan", "oobleck"), ("hunyuanvideo15", "oobleck"), ("image", "mmaudio")]
)
def test_other_vaes(video_vae, audio_vae):
    pipe = build_tiny_pipeline(video_vae=video_vae, audio_vae=audio_vae)
    out = run(pipe)
    assert out.frames.shape == (1, 9, 32, 32, 3)
    assert out.audio.shape == (1, 2 if audio_vae == "oobleck" else 1, NUM_SAMPLES)  # Oobleck decodes stereo


def test_seeded_generation_is_deterministic(pipe):
    a, b = run(pipe, seed=3), run(pipe, seed=3)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)
    c = run(pipe, seed=4)
    assert not np.allclose(a.frames, c.frames)


def test_batch_equals_each_prompt_alone(pipe):
    prompts = [PROMPT, "<text>Two blue squares.</text>"]
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    batch = pipe(prompts, generator=generators, num_inference_steps=2, output_type="latent")
    for index, prompt in enumerate(prompts):
        single = run(pipe, prompt, seed=index, output_type="latent")
        torch.testing.assert_close(batch.frames[index : index + 1], single.frames, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batch.audio[index : index + 1], single.audio, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "guidance, audio_guidance, calls_per_step", [(1.0, 1.0, 1), (5.0, None, 2), (1.0, 3.0, 2), (4.0, 1.0, 2)]
)
def test_transformer_calls_per_step(pipe, guidance, audio_guidance, calls_per_step):
    counter = CountCalls(pipe.transformer)
    try:
        run(pipe, guidance_scale=guidance, audio_guidance_scale=audio_guidance, num_inference_steps=3)
    finally:
        counter.handle.remove()
    assert counter.count == 3 * calls_per_step


def test_guidance_changes_the_result(pipe):
    plain = run(pipe, guidance_scale=1.0, output_type="latent")
    guided = run(pipe, guidance_scale=4.0, output_type="latent")
    assert not torch.allclose(plain.frames, guided.frames)
    assert not torch.allclose(plain.audio, guided.audio)


def test_callback_can_change_latents(pipe):
    seen = []

    def zero_at_last_step(pipeline, step, timestep, tensors):
        seen.append((step, sorted(tensors)))
        if step == pipeline.num_timesteps - 1:
            return {"latents": torch.zeros_like(tensors["latents"]), "audio_latents": tensors["audio_latents"] + 7}
        return {}

    reference = run(pipe, output_type="latent")
    out = run(
        pipe,
        output_type="latent",
        callback_on_step_end=zero_at_last_step,
        callback_on_step_end_tensor_inputs=["latents", "audio_latents"],
    )
    assert seen == [(0, ["audio_latents", "latents"]), (1, ["audio_latents", "latents"])]
    assert torch.count_nonzero(out.frames) == 0
    torch.testing.assert_close(out.audio, reference.audio + 7)


def test_prompt_embeds_and_multimodal_prompt(pipe):
    embeds, mask, negative, negative_mask = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=True)
    assert embeds.ndim == 3 and embeds.shape[-1] == pipe.transformer.config.text_embed_dim
    assert mask.dtype == torch.bool and mask.shape == embeds.shape[:2] and negative.shape[0] == 1
    from_text = run(pipe, output_type="latent")
    from_embeds = pipe(
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt_embeds=negative,
        negative_prompt_attention_mask=negative_mask,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    )
    torch.testing.assert_close(from_text.frames, from_embeds.frames)

    image = PIL.Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8))
    with_image, image_mask, _, _ = pipe.encode_prompt(PROMPT, prompt_images=[image], do_classifier_free_guidance=False)
    assert with_image.shape[1] > embeds.shape[1]  # the image's vision tokens are part of the instruction
    out = run(pipe, prompt_images=image, output_type="latent")
    assert not torch.allclose(out.frames, from_text.frames)


def test_structured_tags_reach_the_text_encoder_as_tokens(pipe):
    tokenizer = pipe.processor.tokenizer
    text = pipe.processor.apply_chat_template(generation.build_messages(pipe, PROMPT, []), tokenize=False)
    ids = tokenizer(text).input_ids
    for tag in ("<text>", "</text>", "<sfx>", "</sfx>"):
        assert tag in CAPTION_TAG_TOKENS and tokenizer.convert_tokens_to_ids(tag) in ids
    assert pipe.config.system_prompt in text


def test_max_sequence_length_truncates(pipe):
    embeds, mask, _, _ = pipe.encode_prompt(PROMPT * 4, do_classifier_free_guidance=False, max_sequence_length=5)
    assert embeds.shape[1] == 5 and mask.shape == (1, 5)


def test_save_load_roundtrip_and_generic_loader(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert not list(tmp_path.rglob("*.bin")) and list(tmp_path.rglob("*.safetensors"))
    loaded = SkyReelsV4Pipeline.from_pretrained(tmp_path)
    assert isinstance(loaded, SkyReelsV4Pipeline)
    expected, actual = run(pipe), run(loaded)
    np.testing.assert_array_equal(expected.frames, actual.frames)
    np.testing.assert_array_equal(expected.audio, actual.audio)
    generic = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(generic) is SkyReelsV4Pipeline
    assert generic.config.default_height == 32 and generic.config.text_hidden_layer == -1


def test_tampered_stub_is_not_trusted(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    stub = tmp_path / "skyreels_v4_pipeline.py"
    stub.write_text(stub.read_text() + "\nprint('side effect')\n")
    with pytest.raises(ValueError, match="trust_remote_code"):
        SkyReelsV4Pipeline.from_pretrained(tmp_path)


@pytest.mark.slow
def test_model_cpu_offload_runs():
    pipe = build_tiny_pipeline()
    expected = run(pipe)
    pipe.enable_model_cpu_offload(device="cpu")
    out = run(pipe)
    assert out.frames.shape == (1, 9, 32, 32, 3)
    # Offloading moves weights, never changes the arithmetic: measured identical frames and audio.
    np.testing.assert_array_equal(out.frames, expected.frames)
    np.testing.assert_array_equal(out.audio, expected.audio)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"height": 30}, "height"),
        ({"width": 34}, "width"),
        ({"num_frames": 8}, "num_frames"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"generate_video": False, "generate_audio": False}, "generate_video"),
        ({"audio_duration": 2.0}, "audio_duration"),
        ({"fps": 24}, "fps"),
        ({"output_type": "gif"}, "output_type"),
        ({"prompt_embeds": torch.zeros(1, 4, 32)}, "both"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, "callback_on_step_end_tensor_inputs"),
        ({"latents": torch.zeros(1, 8, 2, 8, 8)}, "latents"),
        ({"negative_prompt": ["a", "b"], "guidance_scale": 2.0}, "negative_prompt"),
        # issue 32: control characters, sizes past the model's limits, empty masks, guidance, latents of another shape
        ({"prompt": "a\x00b"}, r"`prompt` contains the control character '\\x00' at position 1"),
        ({"prompt": [PROMPT, "ok\x1b[31m"]}, r"`prompt\[1\]` contains the control character '\\x1b' at position 2"),
        ({"negative_prompt": "x\x07", "guidance_scale": 2.0}, "`negative_prompt` contains the control character"),
        ({"height": 4096, "width": 4096}, r"`height` x `width` = 4096 x 4096 is too large: .*max_video_pixels"),
        (
            {"num_frames": 100_001},
            r"^`num_frames`=100001 is more than .* at most 285 frames \(17.8125 s .*max_video_pixels",
        ),
        (
            {"num_frames": 100_001, "generate_video": False},
            r"^`num_frames`=100001 is more than .* at most 1917 frames \(119.812 s .*max_audio_seconds",
        ),
        (
            {"prompt": None, "prompt_embeds": torch.randn(1, 4, 32), "prompt_attention_mask": torch.zeros(1, 4) > 0},
            "`prompt_attention_mask` row 0 has no real token",
        ),
        (
            {
                "negative_prompt_embeds": torch.randn(1, 4, 32),
                "negative_prompt_attention_mask": torch.tensor([[False] * 4]),
                "guidance_scale": 2.0,
            },
            "`negative_prompt_attention_mask` row 0 has no real token",
        ),
        ({"guidance_scale": 1e30}, r"`guidance_scale` must be a finite number >= 0 and <= 100 .*got 1e\+30"),
        ({"audio_guidance_scale": 100.5}, r"`audio_guidance_scale` .*<= 100 .*max_guidance_scale"),
        ({"audio_latents": torch.zeros(1, 8, 3)}, r"`audio_latents` must have shape \(1, 8, 25\)"),
    ],
)
def test_bad_inputs(pipe, kwargs, message):
    with refused_before_model_work(pipe, ValueError, message):
        pipe(**{"prompt": PROMPT, "num_inference_steps": 1, **kwargs})


def test_tab_newline_and_carriage_return_are_text(pipe):
    out = run(pipe, prompt="<text>A ball\tbounces.</text>\r\n<sfx>A knock.</sfx>", output_type="latent")
    assert torch.isfinite(out.frames).all()


def test_default_limits_follow_the_trained_clip(pipe):
    # 32 times the pipeline config's 32x32x9 clip; `GenerationLimits()` holds the full-size model's (480x848x81).
    assert pipe.limits.max_video_pixels == 32 * 32 * 32 * 9
    assert GenerationLimits() == GenerationLimits.for_trained_clip(480, 848, 81)
    assert pipe.frame_limit(32, 32) == (285, "max_video_pixels")  # 294,912 pixels: 288 frames of 32x32, 285 = 4k+1
    assert pipe.frame_limit(32, 32, generate_video=False) == (1917, "max_audio_seconds")  # 120 s of audio
    assert pipe.frame_limit(256, 256) == (1, "max_video_pixels")
    assert pipe.frame_limit(1024, 1024) == (0, "max_video_pixels")


@pytest.mark.parametrize(
    "returned, error, message",
    [
        ({"latents": float("nan")}, ValueError, "`callback_on_step_end` returned `latents` after step 0 with NaN"),
        ({"audio_latents": float("inf")}, ValueError, "returned `audio_latents` after step 0 with NaN or infinite"),
        (
            {"latents": "shape"},
            ValueError,
            r"returned `latents` after step 0 of shape \(1, 8, 1, 8, 8\); it must keep",
        ),
        ({"prompt_embeds": float("nan")}, ValueError, "returned `prompt_embeds` after step 0 with NaN"),
        ({"latents": "list"}, TypeError, "returned `latents` after step 0 as a list"),
        ("not a dict", TypeError, "`callback_on_step_end` must return a dict of tensors or None"),
    ],
)
def test_callback_outputs_are_checked_as_soon_as_it_returns(pipe, returned, error, message):
    def callback(pipe, step, timestep, tensors):
        if not isinstance(returned, dict):
            return returned
        name, value = next(iter(returned.items()))
        if value == "shape":
            return {name: tensors[name][:, :, :1]}
        return {name: [1.0] if value == "list" else torch.full_like(tensors[name], value)}

    inputs = ["latents", "audio_latents", "prompt_embeds"]
    calls = CountCalls(pipe.transformer)
    try:
        with pytest.raises(error, match=message):
            run(
                pipe,
                num_inference_steps=3,
                guidance_scale=1.0,
                callback_on_step_end=callback,
                callback_on_step_end_tensor_inputs=inputs,
            )
    finally:
        calls.handle.remove()
    assert calls.count == 1  # raised after the first step, before the second


def test_missing_prompt_and_wrong_type(pipe):
    with pytest.raises(ValueError, match="neither"):
        pipe(num_inference_steps=1)
    with pytest.raises(TypeError, match="prompt"):
        pipe(prompt=3, num_inference_steps=1)


def test_high_res_keyframes_denoised_with_the_video(pipe):
    out = run(pipe, num_keyframes=2)
    assert out.keyframe_indices == [0, 8]
    assert out.keyframes.shape == (1, 2, 64, 64, 3)  # twice the video size by default
    latent = run(pipe, keyframe_indices=[4], keyframe_height=96, keyframe_width=96, output_type="latent")
    assert latent.keyframes.shape == (1, 8, 1, 24, 24) and latent.keyframe_indices == [4]
    # The keyframe tokens take part in the same attention: they change the low-res prediction.
    plain = run(pipe, output_type="latent")
    with_keyframes = run(pipe, keyframe_indices=[4], output_type="latent")
    assert with_keyframes.frames.shape == plain.frames.shape
    assert not torch.allclose(with_keyframes.frames, plain.frames)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"keyframe_indices": [9]}, "keyframe_indices"),
        ({"keyframe_indices": [1, 2]}, "same latent frames"),
        ({"num_keyframes": 4}, "num_keyframes"),
        ({"num_keyframes": 1, "keyframe_indices": [0]}, "at most one"),
        ({"num_keyframes": 1, "keyframe_height": 48}, "keyframe_height"),
        ({"num_keyframes": 1, "generate_video": False}, "generate_video"),
    ],
)
def test_bad_keyframe_requests(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(PROMPT, num_inference_steps=1, **kwargs)


def test_lora_through_the_pipeline(tmp_path):
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = build_tiny_pipeline()
    base = run(pipe, output_type="latent")
    pipe.transformer.add_adapter(
        LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights=False)
    )
    adapted = run(pipe, output_type="latent")
    SkyReelsV4Pipeline.save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer))

    fresh = build_tiny_pipeline()
    fresh.load_lora_weights(tmp_path, adapter_name="style")
    torch.testing.assert_close(run(fresh, output_type="latent").frames, adapted.frames)
    assert not torch.allclose(adapted.frames, base.frames)
    fresh.fuse_lora()
    torch.testing.assert_close(run(fresh, output_type="latent").frames, adapted.frames, atol=1e-5, rtol=1e-4)
    fresh.unfuse_lora()
    fresh.unload_lora_weights()
    torch.testing.assert_close(run(fresh, output_type="latent").frames, base.frames)


def test_exported_mp4_has_synchronized_streams(pipe, tmp_path):
    import av

    from skyreels_diffusers.utils.media import export_to_video_with_audio

    out = run(pipe)
    path = export_to_video_with_audio(
        out.frames[0], str(tmp_path / "clip.mp4"), fps=16, audio=out.audio[0], audio_sample_rate=out.audio_sample_rate
    )
    with av.open(path) as container:
        (video_stream,) = container.streams.video
        (audio_stream,) = container.streams.audio
        assert video_stream.codec_context.name == "h264" and audio_stream.codec_context.name == "aac"
        assert video_stream.average_rate == 16 and audio_stream.rate == 44100
        video_seconds = float(video_stream.duration * video_stream.time_base)
        audio_seconds = float(audio_stream.duration * audio_stream.time_base)
    assert abs(video_seconds - audio_seconds) <= 1 / 16


def test_cli_generate_writes_an_mp4(tmp_path, monkeypatch, capsys):
    from skyreels_diffusers.cli import frames_for_duration, main

    monkeypatch.delenv("SKYREELS_V4_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--prompt", PROMPT, "--out", "clip.mp4", "--steps", "2", "--duration", "1"]) == 0
    assert (tmp_path / "clip.mp4").stat().st_size > 0
    captured = capsys.readouterr()
    assert "RANDOMLY INITIALISED" in captured.err and "17 frames" in captured.out
    assert frames_for_duration(5.0, 16, 4) == 81
    assert main(["generate", "--prompt", PROMPT, "--out", "x.mp4", "--height", "30"]) == 2
    assert "height" in capsys.readouterr().err
    # Every guidance term from the command line: checked by the pipeline, naming the option's argument
    guided = ["--stg-scale", "1", "--stg-blocks", "0,1", "--modality-scale", "2", "--audio-guidance-rescale", "0.5"]
    assert main(["generate", "--prompt", PROMPT, "--out", "g.mp4", "--steps", "1", *guided]) == 0
    assert main(["generate", "--prompt", PROMPT, "--out", "g.mp4", "--stg-scale", "1"]) == 2
    assert "spatio_temporal_guidance_blocks" in capsys.readouterr().err


def test_cli_video_to_audio_and_audio_to_video(tmp_path, monkeypatch, capsys):
    import av

    from skyreels_diffusers.cli import main
    from skyreels_diffusers.utils.media import export_to_video_with_audio

    monkeypatch.delenv("SKYREELS_V4_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    frames = (np.random.RandomState(0).rand(9, 32, 32, 3) * 255).astype(np.uint8)
    tone = 0.3 * np.sin(np.arange(round(0.8 * 16000)) / 5).astype(np.float32)
    export_to_video_with_audio(frames, "in.mp4", fps=16)
    export_to_video_with_audio(frames[:1].repeat(13, axis=0), "sound.mp4", fps=16, audio=tone, audio_sample_rate=16000)
    assert main(["generate", "--prompt", PROMPT, "--video", "in.mp4", "--out", "foley.mp4", "--steps", "2"]) == 0
    with av.open("foley.mp4") as container:
        assert {s.type for s in container.streams} == {"video", "audio"} and container.streams.video[0].frames == 9
    assert main(["generate", "--prompt", PROMPT, "--audio", "sound.mp4", "--out", "a2v.mp4", "--steps", "2"]) == 0
    assert "13 frames" in capsys.readouterr().out  # the clip follows the soundtrack's length
    assert main(["generate", "--prompt", PROMPT, "--video", "missing.mp4"]) == 2
    assert "--video" in capsys.readouterr().err
    assert main(["generate", "--prompt", PROMPT, "--video", "in.mp4", "--audio", "sound.mp4"]) == 2
    assert "Nothing is left to generate" in capsys.readouterr().err


def test_video_lead_steps_start_the_audio_later(pipe):
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda m, a, kw: calls.append(kw), with_kwargs=True)
    try:
        out = run(pipe, num_inference_steps=3, video_lead_steps=2, guidance_scale=1.0)
    finally:
        handle.remove()
    assert len(calls) == 5 and pipe.num_timesteps == 5  # 3 steps each, the audio two behind
    video = [float(c["timestep"][0]) for c in calls]
    audio = [float(c["audio_timestep"][0]) for c in calls]
    assert audio[:3] == [video[0]] * 3  # the audio waits as pure noise
    assert audio[2:] == video[:3] and video[3:] == [0.0, 0.0]  # then takes the same steps; the video is done
    assert out.audio.shape == (1, 1, NUM_SAMPLES) and np.isfinite(out.audio).all()


@pytest.mark.slow
def test_vae_tiling_passes_through():
    """With tiling on, the latents the VAE receives are those an untiled run gives it, and the frames come back as its
    tiled decoding made them."""

    def as_frames(pixels):  # the VAE's (B, 3, F, H, W) in [-1, 1] -> the pipeline's numpy frames
        return ((pixels.clamp(-1, 1) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).numpy()

    pipe = build_tiny_pipeline()
    untiled_inputs = []
    original_decode = pipe.vae.decode
    pipe.vae.decode = lambda z, *args, **kwargs: (
        untiled_inputs.append(z.clone()) or original_decode(z, *args, **kwargs)
    )
    untiled = run(pipe)
    pipe.vae.decode = original_decode
    pipe.vae.enable_tiling(
        tile_sample_min_height=16, tile_sample_min_width=16, tile_latent_min_height=4, tile_latent_min_width=4
    )
    tiled_calls = []  # (latents in, pixels out) of each tiled decoding
    original = pipe.vae.tiled_decode

    def tiled_decode(z, *args, **kwargs):
        result = original(z, *args, **kwargs)
        tiled_calls.append((z.clone(), getattr(result, "sample", result)))
        return result

    pipe.vae.tiled_decode = tiled_decode
    out = run(pipe)
    assert len(tiled_calls) == len(untiled_inputs) == 1 and out.frames.shape == (1, 9, 32, 32, 3)
    latents, pixels = tiled_calls[0]
    # Tiling also encodes the black-frame condition tile by tile, which moves the latents by float rounding (measured
    # max 2.3e-6).
    torch.testing.assert_close(latents, untiled_inputs[0], rtol=0, atol=1e-4)
    # To float rounding (measured max 1e-6).
    np.testing.assert_allclose(out.frames, as_frames(pixels), rtol=0, atol=1e-5)
    # Against untiled decoding: this random tiny VAE's decoder sees further than 4-latent tiles overlap, so the two
    # differ by 0.16 on average (of 1; max 1.1) here, and closeness cannot be asserted; they must differ, or the
    # tiles were not used.
    assert np.abs(out.frames - untiled.frames).mean() > 0.05


def test_without_an_audio_vae_the_default_is_video_only():
    from skyreels_diffusers import SkyReelsV4InpaintPipeline

    pipe = build_tiny_pipeline()
    pipe.audio_vae = None
    pipe._init_media_specs()
    out = run(pipe)
    assert out.audio is None and out.frames.shape == (1, 9, 32, 32, 3)
    inpaint = SkyReelsV4InpaintPipeline.from_pipe(pipe)
    image = np.random.RandomState(0).rand(32, 32, 3).astype(np.float32)
    assert run(inpaint, image=image).audio is None
    latent = run(inpaint, image=image, output_type="latent")  # latents need no VAE: audio comes along
    assert latent.audio.shape == (1, 8, 25)
    with pytest.raises(ValueError, match="audio_vae"):
        run(inpaint, audio=np.ones(9000, np.float32) * 0.1, audio_sample_rate=16000)


def test_a_callback_that_turns_guidance_off_takes_effect(pipe):
    counter = CountCalls(pipe.transformer)

    def no_guidance_after_first_step(pipe, step, timestep, tensors):
        pipe._guidance_scale = pipe._audio_guidance_scale = 1.0
        return tensors

    try:
        run(pipe, num_inference_steps=3, guidance_scale=5.0, callback_on_step_end=no_guidance_after_first_step)
    finally:
        counter.handle.remove()
    assert counter.count == 2 + 1 + 1  # the first step with guidance (two calls), then one call per step
