"""RoPE rotation: the complex-multiplication path against Diffusers' `apply_rotary_emb`, old vs new interleaved.

(a) The tiny default pipeline (`pipelines/skyreels-v4-tiny`, text-to-audio-video with classifier-free guidance, so
two transformer calls per step): generates the same clip with the old rotation (Diffusers' `apply_rotary_emb` and a
concatenation for the text suffix, `_apply_rotary_emb_prefix_real`) patched into the model and with the new one,
interleaved over several rounds. It prints the seconds spent in the rotation and in the transformer per generation,
and the largest output difference between the two (0 expected: the new path rounds like Diffusers' on CPU).

(b) The rotation alone at a larger size (5376 tokens x 4 heads x 128, fp32 and bf16, without and with a text suffix
of 256 tokens), old vs new interleaved, best of several repeats.

No timing is asserted anywhere; the ratios are for reading.

    python benchmarks/bench_rope.py            # 20 steps, 3 rounds
    python benchmarks/bench_rope.py --quick    # 4 steps, 1 round, fewer micro repeats
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from diffusers.models.embeddings import get_1d_rotary_pos_embed

import skyreels_diffusers.models.transformer_skyreels_v4 as transformer_module
from skyreels_diffusers import SkyReelsV4Pipeline


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import best_seconds, report  # noqa: E402


MODEL = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pipelines", "skyreels-v4-tiny")
)
PROMPT = "<text>A red circle bounces in a box.</text><sfx>A knock on every bounce.</sfx>"
OLD = transformer_module._apply_rotary_emb_prefix_real
NEW = transformer_module._apply_rotary_emb_prefix


class Timed:
    """Patches `_apply_rotary_emb_prefix` of the model module with `fn`, summing the seconds spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def use(self, fn) -> None:
        def timed(x, rotary_emb):
            start = time.perf_counter()
            out = fn(x, rotary_emb)
            self.seconds += time.perf_counter() - start
            return out

        transformer_module._apply_rotary_emb_prefix = timed


class TransformerTimer:
    """Wall time spent inside the transformer's forward."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.seconds, self._start = 0.0, None
        transformer.register_forward_pre_hook(self._enter)
        transformer.register_forward_hook(self._exit)

    def _enter(self, *_):
        self._start = time.perf_counter()

    def _exit(self, *_):
        self.seconds += time.perf_counter() - self._start


def pipeline_share(steps: int, rounds: int, guidance_scale: float) -> None:
    pipe = SkyReelsV4Pipeline.from_pretrained(MODEL)
    pipe.set_progress_bar_config(disable=True)
    transformer_timer, rope_timer = TransformerTimer(pipe.transformer), Timed()
    variants = {"old": OLD, "new": NEW}

    def generate(fn):
        rope_timer.use(fn)
        rope_timer.seconds = transformer_timer.seconds = 0.0
        try:
            out = pipe(
                PROMPT,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                generator=torch.Generator().manual_seed(0),
            )
        finally:
            transformer_module._apply_rotary_emb_prefix = NEW
        return out, rope_timer.seconds, transformer_timer.seconds

    generate(NEW)  # warm-up
    rope_s = {name: [] for name in variants}
    transformer_s = {name: [] for name in variants}
    outputs = {}
    for _ in range(rounds):
        for name, fn in variants.items():
            outputs[name], rope, transformer = generate(fn)
            rope_s[name].append(rope)
            transformer_s[name].append(transformer)
    difference = max(
        float(np.abs(np.asarray(getattr(outputs["new"], key)) - np.asarray(getattr(outputs["old"], key))).max())
        for key in ("frames", "audio")
    )
    print(f"tiny default, {steps} steps, guidance {guidance_scale}, {rounds} rounds (best round shown)")
    print(f"{'rotation':>9} {'RoPE s':>8} {'transformer s':>14} {'RoPE share':>10}")
    for name in variants:
        rope, transformer = min(rope_s[name]), min(transformer_s[name])
        print(f"{name:>9} {rope:>8.3f} {transformer:>14.3f} {rope / transformer:>10.1%}")
    old_rope, new_rope = min(rope_s["old"]), min(rope_s["new"])
    report(f"RoPE rotation time, tiny default {steps} steps (old -> new)", f"{old_rope:.3f} s -> {new_rope:.3f} s")
    report(
        "RoPE share of transformer time, tiny default (old -> new)",
        f"{old_rope / min(transformer_s['old']):.1%} -> {new_rope / min(transformer_s['new']):.1%}",
    )
    report(
        "transformer time new vs old rotation, tiny default",
        f"{sum(transformer_s['new']) / sum(transformer_s['old']):.3f}x",
    )
    print(f"largest output difference new vs old (frames, audio): {difference:.3g}")


def micro(repeats: int, tokens: int = 5376, heads: int = 4, head_dim: int = 128, text: int = 256) -> None:
    positions = torch.arange(tokens, dtype=torch.float32) * 0.37
    rotary_emb = get_1d_rotary_pos_embed(head_dim, positions, 256.0, use_real=True)
    print(f"rotation of {tokens} tokens x {heads} heads x {head_dim}, best of {repeats}")
    for dtype in (torch.float32, torch.bfloat16):
        for suffix in (0, text):
            x = torch.randn(1, tokens + suffix, heads, head_dim, generator=torch.Generator().manual_seed(0)).to(dtype)
            with torch.no_grad():
                old_s, new_s = best_seconds(
                    lambda x=x: OLD(x, rotary_emb), lambda x=x: NEW(x, rotary_emb), repeats=repeats
                )
                difference = (NEW(x, rotary_emb).float() - OLD(x, rotary_emb).float()).abs().max().item()
            what = f"{str(dtype).removeprefix('torch.')}, " + (f"+{suffix} text tokens" if suffix else "no text")
            print(f"{what:>28}: old {old_s * 1e3:.2f} ms, new {new_s * 1e3:.2f} ms, max difference {difference:.3g}")
            report(f"RoPE rotation new vs old, {tokens}x{heads}x{head_dim} {what}", f"{old_s / new_s:.2f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20, help="repeats of the micro benchmark")
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="4 steps, 1 round, 3 micro repeats")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.repeats = 4, 1, 3
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()} at start")
    micro(args.repeats)
    pipeline_share(args.steps, args.rounds, args.guidance_scale)
    print(f"load average {os.getloadavg()} at the end")


if __name__ == "__main__":
    main()
