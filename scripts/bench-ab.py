#!/usr/bin/env python3
"""Figures 2 and 3 for two provision binaries, run after run (before/after a change).

    cargo xtask bench --quick --only 2,3      # writes target/bench-configs/*.yaml, the model
    scripts/bench-ab.py OLD NEW [WARM_N] [COLD_N]

For target/bench-configs/ready.yaml (2 replicas) and p1x4.yaml (4 replicas): a warm re-apply
of running servers (figure 2; nothing may start) WARM_N times per binary, then `down` + apply
from stopped (figure 3) COLD_N times per binary, the two binaries alternating and swapping
places each round. Prints median, min-max and n per binary, and the load average.
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
    for config, runtime in (("ready.yaml", "rt-ready"), ("p1x4.yaml", "rt-p1x4")):
        run(bins[1], "apply", config, runtime)

        def warm(b):
            ms, out = run(b, "apply", config, runtime)
            if '"started"' in out:
                sys.exit(f"a warm apply of {config} by {b} started a step:\n{out}")
            return ms

        show(f"warm re-apply {config}", alternate(bins, warm_n, warm))

        def cold(b):
            run(b, "down", config, runtime)
            return run(b, "apply", config, runtime)[0]

        show(f"from stopped {config}", alternate(bins, cold_n, cold))
        run(bins[1], "down", config, runtime)
    print("load average after", load())


main()
