"""Tests of skyreels_diffusers.utils.media: MP4 export with sound, audio/video loading and resampling."""

import os

import av
import numpy as np
import PIL.Image
import pytest
import torch

from skyreels_diffusers.utils import export_to_video_with_audio, load_audio, load_video, load_video_audio


NUM_FRAMES, HEIGHT, WIDTH, FPS, SAMPLE_RATE = 17, 32, 32, 16, 44100
VIDEO_SAMPLES = round(NUM_FRAMES * SAMPLE_RATE / FPS)  # audio samples spanning the clip


def sine(num_samples, sample_rate, frequency=440.0, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(num_samples) / sample_rate)).astype(np.float32)


AUDIO = sine(VIDEO_SAMPLES, SAMPLE_RATE)  # 440 Hz, exactly the clip's duration


def peak_frequency(waveform, sample_rate):
    spectrum = np.abs(np.fft.rfft(np.asarray(waveform, dtype=np.float64)))
    return np.fft.rfftfreq(len(waveform), 1 / sample_rate)[np.argmax(spectrum)]


def frame_colours(num_frames=NUM_FRAMES):
    """A distinct, saturated RGB colour per frame (uint8, shape (num_frames, 3))."""
    t = np.arange(num_frames) / num_frames
    return np.stack([40 + 180 * t, 220 - 180 * t, np.where(np.arange(num_frames) % 2, 200, 50)], axis=1).round()


def solid_clip(height=HEIGHT, width=WIDTH, num_frames=NUM_FRAMES):
    """Float (F, H, W, 3) clip in [0, 1], each frame one solid colour."""
    colours = frame_colours(num_frames) / 255.0
    return np.broadcast_to(colours[:, None, None, :], (num_frames, height, width, 3)).astype(np.float32)


def probe(path):
    with av.open(str(path)) as container:
        video, audio = container.streams.video, container.streams.audio
        info = {
            "num_video": len(video),
            "num_audio": len(audio),
            "video_codec": video[0].codec_context.name,
            "fps": video[0].average_rate,
            "video_duration": float(video[0].duration * video[0].time_base),
        }
        if audio:
            info["audio_codec"] = audio[0].codec_context.name
            info["sample_rate"] = audio[0].codec_context.sample_rate
            info["audio_duration"] = float(audio[0].duration * audio[0].time_base)
    return info


def rms(x):
    return float(np.sqrt(np.mean(np.square(np.asarray(x, dtype=np.float64)))))


# ---------------------------------------------------------------------------------------------------------------------
# export_to_video_with_audio
# ---------------------------------------------------------------------------------------------------------------------


def as_input(kind, clip):
    if kind == "pil":
        return [PIL.Image.fromarray((frame * 255).round().astype(np.uint8)) for frame in clip]
    if kind == "np":
        return clip
    if kind == "pt_float":
        return torch.from_numpy(clip.copy())
    return torch.from_numpy((clip * 255).round().astype(np.uint8))  # pt_uint8


@pytest.mark.parametrize("kind", ["pil", "np", "pt_float", "pt_uint8"])
@pytest.mark.parametrize("audio_samples", [VIDEO_SAMPLES, 70000, 20000], ids=["exact", "longer", "shorter"])
def test_export_streams_and_durations(tmp_path, kind, audio_samples):
    audio = sine(audio_samples, SAMPLE_RATE)
    path = tmp_path / "clip.mp4"
    returned = export_to_video_with_audio(
        as_input(kind, solid_clip()), path, FPS, audio=audio, audio_sample_rate=SAMPLE_RATE
    )
    assert returned == str(path)

    info = probe(path)
    assert (info["num_video"], info["num_audio"]) == (1, 1)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert info["fps"] == FPS
    assert info["sample_rate"] == SAMPLE_RATE
    assert info["video_duration"] == pytest.approx(NUM_FRAMES / FPS, abs=1e-6)
    assert abs(info["audio_duration"] - info["video_duration"]) <= 1 / FPS

    # Longer audio was cut to the video's duration (AAC adds at most ~one 1024-sample frame of tail); shorter audio
    # holds the sine up to its own end and was padded with silence up to the video's end.
    decoded = load_audio(path, SAMPLE_RATE)
    assert decoded.shape[0] == 2
    assert VIDEO_SAMPLES <= decoded.shape[1] <= VIDEO_SAMPLES + 2048
    end = min(audio_samples, VIDEO_SAMPLES)
    assert rms(decoded[0, 2048 : end - 2048]) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    if audio_samples < VIDEO_SAMPLES:
        assert rms(decoded[0, end + 2048 : VIDEO_SAMPLES]) < 0.01


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity control")
def test_export_bytes_do_not_depend_on_visible_cores(tmp_path):
    # x264 sizes its thread pool from the visible cores; the export pins it, so the same clip gives the same bytes.
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (NUM_FRAMES, 128, 128, 3), dtype=np.uint8)  # x264 uses fewer threads below ~128 rows
    all_cores = os.sched_getaffinity(0)
    paths = []
    try:
        for cores in (all_cores, {min(all_cores)}, all_cores):
            os.sched_setaffinity(0, cores)
            paths.append(tmp_path / f"clip{len(paths)}.mp4")
            export_to_video_with_audio(clip, paths[-1], fps=FPS, audio=AUDIO, audio_sample_rate=SAMPLE_RATE)
    finally:
        os.sched_setaffinity(0, all_cores)
    assert len({path.read_bytes() for path in paths}) == 1


