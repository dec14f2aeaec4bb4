#!/usr/bin/env python3
"""Figures 2 and 3 for two provision binaries, run after run (before/after a change).

    cargo xtask bench --quick --only 2,3      # writes target/bench-configs/*.yaml, the model
    scripts/bench-ab.py OLD NEW [WARM_N] [COLD_N]

For target/bench-configs/ready.yaml (2 replicas) and p1x4.yaml (4 replicas): a warm re-apply
of running servers (figure 2; nothing may start) WARM_N times per binary, then `down` + apply
from stopped (figure 3) COLD_N times per binary, the two binaries alternating and swapping
places each round (each binary with its own runtime dir: their state formats may differ).
Prints median, min-max and n per binary, and the load average.
"""
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target/bench")
CONFIGS = os.path.join(ROOT, "target/bench-configs")


def run(binary, cmd, config, runtime):
    t = time.perf_counter()
    p = subprocess.run(
        [binary, cmd, "--config", os.path.join(CONFIGS, config), "--runtime-dir", runtime,
         "--format", "json"],
        cwd=WORK, capture_output=True, text=True)
    ms = (time.perf_counter() - t) * 1e3
    if p.returncode != 0:
        sys.exit(f"{binary} {cmd} {config} failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return ms, p.stdout


def alternate(bins, n, f):
    samples = {b: [] for b in bins}
    for i in range(n):
        for b in (bins if i % 2 == 0 else bins[::-1]):
            samples[b].append(f(b))
    return samples


def show(what, samples):
    for b, v in samples.items():
        print(f"{what} {b}: median {statistics.median(v):.1f} ms "
              f"({min(v):.1f}-{max(v):.1f}, n={len(v)})")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    bins = [os.path.abspath(b) for b in sys.argv[1:3]]
    warm_n = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    cold_n = int(sys.argv[4]) if len(sys.argv) > 4 else 15
    load = lambda: " ".join(open("/proc/loadavg").read().split()[:3])
    print("load average before", load())
    # Each binary has its own runtime dir (state files of two versions may differ in format);
    # their servers take turns on the config's ports: each round, each binary in turn applies
    # from stopped (figure 3), re-applies warm (figure 2) and stops its servers; the order of
    # the binaries swaps every round.
    per_round = max(1, warm_n // cold_n)
    for config in ("ready.yaml", "p1x4.yaml"):
        runtime = {b: f"rt-ab-{i}-{config}" for i, b in enumerate(bins)}
        warm_ms = {b: [] for b in bins}
        cold_ms = {b: [] for b in bins}
        for i in range(cold_n):
            for b in (bins if i % 2 == 0 else bins[::-1]):
                cold_ms[b].append(run(b, "apply", config, runtime[b])[0])
                for _ in range(per_round):
                    ms, out = run(b, "apply", config, runtime[b])
                    if '"started"' in out:
                        sys.exit(f"a warm apply of {config} by {b} started a step:\n{out}")
                    warm_ms[b].append(ms)
                run(b, "down", config, runtime[b])
        show(f"warm re-apply {config}", warm_ms)
        show(f"from stopped {config}", cold_ms)
    print("load average after", load())


main()
