"""Run every benchmark in this folder and print one table.

    python benchmarks/run_all.py                    # every bench_*.py, at 1 thread and at all cores
    python benchmarks/run_all.py --quick            # each benchmark's --quick size
    python benchmarks/run_all.py --only vsa two_stage --threads 1 -- --repeats 5   # args after -- go to each script

Each benchmark runs in its own process (so thread settings and memory do not leak between them) with
`OMP_NUM_THREADS` set, and prints its headline numbers as `RESULT` lines (`_measure.report`); this script collects them
into one Markdown table with the machine, the thread count and the load average around each run. Every number is a
ratio measured within one process against a reference run interleaved with it, so the table is comparable across
machines; the device line says where it ran. Nothing here asserts a time.
"""

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _measure import RESULT_PREFIX  # noqa: E402


def benchmarks(only: list[str] | None) -> list[Path]:
    scripts = sorted(HERE.glob("bench_*.py"))
    if only:
        wanted = {name.removeprefix("bench_").removesuffix(".py") for name in only}
        unknown = wanted - {script.stem.removeprefix("bench_") for script in scripts}
        if unknown:
            names = ", ".join(script.stem.removeprefix("bench_") for script in scripts)
            raise SystemExit(f"--only: unknown benchmark(s) {sorted(unknown)}; available: {names}")
        scripts = [script for script in scripts if script.stem.removeprefix("bench_") in wanted]
    return scripts


def device_description() -> str:
    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name()} (benchmarks that support only the CPU still run on the CPU)"
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from skyreels_diffusers.utils.precision import cpu_has_fast_bfloat16

    bf16 = "bf16 in hardware" if cpu_has_fast_bfloat16() else "no bf16 hardware (AMX / AVX512-BF16)"
    return f"CPU: {model}, {os.cpu_count()} cores, {bf16}"


def run(script: Path, threads: int, extra: list[str]) -> tuple[list[tuple[str, str, str]], str, float, str]:
    """(results, load before -> after, seconds, output tail) of one benchmark at `threads` threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.run([sys.executable, str(script), *extra], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    load = f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}"
    results = [
        tuple((line.removeprefix(RESULT_PREFIX).split("\t") + ["", ""])[:3])
        for line in process.stdout.splitlines()
        if line.startswith(RESULT_PREFIX)
    ]
    tail = (process.stdout + process.stderr)[-2000:]
    if process.returncode != 0:
        results.append(("failed", f"exit code {process.returncode}", ""))
    return results, load, seconds, tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=None, help="benchmark names, e.g. vsa two_stage")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="default: 1 and all cores")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--verbose", action="store_true", help="print each benchmark's own output")
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    threads = args.threads or sorted({1, os.cpu_count() or 1})
    if any(count < 1 for count in threads):
        parser.error(f"--threads must be positive, got {threads}")
    extra = (["--quick"] if args.quick else []) + extra

    print(f"device: {device_description()}; torch {torch.__version__}; Python {platform.python_version()}")
    rows, failed = [], False
    for script in benchmarks(args.only):
        for count in threads:
            results, load, seconds, tail = run(script, count, extra)
            if args.verbose or any(metric == "failed" for metric, _, _ in results):
                print(f"--- {script.name}, {count} thread(s) ---\n{tail}")
            failed |= any(metric == "failed" for metric, _, _ in results)
            rows += [
                (script.stem, count, load, seconds, *result) for result in results or [("no RESULT lines", "", "")]
            ]
    print("\n| benchmark | threads | load (1 min) before -> after | metric | value | target |")
    print("|---|---|---|---|---|---|")
    for name, count, load, seconds, metric, value, target in rows:
        print(f"| {name} ({seconds:.0f} s) | {count} | {load} | {metric} | {value} | {target or '—'} |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
