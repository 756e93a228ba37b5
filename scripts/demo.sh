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
#   3. npm run build:native, when build/Release/tim_torch.node is missing or was built from other
#      native sources than these (its compiled-in source hash differs)
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

ADDON=build/Release/tim_torch.node
want="$(node scripts/source-hash.cjs)"
have=""
if [ -f "$ADDON" ]; then
  # In a child process: an addon that does not load (stale libtorch, missing library) reads as stale.
  have="$(node -e 'try { process.stdout.write(require(process.argv[1]).buildInfo().sourceHash || "") } catch { }' "$PWD/$ADDON" 2>/dev/null || true)"
fi
if [ "$have" != "$want" ]; then
  say "3/4 npm run build:native ($([ -f "$ADDON" ] && echo 'built from other sources' || echo 'no addon yet'); a few minutes)"
  npm run build:native
else
  say "3/4 native addon up to date ($ADDON)"
fi

say "4/4 tim demo $*"
exec npx --no-install tsx lib/cli/tim.ts demo "$@"
