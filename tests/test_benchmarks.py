"""`benchmarks/run_all.py` runs the benchmark scripts in subprocesses and collects their RESULT lines into one table
(small sizes here; the benchmarks themselves are never timed assertions)."""

import pytest
from script_loading import load_script


run_all = load_script("run_all", folder="benchmarks")


def test_run_all_collects_every_result_line_into_one_table(capsys):
    small = ["--quick", "--heads", "1", "--head_dim", "16", "--repeats", "1", "--sparsities", "0.875"]
    assert run_all.main(["--only", "vsa", "--threads", "1", "--", *small]) == 0
    out = capsys.readouterr().out
    assert out.startswith("device: CPU") and "| benchmark | threads |" in out
    rows = [line for line in out.splitlines() if line.startswith("| bench_vsa")]
    assert [row.split(" | ")[3] for row in rows] == [
        "VSA vs dense SDPA, 87.5% sparsity, 4k tokens, 1 thread",
        "VSA vs dense SDPA, 87.5% sparsity, 4k tokens, 2 threads",
        "VSA vs dense SDPA, 87.5% sparsity, 16k tokens, 1 thread",
        "VSA vs dense SDPA, 87.5% sparsity, 16k tokens, 2 threads",
    ]
    assert all(row.split(" | ")[1] == "1" and row.split(" | ")[4].endswith("x") for row in rows)


def test_a_failing_benchmark_is_a_row_and_an_exit_code(capsys):
    assert run_all.main(["--only", "vsa", "--threads", "1", "--", "--no-such-option"]) == 1
    out = capsys.readouterr().out
    assert "| failed | exit code 2 |" in out and "unrecognized arguments" in out


def test_unknown_benchmark_names_are_refused():
    with pytest.raises(SystemExit, match="unknown benchmark"):
        run_all.main(["--only", "nonexistent"])


def test_counted_flops_do_not_depend_on_the_thread_count():
    # At two threads Video Sparse Attention runs its chunks on worker threads, which the FLOP counter does not see.
    import torch

    from skyreels_diffusers.models.attention_video_sparse import video_sparse_attention

    measure = load_script("_measure", folder="benchmarks")
    q, k, v = (torch.randn(1, 4 * 8 * 8, 2, 16, generator=torch.Generator().manual_seed(i)) for i in range(3))

    def attend():
        with torch.inference_mode():
            video_sparse_attention(q, k, v, (4, 8, 8), sparsity=0.5, backend="gather", chunk_size=1)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = measure.count_flops(attend)
        torch.set_num_threads(2)
        two = measure.count_flops(attend)
    finally:
        torch.set_num_threads(threads)
    assert one == two > 0
