#!/usr/bin/env bash
# Every check CI runs, in stages, each timed: lint, unit tests, notebooks (nbval, fast mode), book,
# browser (the built site and JupyterLab in headless Chromium).
# Usage: tools/run_checks.sh [all|lint|unit|unit-fast|nbval|book|browser]
# (unit-fast: the unit tests not marked slow; not part of all, which runs every test)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
export PATH="$PWD/$BIN:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg PYTHONHASHSEED=0
what=${1:-all}
failed=()
declare -A took

# pytest exits 5 when it collected nothing: here that is a failure (a check that checks nothing).
run_pytest() {
    python -m pytest "$@"
    local rc=$?
    if [ $rc -eq 5 ]; then echo "pytest collected no tests for: $*" >&2; return 1; fi
    return $rc
}

stage() {
    local name=$1; shift
    [ "$what" = all ] || [ "$what" = "$name" ] || return 0
    echo "::: stage $name"
    local t0=$SECONDS
    if "$@"; then echo "::: stage $name passed"; else echo "::: stage $name FAILED"; failed+=("$name"); fi
    took[$name]=$((SECONDS - t0))
    echo "::: stage $name took ${took[$name]} s"
}

notebooks() { find chapters solutions -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | sort; }

lint() { ruff check course_lib tests benchmarks tools chapters solutions && ruff format --check course_lib tests benchmarks tools; }
# The unit tests run on TEST_WORKERS processes (pytest-xdist; default 2, this project's CI machine has two
# cores and each test process uses one torch thread, tests/conftest.py), one test file per process at a time.
WORKERS=(-n "${TEST_WORKERS:-2}" --dist loadfile)
unit() { run_pytest tests -q -p no:cacheprovider --ignore=tests/browser "${WORKERS[@]}"; }
unit_fast() { run_pytest tests -q -p no:cacheprovider --ignore=tests/browser -m "not slow" "${WORKERS[@]}"; }
# Notebooks run TEST_WORKERS at a time (each notebook's cells in order in one kernel: --dist loadscope),
# the solutions first and then the learner copies, so that a notebook's two copies, which write the same
# training runs in the cache, never run together; tools/warm_cache.py first builds the models several
# notebooks load, so that no two notebooks train the same one at once. With more than one at a time each
# kernel gets one thread: two kernels of two threads each on two cores took 1,108 s here, more than the
# 831 s of one notebook at a time before; on four heavy notebooks, one thread each took 73 s against 96 s.
nbval() {
    mapfile -t nbs < <(notebooks)
    [ ${#nbs[@]} -gt 0 ] || { echo "no notebooks found in chapters/ or solutions/" >&2; return 1; }
    COURSE_FAST=1 python tools/warm_cache.py || return 1
    (
        [ "${TEST_WORKERS:-2}" = 1 ] || export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # in this subshell only
        rc=0
        for part in solutions chapters; do
            mapfile -t nbs < <(notebooks | grep "^$part/")
            COURSE_FAST=1 run_pytest --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
                --nbval-cell-timeout=900 -p no:cacheprovider -q -n "${TEST_WORKERS:-2}" --dist loadscope \
                "${nbs[@]}" || rc=1
        done
        exit $rc
    )
}
# The site loads MathJax and the widget scripts from local copies (tools/book_assets.sh); without npm,
# book_assets.sh writes a config that falls back to the CDNs, and the build uses it.
book() {
    bash tools/book_assets.sh || return 1
    local config=_config.yml
    [ -f _build/_config.cdn.yml ] && config=_build/_config.cdn.yml
    rm -rf _build/html && jupyter-book build . --config "$config" -W -n --keep-going --path-output .
}
# Chromium (apt-get, when missing) and playwright first; run alone, the stage (re)builds the book.
browser() {
    bash tools/setup_browser.sh || return 1
    if [ "$what" = browser ] || [ ! -f _build/html/index.html ]; then book || return 1; fi
    # Two Chromiums at once (one per core): 463 s one page at a time on the CI machine. The workers share
    # the screenshot folder, so it is cleared here, before they start.
    rm -f _build/screenshots/*.png _build/screenshots/*.jpg
    COURSE_BROWSER_TESTS=1 run_pytest tests/browser -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" --dist load
}

stage lint lint
stage unit unit
[ "$what" = unit-fast ] && stage unit-fast unit_fast
stage nbval nbval
stage book book
stage browser browser

echo "::: stage times (s):"
for k in lint unit unit-fast nbval book browser; do [ -n "${took[$k]:-}" ] && echo ":::   $k ${took[$k]}"; done
if [ ${#failed[@]} -gt 0 ]; then echo "::: FAILED stages: ${failed[*]}"; exit 1; fi
echo "::: all stages passed"
