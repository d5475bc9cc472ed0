"""Which floating-point type runs fastest on a device, for the command line, the demo and the benchmarks."""

import torch


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_fast_bfloat16() -> bool:
    """True when the CPU multiplies bfloat16 matrices in hardware (AMX-BF16 or AVX512-BF16). Without either, PyTorch
    emulates bfloat16 and it runs several times slower than float32 (measured: 4x on an AVX-512 Xeon without BF16)."""
    try:
        features = torch._C._cpu._get_cpu_capability()
    except (AttributeError, RuntimeError):  # older PyTorch: no feature report, assume the safe choice
        return False
    return bool(features.get("amx_bf16") or features.get("avx512_bf16"))


def fastest_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """bfloat16 on CUDA GPUs that support it and on CPUs with hardware bfloat16; float32 elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bfloat16() else torch.float32
    return torch.float32


def resolve_dtype(name: str, device: torch.device | str = "cpu") -> torch.dtype:
    """`"auto"` (the fastest dtype on `device`) or one of `DTYPES`."""
    if name == "auto":
        return fastest_dtype(device)
    if name not in DTYPES:
        raise ValueError(f"`dtype` must be 'auto' or one of {sorted(DTYPES)}, got {name!r}.")
    return DTYPES[name]
