"""Two-stage generation (low-res full sequence + high-res keyframes, then the VSA Refiner) vs direct high-res.

Both produce the same output: a clip at 2x the base size and 2x the base frame rate. Per denoising step (both use
the same number of steps):

- two-stage = one base forward over the low-res tokens plus the appended keyframe tokens, then one Refiner forward
  over the high-res tokens with Video Sparse Attention;
- direct    = one dense forward of the same transformer over the high-res tokens.

It prints the ratio as counted FLOPs (`torch.utils.flop_counter`, with the fused CPU attention kernel counted) and as
measured time on CPU. Target: <= 0.4x. Audio is left out of both (it costs the same in each).

    python benchmarks/bench_two_stage.py            # ~3 min on 2 cores
    python benchmarks/bench_two_stage.py --quick
"""

import argparse
import os
import sys

import torch

from skyreels_diffusers import SkyReelsV4RefinerTransformer3DModel, SkyReelsV4Transformer3DModel


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import best_seconds, count_flops, report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latent_frames", type=int, default=11, help="low-res latent frames (41 frames)")
    parser.add_argument("--latent_size", type=int, default=12, help="low-res latent height = width")
    parser.add_argument("--num_keyframes", type=int, default=3)
    parser.add_argument("--sparsity", type=float, default=0.875)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--head_dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.latent_frames, args.latent_size, args.repeats = 6, 8, 1

    torch.manual_seed(0)
    channels, text_dim = 16, 64
    config = {
        "in_channels": 2 * channels + 1,
        "out_channels": channels,
        "num_attention_heads": args.heads,
        "attention_head_dim": args.head_dim,
        "num_layers": 2,
        "num_single_layers": 2,
        "num_token_refiner_layers": 1,
        "text_embed_dim": text_dim,
        "rope_axes_dim": (args.head_dim // 8, 7 * args.head_dim // 16, 7 * args.head_dim // 16),
    }
    model = SkyReelsV4Transformer3DModel(**config).eval()
    refiner = SkyReelsV4RefinerTransformer3DModel.from_video_transformer(model, temporal_upscale_factor=2).eval()
    with torch.no_grad():  # a trained Refiner has non-zero gates: include the coarse branch's cost
        for block in (*refiner.transformer_blocks, *refiner.single_transformer_blocks):
            block.video.attn.vsa_gate.weight.normal_(std=0.02)

    frames, size, keyframes = args.latent_frames, args.latent_size, args.num_keyframes
    high_frames, high_size = (frames - 1) * 2 + 1, 2 * size
    text, mask, timestep = torch.randn(1, 32, text_dim), torch.ones(1, 32, dtype=torch.bool), torch.tensor([500.0])
    low = torch.randn(1, 2 * channels + 1, frames, size, size)
    keyframe_tokens = torch.randn(1, 2 * channels + 1, keyframes, high_size, high_size)
    keyframe_positions = torch.linspace(0, frames - 1, keyframes)
    high = torch.randn(1, 2 * channels + 1, high_frames, high_size, high_size)
    print(
        f"base: {frames}x{size}x{size} low-res + {keyframes} keyframes of {high_size}x{high_size} tokens; output: "
        f"{high_frames}x{high_size}x{high_size} = {high_frames * high_size**2} tokens; hidden "
        f"{args.heads * args.head_dim}; VSA sparsity {args.sparsity}"
    )

    def base_step():
        model(low, timestep, text, mask, keyframe_hidden_states=keyframe_tokens, keyframe_positions=keyframe_positions)

    def refiner_step():
        refiner(high, timestep, text, mask, sparsity=args.sparsity)

    def two_stage_step():
        base_step()
        refiner_step()

    def direct_step():
        model(high, timestep, text, mask)

    with torch.inference_mode():
        base_flops, refiner_flops, direct_flops = (count_flops(f) for f in (base_step, refiner_step, direct_step))
        two_stage_s, direct_s = best_seconds(two_stage_step, direct_step, repeats=args.repeats)
    two_stage_flops = base_flops + refiner_flops
    print(
        f"FLOPs per step: base {base_flops / 1e9:.1f} G + refiner {refiner_flops / 1e9:.1f} G = "
        f"{two_stage_flops / 1e9:.1f} G vs direct {direct_flops / 1e9:.1f} G: ratio {two_stage_flops / direct_flops:.3f}"
        " (target <= 0.4)"
    )
    print(
        f"time per step: two-stage {two_stage_s:.3f}s vs direct {direct_s:.3f}s: ratio {two_stage_s / direct_s:.3f}"
        " (target <= 0.4)"
    )
    tokens = high_frames * high_size**2
    report(f"two-stage vs direct, counted FLOPs ({tokens} output tokens)", f"{two_stage_flops / direct_flops:.3f}x")
    report(f"two-stage vs direct, time ({tokens} output tokens)", f"{two_stage_s / direct_s:.3f}x", "<= 0.35")


if __name__ == "__main__":
    main()
