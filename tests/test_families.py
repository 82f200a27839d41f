"""Breadth: a tiny model of every keras-hub family that builds offline,
stock and fixed. Causal LMs generate the same greedy tokens; encoders and
encoder-decoders give the same outputs (compiled under the f32 hint, where
the values are stock's bits). Each side runs every model in one process of
its own (``families.py``), the two sides at once: about a minute on two
cores. A family that does not build on the stock path is skipped with the
error it gave."""

import json
import os
import subprocess
import sys

import pytest
from families import CAUSAL_LMS, ENCODERS

# Families in which the fix finds nothing to lower, and why.
NOTHING_TO_LOWER = {
    "t5": "Dense projections, attention einsums of two variables only",
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "families.py")


@pytest.fixture(scope="module")
def sides():
    """{"stock": results, "fixed": results}, one process per side."""
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="openvino")
    running = {
        side: subprocess.Popen(
            [sys.executable, SCRIPT, side],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for side in ("stock", "fixed")
    }
    results = {}
    for side, process in running.items():
        stdout, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, f"{side} side failed:\n{stderr}"
        results[side] = json.loads(stdout.strip().splitlines()[-1])
    return results


def _both(sides, family):
    stock, fixed = sides["stock"][family], sides["fixed"][family]
    if "error" in stock:
        pytest.skip(f"{family} does not build on stock: {stock['error']}")
    assert "error" not in fixed, f"only the fixed side failed: {fixed}"
    return stock, fixed


@pytest.mark.parametrize("family", sorted(CAUSAL_LMS))
def test_causal_lm_generates_stock_tokens(sides, family):
    stock, fixed = _both(sides, family)
    assert fixed["result"] == stock["result"]
    assert fixed["lowered"] > 0  # the fix did act on the model


@pytest.mark.parametrize("family", sorted(ENCODERS))
def test_encoder_outputs_are_stock_bits(sides, family):
    stock, fixed = _both(sides, family)
    assert fixed["result"] == stock["result"]
    assert (fixed["lowered"] > 0) != (family in NOTHING_TO_LOWER)
