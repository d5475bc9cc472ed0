import numpy as np
import PIL.Image
import pytest
import torch
from model_work import refused_before_model_work

from skyreels_diffusers import SkyReelsV4InpaintPipeline
from skyreels_diffusers.pipelines import inpainting
from skyreels_diffusers.pipelines.conditioning import build_video_condition, latent_keep_mask
from skyreels_diffusers.pipelines.vae_utils import encode_audio_track, encode_video
from skyreels_diffusers.tiny_components import build_tiny_pipeline, build_tiny_video_vae


PROMPT = "<text>A red ball bounces.</text><sfx>A knock.</sfx>"
FRAMES, SIZE = 9, 32  # 9 frames -> 3 latent frames; 32 px -> 8 latent cells (4x spatial)


@pytest.fixture(scope="module")
def vae():
    return build_tiny_video_vae("hunyuanvideo15")


@pytest.fixture(scope="module")
def pipe():
    return SkyReelsV4InpaintPipeline.from_pipe(build_tiny_pipeline())


def random_video(seed=1, frames=FRAMES):
    return np.random.RandomState(seed).rand(frames, SIZE, SIZE, 3).astype(np.float32)


def random_image(seed=0, height=SIZE, width=SIZE):
    return np.random.RandomState(seed).rand(height, width, 3).astype(np.float32)


def run(pipe, **kwargs):
    kwargs.setdefault("num_inference_steps", 2)
    return pipe(PROMPT, generator=torch.Generator().manual_seed(0), **kwargs)


def black_latent(vae):
    return encode_video(vae, torch.full((1, 3, 1, SIZE, SIZE), -1.0))[:, :, 0]


def image_latent(vae, image):
    return encode_video(vae, image[:, :, None])[:, :, 0]


# ---------------------------------------------------------------------- the condition builder, row by row


def test_t2v_row_all_zero_mask_and_black_latents(vae):
    condition = build_video_condition(vae, 2, FRAMES, SIZE, SIZE)
    assert condition.mask.shape == (2, 1, 3, 8, 8) and condition.mask.eq(0).all()
    for t in range(3):
        torch.testing.assert_close(condition.latents[:, :, t], black_latent(vae).expand(2, -1, -1, -1))
    assert condition.as_channels().shape == (2, 9, 3, 8, 8)
    assert not condition.latents.eq(0).all()  # black-image latents, not zeros


def test_i2v_row_frame_zero(vae):
    image = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    condition = build_video_condition(vae, 1, FRAMES, SIZE, SIZE, frame_conditions=[(0, image)])
    assert condition.mask[:, :, 0].eq(1).all() and condition.mask[:, :, 1:].eq(0).all()
    torch.testing.assert_close(condition.latents[:, :, 0], image_latent(vae, image))
    torch.testing.assert_close(condition.latents[:, :, 1], black_latent(vae))
    torch.testing.assert_close(condition.latents[:, :, 2], black_latent(vae))


def test_interpolation_row_first_and_last(vae):
    first, last = torch.rand(1, 3, SIZE, SIZE) * 2 - 1, torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    condition = build_video_condition(vae, 1, FRAMES, SIZE, SIZE, frame_conditions=[(0, first), (FRAMES - 1, last)])
    assert condition.mask[0, 0, :, 0, 0].tolist() == [1.0, 0.0, 1.0]
    torch.testing.assert_close(condition.latents[:, :, 0], image_latent(vae, first))
    torch.testing.assert_close(condition.latents[:, :, 2], image_latent(vae, last))
    torch.testing.assert_close(condition.latents[:, :, 1], black_latent(vae))


