#!/usr/bin/env bash
# Installs what tim-torch needs on Debian 12 / Ubuntu (CPU): libtorch 1.13 with its headers, the
# OpenBLAS (pthread) BLAS, gloo, python3-torch with python3-pil and python3-numpy (the Python
# references of the interop tests and benchmarks) and the build tools. Idempotent: asks dpkg first and runs apt-get only for what is missing. Then makes
# sure OpenBLAS is the BLAS that libtorch actually loads: with Debian's reference BLAS selected,
# matmul-heavy code runs ~15x slower and nothing else tells you.
#
# Usage: sudo bash scripts/setup.sh   (as root, sudo is not needed)
# Env:   TIM_SETUP_NO_PYTHON=1  skip python3-torch/-pil/-numpy (only needed for tests that compare with PyTorch)
# A pip torch 2.x (CPU or CUDA) for the libtorch 2.x builds: scripts/setup-torch-venv.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

say() { printf 'setup: %s\n' "$*"; }
# The first line of a command's output. Not `| head -n1`: with pipefail, head exiting early can kill
# the writer with SIGPIPE (exit 141) and fail the script at random.
first_line() { "$@" | awk 'NR == 1'; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  die "this script is for Debian/Ubuntu (dpkg + apt-get). Elsewhere install libtorch, cmake and g++ yourself: see docs/install.md."
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "not root and sudo is not installed: run this script as root."
  SUDO=(sudo)
fi

PACKAGES=(libtorch-dev libopenblas0-pthread libgloo-dev cmake g++ make)
if [ "${TIM_SETUP_NO_PYTHON:-}" != "1" ]; then PACKAGES+=(python3-torch python3-pil python3-numpy); fi

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
  say "all packages already installed: ${PACKAGES[*]}"
else
  say "installing: ${missing[*]}"
  "${SUDO[@]}" apt-get update -q
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  for p in "${missing[@]}"; do installed "$p" || die "apt-get did not install $p"; done
fi

# --- BLAS: the libblas.so.3 / liblapack.so.3 alternatives must point at openblas-pthread. ---------
# The alternative names carry the multiarch triplet (libblas.so.3-x86_64-linux-gnu), so take them
# from the selections instead of guessing the architecture.
fix_alternative() {
  local base="$1" name current want
  name="$(update-alternatives --get-selections | awk -v b="$base" 'index($1, b "-") == 1 && !n {n = $1} END {print n}')"
  [ -n "$name" ] || die "no '$base' alternative is registered: is libopenblas0-pthread installed?"
  want="$(update-alternatives --list "$name" | awk '/\/openblas-pthread\// && !w {w = $0} END {print w}')"
  [ -n "$want" ] || die "'$name' has no openblas-pthread choice: reinstall libopenblas0-pthread."
  current="$(update-alternatives --query "$name" | awk '/^Value:/ {print $2}')"
  if [ "$current" != "$want" ]; then
    say "$name pointed at ${current:-nothing}; selecting $want"
    "${SUDO[@]}" update-alternatives --set "$name" "$want"
  fi
  # Check the file the dynamic loader will really open, not just the alternatives database.
  local link resolved
  link="$(update-alternatives --query "$name" | awk '/^Link:/ {print $2}')"
  resolved="$(readlink -f "$link")"
  case "$resolved" in
    */openblas-pthread/*) say "$base -> $resolved" ;;
    *) die "$link resolves to $resolved, not OpenBLAS pthread" ;;
  esac
}
fix_alternative libblas.so.3
fix_alternative liblapack.so.3

# --- Check the result: headers and CMake config present, libtorch loads the chosen BLAS. --------
torch_cfg=""
for d in /usr/lib/*/cmake/Torch; do
  if [ -f "$d/TorchConfig.cmake" ]; then torch_cfg="$d"; break; fi
done
[ -n "$torch_cfg" ] || die "libtorch-dev is installed but no TorchConfig.cmake was found under /usr/lib/*/cmake/Torch"
version="$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")/\1/p' "$torch_cfg/TorchConfigVersion.cmake")"
torch_cpu=""
for f in "$(dirname "$(dirname "$torch_cfg")")"/libtorch_cpu.so*; do
  if [ -e "$f" ]; then torch_cpu="$f"; break; fi
done
if [ -n "$torch_cpu" ] && command -v ldd >/dev/null 2>&1; then
  blas="$(ldd "$torch_cpu" | awk '$1 == "libblas.so.3" {print $3}')"
  if [ -n "$blas" ]; then
    case "$(readlink -f "$blas")" in
      */openblas-pthread/*) ;;
      *) die "libtorch loads $(readlink -f "$blas") as BLAS, not OpenBLAS pthread (check LD_LIBRARY_PATH / ldconfig)" ;;
    esac
  fi
fi
say "ok: libtorch $version ($torch_cfg), BLAS = OpenBLAS pthread, $(first_line cmake --version), $(first_line g++ --version)"
