#!/usr/bin/env bash
# GPU check: one run of at most ~10 minutes on a machine with an NVIDIA GPU (docs/install.md, "GPU check").
#
#   1. env     finds node ($NODE, ./.device/node/bin/node, or node on PATH) and python ($PYTHON, default
#              python3) with torch; records versions, nvidia-smi and nvcc
#   2. build   builds the addon from source against that python's torch into $GPU_CHECK_BUILD_DIR
#              (default build-gpu): LIBTORCH=<torch package> cmake-js compile -O build-gpu
#   3. load    loads it (TIM_TORCH_ADDON) and records buildInfo and CUDA availability
#   4. test    test/cuda.test.ts with that addon: on a GPU, golden forward/sampler parity on CUDA, bf16
#              autocast training steps, a 1-rank NCCL all-reduce, live tensors flat; without one, the
#              CPU-only behaviour (every request for 'cuda' is a TorchError E_DEVICE)
#   5. bench   bench/cuda.ts (GPU only; skipped with a message otherwise): TiM-XL/2-shaped bf16 training
#              step and 1-/8-NFE sampling, TypeScript vs the Python eager twins on the same torch
#
# Every stage runs under `timeout` within the overall budget, a failed stage does not stop the later
# ones (a stage that needs the addon is skipped when there is none), and the end prints a summary.
# Results: $OUT (default ./gpu-check-out): summary.json, <stage>.log, load.json, cuda-test.json,
# cuda.json (the benchmark).
#
# Env: OUT, NODE, PYTHON, GPU_CHECK_BUDGET_S (default 570: the whole run, seconds),
#      GPU_CHECK_BUILD_DIR (default build-gpu), GPU_CHECK_SKIP_BUILD=1 (reuse the addon already there),
#      GPU_CHECK_BUILD_MAX_S (default 330: the compile's own limit),
#      GPU_CHECK_BENCH_ARGS (extra arguments for bench/cuda.ts, e.g. "--batch 8 --depth 12").
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
OUT="${OUT:-./gpu-check-out}"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
BUDGET="${GPU_CHECK_BUDGET_S:-570}"
BUILD_DIR="${GPU_CHECK_BUILD_DIR:-build-gpu}"
PYTHON="${PYTHON:-python3}"
START=$(date +%s)
STAGES="$OUT/.stages.tsv"
: > "$STAGES"
: > "$OUT/gpu-check.log"

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }
say() { echo "[gpu-check $(elapsed)s] $*" | tee -a "$OUT/gpu-check.log"; }
record() { # name status detail seconds
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-0}" >> "$STAGES"
  say "stage $1: $2${3:+ ($3)}"
}

# stage NAME MAX_SECONDS RESERVE_SECONDS command...: runs under timeout min(MAX, time left - RESERVE),
# output to $OUT/NAME.log (its tail echoed). Returns the command's status.
stage() {
  local name=$1 max=$2 reserve=$3
  shift 3
  local avail=$(( $(left) - reserve ))
  local t=$(( max < avail ? max : avail ))
  if (( t < 15 )); then
    record "$name" skipped "no time left in the ${BUDGET}s budget"
    return 125
  fi
  say "stage $name: up to ${t}s: $*"
  local s rc d
  s=$(date +%s)
  timeout --kill-after=10 "$t" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  d=$(( $(date +%s) - s ))
  tail -n "${GPU_CHECK_TAIL:-25}" "$OUT/$name.log" | sed "s/^/  [$name] /"
  if (( rc == 0 )); then record "$name" ok "" "$d"
  elif (( rc == 124 || rc == 137 )); then record "$name" timeout "killed after ${d}s (limit ${t}s); see $name.log" "$d"
  else record "$name" failed "exit $rc after ${d}s; see $name.log" "$d"
  fi
  return $rc
}