def test_export_without_audio(tmp_path):
    path = export_to_video_with_audio(solid_clip(), tmp_path / "silent.mp4", 8)
    info = probe(path)
    assert (info["num_video"], info["num_audio"]) == (1, 0)
    assert info["fps"] == 8
    assert load_video_audio(path, 16000)[2] is None


def test_export_mono_and_stereo_audio(tmp_path):
    # (samples,) mono is written as two equal channels.
    path = export_to_video_with_audio(
        solid_clip(), tmp_path / "mono.mp4", FPS, audio=torch.from_numpy(AUDIO), audio_sample_rate=SAMPLE_RATE
    )
    decoded = load_audio(path, SAMPLE_RATE)
    assert decoded.shape[0] == 2  # the AAC track is always stereo
    torch.testing.assert_close(decoded[0], decoded[1], atol=0.01, rtol=0)  # lossy codec

    # (2, samples) stereo keeps its channel order.
    stereo = np.stack([sine(VIDEO_SAMPLES, SAMPLE_RATE, 440.0), sine(VIDEO_SAMPLES, SAMPLE_RATE, 1000.0)])
    path = export_to_video_with_audio(solid_clip(), tmp_path / "stereo.mp4", FPS, stereo, SAMPLE_RATE)
    decoded = load_audio(path, SAMPLE_RATE)[:, :VIDEO_SAMPLES]
    assert peak_frequency(decoded[0], SAMPLE_RATE) == pytest.approx(440, abs=2)
    assert peak_frequency(decoded[1], SAMPLE_RATE) == pytest.approx(1000, abs=2)


def test_load_video_frames_and_colours(tmp_path):
    path = export_to_video_with_audio(solid_clip(), tmp_path / "colours.mp4", FPS)
    frames, fps = load_video(path)
    assert fps == FPS
    assert len(frames) == NUM_FRAMES
    assert all(frame.mode == "RGB" and frame.size == (WIDTH, HEIGHT) for frame in frames)
    means = np.stack([np.asarray(frame, dtype=np.float64).mean(axis=(0, 1)) for frame in frames])
    np.testing.assert_allclose(means, frame_colours(), atol=12)  # lossy yuv420p H.264


def test_odd_size_is_padded_to_even(tmp_path):
    clip = solid_clip(height=31, width=33, num_frames=5)
    clip[:, :, -1] = 0.0  # a black last column must be repeated into the padding column
    path = export_to_video_with_audio(clip, tmp_path / "odd.mp4", FPS)
    frames, _ = load_video(path)
    assert len(frames) == 5
    assert frames[0].size == (34, 32)
    last_columns = np.asarray(frames[2], dtype=np.float64)[8:24, -2:].mean(axis=(0, 2))
    assert (last_columns < 40).all()
    centre = np.asarray(frames[2], dtype=np.float64)[8:24, 8:24].mean(axis=(0, 1))
    np.testing.assert_allclose(centre, frame_colours(5)[2], atol=12)


def test_load_video_audio_matches_video_duration(tmp_path):
    path = export_to_video_with_audio(
        solid_clip(), tmp_path / "av.mp4", FPS, audio=sine(30000, SAMPLE_RATE, 1000.0), audio_sample_rate=SAMPLE_RATE
    )
    frames, fps, audio = load_video_audio(path, 16000, num_channels=1)
    assert len(frames) == NUM_FRAMES and fps == FPS
    assert audio.dtype == torch.float32
    assert audio.shape == (1, round(NUM_FRAMES * 16000 / FPS))
    assert peak_frequency(audio[0, :10000], 16000) == pytest.approx(1000, abs=2)


