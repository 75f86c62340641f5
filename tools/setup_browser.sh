#!/usr/bin/env bash
# What the browser tests need (tests/browser/): Debian's headless-capable `chromium` and the Python
# package `playwright` that drives it. Run by the `browser` stage of tools/run_checks.sh, not by
# `make lab`: learners do not need a browser installed by us.
#
# - chromium: installed with apt-get (after apt-get update) when no `chromium` is on PATH; this
#   needs root (CI runs as root). Playwright never downloads a browser of its own here: the tests
#   hand it this chromium as executable_path.
# - playwright: from the `dev` extra (tools/setup.sh installs it); installed into the venv here
#   only if that venv lacks it.
# Idempotent: with both present it prints what it found and returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin/python

if command -v chromium >/dev/null 2>&1; then
    echo "setup-browser: found $(command -v chromium) ($(chromium --version 2>/dev/null || echo 'version unknown'))"
else
    if [ "$(id -u)" != 0 ]; then
        echo "setup-browser: no 'chromium' on PATH and not root. Install it yourself (Debian/Ubuntu:" \
            "sudo apt-get install chromium) or run this script as root." >&2
        exit 1
    fi
    echo "setup-browser: no 'chromium' on PATH; running: apt-get update && apt-get install -y chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends chromium fonts-liberation fonts-noto-cjk
    echo "setup-browser: installed $(chromium --version 2>/dev/null || command -v chromium)"
fi

if "$PY" -c "import playwright" 2>/dev/null; then
    echo "setup-browser: playwright $("$PY" -c 'from importlib.metadata import version; print(version("playwright"))') is in ${VENV:-.venv}"
else
    echo "setup-browser: installing the Python package playwright into ${VENV:-.venv} (no browser download)"
    "$PY" -m pip install --quiet --disable-pip-version-check playwright
fi