def test_extension_row_first_k_frames(vae):
    video = torch.rand(1, 3, 13, SIZE, SIZE) * 2 - 1
    keep = torch.zeros(1, 1, 13, SIZE, SIZE)
    keep[:, :, :5] = 1  # frames 0..4 = latent frames 0 and 1 of the causal VAE
    condition = build_video_condition(vae, 1, 13, SIZE, SIZE, video=video, keep_mask=keep)
    assert condition.mask[0, 0, :, 0, 0].tolist() == [1.0, 1.0, 0.0, 0.0]
    # Causality: the kept latents equal the encoding of the kept prefix alone.
    prefix = encode_video(vae, video[:, :, :5])
    torch.testing.assert_close(condition.latents[:, :, :2], prefix, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(condition.latents[:, :, 3], black_latent(vae))


def test_editing_row_spatial_mask_max_pooled(vae):
    video = torch.rand(1, 3, FRAMES, SIZE, SIZE) * 2 - 1
    keep = torch.ones(1, 1, FRAMES, SIZE, SIZE)
    keep[:, :, 3, 9:14, 0:4] = 0  # frame 3 (latent frame 1): rows 9..13 touch latent rows 2 and 3, column 0
    condition = build_video_condition(vae, 1, FRAMES, SIZE, SIZE, video=video, keep_mask=keep)
    expected = torch.ones(1, 1, 3, 8, 8)
    expected[:, :, 1, 2:4, 0] = 0
    torch.testing.assert_close(condition.mask, expected)
    masked = torch.where(keep.bool(), video, torch.full_like(video, -1.0))
    torch.testing.assert_close(condition.latents, encode_video(vae, masked))


def test_latent_keep_mask_first_frame_alone():
    keep = torch.ones(1, 1, FRAMES, 8, 8)
    keep[:, :, 1] = 0  # frame 1 belongs to latent frame 1, not 0
    mask = latent_keep_mask(keep, 4, 4)
    assert mask[0, 0, :, 0, 0].tolist() == [1.0, 0.0, 1.0]


# ---------------------------------------------------------------------- the pipeline, task by task


@pytest.mark.slow
def test_each_task_runs_end_to_end(pipe):
    image, video = random_image(), random_video()
    mask = np.ones((SIZE, SIZE), np.float32)
    mask[8:24, 8:24] = 0
    results = {
        "i2v": run(pipe, image=image),
        "interpolation": run(pipe, image=image, last_image=random_image(2)),
        "keyframes": run(pipe, frame_conditions=[(0, image), (4, random_image(3)), (8, random_image(4))]),
        "extension": run(pipe, video=video, num_condition_frames=5, num_frames=17),
        "editing": run(pipe, video=video, mask=mask),
        "references": run(pipe, reference_images=[image, random_image(5, 16, 40)]),
        "reference_video": run(pipe, reference_video=list(video[:2])),
    }
    for name, out in results.items():
        expected_frames = 17 if name == "extension" else FRAMES
        assert out.frames.shape == (1, expected_frames, SIZE, SIZE, 3), name
        assert out.audio.shape == (1, 1, round(expected_frames / 16 * 44100)), name


def test_preserve_unmasked_keeps_pixels_exactly(pipe):
    video = random_video()
    mask = np.ones((FRAMES, SIZE, SIZE), np.float32)
    mask[:, 4:20, 10:30] = 0.3  # soft mask values below 0.5 count as "regenerate"
    out = run(pipe, video=video, mask=mask)
    keep = mask >= 0.5
    np.testing.assert_array_equal(out.frames[0][keep], video[keep])
    assert np.abs(out.frames[0][~keep] - video[~keep]).max() > 0.05
    loose = run(pipe, video=video, mask=mask, preserve_unmasked=False)
    assert not np.array_equal(loose.frames[0][keep], video[keep])


def test_preserve_unmasked_reinjects_image_and_last_frame_latents(pipe):
    first, last = random_image(3), random_image(4)
    to_pixels = lambda image: torch.from_numpy(image).permute(2, 0, 1)[None] * 2 - 1  # noqa: E731
    out = run(pipe, image=first, last_image=last, preserve_unmasked=True, output_type="latent")
    torch.testing.assert_close(out.frames[:, :, 0], image_latent(pipe.vae, to_pixels(first)), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.frames[:, :, -1], image_latent(pipe.vae, to_pixels(last)), rtol=0, atol=1e-6)
    free = run(pipe, image=first, last_image=last, output_type="latent")  # default: the model's own prediction
    assert not torch.allclose(free.frames[:, :, 0], out.frames[:, :, 0])


def test_pil_masks_and_single_mask_broadcast(pipe):
    video = [PIL.Image.fromarray((f * 255).astype(np.uint8)) for f in random_video()]
    mask = np.full((SIZE, SIZE), 255, np.uint8)
    mask[:16] = 0
    out = run(pipe, video=video, mask=PIL.Image.fromarray(mask), output_type="pil")
    first = np.asarray(out.frames[0][0])
    np.testing.assert_array_equal(first[16:], np.asarray(video[0])[16:])


def test_extension_keeps_the_first_frames(pipe):
    video = random_video(frames=9)
    out = run(pipe, video=video, num_condition_frames=5, num_frames=17)
    np.testing.assert_array_equal(out.frames[0][:5], video[:5])


def test_references_get_negative_rope_and_are_not_predicted(pipe):
    """The RoPE positions the transformer computes in the pipeline's own call (captured at its video RoPE module): the
    two references' tokens come first at frames -2 and -1, the video's from frame 0."""
    seen = {}

    def capture(module, args, kwargs):
        seen.setdefault("references", kwargs.get("reference_latents"))

    def capture_positions(module, args):
        seen.setdefault("positions", args[0].clone())

    handles = [
        pipe.transformer.register_forward_pre_hook(capture, with_kwargs=True),
        pipe.transformer.rope.register_forward_pre_hook(capture_positions),
    ]
    try:
        out = run(pipe, reference_images=[random_image(), random_image(6)], output_type="latent")
    finally:
        for handle in handles:
            handle.remove()
    references = seen["references"]
    assert references.shape == (1, 8, 2, 8, 8)  # (B, C, R, h, w): clean latents, two references
    assert out.frames.shape == (1, 8, 3, 8, 8)  # the prediction covers the video only
    positions = seen["positions"]
    assert positions.shape == ((2 + 3) * 64, 3), positions.shape
    assert positions[: 2 * 64, 0].unique().tolist() == [-2.0, -1.0]
    assert positions[2 * 64 :, 0].unique().tolist() == [0.0, 1.0, 2.0]


def test_aspect_policy_crop_and_reference_padding(pipe):
    from skyreels_diffusers.pipelines.preprocessing import fit_with_black_padding, frames_to_tensor

    wide = np.zeros((16, 64, 3), np.float32)
    wide[:, 30:34] = 1.0  # a white centre band: the crop keeps it, the cut sides were black
    cropped = frames_to_tensor("image", [wide], SIZE, SIZE)[0]
    assert cropped.shape == (3, SIZE, SIZE) and cropped[:, :, 16].mean() > 0.9 and cropped[:, :, 0].mean() < 0.1
    padded = np.asarray(fit_with_black_padding(PIL.Image.fromarray(np.full((16, 64, 3), 255, np.uint8)), 32, 32))
    assert padded[:8].max() == 0 and padded[12:20].min() > 200  # whole content kept, black bars added


def test_keep_input_audio_needs_a_file(pipe):
    with pytest.raises(ValueError, match="keep_input_audio"):
        run(pipe, video=random_video(), num_condition_frames=5, keep_input_audio=True)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"video": random_video(), "mask": np.ones((16, 16))}, ValueError, "video size"),
        ({"video": random_video(), "mask": np.ones((4, SIZE, SIZE))}, ValueError, "one per video frame"),
        ({"reference_images": [random_image()] * 5}, ValueError, "max_references"),
        ({"frame_conditions": [(9, random_image())]}, ValueError, "outside the clip"),
        ({"frame_conditions": [(1, random_image()), (2, random_image())]}, ValueError, "share latent frames"),
        ({"frame_conditions": [("0", random_image())]}, TypeError, "frame_conditions"),
        ({"video": random_video(), "num_condition_frames": 9}, ValueError, "num_condition_frames"),
        (
            {"video": random_video(), "num_condition_frames": 3, "num_frames": 17, "mask": np.ones((9, 32, 32))},
            ValueError,
            "exactly one",
        ),
        ({"mask": np.ones((SIZE, SIZE))}, ValueError, "need a source"),
        ({"image": "not an image"}, TypeError, "image"),
        ({"image": np.zeros((3, SIZE, SIZE), np.float32)}, ValueError, r"\(H, W, 3\)"),
    ],
)
def test_bad_inputs(pipe, kwargs, error, message):
    with pytest.raises(error, match=message):
        run(pipe, num_inference_steps=1, **kwargs)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_audio_reference_resampled_to_the_vae_rate(pipe, rate):
    seconds = 0.5
    tone = np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32)
    waveform = inpainting.load_audio_reference(pipe, tone, rate)
    assert waveform.shape == (1, 22050)
    # Resampled to 44.1 kHz: 22050 samples, padded with silence to whole latents of 1024 samples -> 22 latents (as
    # training encodes its audio references), so no tail is lost.
    latents = encode_audio_track(pipe.audio_vae, waveform[None], -(-22050 // 1024))
    seen = {}

    def capture(module, args, kwargs):
        seen.setdefault("audio", kwargs.get("audio_reference_latents"))

    handle = pipe.transformer.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        out = run(pipe, audio_reference=torch.from_numpy(tone), audio_reference_sample_rate=rate)
    finally:
        handle.remove()
    torch.testing.assert_close(seen["audio"], latents)
    assert out.audio.shape == (1, 1, round(FRAMES / 16 * 44100))


def test_audio_reference_too_long_is_refused(pipe):
    with pytest.raises(ValueError, match="max_duration|long"):
        run(pipe, audio_reference=np.zeros(16000 * 11, np.float32), audio_reference_sample_rate=16000)


def test_keep_input_audio_from_a_file(pipe, tmp_path):
    from skyreels_diffusers.utils.media import export_to_video_with_audio

    video = random_video(frames=17)
    tone = 0.5 * np.sin(2 * np.pi * 330 * np.arange(44100) / 44100).astype(np.float32)
    path = export_to_video_with_audio(video, str(tmp_path / "in.mp4"), fps=16, audio=tone, audio_sample_rate=44100)
    transformer_calls = []

    def capture(module, args, kwargs):
        transformer_calls.append((kwargs["audio_hidden_states"], kwargs["audio_timestep"]))

    handle = pipe.transformer.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        out = run(pipe, video=path, num_condition_frames=5, num_frames=17, keep_input_audio=True)
    finally:
        handle.remove()
    # The file's track is a given condition: the same clean latents at timestep 0 in every call, never generated.
    first = transformer_calls[0][0]
    assert all(torch.equal(audio, first) and not timestep.any() for audio, timestep in transformer_calls)
    assert out.audio.shape == (1, 1, round(17 / 16 * 44100))
    spectrum = np.abs(np.fft.rfft(out.audio[0, 0]))
    assert abs(np.argmax(spectrum) * 44100 / out.audio.shape[-1] - 330) < 5


def test_image_vae_tasks_frame_by_frame():
    pipe = SkyReelsV4InpaintPipeline.from_pipe(build_tiny_pipeline(video_vae="image"))
    image = random_image(5)
    out = run(pipe, image=image, preserve_unmasked=True, output_type="latent")
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None] * 2 - 1
    torch.testing.assert_close(out.frames[:, :, 0], image_latent(pipe.vae, pixels), rtol=0, atol=1e-6)
    assert out.frames.shape[2] == FRAMES  # no temporal compression: one latent frame per frame
    video, mask = random_video(), np.ones((FRAMES, SIZE, SIZE), np.float32)
    mask[3:6, :, 16:] = 0  # only frames 3-5 regenerated: the others are conditions, frame by frame
    edited = run(pipe, video=video, mask=mask)
    np.testing.assert_array_equal(edited.frames[0][mask.astype(bool)], video[mask.astype(bool)])


# ---------------------------------------------------------------------- video-to-audio and audio-to-video


def transformer_calls(pipe, call):
    """The keyword arguments of every transformer call made by `call()`."""
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda m, a, kw: calls.append(kw), with_kwargs=True)
    try:
        out = call()
    finally:
        handle.remove()
    return out, calls