# ---------------------------------------------------------------------------------------------------------------------
# load_audio
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source_rate", [16000, 48000])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_load_audio_resamples_arrays(source_rate, as_tensor):
    waveform = sine(source_rate, source_rate, 440.0)  # one second
    if as_tensor:
        waveform = torch.from_numpy(waveform)
    out = load_audio(waveform, SAMPLE_RATE, sample_rate=source_rate)
    assert out.dtype == torch.float32
    assert out.shape == (1, SAMPLE_RATE)
    assert peak_frequency(out[0], SAMPLE_RATE) == pytest.approx(440, abs=1)
    assert rms(out[0, 1000:-1000]) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize("source_rate", [8000, 16000, 22050, 48000])
@pytest.mark.parametrize("num_samples", [1, 7, 100, 1001, 16003, 100003])
def test_load_audio_length_including_resampler_tail(source_rate, num_samples):
    waveform = np.random.default_rng(num_samples).uniform(-0.5, 0.5, (2, num_samples)).astype(np.float32)
    out = load_audio(waveform, SAMPLE_RATE, sample_rate=source_rate)
    assert out.shape == (2, round(num_samples * SAMPLE_RATE / source_rate))


def test_load_audio_keeps_timing():
    # A step at 0.5 s must stay at 0.5 s after resampling (no filter delay left in the output).
    waveform = np.zeros(16000, np.float32)
    waveform[8000:] = 0.5
    out = load_audio(waveform, SAMPLE_RATE, sample_rate=16000)
    assert abs(int(np.argmax(out[0].numpy() > 0.25)) - SAMPLE_RATE // 2) <= 2
    assert rms(out[0, -2000:]) == pytest.approx(0.5, rel=0.02)  # the tail is not lost


def test_load_audio_same_rate_is_unchanged():
    waveform = np.random.default_rng(0).uniform(-1, 1, (2, 5000)).astype(np.float32)
    out = load_audio(waveform, 24000, sample_rate=24000)
    np.testing.assert_array_equal(out.numpy(), waveform)
    out.zero_()
    assert np.abs(waveform).max() > 0  # the result does not share memory with the input


def test_load_audio_channel_conversion():
    stereo = np.stack([np.full(4800, 0.5), np.full(4800, -0.1)]).astype(np.float32)
    mono = load_audio(stereo, 48000, sample_rate=48000, num_channels=1)
    assert mono.shape == (1, 4800)
    np.testing.assert_allclose(mono.numpy(), 0.2, atol=1e-6)  # mean of the channels, no -3 dB

    upmixed = load_audio(stereo[0], 24000, sample_rate=48000, num_channels=2)
    assert upmixed.shape == (2, 2400)
    torch.testing.assert_close(upmixed[0], upmixed[1])
    np.testing.assert_allclose(upmixed[:, 200:-200].numpy(), 0.5, atol=1e-3)

    assert load_audio(stereo, 48000, sample_rate=48000).shape == (2, 4800)
    assert load_audio(stereo, 48000, sample_rate=48000, num_channels=2).shape == (2, 4800)


def write_wav(path, waveform, sample_rate, layout):
    """Writes a (channels, samples) float waveform as 16-bit PCM WAV with PyAV."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(
            (waveform * 32767).round().astype(np.int16).T.reshape(1, -1).copy(), format="s16", layout=layout
        )
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_load_audio_from_wav_file(tmp_path):
    path = tmp_path / "tone.wav"
    write_wav(path, sine(22050, 22050, 300.0)[None], 22050, "mono")
    out = load_audio(path, 16000)
    assert out.shape == (1, 16000)
    assert peak_frequency(out[0], 16000) == pytest.approx(300, abs=1)
    assert load_audio(str(path), 16000, num_channels=2).shape == (2, 16000)


def test_load_audio_downmixes_surround_file(tmp_path):
    path = tmp_path / "surround.wav"
    write_wav(path, np.tile(sine(8000, 8000, 500.0), (6, 1)), 8000, "5.1")
    assert load_audio(path, 8000).shape == (6, 8000)
    stereo = load_audio(path, 16000, num_channels=2)
    assert stereo.shape == (2, 16000)
    assert peak_frequency(stereo[0], 16000) == pytest.approx(500, abs=1)
    assert load_audio(path, 16000, num_channels=1).shape == (1, 16000)


def test_load_audio_max_duration(tmp_path):
    waveform = sine(16000, 16000)  # 1 s
    assert load_audio(waveform, 16000, sample_rate=16000, max_duration=1.0).shape == (1, 16000)
    with pytest.raises(ValueError, match="`source`.*max_duration"):
        load_audio(waveform, 16000, sample_rate=16000, max_duration=0.5)

    path = tmp_path / "long.wav"
    write_wav(path, sine(16000, 8000)[None], 8000, "mono")  # 2 s
    assert load_audio(path, 8000, max_duration=2.5).shape == (1, 16000)
    with pytest.raises(ValueError, match="`source`.*max_duration"):
        load_audio(path, 8000, max_duration=1.0)


# ---------------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"video": np.zeros((4, 32, 32), np.float32)}, ValueError, r"`video`.*\(frames, height, width, 3\)"),
        ({"video": np.zeros((1, 4, 32, 32, 3), np.float32)}, ValueError, r"video\[0\]"),
        ({"video": np.zeros((4, 3, 32, 32), np.float32)}, ValueError, r"`video`.*got shape \(4, 3, 32, 32\)"),
        ({"video": np.zeros((0, 32, 32, 3), np.float32)}, ValueError, r"`video`"),
        ({"video": np.full((4, 32, 32, 3), 2.0, np.float32)}, ValueError, r"`video`.*\[0, 1\]"),
        ({"video": torch.full((4, 32, 32, 3), -0.5)}, ValueError, r"`video`.*\[0, 1\]"),
        ({"video": np.zeros((4, 32, 32, 3), np.int32)}, TypeError, r"`video`.*int32"),
        ({"video": []}, TypeError, r"`video`.*PIL"),
        ({"video": [np.zeros((32, 32, 3))]}, TypeError, r"`video`.*PIL"),
        ({"video": [PIL.Image.new("RGB", (32, 32)), PIL.Image.new("RGB", (16, 32))]}, ValueError, r"same size"),
        ({"video": "frames.mp4"}, TypeError, r"`video`.*str"),
        ({"output_path": "clip.gif"}, ValueError, r"`output_path`.*\.mp4"),
        ({"output_path": 3}, TypeError, r"`output_path`.*int"),
        ({"fps": 23.976}, ValueError, r"`fps`.*23.976"),
        ({"fps": 0}, ValueError, r"`fps`"),
        ({"fps": float("inf")}, ValueError, r"`fps`.*inf"),
        ({"fps": "16"}, TypeError, r"`fps`.*str"),
        ({"audio": AUDIO}, ValueError, r"`audio_sample_rate` is required"),
        ({"audio_sample_rate": 44100}, ValueError, r"`audio_sample_rate`.*without `audio`"),
        ({"audio": AUDIO, "audio_sample_rate": 44000}, ValueError, r"`audio_sample_rate`=44000.*44100"),
        ({"audio": AUDIO, "audio_sample_rate": 44100.0}, TypeError, r"`audio_sample_rate`.*float"),
        ({"audio": AUDIO.tolist(), "audio_sample_rate": 44100}, TypeError, r"`audio`.*list"),
        ({"audio": np.zeros((3, 1000), np.float32), "audio_sample_rate": 44100}, ValueError, r"`audio`.*\(3, 1000\)"),
        ({"audio": np.zeros((1000, 2), np.float32), "audio_sample_rate": 44100}, ValueError, r"`audio`.*\(1000, 2\)"),
        ({"audio": np.zeros((1, 2, 100), np.float32), "audio_sample_rate": 44100}, ValueError, r"`audio`.*shape"),
        ({"audio": np.zeros(100, np.int16), "audio_sample_rate": 44100}, TypeError, r"`audio`.*int16"),
        ({"audio": np.full(100, np.nan, np.float32), "audio_sample_rate": 44100}, ValueError, r"`audio`.*NaN"),
    ],
)
def test_export_validation(tmp_path, kwargs, error, match):
    args = {"video": solid_clip(num_frames=4), "output_path": tmp_path / "clip.mp4", "fps": FPS, **kwargs}
    if isinstance(args["output_path"], str):
        args["output_path"] = str(tmp_path / args["output_path"])
    with pytest.raises(error, match=match):
        export_to_video_with_audio(**args)
    assert not (tmp_path / "clip.mp4").exists()  # nothing written on bad input


@pytest.mark.parametrize(
    "source, kwargs, error, match",
    [
        (AUDIO, {}, ValueError, r"`sample_rate` is required"),
        (AUDIO, {"sample_rate": 0}, ValueError, r"`sample_rate`.*0"),
        (AUDIO, {"sample_rate": 16000.0}, TypeError, r"`sample_rate`.*float"),
        (AUDIO, {"sample_rate": 16000, "target_sample_rate": -1}, ValueError, r"`target_sample_rate`.*-1"),
        (AUDIO, {"sample_rate": 16000, "num_channels": 3}, ValueError, r"`num_channels`.*3"),
        (AUDIO, {"sample_rate": 16000, "max_duration": 0}, ValueError, r"`max_duration`.*0"),
        (AUDIO, {"sample_rate": 16000, "max_duration": "1"}, TypeError, r"`max_duration`.*str"),
        (AUDIO.tolist(), {"sample_rate": 16000}, TypeError, r"`source`.*list"),
        (np.zeros((4, 100), np.float32), {"sample_rate": 16000}, ValueError, r"`source`.*\(4, 100\)"),
        (np.zeros((1, 0), np.float32), {"sample_rate": 16000}, ValueError, r"`source`.*\(1, 0\)"),
        (torch.zeros(100, dtype=torch.int16), {"sample_rate": 16000}, TypeError, r"`source`.*int16"),
        ("missing.wav", {}, FileNotFoundError, r"`source`.*missing.wav"),
        ("missing.wav", {"sample_rate": 16000}, ValueError, r"`sample_rate` is only for array sources"),
    ],
)
def test_load_audio_validation(source, kwargs, error, match):
    kwargs = {"target_sample_rate": 16000, **kwargs}
    with pytest.raises(error, match=match):
        load_audio(source, **kwargs)


def test_load_audio_file_without_audio_or_not_media(tmp_path):
    silent = export_to_video_with_audio(solid_clip(num_frames=2), tmp_path / "silent.mp4", FPS)
    with pytest.raises(ValueError, match="`source` has no audio stream"):
        load_audio(silent, 16000)
    text = tmp_path / "notes.txt"
    text.write_text("not a media file")
    with pytest.raises(ValueError, match="`source` could not be opened"):
        load_audio(text, 16000)
    with pytest.raises(ValueError, match="`path` could not be opened"):
        load_video(text)


def test_load_video_validation(tmp_path):
    with pytest.raises(FileNotFoundError, match="`path`") as missing:
        load_video(tmp_path / "missing.mp4")
    assert isinstance(missing.value, ValueError)  # a bad argument, like the rest
    with pytest.raises(TypeError, match="`path`.*int"):
        load_video(3)
    wav = tmp_path / "tone.wav"
    write_wav(wav, sine(800, 8000)[None], 8000, "mono")
    with pytest.raises(ValueError, match="`path` has no video stream"):
        load_video(wav)
    with pytest.raises(ValueError, match="`target_sample_rate`"):
        load_video_audio(wav, 0)


def write_flat_video(path, num_frames, size):
    """A tiny file that decodes to `num_frames` frames of `size` x `size` (flat grey compresses to almost nothing)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 90, np.uint8), format="rgb24")
        for _ in range(num_frames):
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def test_a_small_file_that_expands_to_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.mp4"
    write_flat_video(path, num_frames=60, size=512)  # 15.7M pixels from a few kB
    assert path.stat().st_size < 50_000
    decoded = []
    original = av.VideoFrame.to_image
    monkeypatch.setattr(av.VideoFrame, "to_image", lambda self, *a, **k: decoded.append(1) or original(self, *a, **k))
    with pytest.raises(ValueError, match="`path` holds 60 frames of 512x512 = 15728640 pixels; the limit is 1000000"):
        load_video(path, max_pixels=1_000_000)
    assert not decoded  # refused from the header's frame count
    frames, _ = load_video(path, max_pixels=60 * 512 * 512)
    assert len(frames) == 60 and len(decoded) == 60


def test_a_video_without_a_frame_count_stops_decoding_at_the_pixel_budget(tmp_path):
    path = tmp_path / "bomb.mkv"  # Matroska keeps no frame count in its header
    write_flat_video(path, num_frames=60, size=512)
    with av.open(str(path)) as container:
        assert not container.streams.video[0].frames
    with pytest.raises(ValueError, match="holds more than 1000000 pixels"):
        load_video(path, max_pixels=1_000_000)
