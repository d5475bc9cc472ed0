"""Long-form generation (issue 30): windows chained past the model's window, each later one extending the last
frames and the matching audio of the one before."""

import numpy as np
import pytest
import torch
from model_work import refused_before_model_work

from skyreels_diffusers import SkyReelsV4InpaintPipeline, SkyReelsV4Pipeline
from skyreels_diffusers.pipelines import longform
from skyreels_diffusers.tiny_components import build_tiny_pipeline


PROMPT = "<text>A red ball bounces.</text><sfx>A knock.</sfx>"
WINDOW, OVERLAP, SIZE = 9, 5, 32  # 9-frame windows keeping 5 frames (2 latent frames): 4 new frames per window


@pytest.fixture(scope="module")
def pipe():
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def chained(pipe, seed=0, **kwargs):
    kwargs = {
        "num_frames": 17,
        "base_num_frames": WINDOW,
        "overlap_history": OVERLAP,
        "height": SIZE,
        "width": SIZE,
        "num_inference_steps": 2,
        "guidance_scale": 1.0,
        "output_type": "pt",
        **kwargs,
    }
    return pipe(PROMPT, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_plan_counts_windows_and_joins_keep_or_crossfade():
    plan = longform.ChainPlan(num_frames=17, window=9, overlap=5, addnoise_condition=0.0, crossfade=False)
    assert plan.num_windows == 3  # 9, then 4 new frames twice
    assert longform.ChainPlan(9, 9, 5, 0.0, False).num_windows == 1
    assert longform.ChainPlan(30, 9, 0, 0.0, False).num_windows == 4
    # Two windows of 4 entries overlapping by 2: kept, the first window's overlap; crossfaded, thirds between them.
    # The overlap may be longer than what a window adds (5 of 9 frames here): a third window still continues the
    # clip's last entries.
    first, second = torch.arange(4.0)[None], torch.arange(10.0, 14.0)[None]
    kept = longform.ChainAssembler(2, 1, crossfade=False)
    faded = longform.ChainAssembler(2, 1, crossfade=True)
    for assembler in (kept, faded):
        assembler.add(first)
        assembler.add(second)
    assert kept.result(6).tolist() == [[0, 1, 2, 3, 12, 13]]
    torch.testing.assert_close(faded.result(6), torch.tensor([[0, 1, 2 + 8 / 3, 3 + 16 / 3, 12, 13]]))
    short = longform.ChainAssembler(3, 1, crossfade=False)
    for window in (first, second, torch.arange(20.0, 24.0)[None]):
        short.add(window)
        assert short.tail.shape == (1, 3)
    assert short.result(6).tolist() == [[0, 1, 2, 3, 13, 23]]


@pytest.mark.parametrize("crossfade", [False, True])
def test_windows_continue_the_previous_window_and_the_clip_is_their_join(pipe, monkeypatch, crossfade):
    """Each later window is an extension whose kept frames and audio prefix are the previous window's last frames
    and the matching samples (of the clip so far); the clip is the first window, then each later window's new frames,
    its overlap kept or crossfaded."""
    windows, extensions = [], []
    call = SkyReelsV4InpaintPipeline.__call__

    def spy(self, *args, **kwargs):
        out = call(self, *args, **kwargs)
        extensions.append(kwargs)
        windows.append(out)
        return out

    base_call = SkyReelsV4Pipeline.__call__

    def base_spy(self, *args, **kwargs):
        out = base_call(self, *args, **kwargs)
        if kwargs.get("overlap_history") is None:  # a window
            windows.append(out)
        return out

    monkeypatch.setattr(SkyReelsV4InpaintPipeline, "__call__", spy)
    monkeypatch.setattr(SkyReelsV4Pipeline, "__call__", base_spy)
    out = chained(pipe, crossfade=crossfade)
    rate = out.audio_sample_rate
    assert out.frames.shape == (1, 17, 3, SIZE, SIZE) and out.audio.shape == (1, 1, round(17 / 16 * rate))
    assert len(windows) == 3 and len(extensions) == 2
    overlap_samples = round(OVERLAP / 16 * rate)
    # The clip so far is the first window when the first extension is made, then ends at frame 13; kept joins leave
    # it unchanged after (a crossfade changes the overlap once the next window comes).
    clips = [(windows[0], WINDOW)] if crossfade else [(windows[0], WINDOW), (out, 13)]
    for (clip, end), extension in zip(clips, extensions):
        assert extension["num_condition_frames"] == OVERLAP and extension["preserve_unmasked"] == (not crossfade)
        torch.testing.assert_close(extension["video"], clip.frames[0, end - OVERLAP : end], rtol=0, atol=0)
        samples = round(end / 16 * rate)
        torch.testing.assert_close(extension["audio"], clip.audio[0, :, samples - overlap_samples : samples])
        assert extension["audio_condition_seconds"] == overlap_samples / rate
    if crossfade:  # the first join: from the first window's last frames to the second window's own version of them
        joined = longform.crossfade_join(windows[0].frames[:, -OVERLAP:], windows[1].frames[:, :OVERLAP], 1)
        # (frames 4-7: frame 8 on is in the next join's overlap too, as 5 overlap frames exceed the 4 new ones)
        torch.testing.assert_close(out.frames[:, WINDOW - OVERLAP : 8], joined[:, :4], rtol=0, atol=0)
        torch.testing.assert_close(out.frames[:, :4], windows[0].frames[:, :4], rtol=0, atol=0)
        return
    torch.testing.assert_close(out.frames[:, :WINDOW], windows[0].frames, rtol=0, atol=0)
    torch.testing.assert_close(out.frames[:, WINDOW:13], windows[1].frames[:, OVERLAP:], rtol=0, atol=0)
    torch.testing.assert_close(out.frames[:, 13:], windows[2].frames[:, OVERLAP:], rtol=0, atol=0)
    window_samples = round(WINDOW / 16 * rate)
    torch.testing.assert_close(out.audio[..., :window_samples], windows[0].audio, rtol=0, atol=0)
    # The kept overlap comes back exactly in each extension (the frames and the samples of the previous window).
    for previous, following in zip(windows, windows[1:]):
        torch.testing.assert_close(following.frames[:, :OVERLAP], previous.frames[:, -OVERLAP:], rtol=0, atol=0)


def test_same_seed_same_clip_and_options_change_it(pipe):
    first, again = chained(pipe), chained(pipe)
    assert torch.equal(first.frames, again.frames) and torch.equal(first.audio, again.audio)
    kept = chained(pipe, crossfade=False, addnoise_condition=20.0)
    assert kept.frames.shape == first.frames.shape and not torch.equal(kept.frames, first.frames)


def test_t2v_and_the_naive_chain(pipe):
    video_only = chained(pipe, generate_audio=False, num_frames=20, output_type="np")
    assert video_only.frames.shape == (1, 20, SIZE, SIZE, 3) and video_only.audio is None
    naive = chained(pipe, overlap_history=0)  # independent windows, end to end
    assert naive.frames.shape == (1, 17, 3, SIZE, SIZE)


def test_t2a_chains_the_soundtrack_alone(pipe, monkeypatch):
    extensions = []
    call = SkyReelsV4InpaintPipeline.__call__
    monkeypatch.setattr(
        SkyReelsV4InpaintPipeline, "__call__", lambda self, *a, **k: extensions.append(k) or call(self, *a, **k)
    )
    audio_only = chained(pipe, generate_video=False, crossfade=False)
    assert audio_only.frames is None and audio_only.audio.shape == (1, 1, round(17 / 16 * 44100))
    assert len(extensions) == 2 and all("video" not in k and k["audio_condition_seconds"] > 0 for k in extensions)
    assert all(k["preserve_unmasked"] for k in extensions)  # kept joins
    overlap = round(OVERLAP / 16 * 44100)
    # the second window keeps the first one's last samples: they sit at the start of its new part's overlap
    assert torch.equal(
        extensions[0]["audio"], audio_only.audio[0, :, round(WINDOW / 16 * 44100) - overlap :][:, :overlap]
    )


def test_inpainting_extends_a_given_clip_past_the_window(pipe):
    inpaint = SkyReelsV4InpaintPipeline.from_pipe(pipe)
    inpaint.set_progress_bar_config(disable=True)
    video = np.random.RandomState(0).rand(5, SIZE, SIZE, 3).astype(np.float32)
    out = chained(inpaint, video=video, num_condition_frames=5, output_type="np", crossfade=False)
    assert out.frames.shape == (1, 17, SIZE, SIZE, 3)
    np.testing.assert_array_equal(out.frames[0, :5], video)  # the given clip's frames, kept


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"overlap_history": 9}, ValueError, r"`overlap_history` must be an integer in \[0, 8\]"),
        ({"overlap_history": -1}, ValueError, "overlap_history"),
        ({"overlap_history": 2.5}, TypeError, "overlap_history"),
        ({"base_num_frames": 1}, ValueError, "base_num_frames"),
        ({"num_frames": 16 * 601}, ValueError, r"more than `pipe.limits.max_duration_seconds`=600 s"),
        ({"addnoise_condition": -1.0}, ValueError, "addnoise_condition"),
        ({"crossfade": "yes"}, TypeError, "crossfade"),
        ({"num_videos_per_prompt": 2}, ValueError, "one clip per call"),
        ({"latents": torch.zeros(1)}, ValueError, "`latents` is not supported when windows are chained"),
        ({"output_type": "latent"}, ValueError, "latent"),
        ({"num_keyframes": 2}, ValueError, "num_keyframes"),
    ],
)
def test_bad_chaining_is_refused_before_any_model_work(pipe, kwargs, error, match):
    with refused_before_model_work(pipe, error, match):
        chained(pipe, **kwargs)