def test_video_to_audio_keeps_every_frame_and_generates_the_sound(pipe):
    video = (random_video() * 255).round().astype(np.uint8)
    out, calls = transformer_calls(pipe, lambda: run(pipe, video=video, guidance_scale=3.0))
    np.testing.assert_array_equal(out.frames[0], video.astype(np.float32) / 255)  # returned exactly as given
    assert out.audio.shape == (1, 1, round(FRAMES / 16 * 44100)) and np.isfinite(out.audio).all()
    # The video is a clean condition: the same latents at timestep 0 in every call (conditional and unconditional),
    # its mask all ones; the audio walks down the schedule.
    assert len(calls) == 4
    first = calls[0]["hidden_states"]
    assert all(torch.equal(c["hidden_states"], first) and not c["timestep"].any() for c in calls)
    assert first[:, -1].eq(1).all()
    assert calls[0]["audio_timestep"][0] > calls[2]["audio_timestep"][0] > 0


def test_video_to_audio_returns_frames_of_any_size_and_reads_files(pipe, tmp_path):
    from skyreels_diffusers.utils.media import export_to_video_with_audio

    big = (np.random.RandomState(2).rand(FRAMES, 48, 40, 3) * 255).astype(np.uint8)
    out = run(pipe, video=big)  # the model sees it at 32x32; the output is the input
    np.testing.assert_array_equal(out.frames[0], big.astype(np.float32) / 255)
    # A file at another frame rate is resampled to the model's 16 fps first.
    path = export_to_video_with_audio(big[:6].repeat(3, axis=0), str(tmp_path / "in.mp4"), fps=32)
    out = run(pipe, video=path)
    assert out.frames.shape[1] == 9 and out.audio.shape == (1, 1, round(9 / 16 * 44100))


