"""The harness's command line run as users run it, and what it would run,
for the tests."""

import os
import subprocess
import sys

from benchmarks import cli, environments, report, runner

__all__ = ["compare", "configuration", "configurations"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compare(out, *arguments):
    """``python -m benchmarks compare`` on a 2-layer GPT-2, as users run it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "compare",
            "--model",
            "gpt2_tiny",
            *arguments,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )


def configurations(monkeypatch, out, *arguments):
    """The configurations ``compare`` would run with ``arguments``."""
    ran = {}

    def run_all(configs, **keywords):
        ran.update(configs=configs, **keywords)
        return {"runs": [{"ok": True}]}

    monkeypatch.setattr(runner, "run_all", run_all)
    monkeypatch.setattr(report, "render", lambda path: path)
    code = cli.main(
        ["compare", "--model", "gpt2_tiny", "--out", str(out), *arguments]
    )
    assert code == 0
    return ran["configs"]


def configuration(backend, **workload):
    """A gpt2_tiny row of ``backend``: the fix for openvino, the f32 hint
    for a native one."""
    fix = "on" if backend == "openvino" else "off"
    hint = None if backend == "openvino" else "f32"
    return runner.Configuration(
        "gpt2_tiny",
        backend,
        fix,
        environments.CURRENT,
        hint=hint,
        **workload,
    )
