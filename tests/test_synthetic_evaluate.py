import os
import sys

import numpy as np
import pytest


sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "synthetic_av"))
import evaluate  # noqa: E402
import world  # noqa: E402


@pytest.mark.parametrize("seed", range(6))
def test_adherence_detects_the_rendered_colour_and_shape(seed):
    clip = world.render_clip(seed)
    assert evaluate.detect_colour_and_shape(clip.frames) == (clip.objects[0]["colour"], clip.objects[0]["shape"])


def test_onsets_exactly_at_bounces_score_100_percent():
    clip = world.render_clip(7, num_frames=49)
    bounces = evaluate.bounce_times_from_video(clip.frames, clip.fps)
    truth = [seconds for seconds, _ in clip.bounces]
    assert len(bounces) == len(truth)
    assert max(min(abs(b - t) for t in truth) for b in bounces) <= 1 / clip.fps  # the video finds the bounces
    error, fraction = evaluate.sync_metrics(bounces, evaluate.audio_onsets(clip.audio, clip.sample_rate), clip.fps)
    assert fraction == 1.0 and error < 1000 / clip.fps


def knocks(times, sample_rate=44100, seconds=3.0):
    """A hand-built track: a decaying 440 Hz knock starting at each of `times`."""
    audio = np.zeros(int(seconds * sample_rate), np.float32)
    t = np.arange(int(0.1 * sample_rate)) / sample_rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * np.exp(-t / 0.03)).astype(np.float32)
    for start in times:
        index = int(round(start * sample_rate))
        audio[index : index + len(tone)] += tone[: len(audio) - index]
    return audio


def test_hand_built_onsets_exact_and_shifted_by_five_frames():
    fps, bounces = 16, [0.5, 1.25, 2.0]  # well apart, so a shifted knock cannot land on another bounce
    exact = evaluate.sync_metrics(bounces, evaluate.audio_onsets(knocks(bounces), 44100), fps)
    assert exact[1] == 1.0 and exact[0] < 5
    shifted = evaluate.sync_metrics(bounces, evaluate.audio_onsets(knocks([b + 5 / fps for b in bounces]), 44100), fps)
    assert shifted[1] == 0.0 and abs(shifted[0] - 5000 / fps) < 5


def test_psnr_and_masks():
    a = np.zeros((4, 4, 3))
    b = a.copy()
    b[0, 0] = 0.1
    assert evaluate.psnr(a, a) == float("inf")
    assert abs(evaluate.psnr(a, b) - 10 * np.log10(1 / (0.01 * 3 / 48))) < 1e-9
    mask = np.ones((4, 4, 3), bool)
    mask[0, 0] = False
    assert evaluate.psnr(a, b, mask) == float("inf")


def test_stray_specks_do_not_change_the_detected_shape():
    clip = world.render_clip(2)
    frames = clip.frames.copy()
    frames[:, 0, 0] = frames[:, -1, -1] = (255, 255, 255)  # specks far from the object
    assert evaluate.detect_colour_and_shape(frames) == (clip.objects[0]["colour"], clip.objects[0]["shape"])
    assert evaluate.bounce_times_from_video(frames, clip.fps) == evaluate.bounce_times_from_video(
        clip.frames, clip.fps
    )


def test_motion_jumps_zero_for_the_world_and_counted_for_a_spliced_clip():
    def jumps(frames, fps):
        return evaluate.motion_jumps(evaluate.centroid_track(frames), frames.shape[2], fps)

    clips = [world.render_clip(seed, num_frames=17) for seed in range(6)]
    assert all(jumps(clip.frames, clip.fps) == 0 for clip in clips)
    # Splice the second half of another clip whose object is far away at the cut: one teleport.
    first = clips[0]
    far = max(
        clips[1:],
        key=lambda c: np.linalg.norm(
            evaluate.centroid_track(c.frames[8:9]) - evaluate.centroid_track(first.frames[7:8])
        ),
    )
    spliced = np.concatenate([first.frames[:8], far.frames[8:]])
    assert jumps(spliced, first.fps) == 1


