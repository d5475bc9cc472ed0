"""Diffusers' caches on the tiny default pipeline: transformer time saved and output change vs no cache.

Loads `pipelines/skyreels-v4-tiny` and generates the same clip (text-to-audio-video, classifier-free guidance with
both passes batched in one call) with no cache and with each Diffusers cache (PAB, FirstBlockCache, MagCache with
calibrated ratios, FasterCache, TaylorSeer full and lite), interleaved in
one process over several rounds so that machine load hits all alike. It prints, per cache, the transformer's time
against the uncached run's (summed over rounds) and the mean absolute change of the video (pixels in [0, 1]) and the
audio (waveform in [-1, 1]) against the uncached output, also as a share of the change to another seed. No timing is
asserted anywhere; the ratios are for reading.

    python benchmarks/bench_cache.py            # 20 steps, 3 rounds (~1 min on 2 cores)
    python benchmarks/bench_cache.py --rounds 1 --steps 8
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

from skyreels_diffusers import SkyReelsV4Pipeline


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import report  # noqa: E402


# The cache settings are the evaluator's, so its quality metrics (`evaluate.py --cache`) go with these times.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "synthetic_av"))
from evaluate import CACHES, cache_config  # noqa: E402


MODEL = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pipelines", "skyreels-v4-tiny")
)
PROMPT = "<text>A red circle bounces in a box.</text><sfx>A knock on every bounce.</sfx>"


class TransformerTimer:
    """Wall time spent inside the transformer's forward (cache hooks included)."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.seconds, self._start = 0.0, None
        transformer.register_forward_pre_hook(self._enter)
        transformer.register_forward_hook(self._exit)

    def _enter(self, *_):
        self._start = time.perf_counter()

    def _exit(self, *_):
        self.seconds += time.perf_counter() - self._start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="4 steps, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 4, 1

    pipe = SkyReelsV4Pipeline.from_pretrained(MODEL)
    pipe.set_progress_bar_config(disable=True)
    timer = TransformerTimer(pipe.transformer)
    configs = {"none": None, **{name: cache_config(name, pipe, args.steps) for name in CACHES}}
    print(
        f"{MODEL}: {args.steps} steps, guidance {args.guidance_scale}, {args.rounds} rounds; torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f} (1 min) at start"
    )

    def generate(config, seed=0):
        if config is not None:
            pipe.transformer.enable_cache(config)
        timer.seconds = 0.0
        start = time.perf_counter()
        try:
            out = pipe(
                PROMPT,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance_scale,
                batched_guidance=True,  # as every cache runs: the times then differ by the cache alone
                generator=torch.Generator().manual_seed(seed),
            )
        finally:
            if config is not None:
                pipe.transformer.disable_cache()
        return out, timer.seconds, time.perf_counter() - start

    generate(None)  # warm-up
    transformer_s = {name: 0.0 for name in configs}
    total_s = dict(transformer_s)
    outputs = {}
    for _ in range(args.rounds):
        for name, config in configs.items():
            outputs[name], seconds, total = generate(config)
            transformer_s[name] += seconds
            total_s[name] += total
    other_seed = generate(None, seed=1)[0]

    def change(out):
        reference = outputs["none"]
        return [float(np.abs(getattr(out, key) - getattr(reference, key)).mean()) for key in ("frames", "audio")]

    seed_video, seed_audio = change(other_seed)
    print(f"{'cache':>10} {'transformer s':>13} {'ratio':>6} {'call s':>7} {'video change':>19} {'audio change':>19}")
    for name in configs:
        video, audio = change(outputs[name])
        print(
            f"{name:>10} {transformer_s[name] / args.rounds:>13.3f} {transformer_s[name] / transformer_s['none']:>6.3f} "
            f"{total_s[name] / args.rounds:>7.3f} {video:>12.5f} ({video / seed_video:>4.0%}) "
            f"{audio:>12.6f} ({audio / seed_audio:>4.0%})"
        )
        if name != "none":
            ratio = transformer_s[name] / transformer_s["none"]
            report(f"{name}: transformer time vs no cache, tiny default", f"{ratio:.3f}x")
            report(
                f"{name}: output change / change to another seed (video, audio)",
                f"{video / seed_video:.0%}, {audio / seed_audio:.0%}",
            )
    print(
        f"(%) = of the change to another seed without cache: video {seed_video:.5f}, audio {seed_audio:.6f}; "
        "ratio = transformer time vs no cache, summed over rounds"
    )
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")


if __name__ == "__main__":
    main()
