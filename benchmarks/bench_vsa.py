"""Attention time of Video Sparse Attention (coarse + fine, chunked-gather path) vs dense SDPA on CPU.

Video tokens 4k, 16k and 32k, sparsity 75%, 87.5% and 93.75%, each at one and at two torch threads
(`torch.set_num_threads`, whatever `OMP_NUM_THREADS` says), measured in one run with interleaved repeats.
Target: >= 6x at 87.5% for >= 16k tokens, at one and at two threads (the limit is 1 / (1 - 0.875) = 8x).

    python benchmarks/bench_vsa.py               # ~5 min on 2 cores
    python benchmarks/bench_vsa.py --quick       # 4k and 16k tokens only
    python benchmarks/bench_vsa.py --threads 1   # one thread only
    python benchmarks/bench_vsa.py --chunk_sizes 1 2 4 8    # tune the gather chunk
"""

import argparse
import os
import sys

import torch
import torch.nn.functional as F

from skyreels_diffusers.models.attention_video_sparse import video_sparse_attention


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import best_seconds, report  # noqa: E402


GRIDS = {"4k": (16, 16, 16), "16k": (16, 32, 32), "32k": (32, 32, 32)}


def thread_label(threads: int) -> str:
    return f"{threads} thread" + ("" if threads == 1 else "s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--head_dim", type=int, default=128)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.75, 0.875, 0.9375])
    parser.add_argument("--chunk_sizes", type=int, nargs="+", default=[0], help="0 = automatic (the default)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to measure")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if any(count < 1 for count in args.threads):
        parser.error(f"--threads must be positive, got {args.threads}")
    grids = {k: v for k, v in GRIDS.items() if not (args.quick and k == "32k")}

    torch.manual_seed(0)
    print(
        f"heads {args.heads} x head_dim {args.head_dim}, batch 1, torch threads {args.threads}, load {os.getloadavg()}"
    )
    print(f"{'tokens':>7} {'sparsity':>8} {'chunk':>5} {'threads':>7} {'dense s':>8} {'vsa s':>8} {'speedup':>8}")
    results = {}
    with torch.inference_mode():
        for name, grid in grids.items():
            tokens = grid[0] * grid[1] * grid[2]
            q, k, v, gate = (torch.randn(1, tokens, args.heads, args.head_dim) for _ in range(4))
            qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
            for sparsity in args.sparsities:
                for chunk in args.chunk_sizes:

                    def dense(qt=qt, kt=kt, vt=vt):
                        return F.scaled_dot_product_attention(qt, kt, vt)

                    def sparse(q=q, k=k, v=v, gate=gate, grid=grid, sparsity=sparsity, chunk=chunk):
                        return video_sparse_attention(
                            q, k, v, grid, gate=gate, sparsity=sparsity, backend="gather", chunk_size=chunk or None
                        )

                    for threads in args.threads:  # the thread counts back to back, so that load hits them alike
                        torch.set_num_threads(threads)
                        dense_s, vsa_s = best_seconds(dense, sparse, repeats=args.repeats)
                        speedup = dense_s / vsa_s
                        results[name, sparsity, chunk, threads] = speedup
                        print(
                            f"{name:>7} {sparsity:>8.4f} {chunk:>5} {threads:>7} {dense_s:>8.3f} {vsa_s:>8.3f}"
                            f" {speedup:>7.2f}x"
                        )
                        if sparsity == 0.875:
                            chunk_label = f", chunk {chunk}" if len(args.chunk_sizes) > 1 else ""
                            label = f"{name} tokens{chunk_label}, {thread_label(threads)}"
                            report(f"VSA vs dense SDPA, 87.5% sparsity, {label}", f"{speedup:.2f}x", ">= 6x")
    print(f"load after {os.getloadavg()}")
    for threads in args.threads:
        at_target = [
            r for (name, sparsity, _, t), r in results.items() if sparsity == 0.875 and name != "4k" and t == threads
        ]
        if at_target:
            print(
                f"target: >= 6x at 87.5% sparsity for >= 16k tokens, {thread_label(threads)}; "
                f"measured min {min(at_target):.2f}x"
            )


if __name__ == "__main__":
    main()
