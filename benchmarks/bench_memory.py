"""Memory of the full-size SkyReels-V4 models, counted on the meta device (nothing is allocated, no weights read).

1. Weight memory: fp32, bf16, and bf16 with layerwise casting to fp8 storage (`enable_layerwise_casting`), with
   Diffusers' default skip patterns (before: "norm" keeps every adaLN modulation linear in bf16) and with the
   models' own (after).
2. Block-level group offloading (`enable_group_offload(..., offload_type="block_level", num_blocks_per_group=1)`):
   the largest group's share of the weights with Diffusers' top-level block detection alone (before: both towers
   form one group) and with the models' `_group_offload_block_modules` (after). With offloading, the accelerator
   holds the largest group (twice, when the next one loads ahead) instead of every weight.
3. Peak activation memory of one joint T2AV forward at 5 s and 15 s (inference, bf16), estimated analytically from
   token counts and widths (see `activation_bytes`), then scaled by measured / analytic on a small model (hidden
   256, one block of each kind, 9 x 32 x 32 video tokens) run on the CPU with every live tensor counted: the
   formula misses small transients (fp32 RoPE products, attention reshapes).

    python benchmarks/bench_memory.py               # 480x848 at 16 fps, 512 prompt tokens, batch 1 (~15 s)
    python benchmarks/bench_memory.py --batch 2     # classifier-free guidance in one batch
    python benchmarks/bench_memory.py --quick       # the joint model only
"""

import argparse
import math
import os
import sys
import weakref

import torch
from diffusers.hooks.group_offloading import _GROUP_OFFLOADING
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN, apply_layerwise_casting
from diffusers.utils import logging
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from skyreels_diffusers import SkyReelsV4RefinerTransformer3DModel, SkyReelsV4Transformer3DModel


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import report  # noqa: E402


GIB = 2**30
# `_skip_layerwise_casting_patterns` before this change; Diffusers adds its defaults and `_keep_in_fp32_modules`.
PREVIOUS_SKIP_PATTERNS = ("x_embedder", "context_embedder", "norm", "text_type_embedding", "time_embed")


def build(cls, dtype=torch.float32):
    """The default (full-size) configuration on the meta device, in `dtype` but for `_keep_in_fp32_modules`, as
    `from_pretrained(..., torch_dtype=dtype)` loads it."""
    with torch.device("meta"):
        model = cls()
    model.to(dtype)
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in model._keep_in_fp32_modules:
            module.to(torch.float32)
    return model


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def largest_group_share(model, block_modules=None) -> tuple[float, int]:
    """Share of the weights in the largest block-level offload group, and the number of groups."""
    # Onloading is never run: the meta offload device only lets the hooks be placed on meta weights.
    model.enable_group_offload(
        torch.device("cpu"),
        offload_device=torch.device("meta"),
        offload_type="block_level",
        num_blocks_per_group=1,
        block_modules=block_modules,
    )
    groups = {}
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook(_GROUP_OFFLOADING) if registry is not None else None
        if hook is not None:
            groups[id(hook.group)] = hook.group
    sizes = []
    for group in groups.values():
        params = {id(p): p for m in group.modules for p in m.parameters()}
        params.update({id(p): p for p in group.parameters})
        sizes.append(sum(p.numel() for p in params.values()))
    return max(sizes) / sum(p.numel() for p in model.parameters()), len(sizes)


def activation_bytes(config, video_tokens: int, audio_tokens: int, text_tokens: int, batch: int) -> dict[str, int]:
    """Analytic peak of one joint forward without gradients, in bf16.

    Resident through the whole forward: each tower's token states (media, prompt tokens, the refined prompt kept
    for the text cross-attention) and the fp32 RoPE tables (cos and sin; 3D and temporal for video, temporal for
    audio). On top, the working set of the largest block, the video tower's single-stream block on
    `N = video + text` tokens at width `d` with MLP ratio `r`: residual, normed input, MLP hidden (`r`), attention
    output, the `[attention ; MLP]` concat (`1 + r`) and its projection: `(5 + 2r) N d` values (13 at r = 4; the
    attention itself peaks lower, at `(8 + r) N d`, with a memory-efficient SDPA kernel). A dual-stream block holds
    `(2 + 2r) N d`, a cross-modal block less. The towers run one after the other, so only one working set is live.
    """
    dim = config.num_attention_heads * config.attention_head_dim
    ratio = config.mlp_ratio
    resident = 2 * batch * dim * (video_tokens + audio_tokens + 4 * text_tokens)
    rope = 4 * 2 * config.attention_head_dim * (2 * video_tokens + audio_tokens)
    working = 2 * batch * int((5 + 2 * ratio) * (video_tokens + text_tokens) * dim)
    return {"resident": resident + rope, "block": working, "total": resident + rope + working}


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensors created under the mode and still referenced (storages counted once)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.storages = set()

    def _release(self, key, nbytes):
        self.storages.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(output):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes and key not in self.storages:
                self.storages.add(key)
                self.live += nbytes
                weakref.finalize(tensor, self._release, key, nbytes)
        self.peak = max(self.peak, self.live)
        return output


