"""Python environments per OpenVINO version, with known-good Keras stacks.

The current venv serves its own OpenVINO version. Any other version gets a
venv of its own, built once under the cache folder from the pinned set in
``KNOWN_GOOD`` (an older OpenVINO needs an older keras: keras 3.15's backend
calls ``opset16.constant``, which OpenVINO 2025.3 lacks).
"""

import json
import os
import pathlib
import subprocess
import sys
import typing

__all__ = ["KNOWN_GOOD", "current_openvino", "packages", "python_for"]

ROOT = pathlib.Path(__file__).resolve().parent.parent


class KnownGood(typing.NamedTuple):
    """A (keras, keras-hub) pair seen to run with one OpenVINO release."""

    keras: str
    keras_hub: str
    # Benchmark models that generate with it, stock and with the fix.
    models: tuple
    note: str = ""


# openvino -> the stack measured on this machine (see README, "Benchmarks").
KNOWN_GOOD = {
    "2026.4.1": KnownGood(
        "3.15.1",
        "0.32.0",
        ("gpt2_tiny", "gpt2_base", "gpt2_medium", "llama_small", "gemma_small"),
    ),
    "2025.3.0": KnownGood(
        "3.12.0",
        "0.23.0",
        ("gpt2_tiny", "gpt2_base", "gpt2_medium"),
        note="keras 3.12's OpenVINO mean() calls to_shape() and so needs "
        "static shapes: Llama's and Gemma's RMS norms fail to build, with "
        "or without the fix",
    ),
}
# Beside keras/keras-hub/openvino: what the worker and the backend import.
_COMMON = ["scipy", "psutil", "numpy", "tokenizers", "sentencepiece"]


def current_openvino():
    from importlib import metadata

    return metadata.version("openvino")


def packages(python):
    """Every distribution installed for ``python``: name -> version."""
    script = (
        "import json\n"
        "from importlib import metadata\n"
        "print(json.dumps(sorted((d.metadata['Name'], d.version) "
        "for d in metadata.distributions())))"
    )
    completed = subprocess.run(
        [python, "-c", script], capture_output=True, text=True, check=True
    )
    return dict(json.loads(completed.stdout))


def _cache_root():
    default = pathlib.Path.home() / ".cache" / "keras-ov-einsum" / "venvs"
    return pathlib.Path(os.environ.get("KERAS_OV_EINSUM_VENVS", default))


def python_for(openvino_version, log=print):
    """The interpreter that runs ``openvino_version``; builds it if needed."""
    if openvino_version == current_openvino():
        return sys.executable
    if openvino_version not in KNOWN_GOOD:
        raise ValueError(
            f"OpenVINO {openvino_version} has no known-good keras set; "
            f"known: {', '.join(sorted(KNOWN_GOOD))}"
        )
    keras_version, hub_version = KNOWN_GOOD[openvino_version][:2]
    venv = _cache_root() / f"openvino-{openvino_version}"
    python = venv / "bin" / "python"
    stamp = venv / ".complete"
    if stamp.exists():
        return str(python)
    log(
        f"building a venv for openvino {openvino_version} (keras "
        f"{keras_version}, keras-hub {hub_version}) in {venv}"
    )
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pins = [
        f"openvino=={openvino_version}",
        f"keras=={keras_version}",
        f"keras-hub=={hub_version}",
    ]
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *pins, *_COMMON],
        check=True,
    )
    # The package itself, from this checkout, without touching the pins.
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "-e",
            str(ROOT),
        ],
        check=True,
    )
    stamp.touch()
    return str(python)
