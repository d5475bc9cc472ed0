"""Text to synchronized sound and picture in the micro world: the committed micro joint model of
`examples/synthetic_av/micro_t2av/` generates both streams from text alone, here, through the pipelines' denoising
loop, on noise seeds no training run or tuning decision used; beside it, the same model trained the same way twice
more, each with one part taken out (the ablations): its audio<->video cross-attention frozen, and its video temporal
RoPE removed. Rebuilt by

    python examples/synthetic_av/micro_t2av.py --out examples/synthetic_av/micro_t2av --variants full
    python examples/synthetic_av/micro_t2av.py --out examples/synthetic_av/micro_t2av --variants frozen_cross_modal
    python examples/synthetic_av/micro_t2av.py --out examples/synthetic_av/micro_t2av --variants no_temporal_rope

(6000 steps each, 33-43 minutes on one thread).

It guards what the recipe reaches today, not the issue's targets (a residual of at most one cell with no jump, and
80% of bounces with a click), which it does not meet (README, "Why, in the micro world"): the dot stays near a path
the world could make (a position drawn afresh each frame is 3 cells off and turns 11 times per clip in mid-box); the
clicks land on the generated picture's wall hits above chance; given the world's own video, the same model clicks on
nearly every bounce, so what holds T2AV sync down is the picture, not the sound. Frozen cross-attention keeps the
clicks near chance on both measures that need no fitted path (against the fitted path it stays 10 points above).
Without the video temporal RoPE the motion falls apart.
"""

import json
import os

import pytest
import torch
from script_loading import load_script


micro_t2av = load_script("micro_t2av", "examples/synthetic_av")
FOLDER = os.path.join(os.path.dirname(__file__), "..", "examples", "synthetic_av", "micro_t2av")