def test_audio_to_video_returns_the_given_track_and_follows_its_length(pipe):
    rate = 44100
    track = 0.3 * np.sin(2 * np.pi * 330 * np.arange(round(0.8 * rate)) / rate).astype(np.float32)
    out, calls = transformer_calls(pipe, lambda: run(pipe, audio=track, audio_sample_rate=rate, guidance_scale=1.0))
    np.testing.assert_array_equal(out.audio[0, 0], track)  # returned exactly as given
    assert out.frames.shape[1] == 13  # 0.8 s at 16 fps, as 4k+1 frames: 13 (0.8125 s)
    first = calls[0]["audio_hidden_states"]
    assert all(torch.equal(c["audio_hidden_states"], first) and not c["audio_timestep"].any() for c in calls)
    assert calls[0]["timestep"][0] > calls[1]["timestep"][0] > 0


def test_image_animated_to_a_sound(pipe):
    from skyreels_diffusers.pipelines.vae_utils import decode_video

    rate = 44100  # the audio VAE's rate: the track comes back sample for sample
    track = np.random.RandomState(0).uniform(-0.5, 0.5, round(FRAMES / 16 * rate)).astype(np.float32)
    image = random_image()
    out = run(pipe, image=image, audio=track, audio_sample_rate=rate, preserve_unmasked=True)
    assert out.frames.shape == (1, FRAMES, SIZE, SIZE, 3)
    np.testing.assert_array_equal(out.audio[0, 0], track)  # the given track, returned as given
    # Frame 0 is the image as the VAE reproduces it (the known latents are re-injected): measured max difference 0.0;
    # 0.93 without re-injection (the tiny VAE is random, so the image itself is far from its reconstruction).
    with torch.no_grad():
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None, :, None] * 2 - 1
        decoded = decode_video(pipe.vae, encode_video(pipe.vae, pixels))[0, :, 0].permute(1, 2, 0)
    np.testing.assert_allclose(out.frames[0][0], ((decoded + 1) / 2).clamp(0, 1).numpy(), rtol=0, atol=1e-5)


