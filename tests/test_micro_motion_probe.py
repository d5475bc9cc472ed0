"""The micro motion probe's scorer: the world's own clips score as coherent, a dot drawn afresh each frame does not."""

from types import SimpleNamespace

import numpy as np
import torch
from script_loading import load_script


probe = load_script("micro_motion_probe", "examples/synthetic_av")
micro = load_script("micro_world", "examples/synthetic_av")


def test_world_clips_have_no_jumps_and_no_reversals_away_from_the_walls():
    args = SimpleNamespace(frames=16, speed=(0.5, 0.9))
    scores = [probe.scored_motion(probe.clips([seed], args)[0], args) for seed in range(3_000_000, 3_000_016)]
    assert all(s["jumps"] == 0 and s["reversals_away_from_walls"] == 0 and s["faint_frames"] == 0 for s in scores)
    assert 0 < np.mean([s["reversals"] for s in scores]) < 4  # the bounces themselves
    # The tracker's centroid is biased near the walls (the dot is cut off there): measured at most 0.3 cells.
    assert all(s["coherent"] == 1.0 and s["path_max_residual"] < 0.5 for s in scores), scores


def test_fit_path_recovers_the_world_path_and_its_bounces():
    for seed in range(8):
        rng = np.random.default_rng(seed)  # the draws of `micro_clip`
        start, velocity = rng.uniform(1, micro.GRID - 1, 2), rng.choice([-1, 1], 2) * rng.uniform(0.5, 0.9, 2)
        path = np.stack([micro.bounce_path(start[i], velocity[i], 16) for i in range(2)], axis=1)
        fitted, bounces = micro.fit_path(path)
        assert np.abs(fitted - path).max() < 0.05
        truth = [t for t in micro.micro_clip(seed)[2] if t < 15]
        assert len(bounces) == len(truth) and np.allclose(bounces, truth, atol=0.1), (bounces, truth)


def test_a_dot_drawn_afresh_each_frame_jumps_and_turns_in_mid_box():
    # Each frame of the shuffled clip comes from another clip: the incoherence the probe exists to measure.
    frames = [micro.micro_clip(seed)[0][:, 0] for seed in range(16)]
    video = torch.stack(frames, dim=1)
    scores = probe.scored_motion(video, SimpleNamespace(speed=(0.5, 0.9)))
    assert scores["jumps"] >= 4 and scores["reversals_away_from_walls"] >= 2  # measured: 11 and 11
    assert scores["coherent"] == 0.0 and scores["path_rms_residual"] > 1.5, scores
