"""Tests of the Gradio demo (examples/gradio_app/app.py): its validation helpers, every tab's generation path on
tiny random components, and the real page driven in headless Chromium (Debian's /usr/bin/chromium, never a
downloaded browser)."""

import importlib.util
import os
import shutil
import socket
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
    "steps": 2,
    "guidance_scale": 5.0,
    "audio_guidance_scale": 4.0,
    "height": 32,
    "width": 32,
    "duration": 0.5,
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
    assert LIMITS.max_num_frames == 17 and LIMITS.default_duration == 0.5 and LIMITS.max_duration == 1.0
    assert app.num_frames_for(0.5, LIMITS) == 9 and app.num_frames_for(1.0, LIMITS) == 17
    for bad in (0, -1, 1.5, None):
        with pytest.raises(app.InputError, match="Duration"):
            app.num_frames_for(bad, LIMITS)


def test_settings_are_checked_together():
    settings = app.check_settings(dict(SETTINGS, negative_prompt="  blur "), LIMITS)
    assert settings.steps == 2 and settings.negative_prompt == "blur" and settings.height == 32
    assert app.check_settings(SETTINGS, LIMITS).negative_prompt is None
    for key, value, match in (("steps", 0, "Steps"), ("seed", -1, "seed"), ("guidance_scale", 0.5, "Guidance")):
        with pytest.raises(app.InputError, match=match):
            app.check_settings(dict(SETTINGS, **{key: value}), LIMITS)


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
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video either")
    with pytest.raises(app.InputError, match="could not be read"):
        app.read_video(str(fake), 16.0)


def test_a_video_that_decodes_to_too_many_pixels_is_refused(tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "long.mp4", num_frames=40, size=(64, 64), with_audio=False)
    monkeypatch.setattr(app, "MAX_VIDEO_PIXELS", 20 * 64 * 64)
    with pytest.raises(app.InputError, match="The video could not be read: .*holds 40 frames of 64x64"):
        app.read_video(clip, 16.0)


def test_videos_are_resampled_to_the_model_rate_and_cut_to_4k_plus_1():
    frames = list(range(30))  # 1 s at 30 fps
    resampled = app.resample_frames(frames, 30.0, 16.0)
    assert len(resampled) == 16 and resampled[0] == 0 and resampled[-1] == 28
    assert app.resample_frames(list(range(9)), 16.0, 16.0) == list(range(9))
    assert len(app.frames_for_edit(list(range(16)), LIMITS)) == 13
    with pytest.raises(app.InputError, match="edits at most 1 s"):
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
    with pytest.raises(app.InputError, match="no audio track"):
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

    with pytest.raises(gr.Error, match="&lt;text&gt; is missing"):
        fails(app.InputError("<text> is missing"))
    with pytest.raises(gr.Error, match=r"Generation failed \(RuntimeError\): boom"):
        fails(RuntimeError("boom"))


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


@pytest.mark.slow
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
        video, download, status = runner.run(task, {**SETTINGS, **inputs}, lambda *a, **k: progress.append(a[0]))
        assert video == download and streams_of(video) == {"video": "h264", "audio": "aac"}, task
        with av.open(video) as container:
            assert container.streams.video[0].frames == 9, task  # the edited 24 fps clip: 10 frames at 16, cut to 4k+1
        # Video-to-audio returns the uploaded frames as they are (40x32); the others are made at the model's size.
        size = "40x32" if task == "video_to_audio" else "32x32"
        assert status.startswith("Done in") and f"{size} at 16 fps" in status, (task, status)
    assert progress[:2] == [(1, 2), (2, 2)]


def test_non_image_uploads_and_non_number_settings_get_sentences(runner, tmp_path):
    # Gradio's API accepts any value for a number field and any file for an image: both reach our checks.
    fake = tmp_path / "photo.png"
    fake.write_text("not an image")
    inputs = {**SETTINGS, "prompt": "<text>A ball.</text>", "image": str(fake)}
    with pytest.raises(app.InputError, match="The first frame could not be read as an image"):
        runner.run("image_to_video", inputs)
    for key, value, message in (
        ("height", "tall", "Height must be a number, got 'tall'"),
        ("width", float("nan"), "Width must be a number|Width must be a finite number"),
        ("steps", "many", "Steps must be a number"),
        ("guidance_scale", float("inf"), "Guidance scale must be a finite number"),
    ):
        with pytest.raises(app.InputError, match=message):
            runner.run("text_to_video", {**SETTINGS, "prompt": "<text>A ball.</text>", key: value})


def test_refine_doubles_size_and_frame_rate(runner):
    inputs = {**SETTINGS, "prompt": "<text>A ball.</text>", "refine": True, "guidance_scale": 1.0}
    video, _, status = runner.run("text_to_video", inputs)
    assert "17 frames of 64x64 at 32 fps" in status and streams_of(video) == {"video": "h264", "audio": "aac"}