# ---- 1. env ------------------------------------------------------------------------------------------
say "root $ROOT, out $OUT, budget ${BUDGET}s"
node_bin=""
for c in "${NODE:-}" "$ROOT/.device/node/bin/node" "$(command -v node 2>/dev/null || true)"; do
  if [ -n "$c" ] && [ -x "$c" ]; then node_bin="$c"; break; fi
done
env_ok=1
if [ -z "$node_bin" ]; then
  say "no node: set NODE=/path/to/bin/node or carry one as .device/node/bin/node"
  env_ok=0
else
  node_bin="$(cd "$(dirname "$node_bin")" && pwd)/$(basename "$node_bin")"
  export PATH="$(dirname "$node_bin"):$PATH" # CMakeLists.txt and cmake-js call `node`
fi
[ -d "$ROOT/node_modules/cmake-js" ] && [ -d "$ROOT/node_modules/tsx" ] && [ -d "$ROOT/node_modules/vitest" ] \
  || { say "node_modules lacks cmake-js, tsx or vitest: run npm ci (or carry node_modules)"; env_ok=0; }
command -v "$PYTHON" >/dev/null 2>&1 || { say "no python '$PYTHON' (set PYTHON)"; env_ok=0; }
{
  echo "node: ${node_bin:-none} $([ -n "$node_bin" ] && "$node_bin" --version)"
  echo "python: $PYTHON"
  "$PYTHON" -c 'import torch, os; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "devices", torch.cuda.device_count()); print("torch dir", os.path.dirname(torch.__file__))' 2>&1 | grep -v Warning
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "nvidia-smi: not available"
  nvcc --version 2>/dev/null | tail -n 2 || echo "nvcc: not on PATH"
  cmake --version 2>/dev/null | head -n 1 || echo "cmake: not on PATH"
  echo "ninja: $(ninja --version 2>/dev/null || echo 'not on PATH')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
} > "$OUT/env.log" 2>&1
sed 's/^/  [env] /' "$OUT/env.log"
if (( env_ok )); then record env ok "" 0; else record env failed "see above" 0; fi

# ---- 2. build ------------------------------------------------------------------------------------------
ADDON="$ROOT/$BUILD_DIR/Release/tim_torch.node"
if [ "${GPU_CHECK_SKIP_BUILD:-0}" = 1 ]; then
  if [ -f "$ADDON" ]; then record build skipped "GPU_CHECK_SKIP_BUILD=1: using $BUILD_DIR as it is"; else record build failed "GPU_CHECK_SKIP_BUILD=1 but $ADDON does not exist"; fi
elif [ -z "$node_bin" ]; then
  record build skipped "no node"
else
  LIBTORCH_DIR="$("$PYTHON" -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null | tail -n 1)"
  if [ -z "$LIBTORCH_DIR" ] || [ ! -d "$LIBTORCH_DIR/share/cmake/Torch" ]; then
    record build failed "'$PYTHON' has no torch with share/cmake/Torch ('$LIBTORCH_DIR')"
  else
    rm -f "$ADDON"
    # Leave ~4.5 min for the rest; the compile runs on every core.
    LIBTORCH="$LIBTORCH_DIR" PYTHON="$PYTHON" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
      stage build "${GPU_CHECK_BUILD_MAX_S:-330}" 240 "$node_bin" "$ROOT/node_modules/cmake-js/bin/cmake-js" compile -O "$BUILD_DIR" --CDCMAKE_BUILD_TYPE=Release
    if [ -f "$ADDON" ]; then say "addon: $ADDON"; fi
  fi
fi

