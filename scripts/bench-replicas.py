#!/usr/bin/env python3
"""Figures 3 and 4 of BENCHMARKS.md on a machine without cargo (a lent GPU machine, say).

  scripts/bench-replicas.py prepare      here: a release `provision`, the llama-server build
                                         `cargo xtask e2e` made (with its libraries) and the
                                         tiny model, in replica-bundle/ (~25 MB)
  scripts/bench-replicas.py run [RUNS]   there, from the repository root with replica-bundle/:
                                         time to all-ready (provision apply from stopped servers,
                                         every handoff written) for 1, 2, 4 replicas and 4 pools
                                         of one replica, interleaved, RUNS rounds (default 7);
                                         beside each, the same servers started by hand with the
                                         plan's argv until every /health answers 200

Binary mode (no clone or build: the llama-server is carried), otherwise the pools of
`cargo xtask bench`'s figure 3: the e2e config's CPU pool, `--threads 1 --ctx-size 256`.
Python 3 standard library only.
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "replica-bundle"
SHAPES = [("1 replica", 1, 1), ("2 replicas", 1, 2), ("4 replicas", 1, 4), ("4 pools", 4, 1)]


def prepare():
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "provision-cli"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "provision" / "build"
    builds = sorted(cache.glob("*/bin/llama-server"), key=lambda p: p.stat().st_mtime)
    if not builds:
        sys.exit(f"no llama-server under {cache}: run `cargo xtask e2e` first")
    shutil.rmtree(BUNDLE, ignore_errors=True)
    (BUNDLE / "bin").mkdir(parents=True)
    shutil.copy2(target / "release" / "provision", BUNDLE / "provision")
    subprocess.run(["strip", str(BUNDLE / "provision")], check=False)
    for f in builds[-1].parent.iterdir():
        if f.name == "llama-server" or ".so" in f.name:
            shutil.copy2(f, BUNDLE / "bin" / f.name, follow_symlinks=False)
    shutil.copy2(ROOT / ".fixtures" / "tiny-llama.gguf", BUNDLE / "tiny-llama.gguf")
    size = sum(f.stat().st_size for f in BUNDLE.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"{BUNDLE}: {size / 2**20:.0f} MiB")


def free_ports(n, taken):
    out, port = [], 18100
    while len(out) < n:
        if port not in taken:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                    out.append(port)
                    taken.add(port)
                except OSError:
                    pass
        port += 1
    return out


def config(work, pools, replicas, ports):
    text = "pools:\n"
    for p in range(pools):
        mine = ports[p * replicas:(p + 1) * replicas]
        text += f"""  - id: tiny-{p}
    engine: llamacpp
    model: tiny-llama
    backend: cpu
    devices: []
    replicas: {replicas}
    readiness_timeout_ms: 60000
    provisioning:
      mode: binary
      binary: {{path: {BUNDLE}/bin/llama-server}}
      model:
        ref: {BUNDLE}/tiny-llama.gguf
      ports: [{", ".join(map(str, mine))}]
      flags: [--threads, "1", --ctx-size, "256"]
"""
    path = work / f"p{pools}x{replicas}.yaml"
    path.write_text(text)
    return path


def provision(*args, check=True):
    return subprocess.run([str(BUNDLE / "provision"), *args], capture_output=True, text=True, check=check)


def health(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.1) as s:
            s.settimeout(0.5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).split(b" ")[1] == b"200"
    except (OSError, IndexError):
        return False


def bare_start(plan):
    roots = plan["roots"]

    def expand(a):
        for k in ("cache", "runtime", "config_dir"):
            a = a.replace("${" + k + "}", roots[k])
        return a

    servers = []
    for step in plan["steps"]:
        if step["kind"] == "spawn":
            argv = [expand(a) for a in step["argv"]]
            servers.append((argv, int(argv[argv.index("--port") + 1])))
    t = time.monotonic()
    children = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL) for argv, _ in servers]
    ready = [False] * len(servers)
    try:
        while not all(ready):
            ready = [r or health(port) for r, (_, port) in zip(ready, servers)]
            if time.monotonic() - t > 60 or any(c.poll() is not None for c in children):
                raise SystemExit(f"servers started by hand not ready: {[a for a, _ in servers]}")
            if not all(ready):
                time.sleep(0.001)
        return (time.monotonic() - t) * 1e3
    finally:
        for c in children:
            c.kill()
            c.wait()


def run(rounds):
    # The carried llama-server's RUNPATH names the build dir it was linked in; provision passes
    # its environment on to the servers it spawns.
    libs = str(BUNDLE / "bin")
    os.environ["LD_LIBRARY_PATH"] = ":".join(filter(None, [libs, os.environ.get("LD_LIBRARY_PATH")]))
    work = ROOT / "target" / "bench-replicas"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    taken = set()
    shapes = []
    for name, pools, replicas in SHAPES:
        cfg = config(work, pools, replicas, free_ports(pools * replicas, taken))
        shapes.append({"name": name, "n": pools * replicas, "cfg": cfg, "rt": work / f"rt-{cfg.stem}",
                       "ms": [], "bare": []})
    try:
        for s in shapes:  # warm-up, not counted
            provision("apply", "--config", str(s["cfg"]), "--runtime-dir", str(s["rt"]), "-q")
            provision("down", "--config", str(s["cfg"]), "--runtime-dir", str(s["rt"]))
        for _ in range(rounds):
            for s in shapes:  # interleaved: a change in load hits every shape alike
                args = ["--config", str(s["cfg"]), "--runtime-dir", str(s["rt"])]
                t = time.monotonic()
                out = provision("apply", *args, "--json").stdout
                s["ms"].append((time.monotonic() - t) * 1e3)
                handoffs = sum(1 for line in out.splitlines()
                               if '"finished"' in line and '"handoff:' in line)
                assert handoffs == s["n"], f"{s['name']}: {handoffs} handoffs"
                provision("down", *args)
                plan = json.loads(provision("plan", *args, "--format", "json").stdout)
                s["bare"].append(bare_start(plan))
    finally:
        for s in shapes:
            provision("down", "--config", str(s["cfg"]), "--runtime-dir", str(s["rt"]), check=False)

    def show(v):
        return f"{statistics.median(v):.0f} ms ({min(v):.0f}–{max(v):.0f}, n={len(v)})"

    cores = os.cpu_count()
    load = open("/proc/loadavg").read().split()[:3]
    print(f"{cores} cores · provision release · load {' '.join(load)} after · {rounds} rounds")
    print("| shape | provision apply, from stopped, to every handoff | by hand, to every /health 200 |")
    print("|---|---|---|")
    for s in shapes:
        print(f"| {s['name']} | {show(s['ms'])} | {show(s['bare'])} |")
    one = shapes[0]
    for s in shapes[2:]:
        r = statistics.median(s["ms"]) / statistics.median(one["ms"])
        b = statistics.median(s["bare"]) / statistics.median(one["bare"])
        print(f"{s['name']} ÷ 1 replica: provision {r:.2f}×, by hand {b:.2f}×")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "prepare":
        prepare()
    elif what == "run":
        run(int(sys.argv[2]) if len(sys.argv) > 2 else 7)
    else:
        print(__doc__)
        sys.exit(2)
