"""Forward-pass benchmark of `SkyReelsV4Transformer3DModel` on CPU, as ratios measured in one run.

1. Video tower alone vs Diffusers' `HunyuanVideo15Transformer3DModel` at the same width, depth and token count
   (target: ratio <= 1.05).
2. Joint T2AV vs video-only forward at 5-second proportions: 21 video latent frames, 218 audio latents
   (target: ratio <= 1 + audio_tokens / video_tokens + 0.1).
3. Achieved GFLOP/s of the joint forward (FLOPs counted by `torch.utils.flop_counter`) as a fraction of a large
   fp32 matmul's GFLOP/s (target: >= 0.5 at hidden size >= 512).

    python benchmarks/bench_transformer.py            # hidden 512, 21 x 16 x 16 video tokens (~2 min on 2 cores)
    python benchmarks/bench_transformer.py --quick    # smaller, for a smoke run
"""

import argparse
import os
import sys

import torch
from diffusers import HunyuanVideo15Transformer3DModel

from skyreels_diffusers import SkyReelsV4Transformer3DModel


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import best_seconds, count_flops, report  # noqa: E402


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    (seconds,) = best_seconds(lambda: a @ b, repeats=repeats)
    return 2 * size**3 / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head_dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4, help="dual-stream blocks (HunyuanVideo-1.5 has no others)")
    parser.add_argument("--single_layers", type=int, default=2, help="single-stream blocks in the joint model")
    parser.add_argument("--latent_frames", type=int, default=21)
    parser.add_argument("--latent_size", type=int, default=16, help="latent height = width")
    parser.add_argument("--audio_latents", type=int, default=218)
    parser.add_argument("--text_tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="hidden 256, 21 x 8 x 8 video tokens")
    args = parser.parse_args()
    if args.quick:
        args.heads, args.latent_size, args.repeats = 2, 8, 2

    torch.manual_seed(0)
    dim = args.heads * args.head_dim
    channels, text_dim = 16, 256
    rope_axes = (args.head_dim // 8, 7 * args.head_dim // 16, 7 * args.head_dim // 16)
    common = {
        "in_channels": 2 * channels + 1,
        "out_channels": channels,
        "num_attention_heads": args.heads,
        "attention_head_dim": args.head_dim,
        "text_embed_dim": text_dim,
        "rope_axes_dim": rope_axes,
    }
    batch = 1
    video = torch.randn(batch, 2 * channels + 1, args.latent_frames, args.latent_size, args.latent_size)
    audio = torch.randn(batch, 40, args.audio_latents)
    text = torch.randn(batch, args.text_tokens, text_dim)
    text_mask = torch.ones(batch, args.text_tokens, dtype=torch.bool)
    timestep = torch.tensor([500.0])
    video_tokens = args.latent_frames * args.latent_size**2
    print(f"hidden {dim}, {video_tokens} video tokens, {args.audio_latents} audio tokens, {args.text_tokens} text")

    # 1. Video tower vs HunyuanVideo-1.5 (dual-stream only, same width/depth/tokens).
    ours = SkyReelsV4Transformer3DModel(
        **common, num_layers=args.layers, num_single_layers=0, num_token_refiner_layers=1
    ).eval()
    reference = HunyuanVideo15Transformer3DModel(
        **common, num_layers=args.layers, num_refiner_layers=1, text_embed_2_dim=32, image_embed_dim=32
    ).eval()
    # HunyuanVideo-1.5 always appends ByT5 and image tokens; one masked token each keeps the token count equal.
    byt5, byt5_mask = torch.randn(batch, 1, 32), torch.zeros(batch, 1, dtype=torch.long)
    image_embeds = torch.zeros(batch, 1, 32)
    with torch.inference_mode():
        ours_s, ref_s = best_seconds(
            lambda: ours(video, timestep, text, text_mask),
            lambda: reference(video, timestep, text, text_mask.long(), None, byt5, byt5_mask, image_embeds),
            repeats=args.repeats,
        )
    print(
        f"[1] video tower {ours_s:.3f}s vs HunyuanVideo15Transformer3DModel {ref_s:.3f}s: ratio {ours_s / ref_s:.3f}"
        " (target <= 1.05)"
    )
    report(
        f"video tower vs HunyuanVideo15Transformer3DModel ({video_tokens} tokens)", f"{ours_s / ref_s:.3f}x", "<= 1.05"
    )

    # 2. Joint T2AV vs video-only, hybrid depth.
    joint = SkyReelsV4Transformer3DModel(
        **common,
        audio_in_channels=40,
        num_layers=args.layers,
        num_single_layers=args.single_layers,
        num_token_refiner_layers=1,
    ).eval()
    with torch.inference_mode():
        t2v_s, t2av_s = best_seconds(
            lambda: joint(video, timestep, text, text_mask),
            lambda: joint(video, timestep, text, text_mask, audio_hidden_states=audio),
            repeats=args.repeats,
        )
    target = 1 + args.audio_latents / video_tokens + 0.1
    print(f"[2] T2AV {t2av_s:.3f}s vs T2V {t2v_s:.3f}s: ratio {t2av_s / t2v_s:.3f} (target <= {target:.3f})")
    report("T2AV vs T2V time", f"{t2av_s / t2v_s:.3f}x", f"<= {target:.3f}")

    # 3. Achieved throughput vs a large matmul.
    with torch.inference_mode():
        flops = count_flops(lambda: joint(video, timestep, text, text_mask, audio_hidden_states=audio))
    achieved = flops / t2av_s / 1e9
    peak = matmul_gflops()
    print(
        f"[3] joint forward {flops / 1e9:.1f} GFLOP in {t2av_s:.3f}s = {achieved:.1f} GFLOP/s; fp32 matmul "
        f"{peak:.1f} GFLOP/s: fraction {achieved / peak:.2f} (target >= 0.5)"
    )
    report("joint forward throughput / fp32 matmul", f"{achieved / peak:.2f}", ">= 0.5")


if __name__ == "__main__":
    main()