# ---- 3. load -------------------------------------------------------------------------------------------
have_addon=0
[ -f "$ADDON" ] && [ -n "$node_bin" ] && have_addon=1
export TIM_TORCH_ADDON="$ADDON" TIM_TORCH_PYTHON="$PYTHON"
cuda_available=false
if (( have_addon )); then
  stage load 60 180 "$node_bin" --import tsx --input-type=module -e "
    import { writeFileSync } from 'node:fs';
    import { torch } from './lib/index.ts';
    const info = { ...torch.buildInfo(), cudaAvailable: torch.cuda.isAvailable(), cudaDevices: torch.cuda.deviceCount(),
      nccl: (await import('./lib/torch/distributed.ts')).isAvailable('nccl'), addon: process.env.TIM_TORCH_ADDON };
    writeFileSync('$OUT/load.json', JSON.stringify(info, null, 2) + '\n');
    console.log(JSON.stringify(info));
  " && cuda_available="$("$PYTHON" -c "import json; print(str(json.load(open('$OUT/load.json'))['cudaAvailable']).lower())")"
else
  record load skipped "no addon in $BUILD_DIR (build failed or skipped)"
fi

# ---- 4. test -------------------------------------------------------------------------------------------
if (( have_addon )); then
  stage test 200 120 "$node_bin" "$ROOT/node_modules/vitest/vitest.mjs" run test/cuda.test.ts \
    --reporter=verbose --reporter=json --outputFile.json="$OUT/cuda-test.json"
else
  record test skipped "no addon"
fi

# ---- 5. bench ------------------------------------------------------------------------------------------
if (( ! have_addon )); then
  record bench skipped "no addon"
elif [ "$cuda_available" != true ]; then
  record bench skipped "no CUDA device: torch.cuda.isAvailable() is false with this addon (GPU-only benchmarks: TiM-XL/2 bf16 train step, 1/8-NFE sampling)"
else
  # shellcheck disable=SC2086
  stage bench 330 10 "$node_bin" --import tsx bench/cuda.ts --out "$OUT" ${GPU_CHECK_BENCH_ARGS:-}
fi

# ---- summary -------------------------------------------------------------------------------------------
"$PYTHON" - "$STAGES" "$OUT" "$(elapsed)" "$BUDGET" <<'PY'
import json, os, sys
stages_file, out, elapsed, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
stages = []
for line in open(stages_file):
    name, status, detail, secs = line.rstrip("\n").split("\t")
    stages.append({"stage": name, "status": status, "detail": detail, "seconds": int(secs)})
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except Exception:
        return None
summary = {"elapsed_s": elapsed, "budget_s": budget, "stages": stages, "load": load("load.json")}
t = load("cuda-test.json")
if t:
    summary["tests"] = {k: t.get(k) for k in ("numTotalTests", "numPassedTests", "numFailedTests", "numPendingTests")}
    summary["tests"]["cases"] = [{"name": a.get("fullName"), "status": a.get("status")} for r in t.get("testResults", []) for a in r.get("assertionResults", [])]
b = load("cuda.json")
if b:
    summary["bench"] = {"rows": b.get("rows"), "notes": b.get("notes"), "skipped": b.get("settings", {}).get("skipped")}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
print("\n==== gpu-check summary (%ds of %ds) ====" % (elapsed, budget))
for s in stages:
    print("  %-6s %-8s %s" % (s["stage"], s["status"], s["detail"]))
if "tests" in summary:
    tt = summary["tests"]
    print("  tests: %s passed, %s failed, %s skipped of %s" % (tt["numPassedTests"], tt["numFailedTests"], tt["numPendingTests"], tt["numTotalTests"]))
if b:
    for r in b.get("rows") or []:
        ratio = "-" if r.get("ratio") is None else "%.2f" % r["ratio"]
        py = "-" if r.get("python") is None else "%.1f" % r["python"]
        print("  bench: %-55s node %8.1f  python %8s  %-7s ratio %s" % (r["case"], r["node"], py, r["unit"], ratio))
print("  results: %s" % out)
PY
failed=$(awk -F'\t' '$2 == "failed" || $2 == "timeout" { n++ } END { print n + 0 }' "$STAGES")
rm -f "$STAGES"
exit $(( failed > 0 ? 1 : 0 ))
