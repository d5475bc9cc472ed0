import json
import os
import sys

import av
import numpy as np


sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "synthetic_av"))
import world  # noqa: E402


def test_deterministic_from_the_seed():
    a, b, c = world.render_clip(3), world.render_clip(3), world.render_clip(4)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.caption == b.caption and a.bounces == b.bounces
    assert not np.array_equal(a.frames, c.frames)


def test_shapes_stay_in_the_box_and_show_their_colour():
    clip = world.render_clip(5, num_frames=33, size=64, num_objects=2)
    assert clip.frames.shape == (33, 64, 64, 3) and clip.frames.dtype == np.uint8
    for obj in clip.objects:
        colour = np.array(world.COLOURS[obj["colour"]], dtype=np.uint8)
        assert (clip.frames == colour).all(-1).sum(axis=(1, 2)).min() > 0  # visible in every frame
        assert f"{obj['colour']} {obj['shape']}" in clip.caption
    assert clip.caption.count("<text>") == 2 and clip.caption.count("<sfx>") == 2


def test_audio_onsets_sit_exactly_at_the_bounces():
    clip = world.render_clip(7, num_frames=49)
    assert len(clip.bounces) >= 2
    assert len(clip.audio) == round(49 / 16 * 44100)
    envelope = np.abs(clip.audio)
    for seconds, _ in clip.bounces:
        start = int(round(seconds * clip.sample_rate))
        before = envelope[max(0, start - 300) : start].max(initial=0.0)
        after = envelope[start : start + 300].max()
        assert after > 0.1 and after > 3 * before + 1e-3
    # Pitch follows the shape: the spectrum of the first knock peaks at the shape's pitch.
    seconds, index = clip.bounces[0]
    start = int(round(seconds * clip.sample_rate))
    window = clip.audio[start : start + 4096] * np.hanning(4096)
    peak = np.argmax(np.abs(np.fft.rfft(window))) * clip.sample_rate / 4096
    assert abs(peak - world.PITCH_HZ[clip.objects[index]["shape"]]) < 15


def test_writes_mp4_clips_and_a_manifest(tmp_path):
    manifest = world.write_dataset(str(tmp_path), num_clips=2, seed=10, num_frames=17, size=32)
    records = [json.loads(line) for line in open(manifest, encoding="utf-8")]
    assert [r["seed"] for r in records] == [10, 11]
    from skyreels_diffusers.utils.media import load_video

    with av.open(str(tmp_path / records[0]["video"])) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
    frames, fps = load_video(str(tmp_path / records[0]["video"]))
    assert len(frames) == 17 and fps == 16 and frames[0].size == (32, 32)
    assert "<sfx>" in records[0]["caption"] and isinstance(records[0]["bounces"], list)
