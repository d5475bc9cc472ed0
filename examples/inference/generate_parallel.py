"""Generate one clip with Ulysses context parallelism: every process holds the whole pipeline, and the joint
transformer splits the video and audio token sequences across the processes (Diffusers' `enable_parallelism`).

    torchrun --nproc_per_node 2 examples/inference/generate_parallel.py \
        --model pipelines/skyreels-v4-tiny --prompt "<text>A red circle bounces.</text><sfx>A knock.</sfx>" \
        --out clip.mp4

GPUs use NCCL (one GPU per process, `LOCAL_RANK`); without CUDA the processes run on CPU over gloo. All ranks
compute the same clip; rank 0 writes it. The options are those of `skyreels-v4 generate`. Multi-node: the usual
`torchrun --nnodes ... --rdzv_endpoint ...` arguments.
"""

import argparse
import os
import sys

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig
from torch.distributed.elastic.multiprocessing.errors import record

from skyreels_diffusers.cli import add_generate_arguments, generate, load_pipeline


@record  # torchrun then prints the failing rank's traceback in its summary
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generate_arguments(parser)
    args = parser.parse_args()
    if "RANK" not in os.environ:
        parser.error(
            "launch with torchrun, e.g. `torchrun --nproc_per_node 2 examples/inference/generate_parallel.py`"
        )

    use_cuda = torch.cuda.is_available()
    if not use_cuda and torch.accelerator.device_count() == 0:
        # Diffusers' `enable_parallelism` places rank r on accelerator `r % device_count()`, which divides by zero on
        # a CPU-only machine; with one device reported it builds its mesh on the CPU, which gloo serves.
        torch.accelerator.device_count = lambda: 1
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu")
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    try:
        # Diffusers copies a folder's pipeline stub into a shared module cache as it loads: rank 0 loads first, so the
        # others never read a half-written copy (seen once in CI as a missing `SkyReelsV4Pipeline` on rank 1).
        if rank != 0:
            dist.barrier()
        pipe = load_pipeline(args.model, args.dtype, device)
        if rank == 0:
            dist.barrier()
        pipe.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world_size))
        if rank == 0:
            print(f"context parallelism: Ulysses over {world_size} processes ({dist.get_backend()})")
        generate(args, pipe=pipe, write=rank == 0)
    except (ValueError, TypeError, OSError) as error:
        print(f"generate_parallel (rank {rank}): error: {error}", file=sys.stderr)
        return 2
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
