"""bfloat16 vs float32 on this device: transformer forward time and output agreement, measured in one run.

Two measurements, each with the two precisions interleaved:

1. the joint transformer's forward at the README benchmark size (hidden 512, 21 x 16 x 16 video tokens, 218 audio
   latents; `--quick`: hidden 256, 5 x 8 x 8), time ratio bf16 / fp32 and the relative output difference;
2. the tiny default pipeline (`pipelines/skyreels-v4-tiny`), one T2AV clip: time ratio and how far the bf16 clip is
   from the fp32 one (mean absolute pixel difference in 0..255 and the audio's relative RMS difference).

Whether bf16 pays depends on the hardware: CUDA GPUs and CPUs with AMX-BF16 or AVX512-BF16 multiply it natively;
other CPUs emulate it, several times slower than fp32 (`skyreels_diffusers.utils.precision.fastest_dtype` is what
the CLI's `--dtype auto` uses).

    python benchmarks/bench_precision.py
    python benchmarks/bench_precision.py --quick
"""

import argparse
import os
import sys
from pathlib import Path

import torch

from skyreels_diffusers import SkyReelsV4Pipeline, SkyReelsV4Transformer3DModel
from skyreels_diffusers.utils.precision import cpu_has_fast_bfloat16


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import best_seconds, report  # noqa: E402


TINY_DEFAULT = Path(__file__).resolve().parents[1] / "pipelines" / "skyreels-v4-tiny"


def relative_difference(output: torch.Tensor, reference: torch.Tensor) -> float:
    return ((output.float() - reference.float()).norm() / reference.float().norm()).item()


def transformer_forward(args) -> None:
    heads, frames, size = (2, 5, 8) if args.quick else (4, 21, 16)
    model = SkyReelsV4Transformer3DModel(
        in_channels=2 * 16 + 1,
        out_channels=16,
        num_attention_heads=heads,
        attention_head_dim=128,
        num_layers=2,
        num_single_layers=1,
        num_token_refiner_layers=1,
        text_embed_dim=256,
        rope_axes_dim=(16, 56, 56),
        audio_in_channels=40,
    ).eval()
    torch.manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 2 * 16 + 1, frames, size, size),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 64, 256),
        "encoder_attention_mask": torch.ones(1, 64, dtype=torch.bool),
        "audio_hidden_states": torch.randn(1, 40, 218 if not args.quick else 54),
    }
    model_bf16 = SkyReelsV4Transformer3DModel.from_config(model.config).eval()
    model_bf16.load_state_dict(model.state_dict())
    model_bf16.to(torch.bfloat16)
    inputs_bf16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    with torch.inference_mode():
        reference, output = model(**inputs), model_bf16(**inputs_bf16)
        fp32_s, bf16_s = best_seconds(lambda: model(**inputs), lambda: model_bf16(**inputs_bf16), repeats=args.repeats)
    video = relative_difference(output.sample, reference.sample)
    audio = relative_difference(output.audio_sample, reference.audio_sample)
    tokens = frames * size * size
    print(f"[1] transformer, hidden {heads * 128}, {tokens} video tokens: fp32 {fp32_s:.3f}s, bf16 {bf16_s:.3f}s")
    print(f"    relative output difference: video {video:.2%}, audio {audio:.2%}")
    report(f"bf16 / fp32 transformer forward time ({tokens} video tokens)", f"{bf16_s / fp32_s:.2f}x")
    report("bf16 vs fp32 transformer output, relative difference (video / audio)", f"{video:.2%} / {audio:.2%}")


def tiny_default_clip(args) -> None:
    pipelines = {
        dtype: SkyReelsV4Pipeline.from_pretrained(TINY_DEFAULT, dtype=dtype)
        for dtype in (torch.float32, torch.bfloat16)
    }
    for pipe in pipelines.values():
        pipe.set_progress_bar_config(disable=True)
    prompt = "<text>A red circle bounces.</text><sfx>A knock at each bounce.</sfx>"

    def clip(dtype):
        generator = torch.Generator().manual_seed(0)
        return pipelines[dtype](prompt, num_inference_steps=args.steps, generator=generator, output_type="np")

    fp32_s, bf16_s = best_seconds(lambda: clip(torch.float32), lambda: clip(torch.bfloat16), repeats=args.repeats)
    reference, output = clip(torch.float32), clip(torch.bfloat16)
    pixels = float(abs(output.frames.astype("float64") - reference.frames).mean() * 255)
    audio = relative_difference(torch.from_numpy(output.audio), torch.from_numpy(reference.audio))
    print(f"[2] tiny default, {args.steps} steps: fp32 {fp32_s:.2f}s, bf16 {bf16_s:.2f}s")
    print(f"    mean |bf16 - fp32| pixel difference {pixels:.2f} / 255; audio relative difference {audio:.2%}")
    report("bf16 / fp32 tiny default clip time", f"{bf16_s / fp32_s:.2f}x")
    report("bf16 vs fp32 tiny default clip: mean pixel difference / audio", f"{pixels:.2f}/255 / {audio:.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="denoising steps of the tiny default clip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    hardware = "in hardware" if cpu_has_fast_bfloat16() else "emulated (no AMX-BF16 / AVX512-BF16)"
    print(f"CPU bfloat16: {hardware}; torch threads {torch.get_num_threads()}")
    transformer_forward(args)
    tiny_default_clip(args)


if __name__ == "__main__":
    main()
