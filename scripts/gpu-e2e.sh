#!/usr/bin/env bash
# GPU end to end, for a lent GPU machine (no network there; nvcc, CMake and ninja installed).
#
#   scripts/gpu-e2e.sh prepare    here: a release `provision`, a trimmed llama.cpp source tarball
#                                 (no models/, docs/, benches/) and the tiny model, in gpu-bundle/
#   scripts/gpu-e2e.sh run        on the GPU machine, from the repository root with gpu-bundle/:
#                                 build llama.cpp with GGML_CUDA=ON for the card's compute
#                                 capability, apply a GPU pool with every layer on the GPU, check
#                                 that nvidia-smi lists the server, run a completion, stop it
#   scripts/gpu-e2e.sh dry-run    here: prepare, then everything `run` does short of CUDA: the
#                                 config it would apply and `provision plan` of it
#
# The bundle must stay under 64 MiB (the device tool carries the working tree).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUNDLE=$ROOT/gpu-bundle
TAG=llama.cpp-0c1e57098
t0=$(date +%s%N)
# No bc on the device image: integer arithmetic on nanoseconds.
stamp() { local ms=$((($(date +%s%N) - t0) / 1000000)); printf '[%4d.%01ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"; }

prepare() {
  mkdir -p "$BUNDLE"
  stamp "building provision (release)"
  cargo build -q --release -p provision-cli
  cp "${CARGO_TARGET_DIR:-target}/release/provision" "$BUNDLE/provision"
  strip "$BUNDLE/provision" 2>/dev/null || true
  stamp "trimmed llama.cpp source"
  src=$(fixtures/llamacpp/prepare-source.sh)
  tmp=$(mktemp -d)
  git -C "$src" archive --format=tar "$TAG" | tar -x -C "$tmp"
  rm -rf "$tmp/models" "$tmp/docs" "$tmp/benches"
  tar -C "$tmp" -czf "$BUNDLE/llama.cpp.tar.gz" .
  rm -rf "$tmp"
  stamp "tiny model"
  python=$ROOT/target/py-venv/bin/python
  [ -x "$python" ] || { python3 -m venv target/py-venv && "$python" -m pip install -q gguf==0.19.0 numpy==2.4.6; }
  "$python" fixtures/models/make_tiny_gguf.py "$BUNDLE/tiny-llama.gguf"
  du -sh "$BUNDLE"
  size=$(du -sm "$BUNDLE" | cut -f1)
  [ "$size" -lt 60 ] || { echo "bundle is ${size} MiB: too big for the device" >&2; exit 1; }
}

# Write the GPU pool config for compute capability $1 (e.g. 90) into $2.
# GGML_CUDA_FA=OFF: the FlashAttention template instances are most of the CUDA compile time, and
# the whole run must fit one 9-minute device call; llama-server then runs without flash attention.
write_config() {
  local arch=$1 out=$2 mode=$3
  local source_block
  if [ "$mode" = source ]; then
    source_block="      mode: source
      source:
        repo: ./llama.cpp
        ref: $TAG
        build:
          cmake_flags: [-DGGML_CUDA=ON, -DCMAKE_CUDA_ARCHITECTURES=$arch, -DGGML_CUDA_FA=OFF, -DGGML_NATIVE=OFF, -DLLAMA_USE_PREBUILT_UI=OFF, -DLLAMA_BUILD_TESTS=OFF, -DLLAMA_BUILD_EXAMPLES=OFF]"
  else
    source_block="      mode: binary
      binary: {path: ./build/bin/llama-server}"
  fi
  cat > "$out" <<YAML
# A GPU pool: every layer on the GPU (provision's default for a cuda pool), built for sm_$arch.
pools:
  - id: gpu
    engine: llamacpp
    model: tiny-llama
    devices: [0]
    readiness_timeout_ms: 120000
    provisioning:
$source_block
      model:
        ref: ./tiny-llama.gguf
      flags: [--ctx-size, "256"]
YAML
}

run() {
  local work=$ROOT/target/gpu-e2e
  GPU_WORK=$work
  # Never leave a server behind: stop what an earlier run left (its state is in $work), and stop
  # this run's servers when a check fails. (The first device run failed a check after the server
  # was up, and the server still held port 8080 on the warm machine when the next run started.)
  [ ! -e "$work/.runtime/state.json" ] || (cd "$work" && "$BUNDLE/provision" down) || true
  trap 'rc=$?; if [ "$rc" -ne 0 ] && [ -e "$GPU_WORK/.runtime/state.json" ]; then
          echo "failed (exit $rc): stopping what this run started"; (cd "$GPU_WORK" && "$BUNDLE/provision" down) || true
        fi' EXIT
  rm -rf "$work" && mkdir -p "$work"
  cp "$BUNDLE/tiny-llama.gguf" "$work/"
  stamp "unpacking source"
  mkdir -p "$work/llama.cpp" && tar -xzf "$BUNDLE/llama.cpp.tar.gz" -C "$work/llama.cpp"
  nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap --format=csv,noheader
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.[:space:]')
  mode=binary
  if command -v git >/dev/null; then
    (cd "$work/llama.cpp" && git init -q && git add -A && git -c user.name=p -c user.email=p@l commit -q -m src && git tag "$TAG")
    mode=source
  else
    stamp "no git here: building with CMake directly, then a binary-mode pool"
    cmake -S "$work/llama.cpp" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$arch" -DGGML_CUDA_FA=OFF -DGGML_NATIVE=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON > "$work/cmake.log"
    cmake --build "$work/build" --target llama-server --parallel "$(nproc)" > "$work/build.log"
  fi
  write_config "$arch" "$work/gpu.yaml" "$mode"
  cd "$work"
  stamp "provision plan"
  "$BUNDLE/provision" plan --config gpu.yaml --cache-dir "$work/cache"
  stamp "provision apply (sm_$arch, $mode mode)"
  "$BUNDLE/provision" apply --config gpu.yaml --cache-dir "$work/cache" || { tail -50 .runtime/logs/*.log; exit 1; }
  stamp "checks"
  local handoff=.runtime/engines/llamacpp.json
  cat "$handoff"
  pid=$(python3 -c "import json;print(json.load(open('$handoff'))['pid'])")
  url=$(python3 -c "import json;print(json.load(open('$handoff'))['url'])")
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader | tee apps.txt
  grep -q "^$pid," apps.txt || { echo "nvidia-smi does not list the server (pid $pid)"; exit 1; }
  # Estimate vs actual (issue 15): the fit's estimate for one server on the GPU, what the
  # server's load report says it allocated, and what nvidia-smi says the process uses (which
  # adds the CUDA context). A figure to report, not a failure: the target is "never under the
  # actual, over by at most 5 %".
  python3 - "$handoff" "$pid" apps.txt <<'PY'
import json, sys
handoff, pid, apps = json.load(open(sys.argv[1])), sys.argv[2], open(sys.argv[3]).read().splitlines()
smi = next((int(l.split(",")[2].split()[0]) for l in apps if l.split(",")[0].strip() == pid), None)
for dev, m in sorted(handoff.get("memory", {}).items()):
    est, act = m.get("estimated_bytes"), m["actual_bytes"]
    line = f"memory {dev}: load report {act / 2**20:.0f} MiB"
    if est is not None:
        line += f", estimate {est / 2**20:.0f} MiB"
        if smi is not None:
            line += f", nvidia-smi {smi} MiB; estimate/nvidia-smi {est / 2**20 / smi:.3f}"
    print(line)
PY
  # Older servers log "offloaded 3/3 layers to GPU"; 0c1e57098 at its default verbosity logs only
  # where layers went ("layer 0 is assigned to device CUDA0"); any layer on the CPU fails.
  grep -E "offloaded [0-9]+/[0-9]+ layers to GPU|assigned to device CUDA" .runtime/logs/gpu-r0.log ||
    { echo "the server log shows no layer on the GPU"; exit 1; }
  ! grep -E "offloaded ([0-9]+)/([0-9]+) layers" .runtime/logs/gpu-r0.log | grep -vE "offloaded ([0-9]+)/\1 layers" ||
    { echo "not every layer is on the GPU"; exit 1; }
  ! grep -E "layer [0-9]+ is assigned to device CPU" .runtime/logs/gpu-r0.log || { echo "a layer is on the CPU"; exit 1; }
  # python3 rather than curl: the device image is not known to have curl.
  python3 - "$url" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/completion", data=json.dumps({"prompt": "the", "n_predict": 8}).encode(),
                             headers={"Content-Type": "application/json"})
body = json.load(urllib.request.urlopen(req, timeout=30))
print("completion:", repr(body["content"]), "tokens predicted:", body["tokens_predicted"])
assert body["tokens_predicted"] > 0, "no tokens"
PY
  stamp "warm re-apply (nothing to do)"
  "$BUNDLE/provision" apply --config gpu.yaml --cache-dir "$work/cache"
  stamp "provision down"
  "$BUNDLE/provision" down
  ! kill -0 "$pid" 2>/dev/null || { sleep 1; grep -q zombie /proc/$pid/status 2>/dev/null || ! kill -0 "$pid" 2>/dev/null; }
  [ ! -e "$handoff" ] || { echo "handoff left behind"; exit 1; }
  stamp "a pool whose KV cache cannot fit: POOL_UNAVAILABLE before spawn"
  write_config "$arch" big.yaml "$mode"
  sed -i 's/--ctx-size, "256"/--ctx-size, "400000000"/' big.yaml
  local rc=0
  "$BUNDLE/provision" apply --config big.yaml --cache-dir "$work/cache" > big.out 2>&1 || rc=$?
  tail -15 big.out
  [ "$rc" -ne 0 ] && grep -q POOL_UNAVAILABLE big.out || { echo "expected POOL_UNAVAILABLE (exit $rc)"; exit 1; }
  [ ! -e "$handoff" ] || { echo "a handoff was written for a pool that does not fit"; exit 1; }
  ! pgrep -f "llama-server.*400000000" || { echo "a server was spawned for a pool that does not fit"; exit 1; }
  stamp "GPU e2e passed (exit $rc for the pool that does not fit)"
}

dry_run() {
  prepare
  local work=$ROOT/target/gpu-e2e-dry
  rm -rf "$work" && mkdir -p "$work/llama.cpp"
  cp "$BUNDLE/tiny-llama.gguf" "$work/"
  tar -tzf "$BUNDLE/llama.cpp.tar.gz" > "$work/files.txt"
  grep -q '^\./tools/server/' "$work/files.txt" || { echo "no tools/server in the bundle"; exit 1; }
  ! grep -q '^\./models/' "$work/files.txt" || { echo "models/ was not trimmed"; exit 1; }
  write_config 90 "$work/gpu.yaml" source
  stamp "the config run would apply (sm_90 shown; run reads it from nvidia-smi):"
  cat "$work/gpu.yaml"
  (cd "$work" && "$BUNDLE/provision" plan --config gpu.yaml --cache-dir "$work/cache")
  stamp "dry run passed: bundle ready ($(du -sh "$BUNDLE" | cut -f1))"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  dry-run) dry_run ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
