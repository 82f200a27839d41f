"""Layers and models: EinsumDense for every keras-hub equation,
MultiHeadAttention, and a 2-layer GPT-2 whose saved weights are loaded by
all four backends."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import openvino as ov
import openvino.opset13 as ov_opset
import pytest

import keras_ov_einsum
from graphs import op_types, run_model

from .references import assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))

# (equation, output shape, bias axes, input shape): keras-hub's EinsumDense
# equations as its layers configure them.
EINSUM_DENSE = [
    ("abc,cde->abde", (None, 4, 8), "de", (None, None, 16)),
    ("abcd,cde->abe", (None, 16), "e", (None, None, 4, 8)),
    ("btd,dnh->btnh", (None, 4, 8), None, (None, None, 16)),
    ("btnh,nhd->btd", (None, 16), None, (None, None, 4, 8)),
    ("bsd,dkh->bskh", (None, 2, 8), None, (None, None, 16)),
    ("bqm,muh->bquh", (None, 4, 8), None, (None, None, 16)),
    ("bquh,uhm->bqm", (None, 16), None, (None, None, 4, 8)),
    ("bkm,mvh->bkvh", (None, 2, 8), None, (None, None, 16)),
    ("bsm,mnh->bsnh", (None, 4, 8), None, (None, None, 16)),
    ("bkm,mnh->bknh", (None, 4, 8), None, (None, None, 16)),
    ("btm,mnh->btnh", (None, 4, 8), None, (None, None, 16)),
    ("bqm,mnh->bqnh", (None, 4, 8), None, (None, None, 16)),
    ("btd,df->btf", (None, 32), "f", (None, None, 16)),
    ("btf,fd->btd", (None, 16), None, (None, None, 32)),
    ("abc,cd->abd", (None, 24), "d", (None, None, 16)),
]


def _layer_graph(layer, input_shape, fixed):
    from keras.src.backend.openvino.core import OpenVINOKerasTensor

    parameter = ov_opset.parameter(
        [-1 if size is None else size for size in input_shape], ov.Type.f32
    )
    if fixed:
        with keras_ov_einsum.enabled():
            y = layer(OpenVINOKerasTensor(parameter.output(0)))
            explanation = keras_ov_einsum.explain()
    else:
        y = layer(OpenVINOKerasTensor(parameter.output(0)))
        explanation = ()
    return ov.Model([y.output], [parameter]), explanation


@pytest.mark.parametrize(
    "equation, output_shape, bias_axes, input_shape",
    EINSUM_DENSE,
    ids=[row[0] for row in EINSUM_DENSE],
)
def test_einsum_dense(equation, output_shape, bias_axes, input_shape):
    import keras

    keras.utils.set_random_seed(0)
    layer = keras.layers.EinsumDense(
        equation, output_shape=output_shape, bias_axes=bias_axes
    )
    layer.build(input_shape)
    stock, _ = _layer_graph(layer, input_shape, fixed=False)
    fixed, (decision,) = _layer_graph(layer, input_shape, fixed=True)
    assert decision.lowered, decision.reason
    assert "Einsum" not in op_types(fixed)
    concrete = [2 if size is None else size for size in input_shape]
    x = np.random.default_rng(1).standard_normal(concrete).astype("float32")
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype("float64")
    truth = np.einsum(equation, x.astype("float64"), kernel)
    if bias_axes:
        truth = truth + keras.ops.convert_to_numpy(layer.bias)
    got = run_model(fixed, x)
    assert_close(got, truth, "float32")
    assert_close(got, run_model(stock, x), "float32")


def test_multi_head_attention():
    import keras

    keras.utils.set_random_seed(0)
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)
    layer.build((None, 5, 16), (None, 5, 16))
    from keras.src.backend.openvino.core import OpenVINOKerasTensor

    def graph(fixed):
        parameter = ov_opset.parameter([-1, 5, 16], ov.Type.f32)
        q = OpenVINOKerasTensor(parameter.output(0))
        if fixed:
            with keras_ov_einsum.enabled():
                y = layer(q, q)
                explanation = keras_ov_einsum.explain()
        else:
            y, explanation = layer(q, q), ()
        return ov.Model([y.output], [parameter]), explanation

    stock, _ = graph(False)
    fixed, explanation = graph(True)
    # query, key, value and output projections; keras 3.15 computes the
    # attention itself with OpenVINO's ScaledDotProductAttention op.
    assert len(explanation.lowered) == 4 and not explanation.declined
    assert op_types(stock).count("Einsum") == 4
    assert "Einsum" not in op_types(fixed)
    x = np.random.default_rng(1).standard_normal((2, 5, 16)).astype("float32")
    eager = keras.ops.convert_to_numpy(layer(x, x))
    assert_close(run_model(fixed, x), run_model(stock, x), "float32")
    assert_close(run_model(fixed, x), eager, "float32")


LOGITS_SCRIPT = """
import sys
import numpy as np
import keras
import keras_hub
backbone = keras_hub.models.GPT2Backbone.from_preset(sys.argv[1])
data = np.load(sys.argv[2])
inputs = {"token_ids": data["token_ids"], "padding_mask": data["padding_mask"]}
hidden = backbone(inputs)
logits = backbone.token_embedding(hidden, reverse=True)
np.save(sys.argv[3], keras.ops.convert_to_numpy(logits))
"""


def _openvino_logits(preset, inputs, fixed):
    import keras_hub
    from keras.src.backend.openvino.core import OpenVINOKerasTensor

    backbone = keras_hub.models.GPT2Backbone.from_preset(str(preset))
    token_ids = ov_opset.parameter([-1, -1], ov.Type.i32)
    padding_mask = ov_opset.parameter([-1, -1], ov.Type.boolean)
    symbolic = {
        "token_ids": OpenVINOKerasTensor(token_ids.output(0)),
        "padding_mask": OpenVINOKerasTensor(padding_mask.output(0)),
    }
    if fixed:
        with keras_ov_einsum.enabled():
            hidden = backbone(symbolic)
            logits = backbone.token_embedding(hidden, reverse=True)
            assert keras_ov_einsum.explain().lowered
    else:
        hidden = backbone(symbolic)
        logits = backbone.token_embedding(hidden, reverse=True)
    model = ov.Model([logits.output], [token_ids, padding_mask])
    return run_model(model, inputs["token_ids"], inputs["padding_mask"])


def test_gpt2_saved_weights_in_all_backends(tmp_path):
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=256,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=32,
    )
    preset = tmp_path / "gpt2"
    backbone.save_to_preset(str(preset))
    token_ids = np.random.default_rng(0).integers(1, 256, (2, 8))
    inputs = {
        "token_ids": token_ids.astype("int32"),
        "padding_mask": np.ones((2, 8), bool),
    }
    np.savez(tmp_path / "inputs.npz", **inputs)

    stock = _openvino_logits(preset, inputs, fixed=False)
    fixed = _openvino_logits(preset, inputs, fixed=True)
    # With and without the fix: float32 rounding, the same tokens.
    np.testing.assert_allclose(fixed, stock, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fixed.argmax(-1), stock.argmax(-1))

    for backend in ("tensorflow", "torch", "jax"):
        out = tmp_path / f"{backend}.npy"
        completed = subprocess.run(
            [
                sys.executable,
                "-c",
                textwrap.dedent(LOGITS_SCRIPT),
                str(preset),
                str(tmp_path / "inputs.npz"),
                str(out),
            ],
            env=dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        other = np.load(out)
        np.testing.assert_allclose(
            fixed, other, rtol=1e-4, atol=1e-4, err_msg=backend
        )