def test_sync_summary_scores_a_silent_clip_and_beats_chance_on_the_world():
    fps, bounces = 16, [0.5, 1.25, 2.0]
    onsets = evaluate.audio_onsets(knocks(bounces), 44100)
    summary = evaluate.sync_summary([(bounces, onsets), (bounces, []), (bounces, onsets)], fps)
    # The silent clip counts (0% within a frame), and its infinite error does not hide the other clips' errors.
    assert summary["sync_within_one_frame"] == pytest.approx(2 / 3) and summary["clips_with_bounces"] == 3
    assert summary["sync_median_error_ms"] < 5

    clips = [world.render_clip(seed, num_frames=49) for seed in range(4)]
    video = [evaluate.bounce_times_from_video(clip.frames, clip.fps) for clip in clips]
    audio = [evaluate.audio_onsets(clip.audio, clip.sample_rate) for clip in clips]
    matched = evaluate.sync_summary(zip(video, audio), clips[0].fps)
    others = evaluate.sync_summary([(video[i], audio[j]) for i in range(4) for j in range(4) if i != j], clips[0].fps)
    assert matched["sync_within_one_frame"] == 1.0 and matched["onset_precision"] == 1.0
    assert others["sync_within_one_frame"] < 0.5 and others["onset_precision"] < 0.5


@pytest.mark.parametrize("sample_rate", [8000, 16000])
def test_knocks_of_the_world_are_classified_by_pitch_and_timbre(sample_rate):
    pitch, timbre = [], []
    for seed in range(20):
        clip = world.render_clip(seed, num_frames=17, sample_rate=sample_rate)
        shape, colour = clip.objects[0]["shape"], clip.objects[0]["colour"]
        p, t = evaluate.knock_matches(clip.audio, sample_rate, evaluate.isolated_knocks(clip), shape, colour)
        pitch += p
        timbre += t
    assert len(pitch) > 15 and all(pitch) and all(timbre)
    # A knock of another shape and colour is told apart; silence is a miss, not a skip.
    audio = np.zeros(sample_rate, np.float32)
    world.add_knock(audio, 0.2, "triangle", "yellow", sample_rate)
    assert evaluate.classify_knock(audio, sample_rate, 0.2) == ("triangle", "yellow")
    assert evaluate.knock_matches(audio, sample_rate, [0.2, 0.6], "circle", "red") == ([False, False], [False, False])
    assert evaluate.classify_knock(audio, sample_rate, 0.98) is None  # too close to the end to tell


def test_shape_fidelity_and_size_of_world_objects():
    for seed in range(6):
        clip = world.render_clip(seed, num_frames=9)
        shape = clip.objects[0]["shape"]
        iou, radius = evaluate.shape_fidelity(clip.frames, shape)
        assert iou > 0.97 and abs(radius * 64 - clip.objects[0]["radius"]) < 1.0
        wrong = next(other for other in world.SHAPES if other != shape)
        assert evaluate.shape_fidelity(clip.frames, wrong)[0] < iou - 0.08


def test_mid_box_reversals_zero_for_the_world_and_counted_for_wobble():
    wall_turns = 0
    for seed in range(6):
        clip = world.render_clip(seed, num_frames=33)
        track = evaluate.centroid_track(clip.frames)
        assert evaluate.mid_box_reversals(track, 64, margin=2.0) == 0
        turns = evaluate.turns(track, 64, margin=2.0)
        assert [frame / 16 for frame, _ in turns] == evaluate.bounce_times(track, 16)  # the same turns, classified
        wall_turns += len(turns)
    assert wall_turns >= 6  # the world does turn (at walls), so "no mid-box turn" is not "no turn"
    track = np.stack([np.full(9, 32.0), 32 + np.array([0, 1, 2, 1, 0, 1, 2, 1, 0.0])], axis=1)  # up-down in mid-box
    assert evaluate.mid_box_reversals(track, 64, margin=2.0) == 3  # turns at y = 34, 32, 34
