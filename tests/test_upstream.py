"""The upstream patch: generated from the package, fresh, applicable, and
working inside a patched copy of keras without ``enable()``."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from keras_ov_einsum import upstream


def test_committed_patch_is_fresh():
    committed = upstream.DEFAULT_PATCH.read_text()
    generated = upstream.make_patch(upstream.installed_keras_root())
    assert committed == generated, (
        f"{upstream.DEFAULT_PATCH.relative_to(upstream.ROOT)} is stale: run "
        "`python -m keras_ov_einsum.upstream make-patch` and commit the result"
    )


def test_check_reports_a_clean_apply_to_the_installed_keras():
    ok, message = upstream.check_patch(
        upstream.DEFAULT_PATCH.read_text(), upstream.installed_keras_root()
    )
    assert ok, message
    assert message.startswith(
        f"applies cleanly to keras {upstream.TARGET_KERAS}"
    )


@pytest.fixture(scope="module")
def keras_copy(tmp_path_factory):
    """A copy of the installed keras (the keras/src/... layout)."""
    root = tmp_path_factory.mktemp("keras-src")
    shutil.copytree(
        upstream.installed_keras_root() / "keras",
        root / "keras",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return root


def test_check_explains_why_a_patch_does_not_apply(tmp_path, keras_copy):
    tree = tmp_path / "tree"
    numpy_dir = tree / upstream.BACKEND
    numpy_dir.mkdir(parents=True)
    original = (keras_copy / upstream.NUMPY).read_text()
    (tree / upstream.NUMPY).write_text(
        original.replace(
            "result = ov_opset.einsum(inputs, subscripts).output(0)",
            "result = ov_opset.einsum(inputs, subscripts).output(0)  # changed",
        )
    )
    ok, message = upstream.check_patch(upstream.DEFAULT_PATCH.read_text(), tree)
    assert not ok
    assert (
        "hunk 2 of keras/src/backend/openvino/numpy.py does not apply"
        in message
    )
    assert "result = ov_opset.einsum(inputs, subscripts).output(0)" in message


def test_check_refuses_a_tree_already_patched(tmp_path, keras_copy):
    tree = tmp_path / "tree"
    shutil.copytree(keras_copy / upstream.BACKEND, tree / upstream.BACKEND)
    patch = upstream.DEFAULT_PATCH.read_text()
    upstream.apply_patch(patch, tree, write=True)
    ok, message = upstream.check_patch(patch, tree)
    assert not ok and "already exists" in message


PATCHED_SCRIPT = """
import sys
import numpy as np
import keras
import openvino as ov
import openvino.opset16 as ov_opset
from keras.src.backend.openvino.core import OpenVINOKerasTensor

assert keras.__file__.startswith(sys.argv[1]), keras.__file__

def types(model):
    return [node.get_type_name() for node in model.get_ordered_ops()]

def run(model, x):
    compiled = ov.Core().compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled([x])[0]

# EinsumDense: no Einsum node, numbers equal to numpy.einsum.
layer = keras.layers.EinsumDense("btd,dnh->btnh", output_shape=(None, 4, 8))
layer.build((None, None, 16))
parameter = ov_opset.parameter([-1, -1, 16], ov.Type.f32)
y = layer(OpenVINOKerasTensor(parameter.output(0)))
model = ov.Model([y.output], [parameter])
assert "Einsum" not in types(model) and "MatMul" in types(model), types(model)
x = np.random.default_rng(0).standard_normal((2, 3, 16)).astype("float32")
kernel = keras.ops.convert_to_numpy(layer.kernel)
np.testing.assert_allclose(
    run(model, x), np.einsum("btd,dnh->btnh", x, kernel), rtol=1e-5, atol=1e-5)

# Attention einsums (two variable operands) remain Einsum nodes.
parameter = ov_opset.parameter([-1, 5, 2, 4], ov.Type.f32)
q = OpenVINOKerasTensor(parameter.output(0))
scores = keras.ops.einsum("aecd,abcd->acbe", q, q)
weighted = keras.ops.einsum("acbe,aecd->abcd", scores, q)
model = ov.Model([weighted.output], [parameter])
assert types(model).count("Einsum") == 2, types(model).count("Einsum")

# MultiHeadAttention: its four projections are lowered.
attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
parameter = ov_opset.parameter([-1, 5, 8], ov.Type.f32)
q = OpenVINOKerasTensor(parameter.output(0))
model = ov.Model([attention(q, q).output], [parameter])
assert "Einsum" not in types(model), types(model)

assert "keras_ov_einsum" not in sys.modules
print("patched keras OK")
"""


def test_patched_keras_lowers_without_enable(keras_copy):
    upstream.apply_patch(
        upstream.DEFAULT_PATCH.read_text(), keras_copy, write=True
    )
    env = dict(os.environ, KERAS_BACKEND="openvino", PYTHONPATH=str(keras_copy))
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(PATCHED_SCRIPT),
            str(keras_copy),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=keras_copy,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "patched keras OK" in completed.stdout

    # The keras-style tests the patch carries, run inside the patched copy.
    test_file = keras_copy / upstream.TEST
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(test_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=keras_copy,
    )
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "10 passed" in completed.stdout, completed.stdout[-3000:]
