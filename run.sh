#!/usr/bin/env bash
# The project's two entry points; each sets up its own virtual environments.
#   ./run.sh test                      ruff, then the suite on every stack
#                                      (what CI runs)
#   ./run.sh test [pytest args]        the suite on the main stack only
#   STACK=NAME ./run.sh test [args]    the suite on one stack
#   ./run.sh compare [harness args]    the with/without-fix benchmark
#   ./run.sh stack NAME                set up one stack's venv and print
#                                      its interpreter (the harness's
#                                      --environments calls it)
# The stacks (stacks/ pins each; README, "Compatibility"):
#   keras-3.15     keras 3.15.1, keras-hub 0.32.0, openvino 2026.4.1, with
#                  the other Keras backends and the harness (.venv)
#   keras-nightly  keras 3.16 nightly with the keras-openvino backend,
#                  keras-hub nightly (.venvs/keras-nightly)
#   keras-3.12     keras 3.12.0, keras-hub 0.23.0, openvino 2025.3.0: the
#                  smoke test only, tiny GPT-2 and Llama against stock
#                  (.venvs/keras-3.12)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${VENV:-.venv}
# Where the other stacks' venvs go.
VENVS=${KERAS_OV_EINSUM_VENVS:-.venvs}

pip_install() {
    local venv=$1
    shift
    "$venv/bin/python" -m pip install --quiet "$@"
}

# Create $1 (a venv) unless it exists, and reinstall only when the files
# that declare it ($2...) change.
fresh() {
    local venv=$1
    shift
    if [ ! -x "$venv/bin/python" ]; then
        "$PYTHON" -m venv "$venv"
    fi
    local stamp
    stamp="$venv/.installed-$(cat "$@" | sha256sum | cut -c1-16)"
    if [ -f "$stamp" ]; then
        return 1
    fi
    rm -f "$venv"/.installed-*
    echo "$stamp"
}

setup_main() {
    local stamp
    if stamp=$(fresh "$VENV" pyproject.toml constraints.txt); then
        # torch is pinned to the CPU build; an unpinned torch pulls CUDA.
        # The tested stack is pinned in constraints.txt.
        pip_install "$VENV" -c constraints.txt -e ".[test,backends,bench,export]"
        touch "$stamp"
    fi
    PYTHON_FOR_STACK="$VENV/bin/python"
}

setup_stack() {
    local name=$1 venv="$VENVS/$1" stamp
    local files=("stacks/$name.txt")
    [ -f "stacks/$name.no-deps.txt" ] && files+=("stacks/$name.no-deps.txt")
    if stamp=$(fresh "$venv" pyproject.toml "${files[@]}"); then
        echo "setting up the $name stack in $venv" >&2
        pip_install "$venv" -r "stacks/$name.txt"
        if [ -f "stacks/$name.no-deps.txt" ]; then
            pip_install "$venv" --no-deps -r "stacks/$name.no-deps.txt"
        fi
        # This checkout, without touching the stack's pins.
        pip_install "$venv" --no-deps -e .
        touch "$stamp"
    fi
    PYTHON_FOR_STACK="$venv/bin/python"
}

# The smoke test: tiny GPT-2 and Llama generate with the fix, stock's
# tokens (tests/test_stepwise.py).
SMOKE=(tests/test_stepwise.py -k "TestSameTokensAsStock and float32")

setup() {
    case "$1" in
        keras-3.15) setup_main ;;
        keras-nightly | keras-3.12) setup_stack "$1" ;;
        *)
            echo "unknown stack $1 (keras-3.15, keras-nightly, keras-3.12)" >&2
            exit 2
            ;;
    esac
}

test_stack() {
    local name=$1
    shift
    echo "== the $name stack" >&2
    setup "$name"
    if [ "$name" = keras-3.12 ]; then
        set -- "${SMOKE[@]}" "$@"
    fi
    "$PYTHON_FOR_STACK" -m pytest "$@"
}

command=${1:-test}
shift || true
case "$command" in
    test)
        if [ -n "${STACK:-}" ]; then
            test_stack "$STACK" "$@"
        elif [ $# -gt 0 ]; then
            test_stack keras-3.15 "$@"
        else
            setup_main
            "$VENV/bin/ruff" check .
            "$VENV/bin/ruff" format --check .
            test_stack keras-3.15
            test_stack keras-nightly
            test_stack keras-3.12
        fi
        ;;
    compare)
        setup_main
        exec "$VENV/bin/python" -m benchmarks compare "$@"
        ;;
    stack)
        # pip's output goes to stderr: stdout is the interpreter's path.
        setup "${1:?usage: ./run.sh stack NAME}" >&2
        echo "$PYTHON_FOR_STACK"
        ;;
    *)
        echo "usage: ./run.sh test|compare|stack [args...]" >&2
        exit 2
        ;;
esac