TRACK = (0.3 * np.sin(2 * np.pi * 330 * np.arange(round(0.8 * 44100)) / 44100)).astype(np.float32)


@pytest.mark.parametrize("with_video", [False, True])
def test_audio_extension_keeps_the_prefix_clean_at_timestep_zero(pipe, with_video):
    video = {"video": random_video(), "num_condition_frames": 3} if with_video else {}
    seconds = 0.2  # 8820 samples: 8 whole audio latents of 1024 samples kept, the other 17 of 25 generated
    out, calls = transformer_calls(
        pipe,
        lambda: run(
            pipe, audio=TRACK, audio_sample_rate=44100, audio_condition_seconds=seconds, num_frames=FRAMES, **video
        ),
    )
    known = encode_audio_track(pipe.audio_vae, torch.from_numpy(TRACK[None, None]), 25)[:, :, :8]
    for call in calls:  # every call: the prefix exactly the given latents at timestep 0, the rest generated
        assert call["audio_timestep"].shape == (1, 25)
        assert not call["audio_timestep"][:, :8].any() and call["audio_timestep"][:, 8:].gt(0).all()
        torch.testing.assert_close(call["audio_hidden_states"][:, :, :8], known, rtol=0, atol=0)
    assert not torch.equal(calls[0]["audio_hidden_states"][:, :, 8:], calls[-1]["audio_hidden_states"][:, :, 8:])
    np.testing.assert_array_equal(out.audio[0, 0, :8820], TRACK[:8820])  # the kept samples, exactly
    assert out.audio.shape == (1, 1, round(FRAMES / 16 * 44100)) and out.frames.shape[1] == FRAMES
    if with_video:
        mask = calls[0]["hidden_states"][:, -1]  # the video extension's mask: the first frames kept, the last not
        assert mask[:, 0].eq(1).all() and not mask[:, -1].any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"video": np.zeros((0, SIZE, SIZE, 3), np.float32)}, "no frames"),
        ({"audio": np.zeros(0, np.float32), "audio_sample_rate": 16000}, "`audio`.*at least one sample"),
        ({"audio": np.zeros(9000, np.float32), "audio_sample_rate": 16000}, "silent"),
        ({"audio": np.full(9000, np.nan, np.float32), "audio_sample_rate": 16000}, "`audio`.*NaN"),
        ({"video": random_video(), "audio": np.ones(9000, np.float32) * 0.1, "audio_sample_rate": 16000}, "Nothing"),
        ({"video": random_video(), "generate_audio": False}, "Nothing"),
        ({"audio": np.ones(16000, np.float32) * 0.1, "audio_sample_rate": 16000, "num_frames": 9}, "num_frames"),
        (
            {"audio": np.ones(9000, np.float32) * 0.1, "audio_sample_rate": 16000, "audio_duration": 0.5},
            "audio_duration",
        ),
        ({"video": random_video(), "num_frames": 5}, "num_frames"),
        ({"video": random_video(), "image": random_image()}, "image"),
        ({"video": random_video(), "reference_images": [random_image()]}, "reference"),
        (
            {
                "audio": np.ones(9000, np.float32) * 0.1,
                "audio_sample_rate": 16000,
                "audio_reference": np.ones(100),
                "audio_reference_sample_rate": 16000,
            },
            "audio_reference",
        ),
        ({"video_lead_steps": -1}, "video_lead_steps"),
        # issue 32: masks of another batch, NaN or out of range; audio shorter than one latent; too many frames
        (
            {"video": random_video(), "mask": np.ones((2, FRAMES, SIZE, SIZE), np.float32)},
            r"`mask` of shape \(2, 9, 32, 32\) holds 2 masks .*B = 1",
        ),
        (
            {"video": random_video(), "mask": np.ones((2, FRAMES, SIZE, SIZE)), "num_videos_per_prompt": 3},
            r"holds 2 masks .*\(B = 3: prompts x `num_videos_per_prompt`\)",
        ),
        ({"video": random_video(), "mask": np.full((SIZE, SIZE), np.nan)}, "`mask` contains NaN"),
        (
            {"video": random_video(), "mask": np.full((SIZE, SIZE), 255.0)},
            r"`mask` values must be in \[0, 1\] .* got float64 values in \[255, 255\]",
        ),
        ({"video": random_video(), "mask": -torch.ones(SIZE, SIZE)}, r"got float32 values in \[-1, -1\]"),
        ({"video": random_video(), "mask": np.full((SIZE, SIZE), 255, np.int64)}, r"got int64 values in \[255, 255\]"),
        (
            {"audio": np.full(1, 0.5, np.float32), "audio_sample_rate": 44100},
            r"`audio` lasts 2.26757e-05 s \(1 sample\(s\) .*at least one audio latent: 1024 samples \(0.02322 s\)",
        ),
        ({"image": random_image(), "num_frames": 100_001}, r"^`num_frames`=100001 is more than one call may make"),
        # issue 30: audio extension
        ({"audio_condition_seconds": 0.2}, r"`audio_condition_seconds`=0.2 keeps the start of a given soundtrack"),
        ({"audio": TRACK, "audio_sample_rate": 44100, "audio_condition_seconds": -0.1}, "audio_condition_seconds"),
        (
            {"audio": TRACK[:4410], "audio_sample_rate": 44100, "audio_condition_seconds": 0.2},
            r"`audio_condition_seconds`=0.2 exceeds the given soundtrack, which lasts 0.100 s",
        ),
        (
            {"audio": TRACK, "audio_sample_rate": 44100, "audio_condition_seconds": 0.6, "num_frames": 9},
            r"must be shorter than the clip \(0.562 s",
        ),
        (
            {"audio": TRACK, "audio_sample_rate": 44100, "audio_condition_seconds": 0.01},
            "shorter than one audio latent",
        ),
        (
            {"audio": TRACK, "audio_sample_rate": 44100, "audio_condition_seconds": 0.2, "generate_audio": False},
            "generate_audio=False",
        ),
        (
            {"generate_video": False, "image": random_image()},
            "`image` conditions the video, but `generate_video=False`",
        ),
        ({"generate_video": False, "generate_audio": False}, "Nothing to generate"),
    ],
)
def test_bad_video_and_audio_conditions_are_refused_before_any_model_work(pipe, kwargs, match):
    with refused_before_model_work(pipe, ValueError, match):
        run(pipe, **kwargs)


