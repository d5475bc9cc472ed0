"""Shared measurement helpers of the benchmark scripts (imported as a sibling module)."""

import time

import torch
from torch.utils.flop_counter import FlopCounterMode


RESULT_PREFIX = "RESULT\t"


def report(metric: str, value: str, target: str = "") -> None:
    """One headline number, printed as a tab-separated line that `run_all.py` collects into its table."""
    print(f"{RESULT_PREFIX}{metric}\t{value}\t{target}", flush=True)


def best_seconds(*fns, repeats: int) -> list[float]:
    """Best-of-`repeats` wall time of each function, runs interleaved so that machine load hits all alike."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            start = time.perf_counter()
            fn()
            fn_times.append(time.perf_counter() - start)
    return [min(fn_times) for fn_times in times]


def cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the fused CPU attention kernel, which `FlopCounterMode` does not count: QK^T and PV."""
    batch, heads, query_len, head_dim = query_shape
    return 4 * batch * heads * query_len * key_shape[-2] * head_dim


CPU_ATTENTION = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _counted(fn) -> FlopCounterMode:
    # The counter sees only this thread's ops, and at two or more threads Video Sparse Attention hands its chunks to
    # worker threads: count at one thread, where every op runs here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with FlopCounterMode(display=False, custom_mapping={CPU_ATTENTION: cpu_flash_attention_flops}) as counter:
            fn()
    finally:
        torch.set_num_threads(threads)
    return counter


def count_flops(fn) -> int:
    """FLOPs of one call of `fn`, attention included."""
    return _counted(fn).get_total_flops()


def attention_flop_share(fn) -> float:
    """Fraction of the FLOPs of one call of `fn` spent in attention (QK^T and PV)."""
    counter = _counted(fn)
    return counter.get_flop_counts()["Global"].get(CPU_ATTENTION, 0) / counter.get_total_flops()
