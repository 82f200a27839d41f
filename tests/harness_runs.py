"""The harness's command line run as users run it, for the tests."""

import os
import subprocess
import sys

__all__ = ["compare"]

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
