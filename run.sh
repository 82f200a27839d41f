#!/usr/bin/env bash
# The project's two entry points; each sets up its own virtual environment.
#   ./run.sh test [pytest args]        the test suite (what CI runs)
#   ./run.sh compare [harness args]    the with/without-fix benchmark
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${VENV:-.venv}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    # Reinstall only when the declared dependencies change.
    local stamp="$VENV/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        # torch is pinned to the CPU build; an unpinned torch pulls CUDA.
        # The tested stack is pinned in constraints.txt.
        "$VENV/bin/python" -m pip install --quiet -c constraints.txt \
            -e ".[test,backends,bench,export]"
        rm -f "$VENV"/.installed-*
        touch "$stamp"
    fi
}

command=${1:-test}
shift || true
case "$command" in
    test)
        setup
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    compare)
        setup
        exec "$VENV/bin/python" -m benchmarks compare "$@"
        ;;
    *)
        echo "usage: ./run.sh test|compare [args...]" >&2
        exit 2
        ;;
esac
