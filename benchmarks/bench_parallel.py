"""Context-parallel speedup of `SkyReelsV4Transformer3DModel` on CPU: per-step (one T2AV forward) time with 1 and
with 2 processes (Ulysses over gloo, `enable_parallelism`), measured in one run at a size where attention dominates.

Each process gets one thread, so "2 processes" uses two cores where "1 process" uses one; the script also times one
process with two threads (the same two cores through intra-op parallelism), the honest alternative on this machine.
It checks that the parallel output matches the single-process one.

    python benchmarks/bench_parallel.py           # hidden 256, 16 x 20 x 24 video tokens (~3 min on 2 cores)
    python benchmarks/bench_parallel.py --quick   # smaller, for a smoke run
"""

import argparse
import os
import sys
import tempfile

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig

from skyreels_diffusers import SkyReelsV4Transformer3DModel


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import attention_flop_share, best_seconds, report  # noqa: E402


def build(args):
    torch.manual_seed(0)
    model = SkyReelsV4Transformer3DModel(
        in_channels=33,
        out_channels=16,
        audio_in_channels=16,
        num_attention_heads=args.heads,
        attention_head_dim=args.head_dim,
        num_layers=args.layers,
        num_single_layers=args.single_layers,
        num_token_refiner_layers=1,
        text_embed_dim=64,
        patch_size=1,
        rope_axes_dim=(16, 24, 24),
    ).eval()
    # Audio covers the clip: (latent frames - 1) * 4 + 1 frames at 16 fps, at 44100 / 1024 latents per second.
    audio_len = round(((args.latent_frames - 1) * 4 + 1) / 16 * 44100 / 1024)
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 33, args.latent_frames, args.height, args.width, generator=generator),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 32, 64, generator=generator),
        "audio_hidden_states": torch.randn(1, 16, audio_len, generator=generator),
    }
    return model, inputs


def run_rank(rank: int, world_size: int, threads: int, args, tmp_dir: str) -> None:
    torch.set_num_threads(threads)
    model, inputs = build(args)
    if world_size > 1:
        init = f"file://{os.path.join(tmp_dir, f'init{world_size}')}"
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world_size))
    with torch.no_grad():
        (seconds,) = best_seconds(lambda: model(**inputs), repeats=args.repeats)
        sample = model(**inputs).sample
    if world_size > 1:
        slowest = torch.tensor([seconds])
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        seconds = slowest.item()
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        torch.save({"seconds": seconds, "sample": sample}, os.path.join(tmp_dir, f"{world_size}x{threads}.pt"))


def measure(world_size: int, threads: int, args, tmp_dir: str) -> dict:
    torch.multiprocessing.spawn(run_rank, args=(world_size, threads, args, tmp_dir), nprocs=world_size, join=True)
    return torch.load(os.path.join(tmp_dir, f"{world_size}x{threads}.pt"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2, help="dual-stream blocks per tower")
    parser.add_argument("--single_layers", type=int, default=1, help="single-stream blocks per tower")
    parser.add_argument("--latent_frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=20, help="latent height (patch 1: tokens per row)")
    parser.add_argument("--width", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 x 10 x 12 video tokens, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.latent_frames, args.height, args.width, args.repeats = 4, 10, 12, 2

    video_tokens = args.latent_frames * args.height * args.width
    model, inputs = build(args)
    with torch.no_grad():
        share = attention_flop_share(lambda: model(**inputs))
    print(
        f"hidden {args.heads * args.head_dim} ({args.heads} heads), {args.layers} dual + {args.single_layers} "
        f"single blocks per tower, {video_tokens} video tokens + audio; attention share of FLOPs: "
        f"{share:.0%}"
    )
    with tempfile.TemporaryDirectory() as tmp_dir:
        one = measure(1, 1, args, tmp_dir)
        one_two_threads = measure(1, 2, args, tmp_dir)
        two = measure(2, 1, args, tmp_dir)
    error = (two["sample"] - one["sample"]).abs().max().item()
    print(f"per step, 1 process x 1 thread:  {one['seconds']:.3f} s")
    print(f"per step, 1 process x 2 threads: {one_two_threads['seconds']:.3f} s")
    print(
        f"per step, 2 processes x 1 thread (Ulysses): {two['seconds']:.3f} s  (max abs diff vs 1 process: {error:.1e})"
    )
    print(f"speedup 2 processes vs 1 process (1 thread each): {one['seconds'] / two['seconds']:.2f}x")
    print(f"speedup 2 processes vs 1 process with 2 threads:  {one_two_threads['seconds'] / two['seconds']:.2f}x")
    report("context parallel, 2 processes vs 1 (1 thread each)", f"{one['seconds'] / two['seconds']:.2f}x faster")
    report(
        "context parallel, 2 processes vs 1 process x 2 threads", f"{one_two_threads['seconds'] / two['seconds']:.2f}x"
    )


if __name__ == "__main__":
    main()