@pytest.fixture(scope="module")
def scores() -> dict[str, dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = {}
        for variant in micro_t2av.VARIANTS:
            model, recipe = micro_t2av.load(FOLDER, variant)
            result[variant] = micro_t2av.score(model, recipe, samples=32)
        print(result)  # `pytest -s`: the figures of the README
        return result
    finally:
        torch.set_num_threads(threads)


# Measured (32 samples, one thread), full model: path residual RMS 1.23 cells (largest per frame 2.31), 0.81 turns per
# clip in mid-box, 0.84 jumps, 6% of clips coherent; sync at the nearest world path's wall hits 30.4% (chance 13.0%),
# 1.04 clicks per bounce; at the picture's own wall contacts 30.4% (chance 12.5%; the contact detector finds 90% of
# the bounces of world clips); given the world's video 95.1% (chance 19.5%). Frozen cross-attention: 21.4% (10.7%),
# 24.5% (20.4%), 31.7% (22.0%). Temporal RoPE removed: 10.25 turns per clip in mid-box, 6.56 jumps, residual 1.82 cells,
# no clip coherent (and video-to-audio 31.7%, chance 22.0%: the cross-attention aligns the streams by the video's
# temporal positions, so the sound loses the picture's timing too).


@pytest.mark.slow
def test_the_generated_dot_stays_near_a_path_the_world_could_make(scores):
    full = scores["full"]
    assert full["path_rms_residual"] <= 2.0, full
    assert full["reversals_away_from_walls"] <= 2.5, full
    assert full["jumps"] <= 2.0, full


@pytest.mark.slow
def test_the_generated_clicks_land_on_the_generated_wall_hits_above_chance(scores):
    full = scores["full"]
    assert full["sync_within_one_frame"] >= full["sync_within_one_frame_chance"] + 0.1, full
    assert full["sync_at_own_contacts"] >= full["sync_at_own_contacts_chance"] + 0.1, full
    assert 0.5 <= full["clicks_per_bounce"] <= 2.0, full  # clicking, not silent and not on every latent
    assert full["contacts_recall_on_world_clips"] >= 0.8, full  # the contact detector finds real bounces


@pytest.mark.slow
def test_given_the_worlds_video_the_joint_model_clicks_on_its_bounces(scores):
    full = scores["full"]
    assert full["sync_given_world_video"] >= 0.85, full
    assert full["sync_given_world_video"] >= full["sync_given_world_video_chance"] + 0.5, full


@pytest.mark.slow
def test_with_the_cross_attention_frozen_the_clicks_are_near_chance(scores):
    frozen = scores["frozen_cross_modal"]
    assert 0.5 <= frozen["clicks_per_bounce"] <= 2.0, frozen  # still clicking: at chance for the right reason
    assert frozen["sync_given_world_video"] <= frozen["sync_given_world_video_chance"] + 0.2, frozen
    assert frozen["sync_at_own_contacts"] <= frozen["sync_at_own_contacts_chance"] + 0.12, frozen
    full = scores["full"]
    assert full["sync_given_world_video"] - frozen["sync_given_world_video"] >= 0.4, (full, frozen)


@pytest.mark.slow
def test_without_the_video_temporal_rope_the_motion_falls_apart(scores):
    """Every frame at temporal position 0: nothing but content tells the frames apart, and the dot is placed afresh
    each frame (a position drawn at random turns about 11 times per clip in mid-box)."""
    ablated, full = scores["no_temporal_rope"], scores["full"]
    assert ablated["reversals_away_from_walls"] >= 5 and ablated["jumps"] >= 3, ablated
    assert ablated["reversals_away_from_walls"] >= 4 * full["reversals_away_from_walls"], (ablated, full)
    assert ablated["path_rms_residual"] >= full["path_rms_residual"] + 0.3, (ablated, full)
    assert ablated["coherent"] <= 0.05, ablated


def test_the_script_trains_saves_and_reloads_every_variant(tmp_path):
    threads = torch.get_num_threads()
    try:
        micro_t2av.main(["--out", str(tmp_path), "--steps", "2", "--samples", "2", "--heads", "2", "--lr", "1e-3"])
    finally:
        torch.set_num_threads(threads)  # main sets one thread
    for variant in micro_t2av.VARIANTS:
        model, recipe = micro_t2av.load(str(tmp_path), variant)
        assert recipe["steps"] == 2 and recipe["lr"] == 1e-3 and not model.training
        assert model.config.num_attention_heads == 2
    ablated, _ = micro_t2av.load(str(tmp_path), "no_temporal_rope")
    positions = ablated.video_positions((3, 2, 2))
    assert positions[:, 0].abs().max() == 0 and positions[:, 1:].abs().max() > 0  # time gone, space kept
    with pytest.raises(ValueError, match="variant"):
        micro_t2av.build("no_audio", recipe)

    # Re-scoring committed weights leaves them alone and files the run under its own name.
    weights = (tmp_path / "full.safetensors").read_bytes()
    try:
        micro_t2av.main(
            ["--out", str(tmp_path), "--score_only", "--variants", "full", "--samples", "2", "--video_lead_steps", "3"]
        )
        micro_t2av.main(
            ["--out", str(tmp_path), "--score_only", "--variants", "full", "--samples", "2", "--shift", "3"]
        )
    finally:
        torch.set_num_threads(threads)
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert {"full", "full_video_lead_3", "full_shift_3", "no_temporal_rope"} <= scores.keys()
    assert (tmp_path / "full.safetensors").read_bytes() == weights
    with pytest.raises(ValueError, match="video_lead_steps"):
        micro_t2av.main(["--out", str(tmp_path), "--score_only", "--video_lead_steps", "-1"])
    with pytest.raises(ValueError, match="heads"):
        micro_t2av.main(["--out", str(tmp_path), "--heads", "0"])
    with pytest.raises(ValueError, match="shift"):
        micro_t2av.main(["--out", str(tmp_path), "--score_only", "--shift", "0"])


def test_video_to_audio_holds_the_given_video_and_hears_it():
    model, _ = micro_t2av.load(FOLDER, "full")
    world_videos = torch.stack([micro_t2av.micro_clip(seed)[0] for seed in (4_000_000, 4_000_001)])
    videos, audios = micro_t2av.generate_micro(model, [0, 0], steps=4, video=world_videos)
    assert torch.equal(videos, world_videos)  # held at timestep 0, never stepped
    assert not torch.allclose(audios[0], audios[1], atol=1e-3)  # same noise, another picture: another soundtrack
    with pytest.raises(ValueError, match="one clip per seed"):
        micro_t2av.generate_micro(model, [0], steps=4, video=world_videos)


def test_a_generated_clip_depends_on_its_seed_not_on_its_batch():
    model, _ = micro_t2av.load(FOLDER, "full")
    alone_video, alone_audio = micro_t2av.generate_micro(model, [7], steps=3)
    video, audio = micro_t2av.generate_micro(model, [3, 7], steps=3)
    torch.testing.assert_close(video[1], alone_video[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(audio[1], alone_audio[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(video[0], video[1], atol=1e-2)