def test_chaining_options_are_checked_on_every_call(pipe):
    with refused_before_model_work(pipe, TypeError, "crossfade"):
        pipe(PROMPT, crossfade="yes")
    with refused_before_model_work(pipe, ValueError, "addnoise_condition"):
        pipe(PROMPT, addnoise_condition=float("nan"))


def test_cli_duration_beyond_the_window_chains(tmp_path, monkeypatch, capsys):
    from skyreels_diffusers import cli

    seen = []
    call = SkyReelsV4Pipeline.__call__

    def spy(self, *args, **kwargs):
        seen.append(kwargs)
        return call(self, *args, **kwargs)

    monkeypatch.setattr(SkyReelsV4Pipeline, "__call__", spy)
    model = build_tiny_pipeline()
    monkeypatch.setattr(cli, "load_pipeline", lambda *args, **kwargs: model)
    out = tmp_path / "long.mp4"
    argv = ["generate", "--prompt", PROMPT, "--out", str(out), "--steps", "1", "--height", "32", "--width", "32"]
    assert cli.main([*argv, "--duration", "1.6", "--overlap-history", "5"]) == 0  # 25 frames, windows of 9
    assert seen[0]["num_frames"] == 25 and seen[0]["overlap_history"] == 5 and out.stat().st_size > 0
    assert "25 frames" in capsys.readouterr().out
    assert cli.main([*argv, "--duration", "1e6"]) == 2
    assert "chained windows make at most 600 s" in capsys.readouterr().err
