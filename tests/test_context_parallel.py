"""Ulysses context parallelism (Diffusers' `enable_parallelism`) on CPU: 2 gloo processes must reproduce the
single-process results. The per-rank code is in `context_parallel_worker.py`."""

import pytest
import torch
from context_parallel_worker import run_ranks
from diffusers import ContextParallelConfig

from skyreels_diffusers.tiny_components import build_tiny_refiner


@pytest.mark.slow
@pytest.mark.timeout(300)  # each retry spawns 2 fresh processes that import torch and Diffusers
@pytest.mark.parametrize(
    "case",
    [
        "joint_forward",  # T2AV, T2V, T2A, references + keyframes; no sequence divides by 2
        "joint_forward_indivisible_heads",
        "refiner_forward",
        "pipeline",
    ],
)
def test_two_process_context_parallel_matches_one_process(case, tmp_path):
    import warnings

    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    try:
        run_ranks(case, world_size=2, tmp_dir=str(tmp_path / "first"))
    except Exception as error:
        if not is_start_or_gloo_failure(error):
            raise  # a numeric mismatch or any other error in a rank fails at once
        warnings.warn(f"{case}: the 2-process run failed to start or lost gloo once, retrying: {error}", stacklevel=1)
        run_ranks(case, world_size=2, tmp_dir=str(tmp_path / "second"))


# What a retry is allowed for: a rank that died without a Python error (killed, e.g. by the OOM killer on a loaded
# machine) or gloo / the rendezvous store failing to connect. A rank's AssertionError (a mismatch) is never retried.
TRANSIENT_MARKERS = (
    "DistNetworkError",
    "DistStoreError",
    "Connection reset by peer",
    "Connection refused",
    "Connection closed by peer",
    "Address already in use",
    "Gloo connectFullMesh failed",
    "rendezvous",
)


def is_start_or_gloo_failure(error: BaseException) -> bool:
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    if isinstance(error, ProcessExitedException):
        return error.signal_name is not None  # killed by a signal; a rank exiting with a status raised instead
    if isinstance(error, ProcessRaisedException):
        message = str(error)
        return "AssertionError" not in message and any(marker in message for marker in TRANSIENT_MARKERS)
    return False


def transient_stderr(stderr: str) -> bool:
    """The torchrun test's equivalent of `is_start_or_gloo_failure` on the launcher's output."""
    return "AssertionError" not in stderr and any(
        marker in stderr for marker in (*TRANSIENT_MARKERS, "Signal 9", "SIGKILL")
    )


def test_only_start_and_gloo_failures_are_retried():
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    mismatch = "Traceback ...\nAssertionError: frames: max abs error 0.25"
    assert not is_start_or_gloo_failure(ProcessRaisedException(mismatch, 0, 1))
    assert not is_start_or_gloo_failure(ProcessRaisedException("ValueError: bad shape", 0, 1))
    assert not is_start_or_gloo_failure(AssertionError("frames"))
    assert not is_start_or_gloo_failure(ProcessExitedException("exited with code 1", 0, 1, exit_code=1))
    gloo = "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer"
    assert is_start_or_gloo_failure(ProcessRaisedException(gloo, 1, 2))
    assert is_start_or_gloo_failure(ProcessExitedException("killed", 1, 2, exit_code=-9, signal_name="SIGKILL"))
    assert not transient_stderr(mismatch) and transient_stderr(gloo)


def test_ring_attention_is_refused_with_a_clear_error():
    refiner = build_tiny_refiner()
    with pytest.raises(ValueError, match="ring_degree"):
        refiner.enable_parallelism(config=ContextParallelConfig(ring_degree=2))
    with pytest.raises(ValueError, match="ulysses_anything"):
        refiner.enable_parallelism(config=ContextParallelConfig(ulysses_degree=2, ulysses_anything=True))
    assert refiner._parallel_config is None and not torch.distributed.is_initialized()


def test_refiner_heads_must_divide_among_ranks():
    refiner = build_tiny_refiner()  # 2 heads
    with pytest.raises(ValueError, match="must divide the Refiner's num_attention_heads"):
        refiner.enable_parallelism(config=ContextParallelConfig(ulysses_degree=3))


@pytest.mark.slow
@pytest.mark.timeout(900)  # two launches of torchrun (a retry) with their own 300 s limits, and one CLI run
def test_generate_parallel_torchrun_writes_the_single_process_clip(tmp_path):
    """The documented launch: `torchrun --nproc_per_node 2 examples/inference/generate_parallel.py` on the embedded
    tiny default writes the clip that one process (`skyreels-v4 generate`) writes."""
    import subprocess
    import sys
    import warnings
    from pathlib import Path

    import av
    import numpy as np

    from skyreels_diffusers import cli

    repo = Path(__file__).resolve().parents[1]
    model = repo / "pipelines" / "skyreels-v4-tiny"
    options = ["--model", str(model), "--prompt", "<text>A blue square bounces.</text>", "--steps", "3"]
    single, parallel = tmp_path / "single.mp4", tmp_path / "parallel.mp4"
    assert cli.main(["generate", *options, "--out", str(single)]) == 0
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(repo / "examples" / "inference" / "generate_parallel.py"),
        *options,
        "--out",
        str(parallel),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and transient_stderr(result.stderr):
        # One CI run lost a rank once without a traceback (not reproduced in 3 local runs); the launcher now records
        # the failing rank's traceback. Retry once, and only for a killed rank or a gloo / rendezvous connection
        # error, so a transient failure is reported, not fatal; two failures in a row, or any other error, fail.
        warnings.warn(f"torchrun failed once, retrying: {result.stderr[-3000:]}", stacklevel=1)
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Ulysses over 2 processes (gloo)" in result.stdout

    def decode(path):
        with av.open(str(path)) as container:
            frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
            container.seek(0)
            audio = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
        return frames.astype(np.float32), audio

    (frames, audio), (expected_frames, expected_audio) = decode(parallel), decode(single)
    assert frames.shape == expected_frames.shape == (17, 64, 64, 3)
    # Frames equal to within float rounding (the ranks sum in another order) still encode to slightly different H.264
    # blocks: 0.3-0.5 levels of 255 on average here; a wrong sequence split differs by tens.
    assert np.abs(frames - expected_frames).mean() < 1.0
    assert audio.shape == expected_audio.shape and np.abs(audio - expected_audio).max() < 1e-2
