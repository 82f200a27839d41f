"""The stacks the harness runs Keras rows in, by name, and what each runs.

A stack is a set of pinned packages: ``keras-3.15`` is the harness's own
venv (``constraints.txt``; ``./run.sh`` builds it), every other stack
``stacks/NAME.txt`` and ``stacks/NAME.no-deps.txt``, which
``./run.sh stack NAME`` installs into ``.venvs/NAME``: the venv
``STACK=NAME ./run.sh test`` runs the suite in, so a stack is installed
one way for the tests and the harness. ``KNOWN_GOOD`` says which benchmark
models each stack was seen to run.
"""

import json
import pathlib
import subprocess
import sys
import typing

__all__ = [
    "CURRENT",
    "KNOWN_GOOD",
    "compatibility_table",
    "current_openvino",
    "for_openvino",
    "openvino_of",
    "packages",
    "pins",
    "python_for",
]

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Stack(typing.NamedTuple):
    """What a stack was seen to run."""

    # Benchmark models that generate with it, stock and with the fix.
    models: tuple
    note: str = ""
    # Its presets are built by its own venv, into a folder of their own
    # (an older keras-hub cannot be trusted with a newer preset format);
    # else by the harness's venv, shared with the other stacks.
    own_presets: bool = False


# The harness's own venv: the stack its Keras rows run in by default.
CURRENT = "keras-3.15"
# Every stack, in README's order (see README, "Compatibility").
KNOWN_GOOD = {
    "keras-3.15": Stack(
        (
            "gpt2_tiny",
            "gpt2_base",
            "gpt2_medium",
            "llama_tiny",
            "llama_small",
            "gemma_small",
        ),
    ),
    "keras-nightly": Stack(
        (
            "gpt2_tiny",
            "gpt2_base",
            "gpt2_medium",
            "llama_tiny",
            "llama_small",
            "gemma_small",
        ),
    ),
    "keras-3.12": Stack(
        ("gpt2_tiny", "gpt2_base", "gpt2_medium"),
        note="Llama and Gemma fail in stock keras 3.12: its OpenVINO "
        "`mean()` calls `to_shape()` on dynamic shapes",
        own_presets=True,
    ),
}
# The distributions a stack's keras and keras-hub come as.
_KERAS = ("keras", "keras-nightly")
_KERAS_HUB = ("keras-hub", "keras-hub-nightly")


def _known(name):
    if name not in KNOWN_GOOD:
        raise ValueError(
            f"unknown environment {name!r}; known: {', '.join(KNOWN_GOOD)}"
        )


def _pin_files(name):
    if name == CURRENT:
        return [ROOT / "constraints.txt"]
    files = [ROOT / "stacks" / f"{name}.txt"]
    no_deps = ROOT / "stacks" / f"{name}.no-deps.txt"
    return files + [no_deps] if no_deps.exists() else files


def pins(name):
    """The stack's pinned distributions, from its requirement files:
    name -> version."""
    _known(name)
    pinned = {}
    for path in _pin_files(name):
        for line in path.read_text().splitlines():
            requirement = line.split("#")[0].strip()
            if requirement:
                package, _, version = requirement.partition("==")
                pinned[package.strip().lower()] = version.strip()
    return pinned


def openvino_of(name):
    """The OpenVINO version a stack's rows run: the installed one for the
    harness's own venv, the pinned one for the others."""
    return current_openvino() if name == CURRENT else pins(name)["openvino"]


def for_openvino(version):
    """The stack that runs OpenVINO ``version`` (``--openvino``): the
    harness's own venv where it has that version, else the first stack
    pinning it."""
    names = [name for name in KNOWN_GOOD if openvino_of(name) == version]
    if not names:
        known = sorted({openvino_of(name) for name in KNOWN_GOOD})
        raise ValueError(
            f"OpenVINO {version} has no known-good stack; known: "
            f"{', '.join(known)}"
        )
    return names[0]


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


def python_for(name, log=print):
    """The interpreter of stack ``name``: this one for the harness's own,
    else ``./run.sh stack NAME``'s venv, which it builds or brings up to
    date with the stack's pins first."""
    _known(name)
    if name == CURRENT:
        return sys.executable
    log(f"the {name} stack: ./run.sh stack {name}")
    # run.sh's output is its progress (a first build installs for
    # minutes), but for the interpreter's path on the last line.
    completed = subprocess.run(
        ["bash", str(ROOT / "run.sh"), "stack", name],
        stdout=subprocess.PIPE,
        text=True,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"./run.sh stack {name} failed (exit code {completed.returncode})"
        )
    return str(ROOT / completed.stdout.strip().splitlines()[-1])


def _named(pinned, names):
    """``version`` of the first of ``names`` pinned; ``name version`` when
    it is not the first (keras-nightly, not keras)."""
    for index, name in enumerate(names):
        if name in pinned:
            return pinned[name] if index == 0 else f"{name} {pinned[name]}"
    return "?"


def compatibility_table():
    """README's compatibility table: each stack's pins and models."""
    lines = [
        "| stack | openvino | keras | keras-hub | seen to generate, stock "
        "and with the fix |",
        "|---|---|---|---|---|",
    ]
    for name, stack in KNOWN_GOOD.items():
        pinned = pins(name)
        keras = _named(pinned, _KERAS)
        if "keras-openvino" in pinned:
            keras += f" + keras-openvino {pinned['keras-openvino']}"
        seen = ", ".join(stack.models)
        if stack.note:
            seen += f" ({stack.note})"
        lines.append(
            f"| {name} | {pinned['openvino']} | {keras} | "
            f"{_named(pinned, _KERAS_HUB)} | {seen} |"
        )
    return "\n".join(lines)
