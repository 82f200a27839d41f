"""Bad input: the fixed path raises the stock exception type, at the same
step (building the graph, or running it), gives the stock result wherever
stock gives one, and never takes the process down."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given

from .builders import Input, Kernel, build, result_dtype, run
from .references import (
    assert_close,
    assert_same_error,
    event,
    note,
    numpy_reference,
)
from .strategies import mismatched_cases

__all__ = ["BAD", "RUN_TIME", "same_behaviour"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
N = None


def X(*shape):
    return Input(shape)


def K(*shape):
    return Kernel(np.arange(np.prod(shape), dtype="float32").reshape(shape))


# Rejected while the graph is built (or, where OpenVINO is laxer than
# NumPy, accepted by stock: then the fix must decline and match it).
# (equation, operands)
BAD = [
    ("btd,dn->btn", (X(N, N, 7), K(8, 4))),  # label sizes differ
    ("...d,...dn->...n", (X(2, 3, 8), K(4, 8, 4))),  # broadcast 3 vs 4
    ("btd,dn->btq", (X(N, N, 8), K(8, 4))),  # output label not in input
    ("btd,dn->btnn", (X(N, N, 8), K(8, 4))),  # output label twice
    ("btd,dn,nm->btm", (X(N, N, 8), K(8, 4))),  # 3 terms, 2 operands
    ("btd,dn->btn", (X(N, N, 8), K(8, 4), K(4, 4))),  # 2 terms, 3 operands
    ("btd,dn->btn", (X(N, N, 8),)),  # 2 terms, 1 operand
    ("btd->btd", (X(N, N, 8), K(8, 4))),  # 1 term, 2 operands
    ("bt,dn->btn", (X(N, N, 8), K(8, 4))),  # too few labels for the rank
    ("btdx,dn->btn", (X(N, N, 8), K(8, 4))),  # too many labels
    ("b1d,dn->bn", (X(N, N, 8), K(8, 4))),  # not a letter
    ("btd,dn->->btn", (X(N, N, 8), K(8, 4))),  # two arrows
    ("btd;dn->btn", (X(N, N, 8), K(8, 4))),  # wrong separator
    ("...d...,dn->...n", (X(N, N, 8), K(8, 4))),  # two ellipses
    ("..d,dn->..n", (X(N, N, 8), K(8, 4))),  # a broken ellipsis
    ("...d,dn->n", (X(2, 3, 8), K(8, 4))),  # broadcast axes not in output
    ("", (X(N, N, 8), K(8, 4))),  # empty
    ("btd, dn -> btn", (X(N, N, 8), K(8, 4))),  # spaces: valid in NumPy
    ("btd,dn->", (X(N, N, 8), K(8, 4))),  # valid: everything summed
]

# Accepted while building (the axes are dynamic), wrong only at run time:
# a label of x that is not the kernel's size. NumPy broadcasts a 1 (stock
# gives its result) and rejects other sizes (stock raises when it runs).
# (equation, x shape in the graph, kernel shape, x shape fed, NumPy's view)
RUN_TIME = [
    ("btd,dn->btn", (N, N, N), (8, 4), (2, 3, 7), "error"),  # contracted
    ("btd,dn->btn", (N, N, N), (8, 4), (2, 3, 16), "error"),  # twice K
    ("btd,dn->btn", (N, N, N), (8, 4), (2, 3, 1), "broadcast"),
    ("btxd,dn->btn", (N, N, N, N), (8, 4), (2, 3, 2, 16), "error"),
    ("abd,bdn->an", (N, N, N), (2, 8, 4), (3, 4, 4), "error"),  # same K
    ("abd,bdn->an", (N, N, N), (2, 8, 4), (3, 1, 8), "broadcast"),
    ("bsd,kdh->bskh", (N, N, N), (2, 8, 4), (2, 3, 4), "error"),
    ("btd,bdn->btn", (N, N, 8), (2, 8, 4), (3, 3, 8), "error"),  # batch
    ("btd,bdn->btn", (N, N, 8), (2, 8, 4), (1, 3, 8), "broadcast"),
    ("...d,dn->...n", (N, N, N), (8, 4), (2, 3, 1), "broadcast"),
]


def same_behaviour(equation, operands, arrays):
    """Stock and fixed fail at the same step with the same exception type,
    or give the same dtype, shape and values. Returns what happened."""
    try:
        stock = build(equation, operands, fixed=False)
    except Exception as error:
        note(f"stock: {error!r}")
        assert_same_error(error, lambda: build(equation, operands, fixed=True))
        return "raised while building"
    fixed = build(equation, operands, fixed=True)
    note(str(fixed.explanation[0]))
    assert result_dtype(fixed.model) == result_dtype(stock.model)
    try:
        want = run(stock.model, *arrays)
    except Exception as error:
        note(f"stock: {error!r}")
        assert_same_error(error, lambda: run(fixed.model, *arrays))
        return "raised while running"
    got = run(fixed.model, *arrays)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert_close(got, want, result_dtype(stock.model))
    return "a result"


def _fed(operands):
    """Arrays for the Input operands: their static sizes, 3 if dynamic."""
    return [
        np.ones([3 if size is None else size for size in operand.shape]).astype(
            operand.dtype
        )
        for operand in operands
        if isinstance(operand, Input)
    ]


@pytest.mark.parametrize(
    "equation, operands", BAD, ids=[repr(row[0]) for row in BAD]
)
def test_bad_equation(equation, operands):
    outcome = same_behaviour(equation, operands, _fed(operands))
    if outcome != "raised while building":
        # Stock accepts it: the fix must have seen it and, where it is not a
        # plain matrix product, left the stock graph alone.
        (decision,) = build(equation, operands, fixed=True).explanation
        assert not decision.reason.startswith("internal error"), decision


@pytest.mark.parametrize(
    "equation, x_shape, kernel_shape, fed, numpy",
    RUN_TIME,
    ids=[f"{row[0]}-fed{list(row[3])}" for row in RUN_TIME],
)
def test_wrong_size_at_run_time(equation, x_shape, kernel_shape, fed, numpy):
    operands = (X(*x_shape), K(*kernel_shape))
    x = np.ones(fed, "float32")
    outcome = same_behaviour(equation, operands, [x])
    if numpy == "error":
        assert outcome == "raised while running"
        return
    assert outcome == "a result"
    assert_close(
        run(build(equation, operands, fixed=True).model, x),
        numpy_reference(equation, x, operands[1].array),
        "float32",
    )


@given(mismatch=mismatched_cases())
def test_any_mismatched_size(mismatch):
    """A label of x of another size than in the kernel, static or found
    only at run time: the fix behaves as stock does."""
    case = mismatch.case
    note(repr(mismatch))
    x = np.ones(case.x_shape, "float32")
    graph_shape = tuple(
        None if dynamic else size
        for size, dynamic in zip(case.x_shape, case.dynamic)
    )
    kernel = K(*case.kernel_shape)
    operands = (
        (kernel, X(*graph_shape))
        if case.kernel_first
        else (X(*graph_shape), kernel)
    )
    event(same_behaviour(case.equation, operands, [x]))


CHILD = """
import sys
from tests.equivalence import test_bad_input as bad
from tests.equivalence.builders import build, run
survived = 0
for equation, operands in bad.BAD:
    try:
        run(build(equation, operands, fixed=True).model, *bad._fed(operands))
    except Exception:
        pass
    survived += 1
for equation, x_shape, kernel_shape, fed, _ in bad.RUN_TIME:
    operands = (bad.X(*x_shape), bad.K(*kernel_shape))
    x = bad.np.ones(fed, "float32")
    try:
        run(build(equation, operands, fixed=True).model, x)
    except Exception:
        pass
    survived += 1
print(survived)
"""


def test_bad_input_never_kills_the_process():
    """Every bad case above, fixed, built and run in a fresh process: an
    exception is fine, a crash (a signal, an abort) is not."""
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD)],
        env=dict(
            os.environ,
            KERAS_BACKEND="openvino",
            PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, (
        completed.returncode,
        completed.stderr[-3000:],
    )
    survived = json.loads(completed.stdout.strip().splitlines()[-1])
    assert survived == len(BAD) + len(RUN_TIME)
