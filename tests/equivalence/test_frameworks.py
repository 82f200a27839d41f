"""The lowered einsum against TensorFlow, PyTorch and JAX: their own einsum
in this process, and ``keras.ops.einsum`` under each Keras backend in a
subprocess (the backend is fixed per process)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings

from graphs import build_einsum_graph, run_model

from .references import assert_close, framework_einsum, values
from .strategies import einsum_cases

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
FRAMEWORKS = ("tensorflow", "torch", "jax")

# A fixed sample: keras-hub's EinsumDense equations and other lowered forms,
# (equation, input shape, kernel shape).
SAMPLE = [
    ("abc,cde->abde", (2, 3, 8), (8, 2, 4)),
    ("abcd,cde->abe", (2, 3, 2, 4), (2, 4, 8)),
    ("btd,dnh->btnh", (2, 3, 8), (8, 2, 4)),
    ("bquh,uhm->bqm", (2, 3, 2, 4), (2, 4, 8)),
    ("btd,df->btf", (2, 3, 8), (8, 6)),
    ("th,ehi->eti", (3, 8), (2, 8, 4)),
    ("etm,emh->eth", (2, 3, 8), (2, 8, 4)),
    ("bhwc,wkc->bhwk", (2, 3, 4, 5), (4, 6, 5)),
    ("...d,dn->...n", (2, 3, 8), (8, 4)),
    ("btxd,dn->btn", (2, 3, 2, 8), (8, 4)),
]


def _fixed_openvino(equation, x, kernel):
    shape = [None] + list(x.shape[1:])  # a dynamic batch dimension
    graph = build_einsum_graph(equation, shape, kernel, fixed=True)
    (decision,) = graph.explanation
    assert decision.lowered, decision.reason
    return run_model(graph.model, x)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(
    "equation, x_shape, kernel_shape",
    SAMPLE,
    ids=[row[0] for row in SAMPLE],
)
def test_sample_against_framework(framework, equation, x_shape, kernel_shape):
    x = values(x_shape, "float32", seed=1)
    kernel = values(kernel_shape, "float32", seed=2)
    want = framework_einsum(framework, equation, x, kernel)
    assert_close(_fixed_openvino(equation, x, kernel), want, "float32")


@settings(max_examples=40)
@given(case=einsum_cases(allow_repeated=False, max_ellipsis=1))
def test_property_against_frameworks(case):
    """Float32 cases, compared with all three frameworks at once."""
    x = values(case.x_shape, "float32", seed=1)
    kernel = values(case.kernel_shape, "float32", seed=2)
    operands = (kernel, x) if case.kernel_first else (x, kernel)
    try:
        graph = build_einsum_graph(
            case.equation,
            [None if d else s for s, d in zip(case.x_shape, case.dynamic)],
            kernel,
            fixed=True,
            kernel_first=case.kernel_first,
        )
        got = run_model(graph.model, x)
    except Exception:
        return  # stock rejects it too: see test_properties
    for framework in FRAMEWORKS:
        try:
            want = framework_einsum(framework, case.equation, *operands)
        except Exception:
            continue  # that framework rejects the form (e.g. broadcasting)
        assert_close(got, want, "float32", framework)


KERAS_SCRIPT = """
import json, sys
import numpy as np
import keras
data = np.load(sys.argv[1])
cases = json.loads(sys.argv[2])
out = {}
for index, equation in enumerate(cases):
    y = keras.ops.einsum(equation, data[f"x{index}"], data[f"k{index}"])
    out[f"y{index}"] = keras.ops.convert_to_numpy(y)
np.savez(sys.argv[3], **out)
"""


@pytest.mark.parametrize("backend", FRAMEWORKS)
def test_sample_against_keras_backends(backend, tmp_path):
    arrays = {}
    for index, (equation, x_shape, kernel_shape) in enumerate(SAMPLE):
        arrays[f"x{index}"] = values(x_shape, "float32", seed=index)
        arrays[f"k{index}"] = values(kernel_shape, "float32", seed=99 + index)
    np.savez(tmp_path / "in.npz", **arrays)
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(KERAS_SCRIPT),
            str(tmp_path / "in.npz"),
            json.dumps([row[0] for row in SAMPLE]),
            str(tmp_path / "out.npz"),
        ],
        env=dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = np.load(tmp_path / "out.npz")
    for index, (equation, _, _) in enumerate(SAMPLE):
        got = _fixed_openvino(
            equation, arrays[f"x{index}"], arrays[f"k{index}"]
        )
        assert_close(got, results[f"y{index}"], "float32", equation)
