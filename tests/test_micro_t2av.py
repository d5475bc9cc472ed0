"""Text to synchronized sound and picture in the micro world: the committed micro joint model of
`examples/synthetic_av/micro_t2av/` (rebuilt by `python examples/synthetic_av/micro_t2av.py --out
examples/synthetic_av/micro_t2av --variants full`: 6000 steps, 43 minutes on one loaded thread) generates both
streams from text alone, here, through the pipelines' denoising loop, on noise seeds no training run or tuning
decision used.

It guards what the recipe reaches today, not the issue's targets (a residual of at most one cell with no jump, and
80% of bounces with a click), which it does not meet (README, "Why, in the micro world"): the dot stays near a path
the world could make (a position drawn afresh each frame is 3 cells off and turns 11 times per clip in mid-box), and
the clicks land on that path's wall hits well above chance. What breaks them, measured on ablations trained 1500
steps beside a full model trained the same (README): without the video's temporal RoPE, 10.8 turns in mid-box and
6.9 jumps per clip (full: 2.1 and 1.2); with the cross-attention frozen, sync 8.7 points over chance (full: 21).
"""

import os

import pytest
import torch
from script_loading import load_script


micro_t2av = load_script("micro_t2av", "examples/synthetic_av")
FOLDER = os.path.join(os.path.dirname(__file__), "..", "examples", "synthetic_av", "micro_t2av")


@pytest.fixture(scope="module")
def scores() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, recipe = micro_t2av.load(FOLDER, "full")
        result = micro_t2av.score(model, recipe, samples=32)
        print(result)  # `pytest -s`: the figures of the README
        return result
    finally:
        torch.set_num_threads(threads)


# Measured (32 samples, one thread): path residual RMS 1.23 cells (largest per frame 2.31), 0.81 turns per clip in
# mid-box, 0.84 jumps, 6% of clips coherent; sync 30.4% (chance 13.0%), 1.04 clicks per bounce.


@pytest.mark.slow
def test_the_generated_dot_stays_near_a_path_the_world_could_make(scores):
    assert scores["path_rms_residual"] <= 2.0, scores
    assert scores["reversals_away_from_walls"] <= 2.5, scores
    assert scores["jumps"] <= 2.0, scores


@pytest.mark.slow
def test_the_generated_clicks_land_on_the_generated_wall_hits_above_chance(scores):
    assert scores["sync_within_one_frame"] >= scores["sync_within_one_frame_chance"] + 0.1, scores
    assert 0.5 <= scores["clicks_per_bounce"] <= 2.0, scores  # clicking, not silent and not on every latent


def test_the_script_trains_saves_and_reloads_every_variant(tmp_path):
    threads = torch.get_num_threads()
    try:
        micro_t2av.main(["--out", str(tmp_path), "--steps", "2", "--samples", "2"])  # sets one thread
    finally:
        torch.set_num_threads(threads)
    for variant in micro_t2av.VARIANTS:
        model, recipe = micro_t2av.load(str(tmp_path), variant)
        assert recipe["steps"] == 2 and not model.training
    ablated, _ = micro_t2av.load(str(tmp_path), "no_temporal_rope")
    positions = ablated.video_positions((3, 2, 2))
    assert positions[:, 0].abs().max() == 0 and positions[:, 1:].abs().max() > 0  # time gone, space kept
    with pytest.raises(ValueError, match="variant"):
        micro_t2av.build("no_audio", recipe)