def test_a_saved_model_folder_and_its_refiner_subfolder_load(tiny_pipe, tmp_path, monkeypatch):
    from skyreels_diffusers.tiny_components import build_tiny_refiner

    monkeypatch.delenv(app.REFINER_ENV_VAR, raising=False)
    tiny_pipe.save_pretrained(tmp_path / "model")
    build_tiny_refiner(tiny_pipe.transformer).save_pretrained(tmp_path / "model" / "refiner")
    models = app.load_models(str(tmp_path / "model"))
    assert str(tmp_path / "model") in models.description and "refiner" in models.refiner_note
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
    video, _, status = app.DemoRunner(models, tmp_path).run("text_to_video", {**SETTINGS, "prompt": "<text>A.</text>"})
    assert status.startswith("Done in") and streams_of(video) == {"video": "h264", "audio": "aac"}
    in_memory = app.load_models(pipe, build_tiny_refiner(pipe.transformer), dtype="bfloat16")  # cast with `.to`
    assert in_memory.base.transformer.dtype == in_memory.refiner.transformer.dtype == torch.bfloat16


def test_refine_without_a_refiner_is_a_readable_error(tiny_pipe, tmp_path, monkeypatch):
    monkeypatch.delenv(app.REFINER_ENV_VAR, raising=False)
    models = app.load_models(tiny_pipe)
    assert models.refiner is None and "no Refiner was found" in models.refiner_note
    with pytest.raises(app.InputError, match="Refinement is unavailable"):
        app.DemoRunner(models, tmp_path).run("text_to_video", {**SETTINGS, "prompt": "a", "refine": True})


# ---------------------------------------------------------------------------------------------------------------------
# The real page in headless Chromium
# ---------------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_demo(tiny_pipe, tmp_path_factory):
    demo = app.build_demo(model=tiny_pipe, output_dir=str(tmp_path_factory.mktemp("served")))
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
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
    page.goto(served_demo)
    steps = page.locator("#steps input[type=number]")
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


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_browser_generates_a_playable_mp4_and_shows_errors(page, tmp_path):
    prompt = page.locator("#t2av-prompt textarea")
    prompt.fill("<text>A red ball bounces.</text>")
    page.locator("#t2av-add-sfx").click()  # the tag helper appends an empty pair
    page.wait_for_function(
        "document.querySelector('#t2av-prompt textarea').value.endsWith('<sfx></sfx>')", timeout=10_000
    )
    page.locator("#t2av-generate").click()

    video = page.locator("#result-video video")
    video.wait_for(state="attached", timeout=60_000)
    page.get_by_text("Done in").wait_for(timeout=10_000)
    assert "2 steps" in page.locator("#status").inner_text()
    assert served_streams(page, video, tmp_path) == {"video": "h264", "audio": "aac"}
    assert page.locator("#result-file").get_by_text(".mp4").count() >= 1

    prompt.fill("")
    page.locator("#t2av-generate").click()
    page.get_by_text("Please enter a prompt").wait_for(state="visible", timeout=10_000)
    assert "Traceback" not in page.content()
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
    assert (tmp_path / "demo.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_browser_edit_with_a_painted_mask(page, tmp_path):
    source = write_clip(tmp_path / "source.mp4", num_frames=9, size=(160, 128))
    page.get_by_role("tab", name="Edit").click()
    page.locator("#edit-prompt textarea").fill("<text>The square turns blue.</text>")
    page.locator("#edit-generate").click()  # no video yet
    page.get_by_text("Please upload a video").wait_for(state="visible", timeout=10_000)

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
    page.locator("#edit-generate").click()

    page.get_by_text("Done in").wait_for(timeout=60_000)
    assert "follows the source video (9 frames)" in page.locator("#status").inner_text()
    assert served_streams(page, page.locator("#result-video video"), tmp_path) == {"video": "h264", "audio": "aac"}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_browser_video_to_audio_and_audio_to_video(page, tmp_path):
    source = write_clip(tmp_path / "source.mp4", num_frames=9, size=(32, 32))
    page.get_by_role("tab", name="Video → audio").click()
    page.locator("#v2a-prompt textarea").fill("<sfx>A knock on every bounce.</sfx>")
    page.locator("#v2a-video input[type=file]").set_input_files(source)
    page.wait_for_timeout(1_000)
    page.locator("#v2a-generate").click()
    page.get_by_text("Done in").wait_for(timeout=60_000)
    assert "soundtrack of the uploaded video" in page.locator("#status").inner_text()
    assert served_streams(page, page.locator("#result-video video"), tmp_path) == {"video": "h264", "audio": "aac"}

    page.get_by_role("tab", name="Audio → video").click()
    page.locator("#a2v-prompt textarea").fill("<text>A ball bounces to the beat.</text>")
    page.locator("#a2v-audio input[type=file]").set_input_files(write_wav(tmp_path / "sound.wav", seconds=0.5))
    page.wait_for_timeout(1_000)
    page.locator("#a2v-generate").click()
    page.get_by_text("the length follows the soundtrack").wait_for(timeout=60_000)
    assert served_streams(page, page.locator("#result-video video"), tmp_path) == {"video": "h264", "audio": "aac"}
