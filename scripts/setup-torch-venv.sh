#!/usr/bin/env bash
# Makes a Python virtual environment holding a pip torch 2.x, whose libtorch (site-packages/torch)
# tim-torch can be built against (LIBTORCH=<that folder>) and whose python is the reference of the
# interop tests (TIM_TORCH_PYTHON=<venv>/bin/python). Idempotent: an existing venv with the wanted
# torch is kept.
#
# Usage: bash scripts/setup-torch-venv.sh cpu  DIR   torch 2.13.0+cpu, numpy, pillow
#        bash scripts/setup-torch-venv.sh cuda DIR   torch 2.14.1 (CUDA 13.0), numpy, pillow, the nvidia-* wheels its
#                                                    libraries load (cudart, cublas, cudnn, nccl, ...) and
#                                                    the CUDA compiler wheels a build against it needs
# Prints the torch package folder (the LIBTORCH to use) as its last line.
#
# Env: TIM_TORCH2_CPU_VERSION (default 2.13.0+cpu), TIM_TORCH2_CUDA_VERSION (default 2.14.1),
#      PYTHON (default python3; the wheels need CPython 3.10+ for these torch versions).
#
# Package indexes: pip's own configuration decides where packages come from. When it names extra
# indexes (as on machines with local mirrors and no reachable default index), the first is made the
# main index, so that pip does not wait on retries of an index it cannot reach.
set -euo pipefail

say() { printf 'setup-torch-venv: %s\n' "$*" >&2; }
die() { printf 'setup-torch-venv: ERROR: %s\n' "$*" >&2; exit 1; }

flavour="${1:-}"
dir="${2:-}"
[ -n "$flavour" ] && [ -n "$dir" ] || die "usage: $0 cpu|cuda DIR"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || die "$python not found: install Python 3 (with venv) or set PYTHON"

case "$flavour" in
  cpu)
    torch_spec="torch==${TIM_TORCH2_CPU_VERSION:-2.13.0+cpu}"
    # numpy and pillow: the Python side of the interop tests
    extra=(numpy pillow)
    ;;
  cuda)
    torch_spec="torch==${TIM_TORCH2_CUDA_VERSION:-2.14.1}"
    extra=(numpy pillow)
    ;;
  *) die "flavour must be 'cpu' or 'cuda', got '$flavour'" ;;
esac

# --- indexes ------------------------------------------------------------------------------------
index_args=()
extras="$("$python" -m pip config get global.extra-index-url 2>/dev/null || true)"
if [ -n "$extras" ]; then
  read -r -a urls <<<"$extras"
  index_args+=(--index-url "${urls[0]}")
  for u in "${urls[@]:1}"; do index_args+=(--extra-index-url "$u"); done
fi

# --- the venv -----------------------------------------------------------------------------------
if [ ! -x "$dir/bin/python" ]; then
  say "creating $dir"
  "$python" -m venv "$dir" || die "'$python -m venv' failed (Debian: apt-get install python3-venv)"
fi
vpy="$dir/bin/python"
pip=("$vpy" -m pip install --disable-pip-version-check -q "${index_args[@]}")

want="${torch_spec#torch==}"
# Ready when torch is the wanted release and every other piece imports or exists; anything less
# (a first run that was interrupted, say) runs the installs again (pip skips what is there).
ready() {
  local have
  have="$("$vpy" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
  [ "${have%%+*}" = "${want%%+*}" ] || return 1
  [ "$flavour" = cuda ] || [ "$have" = "$want" ] || return 1
  "$vpy" -c 'import numpy, PIL' 2>/dev/null || return 1
  if [ "$flavour" = cuda ]; then
    ls "$dir"/lib/python3*/site-packages/nvidia/cu*/bin/nvcc >/dev/null 2>&1 || return 1
  fi
}
if ready; then
  say "already set up"
elif [ "$flavour" = cpu ]; then
  say "installing $torch_spec ${extra[*]}"
  "${pip[@]}" "$torch_spec" "${extra[@]}"
else
  # torch's own dependency list names cuda-bindings (and triton), which the local indexes do not
  # carry and the C++ side never uses: install torch without dependencies, then exactly what its
  # shared libraries load (its metadata's cuda-toolkit extras and nvidia-* pins) and its Python
  # dependencies (for `import torch` in checks). pip then warns that cuda-bindings and triton are
  # missing: expected.
  say "installing $torch_spec (no deps) and its CUDA libraries"
  "${pip[@]}" --no-deps "$torch_spec"
  meta="$(ls -d "$dir"/lib/python3*/site-packages/torch-*.dist-info | awk 'NR == 1')"
  mapfile -t reqs < <(sed -n 's/^Requires-Dist: \([^;]*\);* *\(.*\)$/\1|\2/p' "$meta/METADATA" |
    awk -F'|' '$2 !~ /extra ==/ && $1 !~ /^(cuda-bindings|triton)/ {gsub(/ /, "", $1); print $1}')
  [ "${#reqs[@]}" -gt 0 ] || die "could not read torch's dependencies from $meta/METADATA"
  # Building against it (not running it) also needs the CUDA compiler wheels of the same release:
  # TorchConfig checks for a whole toolkit (CMakeLists.txt assembles one from these wheels).
  cuda_mm="$(printf '%s\n' "${reqs[@]}" | sed -n 's/^cuda-toolkit.*==\([0-9]*\.[0-9]*\).*/\1/p' | awk 'NR == 1')"
  [ -n "$cuda_mm" ] || die "could not read the CUDA release (cuda-toolkit==X.Y) from torch's dependencies"
  "${pip[@]}" "${reqs[@]}" "nvidia-cuda-nvcc==$cuda_mm.*" "nvidia-cuda-crt==$cuda_mm.*" "nvidia-nvvm==$cuda_mm.*" "nvidia-cuda-cccl==$cuda_mm.*" "${extra[@]}"
fi
ready || die "the environment in $dir is still incomplete after installing (torch $want, numpy, pillow, and for cuda the compiler wheels): see pip's output above"

tdir="$("$vpy" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
[ -f "$tdir/share/cmake/Torch/TorchConfig.cmake" ] || die "$tdir has no share/cmake/Torch/TorchConfig.cmake"
say "ok: torch $("$vpy" -c 'import torch; print(torch.__version__)') in $dir"
echo "$tdir"
