#!/usr/bin/env bash
# The quick start: on a fresh Debian/Ubuntu machine, sets everything up and runs the CPU demo
# (train a small TiM on MNIST, sample at 1-16 NFE, evaluate, write runs/demo/report.md).
#
#   bash scripts/demo.sh [tim demo options]       e.g. --budget-min 5, --fresh, --out runs/x
#   npm run demo [-- options]
#
# Steps, each skipped when already done (so running it again only resumes the demo):
#   1. scripts/setup.sh: the apt packages (libtorch, OpenBLAS, cmake, g++); asks dpkg first
#   2. npm ci, when node_modules is missing (its install script skipped: step 3 builds instead)
#   3. the libtorch and the addon. By default a pip torch 2.13 (CPU) in .venv/torch2
#      (scripts/setup-torch-venv.sh) with its prebuilt addon (build-torch2/, RUNPATH filled in): the
#      demo's training step takes ~0.66x the CPU time of Debian's libtorch 1.13 on the same machine
#      (bench/results/train-step-demo-net-{1.13,2.13}.json: 603 vs 908 ms), and steps in the time budget are the demo's quality. When that torch
#      cannot be installed (no pip index with it), Debian's 1.13 (build/, compiled when missing or
#      stale). TIM_DEMO_LIBTORCH=debian or =torch2 forces one.
#   4. tim demo (see docs/demo.md); interrupted, it resumes on the next run
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'demo.sh: %s\n' "$*"; }

say "1/4 system packages (scripts/setup.sh)"
# python3-torch is only for the tests that compare with PyTorch; the demo does not need it.
TIM_SETUP_NO_PYTHON="${TIM_SETUP_NO_PYTHON:-1}" bash scripts/setup.sh

if [ ! -d node_modules ]; then
  say "2/4 npm ci (node_modules is missing)"
  # The install script would build the addon now; step 3 decides that (once) instead.
  TIM_TORCH_SKIP_INSTALL=1 npm ci
else
  say "2/4 node_modules present"
fi

# The source hash an addon reports (in a child process: one that does not load reads as stale).
hash_of() {
  [ -f "$1" ] || return 0
  node -e 'try { process.stdout.write(require(process.argv[1]).buildInfo().sourceHash || "") } catch { }' "$PWD/$1" 2>/dev/null || true
}
want="$(node scripts/source-hash.cjs)"
choice="${TIM_DEMO_LIBTORCH:-auto}"
case "$choice" in auto|torch2|debian) ;; *) say "TIM_DEMO_LIBTORCH must be auto, torch2 or debian, got '$choice'"; exit 2 ;; esac

use_torch2() {
  local tdir lib addon=build-torch2/Release/tim_torch.node flavour=prebuilds/linux-x64/libtorch-2.13-cpu
  tdir="$(bash scripts/setup-torch-venv.sh cpu .venv/torch2 | awk 'END {print}')" || return 1
  [ -n "$tdir" ] || return 1
  if [ "$(hash_of "$addon")" != "$want" ]; then
    if [ -f "$flavour/prebuild.json" ] && grep -q "\"sourceHash\": \"$want\"" "$flavour/prebuild.json"; then
      say "3/4 torch 2.13: the prebuilt addon ($flavour), RUNPATH set to $tdir/lib"
      node -e 'require("./scripts/runpath.cjs").writeWithRunpath(process.argv[1], process.argv[2], process.argv[3])' \
        "$(ls "$flavour"/*.node)" "$addon" "$tdir/lib" || return 1
    else
      say "3/4 torch 2.13: building the addon (build-torch2/; a few minutes)"
      LIBTORCH="$tdir" npx --no-install cmake-js compile -O build-torch2 --CDCMAKE_BUILD_TYPE=Release || return 1
    fi
  fi
  [ "$(hash_of "$addon")" = "$want" ] || return 1
  export TIM_TORCH_ADDON="$PWD/$addon"
  say "3/4 libtorch: pip torch 2.13 CPU ($TIM_TORCH_ADDON)"
}

use_debian() {
  local addon=build/Release/tim_torch.node
  if [ "$(hash_of "$addon")" != "$want" ]; then
    say "3/4 npm run build:native ($([ -f "$addon" ] && echo 'built from other sources' || echo 'no addon yet'); a few minutes)"
    npm run build:native
  fi
  unset TIM_TORCH_ADDON
  say "3/4 libtorch: Debian's 1.13 ($addon)"
}

case "$choice" in
  torch2) use_torch2 || { say "could not set up torch 2.13 (see above)"; exit 1; } ;;
  debian) use_debian ;;
  auto) use_torch2 || { say "torch 2.13 is not available here: using Debian's libtorch 1.13 instead"; use_debian; } ;;
esac

say "4/4 tim demo $*"
exec npx --no-install tsx lib/cli/tim.ts demo "$@"