def measured_over_analytic() -> float:
    """Measured peak / `activation_bytes` of a small joint model's T2AV forward in bf16 on the CPU."""
    torch.manual_seed(0)
    model = SkyReelsV4Transformer3DModel(
        num_attention_heads=2, num_layers=1, num_single_layers=1, num_token_refiner_layers=1, text_embed_dim=64
    ).to(torch.bfloat16)
    frames, size, text_tokens = 9, 32, 64
    seconds = (frames - 1) * model.config.vae_temporal_compression_ratio / model.config.fps
    video, audio = clip_tokens(model.config, seconds, size, size, spatial_compression=1)
    inputs = {
        "hidden_states": torch.randn(1, model.config.in_channels, frames, size, size, dtype=torch.bfloat16),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, text_tokens, 64, dtype=torch.bfloat16),
        "audio_hidden_states": torch.randn(1, model.config.audio_in_channels, audio, dtype=torch.bfloat16),
    }
    counter = LiveTensorBytes()
    with torch.no_grad(), counter:
        model(**inputs)
    return counter.peak / activation_bytes(model.config, video, audio, text_tokens, batch=1)["total"]


def clip_tokens(config, seconds: float, height: int, width: int, spatial_compression: int) -> tuple[int, int]:
    """Video tokens `[latent frames x latent height x latent width]` (patch 1) and audio latents of a clip."""
    num_frames = int(seconds * config.fps) + 1
    latent_frames = (num_frames - 1) // config.vae_temporal_compression_ratio + 1
    patch = config.patch_size * spatial_compression
    video = (latent_frames // config.patch_size_t) * (height // patch) * (width // patch)
    audio = math.ceil(num_frames / config.fps * config.audio_sample_rate / config.audio_samples_per_latent)
    return video, audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=848)
    parser.add_argument("--spatial_compression", type=int, default=16, help="of the video VAE (HunyuanVideo-1.5: 16)")
    parser.add_argument("--text_tokens", type=int, default=512, help="the pipelines' max_sequence_length")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="the joint model only")
    args = parser.parse_args()
    models = {"joint": SkyReelsV4Transformer3DModel}
    if not args.quick:
        models["refiner"] = SkyReelsV4RefinerTransformer3DModel
    logging.set_verbosity_error()  # `.to(dtype)` warns about `_keep_in_fp32_modules`, handled in `build`

    print("[1] weight memory (GiB)")
    print(
        f"    {'model':<12} {'params':>8} {'fp32':>8} {'bf16':>8} {'fp8 before':>11} {'fp8 after':>10} saved vs bf16"
    )
    for name, cls in models.items():
        model = build(cls)
        fp32 = weight_bytes(model)
        bf16 = weight_bytes(build(cls, torch.bfloat16))
        before = build(cls, torch.bfloat16)
        patterns = tuple(set(DEFAULT_SKIP_MODULES_PATTERN + PREVIOUS_SKIP_PATTERNS))
        apply_layerwise_casting(before, torch.float8_e4m3fn, torch.bfloat16, patterns)
        after = build(cls, torch.bfloat16)
        after.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        before, after = weight_bytes(before), weight_bytes(after)
        params = sum(p.numel() for p in model.parameters())
        print(
            f"    {name:<12} {params / 1e9:>7.2f}B {fp32 / GIB:>8.2f} {bf16 / GIB:>8.2f} {before / GIB:>11.2f} "
            f"{after / GIB:>10.2f} {1 - before / bf16:>6.1%} -> {1 - after / bf16:.1%}"
        )
        report(f"{name}: fp8 layerwise casting, weight memory saved vs bf16", f"{1 - after / bf16:.1%}", "50% max")

    print("[2] block-level group offloading, num_blocks_per_group=1: largest group's share of the weights")
    for name, cls in models.items():
        before, before_groups = largest_group_share(build(cls, torch.bfloat16), block_modules=[])
        after, after_groups = largest_group_share(build(cls, torch.bfloat16))
        print(
            f"    {name:<12} before {before:6.2%} ({before_groups} groups)   after {after:6.2%} ({after_groups} groups)"
        )
        report(f"{name}: largest block-level offload group", f"{after:.2%} of the weights")

    config = build(SkyReelsV4Transformer3DModel).config
    scale = measured_over_analytic()
    print(
        f"[3] peak activations of one joint T2AV forward, bf16, batch {args.batch}, {args.height}x{args.width} at "
        f"{config.fps:g} fps, {args.text_tokens} prompt tokens: analytic (`activation_bytes`), and scaled by "
        f"measured / analytic = {scale:.2f} on a small model"
    )
    print(
        f"    {'clip':<6} {'video tok':>10} {'audio tok':>10} {'resident':>9} {'block':>9} {'analytic':>9} {'scaled':>9} GiB"
    )
    for seconds in (5, 15):
        video, audio = clip_tokens(config, seconds, args.height, args.width, args.spatial_compression)
        memory = activation_bytes(config, video, audio, args.text_tokens, args.batch)
        print(
            f"    {seconds:>3} s  {video:>10} {audio:>10} {memory['resident'] / GIB:>9.2f} "
            f"{memory['block'] / GIB:>9.2f} {memory['total'] / GIB:>9.2f} {scale * memory['total'] / GIB:>9.2f}"
        )
        report(
            f"joint T2AV forward activations, {seconds} s at {args.height}x{args.width}",
            f"{scale * memory['total'] / GIB:.1f} GiB",
        )


if __name__ == "__main__":
    main()
