"""Tests of the Gradio demo (examples/gradio_app/app.py): its validation helpers, every tab's generation path on
tiny random components, and the real page driven in headless Chromium (Debian's /usr/bin/chromium, never a
downloaded browser)."""

import importlib.util
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import av
import numpy as np
import PIL.Image
import pytest


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # tests make no outside calls

import gradio as gr  # noqa: E402

from skyreels_diffusers.utils.media import export_to_video_with_audio  # noqa: E402


# Gradio's queue uses a pandas option that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

APP_PATH = Path(__file__).resolve().parents[1] / "examples" / "gradio_app" / "app.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def load_app():
    spec = importlib.util.spec_from_file_location("skyreels_gradio_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app = load_app()
LIMITS = app.Limits(
    height=32,
    width=32,
    num_frames=9,
    fps=16.0,
    size_multiple=4,
    temporal_compression=4,
    max_references=3,
    max_audio_reference_seconds=10.0,
    has_audio=True,
)
SETTINGS = {
    "seed": 0,
    "randomize_seed": False,
    "steps": 2,
    "guidance_scale": 5.0,
    "audio_guidance_scale": 4.0,
    "stg_scale": 0.0,
    "stg_block": 0,
    "modality_scale": 1.0,
    "guidance_rescale": 0.0,
    "height": 32,
    "width": 32,
    "duration": 9 / 16,  # 9 frames at 16 fps
    "refine": False,
    "negative_prompt": "",
}


def write_clip(path, num_frames=9, size=(32, 32), fps=16, with_audio=True):
    frames = np.random.default_rng(0).integers(0, 255, (num_frames, size[1], size[0], 3), dtype=np.uint8)
    audio = 0.1 * np.sin(np.arange(round(num_frames * 44100 / fps)) / 10).astype(np.float32) if with_audio else None
    return export_to_video_with_audio(
        frames, path, fps=fps, audio=audio, audio_sample_rate=44100 if with_audio else None
    )


def write_wav(path, seconds: float, rate: int = 16000) -> str:
    """A 16-bit mono WAV of clicks, written with PyAV (browsers play WAV whatever codecs they were built with)."""
    samples = np.zeros(round(seconds * rate), np.int16)
    samples[:: rate // 8] = 20000
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return str(path)


def streams_of(path_or_file):
    with av.open(path_or_file) as container:
        return {stream.type: stream.codec_context.name for stream in container.streams}


# ---------------------------------------------------------------------------------------------------------------------
# Validation helpers (no model)
# ---------------------------------------------------------------------------------------------------------------------


def test_prompt_is_required_and_bounded():
    assert app.check_prompt("  <text>a</text> ") == "<text>a</text>"
    for empty in (None, "", "   \n"):
        with pytest.raises(app.InputError, match="Please enter a prompt"):
            app.check_prompt(empty)
    with pytest.raises(app.InputError, match="characters long"):
        app.check_prompt("a" * (app.MAX_PROMPT_CHARS + 1))


def test_size_and_duration_follow_the_model():
    assert app.check_size(32.0, 64, LIMITS) == (32, 64)
    for height, width in ((30, 32), (32, 68), (0, 32), (None, 32)):
        with pytest.raises(app.InputError, match="multiple of 4|whole number|must be a number"):
            app.check_size(height, width, LIMITS)
    # Durations are num_frames / fps, the pipelines' convention: the 9-frame default is 9/16 s, not 8/16.
    assert LIMITS.max_num_frames == 17 and LIMITS.default_duration == 9 / 16 and LIMITS.max_duration == 17 / 16
    assert app.num_frames_for(LIMITS.default_duration, LIMITS) == 9 and app.num_frames_for(17 / 16, LIMITS) == 17
    assert app.num_frames_for(0.5, LIMITS) == 9 and app.num_frames_for(LIMITS.min_duration, LIMITS) == 5
    # Generated clips reach 10 windows of the trained 9 frames, chained (issue 30): 81 frames
    assert LIMITS.max_generated_frames == 81 and app.num_frames_for(81 / 16, LIMITS) == 81
    for bad in (0, -1, 5.1, None, "long"):
        with pytest.raises(app.InputError, match="Duration"):
            app.num_frames_for(bad, LIMITS)


def test_durations_follow_the_vae_frame_grid_read_from_the_pipeline():
    """The slider offers only frame counts the model makes, 1 + k * temporal compression, whatever that is."""
    for temporal, num_frames in ((1, 17), (4, 17), (4, 9)):
        limits = app.Limits(**{**LIMITS.__dict__, "temporal_compression": temporal, "num_frames": num_frames})
        # The default duration gives the model's own clip length (the tiny default: 17 frames, not 16).
        assert app.num_frames_for(limits.default_duration, limits) == num_frames
        offered = np.arange(limits.min_duration, limits.max_generated_duration + 1e-9, limits.duration_step)
        counts = [app.num_frames_for(duration, limits) for duration in offered]
        assert all((count - 1) % temporal == 0 for count in counts), (temporal, counts)
        assert counts == sorted(set(counts)) and counts[-1] == limits.max_generated_frames
        assert [round(duration * limits.fps, 6) for duration in offered] == counts  # each one exact, none rounded
    assert (
        "1 + 4k frames" in LIMITS.frame_count_rule()
        and "whole frames" in app.Limits(**{**LIMITS.__dict__, "temporal_compression": 1}).frame_count_rule()
    )


def test_advanced_guidance_reaches_the_pipeline():
    settings = app.check_settings(dict(SETTINGS, stg_scale=1.0, stg_block=1, modality_scale=3.0), LIMITS)
    runner = app.DemoRunner.__new__(app.DemoRunner)
    runner.limits = LIMITS
    arguments = runner.common_arguments(None, {"num_frames": 9}, settings)
    assert arguments["stg_scale"] == 1.0 and arguments["spatio_temporal_guidance_blocks"] == [1]
    assert arguments["modality_scale"] == 3.0 and arguments["guidance_rescale"] == 0.0
    off = runner.common_arguments(None, {"num_frames": 9}, app.check_settings(SETTINGS, LIMITS))
    assert off["spatio_temporal_guidance_blocks"] is None  # STG off: no block, no pass


def test_durations_past_the_window_chain_windows(runner):
    """Issue 30: a duration past the trained clip chains windows (the pipeline's default overlap); the Refiner, which
    works on one window, is refused with it."""
    long = app.check_settings(dict(SETTINGS, duration=33 / 16), LIMITS)
    arguments = runner.common_arguments(runner.models.base, {}, long)
    assert arguments["num_frames"] == 33 and arguments["overlap_history"] >= 1
    assert "overlap_history" not in runner.common_arguments(
        runner.models.base, {}, app.check_settings(SETTINGS, LIMITS)
    )
    with pytest.raises(app.InputError, match="Refiner works on one window"):
        runner.common_arguments(
            runner.models.base, {}, app.check_settings(dict(SETTINGS, duration=33 / 16, refine=True), LIMITS)
        )


def test_settings_are_checked_together():
    settings = app.check_settings(dict(SETTINGS, negative_prompt="  blur "), LIMITS)
    assert settings.steps == 2 and settings.negative_prompt == "blur" and settings.height == 32
    assert app.check_settings(SETTINGS, LIMITS).negative_prompt is None
    bad = (
        ("steps", 0, "Steps"),
        ("seed", -1, "seed"),
        ("guidance_scale", 0.5, "Guidance"),
        ("stg_scale", 6, "STG scale"),
        ("stg_block", 2, "STG block"),
        ("modality_scale", 0.5, "Modality scale"),
        ("guidance_rescale", 1.5, "Guidance rescale"),
    )
    for key, value, match in bad:
        with pytest.raises(app.InputError, match=match):
            app.check_settings(dict(SETTINGS, **{key: value}), LIMITS)


def test_each_tab_shows_and_uses_its_own_settings():
    groups = {task: app.shown_settings(task, LIMITS) for task in app.TAB_SETTINGS}
    everything = {"size", "duration", "video_guidance", "audio_guidance", "advanced_guidance", "refine"}
    assert groups["text_to_video"] == groups["image_to_video"] == groups["extend"] == everything
    assert groups["edit"] == everything - {"duration"}  # the length follows the source video
    assert groups["audio_to_video"] == everything - {"duration", "audio_guidance"}  # the sound is given
    # the frames are given and returned as they are
    assert groups["video_to_audio"] == {"audio_guidance", "advanced_guidance"}
    mute = app.Limits(**{**LIMITS.__dict__, "has_audio": False})
    assert "audio_guidance" not in app.shown_settings("text_to_video", mute)
    # A setting a tab does not show keeps its default, whatever another tab left in it (even a bad value).
    odd = dict(SETTINGS, height=24, width=40, duration="long", refine=True, guidance_scale=9.0)
    settings = app.check_settings(odd, LIMITS, "video_to_audio")
    assert (settings.height, settings.width, settings.duration, settings.refine) == (
        32,
        32,
        LIMITS.default_duration,
        False,
    )
    assert settings.guidance_scale == app.setting_defaults(LIMITS)["guidance_scale"]
    with pytest.raises(app.InputError, match="Duration"):
        app.check_settings(odd, LIMITS, "text_to_video")
    assert app.check_settings(dict(odd, duration=0.5), LIMITS, "edit").height == 24
    updates = app.show_settings("video_to_audio", LIMITS)
    names = [name for names in app.SETTING_GROUPS.values() for name in names]
    shown = {"audio_guidance_scale", *app.SETTING_GROUPS["advanced_guidance"]}
    assert [update["visible"] for update in updates] == [name in shown for name in names]


def test_uploads_are_checked_for_type_and_size(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    with pytest.raises(app.InputError, match="must be one of .mp4"):
        app.check_upload(str(text), "a video", app.VIDEO_SUFFIXES)
    with pytest.raises(app.InputError, match="Please upload a video"):
        app.check_upload(None, "a video", app.VIDEO_SUFFIXES)
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (2 * 2**20))
    with pytest.raises(app.InputError, match="2 MB; the limit is 1 MB"):
        app.check_upload(str(big), "a video", app.VIDEO_SUFFIXES, max_mb=1)


def assert_no_server_path(message: str, *folders) -> None:
    """What a visitor reads names files, never the server's folders or an OS error number."""
    for folder in (*folders, "/tmp/", "Errno", str(APP_PATH.parents[2])):
        assert str(folder) not in message, (folder, message)


def test_unreadable_uploads_get_a_sentence_without_server_paths(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("a text file, renamed")
    with pytest.raises(app.InputError) as caught:
        app.read_video(str(fake), 16.0, "the video to give a soundtrack")
    message = str(caught.value)
    assert "The video to give a soundtrack (fake.mp4) is not a video we can read (MP4, MOV" in message
    assert_no_server_path(message, tmp_path)
    for path, check, sentence in (
        (tmp_path / "fake.wav", lambda p: app.check_audio_file(p, "the soundtrack", 5, LIMITS), "is not audio we"),
        (tmp_path / "fake.png", lambda p: app.read_image(p, "the first frame"), r"is not an image we can read \(PNG"),
    ):
        path.write_text("not media")
        with pytest.raises(app.InputError, match=sentence) as caught:
            check(str(path))
        assert_no_server_path(str(caught.value), tmp_path)
    assert app.first_frame(str(fake)) is None and app.first_frame(str(tmp_path / "missing.mp4")) is None


def test_a_video_that_decodes_to_too_many_pixels_is_refused(tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "long.mp4", num_frames=40, size=(64, 64), with_audio=False)
    monkeypatch.setattr(app, "MAX_VIDEO_PIXELS", 20 * 64 * 64)
    with pytest.raises(app.InputError, match="The video could not be used: it holds 40 frames of 64x64") as caught:
        app.read_video(clip, 16.0)
    assert "long.mp4" in str(caught.value)  # the library's limit message, with the file's name for its path
    assert_no_server_path(str(caught.value), tmp_path)


def test_server_paths_and_errno_are_taken_out_of_any_message():
    message = (
        "Generation failed (FileNotFoundError): [Errno 2] No such file: '/tmp/gradio/ab12/clip.mp4' (C:\\x\\y.wav)"
    )
    assert (
        app.without_server_paths(message) == "Generation failed (FileNotFoundError): No such file: 'clip.mp4' (y.wav)"
    )
    for kept in ("1/2 steps", "and/or", "https://huggingface.co/org/model", "`pipelines/skyreels-v4-tiny`", "a / b"):
        assert app.without_server_paths(kept) == kept


def test_videos_are_resampled_to_the_model_rate_and_cut_to_4k_plus_1():
    frames = list(range(30))  # 1 s at 30 fps
    resampled = app.resample_frames(frames, 30.0, 16.0)
    assert len(resampled) == 16 and resampled[0] == 0 and resampled[-1] == 28
    assert app.resample_frames(list(range(9)), 16.0, 16.0) == list(range(9))
    assert len(app.frames_for_edit(list(range(16)), LIMITS)) == 13
    with pytest.raises(app.InputError, match="edits at most 1.06 s"):
        app.frames_for_edit(list(range(18)), LIMITS)


def test_masks_from_the_editor_or_an_upload():
    layer = np.zeros((4, 6, 4), np.uint8)
    assert app.mask_from_editor(None) is None and app.mask_from_editor({"layers": [layer]}) is None
    layer[1, 2, 3] = 255
    painted = app.mask_from_editor({"background": None, "layers": [layer], "composite": None})
    assert painted.shape == (4, 6) and painted.sum() == 1 and painted[1, 2]

    upload = PIL.Image.fromarray(np.array([[0, 255, 200], [0, 0, 100]], np.uint8))
    assert app.mask_from_upload(upload).tolist() == [[False, True, True], [False, False, False]]

    keep = app.edit_keep_mask(painted, None, (6, 4))
    assert keep.dtype == np.float32 and keep[1, 2] == 0 and keep.sum() == 23  # 1 = keep, 0 = regenerate
    assert app.edit_keep_mask(painted, np.zeros((4, 6), bool), (6, 4)).sum() == 24  # an upload wins
    with pytest.raises(app.InputError, match="paint over the region"):
        app.edit_keep_mask(None, None, (6, 4))
    with pytest.raises(app.InputError, match="mask is 6x4 pixels but the video is 8x4"):
        app.edit_keep_mask(painted, None, (8, 4))


def test_extension_frames():
    assert app.check_extension(4.0, 9, 17) == 4
    for keep, match in ((0, ">= 1"), (10, "only 9 frames"), (9, "nothing to generate")):
        with pytest.raises(app.InputError, match=match):
            app.check_extension(keep, 9, 9)


def test_audio_reference_checks(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    assert app.check_audio_reference(None, LIMITS) is None
    assert app.check_audio_reference(clip, LIMITS) == clip
    silent = write_clip(tmp_path / "silent.mp4", with_audio=False)
    with pytest.raises(app.InputError, match="has no sound track"):
        app.check_audio_reference(silent, LIMITS)
    short = app.Limits(**{**LIMITS.__dict__, "max_audio_reference_seconds": 0.1})
    with pytest.raises(app.InputError, match="limit is 0.1 s"):
        app.check_audio_reference(clip, short)
    mute = app.Limits(**{**LIMITS.__dict__, "has_audio": False})
    with pytest.raises(app.InputError, match="makes no audio"):
        app.check_audio_reference(clip, mute)


def test_tag_helpers():
    assert app.compose_prompt("A ball.", " ", "", "", "Drums. ") == "<text>A ball.</text><bgm>Drums.</bgm>"
    assert app.compose_prompt() == ""
    assert app.append_tag(None, "sfx") == "<sfx></sfx>"
    assert app.append_tag("<text>a</text>", "dialogue") == "<text>a</text><dialogue></dialogue>"


def test_errors_reach_the_page_as_sentences():
    @app.readable_errors
    def fails(error):
        raise error

    # Gradio 6 heads a toast with "Error" and drops `title`: the title leads the (escaped) message.
    with pytest.raises(
        gr.Error, match="<strong>Please check the inputs</strong><br>&lt;text&gt; is missing"
    ) as caught:
        fails(app.InputError("<text> is missing"))
    assert caught.value.title == "Please check the inputs"
    with pytest.raises(gr.Error, match=r"<strong>Generation failed</strong><br>RuntimeError: boom") as caught:
        fails(RuntimeError("boom"))
    assert caught.value.title == "Generation failed"
    with pytest.raises(gr.Error) as caught:
        fails(OSError(5, "Input/output error", "/srv/app/cache/upload/clip.mp4"))
    assert "clip.mp4" in caught.value.message and "/srv" not in caught.value.message
    assert "Errno" not in caught.value.message


def test_a_refused_upload_leaves_its_box_with_a_warning(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(app.gr, "Warning", warnings.append)
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    check = app.upload_check(lambda path: app.check_video_file(path, "the video to edit"))
    assert check(str(fake)) is None  # the box is emptied
    assert "This upload cannot be used" in warnings[0] and "fake.mp4" in warnings[0]
    assert_no_server_path(warnings[0], tmp_path)
    good = write_clip(tmp_path / "good.mp4")
    assert check(good) == app.gr.skip() and check(None) == app.gr.skip() and len(warnings) == 1


def test_model_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(app.MODEL_ENV_VAR, raising=False)
    monkeypatch.delenv(app.REFINER_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)  # no pipelines/ here
    assert app.resolve_model("some/folder") == "some/folder"
    embedded = tmp_path / "checkout" / app.EMBEDDED_MODEL
    monkeypatch.setattr(app, "embedded_model_candidates", lambda: [tmp_path / "nowhere", embedded])
    assert app.resolve_model() is None
    embedded.mkdir(parents=True)
    (embedded / "model_index.json").write_text("{}")
    assert app.resolve_model() == str(embedded)
    monkeypatch.setenv(app.MODEL_ENV_VAR, "from/env")
    assert app.resolve_model() == "from/env"
    # The app finds the repo's folder from its own location, not only from the working directory.
    assert APP_PATH.parents[2] / app.EMBEDDED_MODEL in load_app().embedded_model_candidates()

    assert app.resolve_refiner(None, str(embedded)) is None
    (embedded / "refiner").mkdir()
    assert app.resolve_refiner(None, str(embedded)) == str(embedded / "refiner")
    assert app.resolve_refiner("explicit", str(embedded)) == "explicit"
    # The page names local folders by their name: the server's folders stay private.
    assert app.display_name(str(embedded)) == "skyreels-v4-tiny" and app.display_name("org/model") == "org/model"
    assert app.is_embedded_model(str(embedded)) and not app.is_embedded_model(str(tmp_path))
    assert not app.is_embedded_model(None) and not app.is_embedded_model("org/model")


def test_server_binds_to_loopback_by_default(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    args = app.build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860
    assert app.build_parser().parse_args(["--host", "0.0.0.0", "--port", "9000"]).port == 9000


# ---------------------------------------------------------------------------------------------------------------------
# Every tab's generation path, on tiny random components
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pipe():
    from skyreels_diffusers.tiny_components import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def runner(tiny_pipe, tmp_path_factory):
    from skyreels_diffusers.tiny_components import build_tiny_refiner

    models = app.load_models(tiny_pipe, build_tiny_refiner(tiny_pipe.transformer))
    return app.DemoRunner(models, tmp_path_factory.mktemp("outputs"))


def test_limits_come_from_the_pipeline(runner):
    assert runner.limits == LIMITS
    assert runner.models.inpaint.transformer is runner.models.base.transformer  # weights loaded once
    assert runner.models.refiner.vae is runner.models.base.vae


def test_each_tab_writes_an_mp4_with_sound(runner, tmp_path):
    source = write_clip(tmp_path / "source.mp4", num_frames=15, size=(40, 32), fps=24)  # resampled to 16 fps: 10
    image = PIL.Image.new("RGB", (48, 32), (200, 30, 30))
    layer = np.zeros((32, 40, 4), np.uint8)
    layer[8:20, 10:30, 3] = 255
    progress = []
    cases = {
        "text_to_video": {"prompt": "<text>A ball.</text><sfx>A knock.</sfx>"},
        "image_to_video": {"prompt": "<text>A ball.</text>", "image": image, "last_image": image},
        "edit": {"prompt": "<text>Blue.</text>", "video": source, "mask_drawn": {"layers": [layer]}},
        "extend": {"prompt": "<text>More.</text>", "video": source, "keep_frames": 5},
        "references": {"prompt": "<text>@image_1</text>", "image_1": image, "image_3": image, "audio": source},
        "video_to_audio": {"prompt": "<sfx>Knocks.</sfx>", "video": source},
        "audio_to_video": {"prompt": "<text>A ball.</text>", "audio": source, "image": image},
    }
    for task, inputs in cases.items():
        result = runner.run(task, {**SETTINGS, **inputs}, lambda *a, **k: progress.append(a[0]))
        assert streams_of(result.path) == {"video": "h264", "audio": "aac"}, task
        with av.open(result.path) as container:
            assert container.streams.video[0].frames == 9, task  # the edited 24 fps clip: 10 frames at 16, cut to 4k+1
        # Video-to-audio returns the uploaded frames as they are (40x32); the others are made at the model's size.
        size = (40, 32) if task == "video_to_audio" else (32, 32)
        assert (result.width, result.height) == size and result.seed == 0, task
        assert result.status.startswith("Done in") and "9 frames (0.56 s) of {}x{} at 16 fps".format(*size) in (
            result.status
        ), (task, result.status)
        assert "rounded" not in result.status
    assert progress[:2] == [(1, 2), (2, 2)]


def test_seed_is_random_unless_asked_and_the_used_one_is_reported(runner):
    inputs = {**SETTINGS, "prompt": "<text>A ball.</text>", "steps": 1, "randomize_seed": True, "seed": 7}
    seeds = [runner.run("text_to_video", dict(inputs)).seed for _ in range(2)]
    assert seeds[0] != seeds[1] and 7 not in seeds
    fixed = runner.run("text_to_video", {**inputs, "randomize_seed": False, "seed": seeds[0]})
    assert fixed.seed == seeds[0] and f"seed {seeds[0]};" in fixed.status


def test_a_duration_between_frame_counts_is_rounded_and_the_status_says_so(runner):
    result = runner.run("text_to_video", {**SETTINGS, "prompt": "<text>A ball.</text>", "steps": 1, "duration": 0.5})
    assert "9 frames (0.56 s)" in result.status and "0.5 s rounded to 9 frames" in result.status
    assert "the model makes 1 + 4k frames at 16 fps" in result.status


def test_result_player_zooms_small_clips_by_a_whole_factor():
    small = app.result_view(app.Result("x.mp4", "", 0, width=64, height=64))
    assert small == {"height": 320, "width": 320, "label": "Result: 64x64 px, shown at 5x"}
    assert app.result_view(app.Result("x.mp4", "", 0, width=96, height=48))["width"] == 96 * 3
    large = app.result_view(app.Result("x.mp4", "", 0, width=848, height=480))
    assert large == {"height": 480, "width": 848, "label": "Result: 848x480 px"}


def test_non_image_uploads_and_non_number_settings_get_sentences(runner, tmp_path):
    # Gradio's API accepts any value for a number field and any file for an image: both reach our checks.
    fake = tmp_path / "photo.png"
    fake.write_text("not an image")
    inputs = {**SETTINGS, "prompt": "<text>A ball.</text>", "image": str(fake)}
    with pytest.raises(app.InputError, match=r"The first frame \(photo.png\) is not an image we can read") as caught:
        runner.run("image_to_video", inputs)
    assert_no_server_path(str(caught.value), tmp_path)
    inputs = {**SETTINGS, "prompt": "<sfx>Knocks.</sfx>", "video": str(tmp_path / "photo.png")}
    with pytest.raises(app.InputError, match="must be one of .mp4"):
        runner.run("video_to_audio", inputs)
    for key, value, message in (
        ("height", "tall", "Height must be a number, got 'tall'"),
        ("width", float("nan"), "Width must be a number|Width must be a finite number"),
        ("steps", "many", "Steps must be a number"),
        ("guidance_scale", float("inf"), "Guidance scale must be a finite number"),
    ):
        with pytest.raises(app.InputError, match=message):
            runner.run("text_to_video", {**SETTINGS, "prompt": "<text>A ball.</text>", key: value})


def test_refine_doubles_size_and_frame_rate_and_its_time_is_measured(runner):
    assert (
        app.refine_label(runner.models)
        == "Refine: 2x size (32x32 → 64x64 at the default size), 2x frame rate (16 → 32 fps)"
    )
    assert "timed on the first refined run" in app.refine_info(runner.models, {})
    runner.seconds_per_step.pop("refine", None)
    inputs = {**SETTINGS, "prompt": "<text>A ball.</text>", "refine": True, "guidance_scale": 1.0}
    result = runner.run("text_to_video", inputs)
    assert "17 frames (0.53 s) of 64x64 at 32 fps" in result.status
    assert streams_of(result.path) == {"video": "h264", "audio": "aac"}
    assert runner.seconds_per_step["refine"] > 0
    info = app.refine_info(runner.models, runner.seconds_per_step)
    assert f"about {runner.seconds_per_step['refine']:.2f} s more per step here" in info
    assert f"{30 * runner.seconds_per_step['refine']:.0f} s more at 30 steps" in info


def test_the_refine_label_follows_the_refiners_config(tiny_pipe):
    from skyreels_diffusers.tiny_components import build_tiny_refiner

    models = app.load_models(tiny_pipe, build_tiny_refiner(tiny_pipe.transformer, temporal_upscale_factor=1))
    assert app.refine_label(models) == "Refine: 2x size (32x32 → 64x64 at the default size), same frame rate"


def test_a_saved_model_folder_and_its_refiner_subfolder_load(tiny_pipe, tmp_path, monkeypatch):
    from skyreels_diffusers.tiny_components import build_tiny_refiner

    monkeypatch.delenv(app.REFINER_ENV_VAR, raising=False)
    tiny_pipe.save_pretrained(tmp_path / "model")
    build_tiny_refiner(tiny_pipe.transformer).save_pretrained(tmp_path / "model" / "refiner")
    models = app.load_models(str(tmp_path / "model"))
    assert models.description == "Model: `model`." and models.refiner_note == "Refiner: `model/refiner`."
    assert models.refiner.text_encoder is models.base.text_encoder is models.inpaint.text_encoder
    assert models.limits == LIMITS


def test_dtype_option_casts_every_pipeline_and_generates(tmp_path, monkeypatch):
    import torch

    from skyreels_diffusers.tiny_components import build_tiny_pipeline, build_tiny_refiner

    monkeypatch.delenv(app.REFINER_ENV_VAR, raising=False)
    assert app.build_parser().parse_args([]).dtype == "auto"
    with pytest.raises(SystemExit):
        app.build_parser().parse_args(["--dtype", "int8"])
    pipe = build_tiny_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    build_tiny_refiner(pipe.transformer).save_pretrained(tmp_path / "model" / "refiner")
    models = app.load_models(str(tmp_path / "model"), dtype="bfloat16")
    for loaded in (models.base, models.inpaint, models.refiner):
        assert loaded.transformer.dtype == torch.bfloat16 and loaded.vae.dtype == torch.bfloat16
    result = app.DemoRunner(models, tmp_path).run("text_to_video", {**SETTINGS, "prompt": "<text>A.</text>"})
    assert result.status.startswith("Done in") and streams_of(result.path) == {"video": "h264", "audio": "aac"}
    in_memory = app.load_models(pipe, build_tiny_refiner(pipe.transformer), dtype="bfloat16")  # cast with `.to`
    assert in_memory.base.transformer.dtype == in_memory.refiner.transformer.dtype == torch.bfloat16


def test_refine_without_a_refiner_is_a_readable_error(tiny_pipe, tmp_path, monkeypatch):
    monkeypatch.delenv(app.REFINER_ENV_VAR, raising=False)
    models = app.load_models(tiny_pipe)
    assert models.refiner is None and "no Refiner was found" in models.refiner_note
    with pytest.raises(app.InputError, match="Refinement is unavailable"):
        app.DemoRunner(models, tmp_path).run("text_to_video", {**SETTINGS, "prompt": "a", "refine": True})


# ---------------------------------------------------------------------------------------------------------------------
# Examples: the tiny default's world, or the model card's
# ---------------------------------------------------------------------------------------------------------------------


def test_model_card_examples_section():
    card = """# A model

## Demo examples
- `<text>A cat.</text><sfx>Purring.</sfx>`
* <text>A dog.</text>
-

## Use
- not an example
"""
    assert app.card_examples(card) == ["<text>A cat.</text><sfx>Purring.</sfx>", "<text>A dog.</text>"]
    assert app.card_examples("# A model\n- <text>loose</text>") == [] and app.card_examples(None) == []


def test_other_weights_show_their_cards_examples_or_none(tiny_pipe, tmp_path, monkeypatch):
    monkeypatch.delenv(app.REFINER_ENV_VAR, raising=False)
    tiny_pipe.save_pretrained(tmp_path / "model")
    models = app.load_models(str(tmp_path / "model"))
    assert app.demo_examples(models, tmp_path / "examples") == app.DemoExamples({}, "", None)
    card = "---\nlicense: mit\n---\n# Card\n\n## Demo examples\n- <text>A boat.</text>\n"
    (tmp_path / "model" / "README.md").write_text(card)
    examples = app.demo_examples(models, tmp_path / "examples")
    assert examples.rows == {"text_to_video": [{"prompt": "<text>A boat.</text>"}]}
    assert "(#model-card)" in examples.note and examples.card.startswith("# Card") and "license" not in examples.card
    assert not (tmp_path / "examples").exists()  # no world media for weights that were not trained on it


def test_the_tiny_default_gets_its_worlds_examples_for_every_tab(runner, tmp_path):
    world = app.load_world()
    examples = app.world_examples(world, LIMITS, tmp_path)
    assert set(examples) == set(app.TAB_SETTINGS)
    prompts = [row["prompt"] for rows in examples.values() for row in rows]
    colours = [next(c for c in world.COLOURS if f"A {c} " in row["prompt"]) for row in examples["text_to_video"]]
    assert sorted(colours) == sorted(world.COLOURS)  # one per colour
    assert all(prompt.startswith("<text>A ") and "bounces around a dark box" in prompt for prompt in prompts)
    edit = examples["edit"][0]
    with av.open(edit["video"]) as container:
        stream = container.streams.video[0]
        assert (stream.frames, stream.codec_context.width, float(stream.average_rate)) == (9, 32, 16.0)
    assert PIL.Image.open(edit["mask_uploaded"]).size == (32, 32) and edit["prompt"] not in prompts[:1]
    assert streams_of(examples["video_to_audio"][0]["video"]) == {"video": "h264"}  # silent: the model adds sound
    for word in (*world.COLOURS, *world.SHAPES, "knock"):
        assert word in app.world_note(world)
    # Every tab's example runs through its tab.
    for task, rows in examples.items():
        result = runner.run(task, {**SETTINGS, "steps": 1, **rows[0]})
        assert result.status.startswith("Done in"), task


def test_the_embedded_folder_is_recognised_and_gets_the_world(monkeypatch, tmp_path, tiny_pipe):
    models = app.load_models(tiny_pipe)
    models.path = str(APP_PATH.parents[2] / app.EMBEDDED_MODEL)
    examples = app.demo_examples(models, tmp_path)
    assert set(examples.rows) == set(app.TAB_SETTINGS) and "(#model-card)" in examples.note
    assert "SkyReels-V4 tiny default" in examples.card
    monkeypatch.setattr(app, "WORLD_CANDIDATES", (tmp_path / "nowhere.py",))  # a Space that did not ship world.py
    assert app.demo_examples(models, tmp_path / "other").rows == {}


# ---------------------------------------------------------------------------------------------------------------------
# The real page in headless Chromium, with the tiny default (what a visitor gets)
# ---------------------------------------------------------------------------------------------------------------------

TINY_DEFAULT = APP_PATH.parents[2] / app.EMBEDDED_MODEL
# Where the test writes the README's screenshots when SKYREELS_DEMO_SCREENSHOTS=1 (else only to a temporary folder).
SCREENSHOTS = APP_PATH.parent / "screenshots"
# What each tab shows of the grouped settings, as the issue asks: size, duration and guidance only where they apply.
VISIBLE_SETTINGS = {
    "t2av": {"height", "width", "duration", "guidance-scale", "audio-guidance-scale", "refine"},
    "i2v": {"height", "width", "duration", "guidance-scale", "audio-guidance-scale", "refine"},
    "edit": {"height", "width", "guidance-scale", "audio-guidance-scale", "refine"},
    "extend": {"height", "width", "duration", "guidance-scale", "audio-guidance-scale", "refine"},
    "v2a": {"audio-guidance-scale"},
    "a2v": {"height", "width", "guidance-scale", "refine"},
    "references": {"height", "width", "duration", "guidance-scale", "audio-guidance-scale", "refine"},
}
GROUPED_SETTINGS = {"height", "width", "duration", "guidance-scale", "audio-guidance-scale", "refine"}
# What each tab's example run says in its status line.
STATUS_NOTES = {
    "t2av": "with 8 kHz audio",
    "i2v": "with 8 kHz audio",
    "edit": "the length follows the source video",
    "extend": "kept the first 9 frames",
    "v2a": "the soundtrack of the uploaded video",
    "a2v": "the length follows the soundtrack",
    "references": "1 reference image(s) + audio",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_demo(tmp_path_factory):
    if not (TINY_DEFAULT / "model_index.json").is_file():
        pytest.skip("the tiny default pipeline folder is missing")
    demo = app.build_demo(model=str(TINY_DEFAULT), output_dir=str(tmp_path_factory.mktemp("served")))
    port = free_port()
    demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **app.launch_options()
    )
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (apt-get install chromium); the browser tests need it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, served_demo):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(served_demo[0])
    steps = page.locator("#setting-steps input[type=number]")
    steps.fill("2")  # keep the browser tests fast
    steps.press("Enter")
    yield page
    page.close()


def served_streams(page, video, tmp_path):
    """The codecs of the file the page's <video> plays, fetched over HTTP as the browser does."""
    src = urllib.parse.urljoin(page.url, video.get_attribute("src"))
    served = tmp_path / "served.mp4"
    with urllib.request.urlopen(src, timeout=30) as response:
        served.write_bytes(response.read())
    return streams_of(served)


def open_tab(page, tab: str) -> None:
    """Selects a tab by its id, from the tab row or, where the row overflows, from its "More tabs" menu."""
    button = page.locator(f"[role=tab][data-tab-id={tab}]")
    if not button.is_visible():
        page.get_by_role("button", name="More tabs").click()
        button = page.locator(".overflow-dropdown button").filter(has_text=app.TABS[tab][0])
    button.click()
    page.locator(f"#{tab}-generate").wait_for(state="visible", timeout=10_000)


def generate_and_wait(page, tab: str = "t2av", timeout: float = 60_000) -> str:
    """Presses the tab's Generate and returns the new "Done in" status line. In between, the status line holds the
    progress alone (the last result's description is not left under it)."""
    before = page.locator("#status").inner_text()
    page.locator(f"#{tab}-generate").click()
    page.wait_for_function("() => !document.querySelector('#status').innerText.includes('Done in')", timeout=timeout)
    page.wait_for_function(
        "(before) => { const text = document.querySelector('#status').innerText;"
        " return text.startsWith('Done in') && text !== before; }",
        arg=before,
        timeout=timeout,
    )
    return page.locator("#status").inner_text()


def visible_settings(page, expected: set[str], timeout: float = 5.0) -> set[str]:
    """The grouped settings shown, once they are `expected` or after `timeout` seconds (a tab's switch updates them)."""
    deadline = time.monotonic() + timeout
    while True:
        visible = {name for name in GROUPED_SETTINGS if page.locator(f"#setting-{name}").is_visible()}
        if visible == expected or time.monotonic() > deadline:
            return visible
        page.wait_for_timeout(100)


def toasts(page, title: str, timeout: float = 10_000) -> str:
    """The text of the toasts on the page, once one headed `title` is there."""
    toast = page.locator("[data-testid=toast-body]").filter(has_text=title)
    toast.first.wait_for(state="visible", timeout=timeout)
    return "\n".join(page.locator("[data-testid=toast-body]").all_inner_texts())


def close_toasts(page) -> None:
    for close in page.locator("[data-testid=toast-close]").all():
        close.click()
    page.locator("[data-testid=toast-body]").first.wait_for(state="detached", timeout=10_000)


def save_screenshot(page, name: str, tmp_path) -> None:
    """A screenshot of the page's main area (into the README's folder when SKYREELS_DEMO_SCREENSHOTS=1), kept small:
    64 colours are plenty for a flat UI."""
    path = tmp_path / f"{name}.png"
    page.locator("#layout").screenshot(path=str(path))
    image = PIL.Image.open(path).convert("RGB").quantize(colors=64)
    image.save(path, optimize=True)
    assert 0 < path.stat().st_size < 200_000
    if os.environ.get("SKYREELS_DEMO_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(exist_ok=True)
        shutil.copy(path, SCREENSHOTS / f"{name}.png")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_browser_first_visit_generates_and_an_error_keeps_the_last_result(page, served_demo, tmp_path):
    examples = served_demo[1].examples
    # The page says what the model knows, with its card; its examples come from that world.
    note = page.locator("#model-note")
    assert "red, green, blue or yellow" in note.inner_text()
    assert note.get_by_role("link", name="model card").get_attribute("href") == "#model-card"
    assert page.locator("#model-card").count() == 1
    # Whole words: the page also carries hex hashes, which change between checkouts (one read "...07fcafef4...").
    assert not re.search(r"\b(cafe|tin roof)\b", page.content(), re.IGNORECASE)
    first = examples.rows["text_to_video"][0]["prompt"]
    prompt = page.locator("#t2av-prompt textarea")
    assert prompt.input_value() == first and first.startswith("<text>A red circle")
    assert "same frame rate" in page.locator("#setting-refine").inner_text()  # the tiny default's Refiner keeps 16 fps
    assert str(TINY_DEFAULT) not in page.content()  # the model is named, its server folder is not

    status = generate_and_wait(page)  # the first click works: the prompt is already there
    assert "17 frames (1.06 s) of 64x64 at 16 fps" in status and "2 steps" in status
    seed = page.locator("#setting-seed input").input_value()
    assert f"seed {seed};" in status  # the random seed that was used is shown
    video = page.locator("#result-video video")
    assert served_streams(page, video, tmp_path) == {"video": "h264", "audio": "aac"}
    assert page.locator("#result-video").get_by_text("Result: 64x64 px, shown at 5x").count() == 1
    assert video.bounding_box()["width"] == 320  # pixel-exact: a whole zoom, drawn with nearest neighbour
    assert video.evaluate("v => getComputedStyle(v).imageRendering") == "pixelated"
    src, download = video.get_attribute("src"), page.locator("#result-file").inner_text()
    # Wide layout: the result beside the inputs, the settings under them.
    inputs, result, settings = (
        page.locator(f"#{column}-column").bounding_box() for column in ("inputs", "result", "settings")
    )
    assert result["x"] >= inputs["x"] + inputs["width"] and result["y"] < settings["y"]
    assert settings["x"] == inputs["x"] and settings["y"] >= inputs["y"] + inputs["height"]

    # An error: a toast with the title set in the code, and the last result stays as it was, with no error badge.
    prompt.fill("")
    page.locator("#t2av-generate").click()
    message = toasts(page, "Please check the inputs")
    assert "Please enter a prompt" in message
    page.wait_for_timeout(500)  # the failure handler restores the status line
    assert page.locator("#status").inner_text() == status
    assert video.get_attribute("src") == src and page.locator("#result-file").inner_text() == download
    assert "Error" not in page.locator("#result-column").inner_text()
    close_toasts(page)

    # Files that are not what their names say: each leaves its upload box at once, with a sentence and no path.
    for tab, box, name, sentence in (
        ("i2v", "#i2v-image", "photo.png", "The first frame (photo.png) is not an image we can read (PNG"),
        ("v2a", "#v2a-video", "fake.mp4", "The video to give a soundtrack (fake.mp4) is not a video we can read (MP4"),
        ("a2v", "#a2v-audio", "knocks.wav", "The soundtrack (knocks.wav) is not audio we can read (WAV"),
    ):
        fake = tmp_path / name
        fake.write_text("a text file, renamed")
        open_tab(page, tab)
        page.locator(f"{box} input[type=file]").set_input_files(str(fake))
        message = toasts(page, "This upload cannot be used")
        assert sentence in message, message
        assert_no_server_path(message, tmp_path, Path(tempfile.gettempdir()) / "gradio")
        page.locator(box).get_by_text(re.compile("Drop (Image|Video|Audio) Here")).wait_for(timeout=10_000)
        close_toasts(page)
    assert video.get_attribute("src") == src and page.locator("#status").inner_text() == status
    assert "Traceback" not in page.content()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_browser_every_tabs_example_runs_with_its_own_settings(page, tmp_path):
    for tab in app.TABS:
        open_tab(page, tab)
        assert visible_settings(page, VISIBLE_SETTINGS[tab]) == VISIBLE_SETTINGS[tab], tab
        assert page.locator("#setting-seed").is_visible() and page.locator("#setting-randomize-seed").is_visible()
        page.locator(f"#{tab}-examples").locator(".gallery-item, tr.tr-body").first.click()
        page.wait_for_timeout(1_000)  # the example's files land in the inputs
        status = generate_and_wait(page, tab)
        assert STATUS_NOTES[tab] in status, (tab, status)
        save_screenshot(page, tab, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_browser_edit_with_a_painted_mask(page, tmp_path):
    source = write_clip(tmp_path / "source.mp4", num_frames=9, size=(160, 128))
    open_tab(page, "edit")
    # The mask's label is not hidden behind the editor's toolbar.
    label = page.locator("#edit-mask [data-testid=block-label]").bounding_box()
    toolbar = page.locator("#edit-mask").get_by_role("button", name="Zoom in").bounding_box()
    assert label["x"] + label["width"] <= toolbar["x"] or label["y"] + label["height"] <= toolbar["y"]
    page.locator("#edit-prompt textarea").fill("<text>The square turns blue.</text>")
    page.locator("#edit-generate").click()  # no video yet
    assert "Please upload the video to edit" in toasts(page, "Please check the inputs")

    page.locator("#edit-video input[type=file]").set_input_files(source)
    canvas = page.locator("#edit-mask canvas").first
    page.wait_for_timeout(1_000)  # the first frame lands on the canvas
    canvas.scroll_into_view_if_needed()
    page.locator("#edit-mask").get_by_role("button", name="Brush").first.click()
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 30, y)
    page.mouse.down()
    page.mouse.move(x + 30, y, steps=8)
    page.mouse.up()
    status = generate_and_wait(page, "edit")
    assert "follows the source video (9 frames)" in status
    assert served_streams(page, page.locator("#result-video video"), tmp_path) == {"video": "h264", "audio": "aac"}


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_browser_narrow_layout_puts_the_result_before_the_settings(browser, served_demo):
    page = browser.new_page(viewport={"width": 420, "height": 900})
    try:
        page.goto(served_demo[0])
        generate = page.locator("#t2av-generate").bounding_box()
        result = page.locator("#result-video").bounding_box()
        settings = page.locator("#settings").bounding_box()
        assert generate["y"] < result["y"] < settings["y"]
        assert result["x"] + result["width"] <= 420
        open_tab(page, "references")  # behind the "More tabs" menu at this width
    finally:
        page.close()