@pytest.mark.slow
def test_one_mask_per_generated_video(pipe):
    # Video 0 keeps every pixel, video 1 regenerates everything: each output follows its own mask.
    video = random_video()
    masks = np.stack([np.ones((FRAMES, SIZE, SIZE), np.float32), np.zeros((FRAMES, SIZE, SIZE), np.float32)])
    out = run(pipe, video=video, mask=masks, num_videos_per_prompt=2)
    np.testing.assert_array_equal(out.frames[0], video)
    assert np.abs(out.frames[1] - video).max() > 0.05
    # A batch of one applies to every video, as the same mask without the batch axis does.
    single = run(pipe, video=video, mask=masks[1:], num_videos_per_prompt=2, output_type="latent")
    plain = run(pipe, video=video, mask=masks[1], num_videos_per_prompt=2, output_type="latent")
    torch.testing.assert_close(single.frames, plain.frames, rtol=0, atol=0)


def test_uint8_masks_are_scaled_by_255(pipe):
    keep = np.ones((SIZE, SIZE), np.float32)
    keep[8:24, 8:24] = 0
    as_uint8 = run(pipe, video=random_video(), mask=(keep * 255).astype(np.uint8), output_type="latent")
    as_float = run(pipe, video=random_video(), mask=keep, output_type="latent")
    torch.testing.assert_close(as_uint8.frames, as_float.frames, rtol=0, atol=0)


def test_the_former_name_keyframes_is_gone(pipe):
    # No release has shipped, so renamed arguments are simply gone: Python names the unknown argument.
    with pytest.raises(TypeError, match="keyframes"):
        run(pipe, keyframes=[(4, random_image(3))], output_type="latent")
