"""The stepwise part: keras-hub's greedy generate() as inferences of one
compiled step model.

Its tokens are compared with stock's in fresh processes (``causal_lms.py``):
stock keras-hub compiles its generate graph once per model, stop tokens
included, so one process cannot run both cleanly.
"""

import json
import os
import subprocess
import sys

import causal_lms
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOWERED = (
    "one step model; the prompt and each decoding step run as its inferences"
)


def _run(family, mode, dtype="float32"):
    env = dict(os.environ, KERAS_BACKEND="openvino", PYTHONPATH=ROOT)
    completed = subprocess.run(
        [sys.executable, causal_lms.__file__, family, mode, dtype],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


class TestSameTokensAsStock:
    @pytest.mark.parametrize("family", causal_lms.FAMILIES)
    def test_float32(self, family):
        stock = _run(family, "stock")
        ours = _run(family, "stepwise")
        # Both calls ran step by step: no fallback to stock hides here.
        assert ours["decisions"] == [{"lowered": True, "reason": LOWERED}] * 2
        assert ours["plain"] == stock["plain"]
        assert ours["stop"] == stock["stop"]
        # Every row stopped: generation ended before the last position,
        # which keeps the prompt's padding.
        assert [row[-1] for row in stock["stop"]["token_ids"]] == [0, 0]
        assert [row[-1] for row in stock["stop"]["padding_mask"]] == [0, 0]

    def test_gpt2_bfloat16(self):
        stock = _run("gpt2", "stock", "bfloat16")
        ours = _run("gpt2", "stepwise", "bfloat16")
        assert ours["decisions"] == [{"lowered": True, "reason": LOWERED}] * 2
        assert ours["plain"] == stock["plain"]
        assert ours["stop"] == stock["stop"]
