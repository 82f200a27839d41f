"""Layers and models: EinsumDense for every keras-hub equation,
MultiHeadAttention, and a 2-layer GPT-2 whose saved weights are loaded by
all four backends."""

import ast
import contextlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import openvino as ov
import openvino.opset13 as ov_opset
import pytest

import keras_ov_einsum
from graphs import op_types
from installed import needs_frameworks
from keras_ov_einsum.core import backend
from keras_ov_einsum.parts.ops.matmul import PART as matmul_part
from keras_ov_einsum.parts.ops.prescale import PART as prescale_part

from .builders import assert_no_new_weights, run, run_outputs
from .references import FRAMEWORKS, TOLERANCE, assert_close, values

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))

# (equation, output shape, bias axes, input shape): every equation keras-hub
# gives an EinsumDense (test_the_table_has_every_keras_hub_equation), and
# the ones keras's MultiHeadAttention builds for 3-D inputs, as those
# layers configure them; the hidden size is static, batch and sequence not.
EINSUM_DENSE = [
    ("abc,cde->abde", (None, 4, 8), "de", (None, None, 16)),  # MHA q/k/v
    ("abcd,cde->abe", (None, 16), "e", (None, None, 4, 8)),  # MHA output
    ("abc,cdef->abdef", (None, 2, 2, 4), "def", (None, None, 16)),  # d-fine
    ("btd,dnh->btnh", (None, 4, 8), None, (None, None, 16)),
    ("btnh,nhd->btd", (None, 16), None, (None, None, 4, 8)),
    ("btd,ndh->btnh", (None, 4, 8), None, (None, None, 16)),  # gemma q
    ("bsd,kdh->bskh", (None, 2, 8), None, (None, None, 16)),  # gemma k/v
    ("bsd,qdh->bsqh", (None, 4, 8), None, (None, None, 16)),  # gemma4 q
    ("bsd,dkh->bskh", (None, 2, 8), None, (None, None, 16)),
    ("bqm,muh->bquh", (None, 4, 8), None, (None, None, 16)),
    ("bquh,uhm->bqm", (None, 16), None, (None, None, 4, 8)),
    ("bkm,mvh->bkvh", (None, 2, 8), None, (None, None, 16)),
    ("bsm,mnh->bsnh", (None, 4, 8), None, (None, None, 16)),
    ("bkm,mnh->bknh", (None, 4, 8), None, (None, None, 16)),
    ("btm,mnh->btnh", (None, 4, 8), None, (None, None, 16)),
    ("bqm,mnh->bqnh", (None, 4, 8), None, (None, None, 16)),
    ("ibnd,hnd->ibh", (None, 16), None, (None, None, 4, 8)),  # xlnet
    ("btd,df->btf", (None, 32), "f", (None, None, 16)),  # feed-forward
    ("btf,fd->btd", (None, 16), None, (None, None, 32)),
    ("abc,cd->abd", (None, 24), "d", (None, None, 16)),
]

# Dtype policies an EinsumDense runs under: the kernel is stored in the
# variable dtype and cast to the compute dtype in the graph (a Convert
# between the Constant and the MatMul, which kernel.py looks through).
# policy -> the tolerance to compare with
POLICIES = {
    "float32": "float32",
    "mixed_float16": "float16",
    "mixed_bfloat16": "bfloat16",
}


def _keras_hub_einsum_dense_equations():
    """The literal equations given to any *EinsumDense layer in keras-hub."""
    import keras_hub

    found = set()
    root = os.path.dirname(keras_hub.__file__)
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py") or name.endswith("_test.py"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as file:
                tree = ast.parse(file.read())
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                callee = node.func
                called = getattr(callee, "attr", getattr(callee, "id", ""))
                if not called.endswith("EinsumDense"):
                    continue
                arguments = node.args[:1] + [
                    keyword.value
                    for keyword in node.keywords
                    if keyword.arg == "equation"
                ]
                for argument in arguments:
                    if isinstance(argument, ast.Constant) and isinstance(
                        argument.value, str
                    ):
                        found.add(argument.value)
    return found


def test_the_table_has_every_keras_hub_equation():
    found = _keras_hub_einsum_dense_equations()
    assert len(found) >= 10, found  # the scan itself still works
    missing = found - {row[0] for row in EINSUM_DENSE}
    assert not missing, f"add to EINSUM_DENSE: {sorted(missing)}"


def _layer_graph(layer, input_shape, fixed, dtype="float32"):
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    parameter = ov_opset.parameter(
        [-1 if size is None else size for size in input_shape], ov.Type.f32
    )
    x = parameter.output(0)
    if dtype != "float32":
        x = ov_opset.convert(
            x, {"float16": ov.Type.f16}.get(dtype, ov.Type.bf16)
        )
        x = x.output(0)
    if fixed:
        with keras_ov_einsum.enabled():
            y = layer(OpenVINOKerasTensor(x))
            explanation = keras_ov_einsum.explain()
    else:
        y = layer(OpenVINOKerasTensor(x))
        explanation = ()
    return ov.Model([y.output], [parameter]), explanation


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    "equation, output_shape, bias_axes, input_shape",
    EINSUM_DENSE,
    ids=[row[0] for row in EINSUM_DENSE],
)
def test_einsum_dense(equation, output_shape, bias_axes, input_shape, policy):
    import keras

    keras.utils.set_random_seed(0)
    layer = keras.layers.EinsumDense(
        equation, output_shape=output_shape, bias_axes=bias_axes, dtype=policy
    )
    layer.build(input_shape)
    compute = layer.compute_dtype
    stock, _ = _layer_graph(layer, input_shape, False, compute)
    fixed, (decision,) = _layer_graph(layer, input_shape, True, compute)
    assert decision.lowered, decision.reason
    assert "Einsum" not in op_types(fixed)
    assert_no_new_weights(stock, fixed)
    concrete = [2 if size is None else size for size in input_shape]
    x = values(concrete, "float32", seed=1)
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype("float64")
    truth = np.einsum(equation, x.astype("float64"), kernel)
    if bias_axes:
        truth = truth + keras.ops.convert_to_numpy(layer.bias)
    got = run(fixed, x)
    assert got.dtype == run(stock, x).dtype
    assert_close(got, truth, POLICIES[policy], "fixed vs numpy")
    assert_close(got, run(stock, x), POLICIES[policy], "fixed vs stock")


# (query shape, value shape, num heads, key dim, attention axes): keras's
# MultiHeadAttention projects with EinsumDense (lowered) and, unless it can
# use OpenVINO's fused attention, attends with two einsums of two
# variables (left on stock).
ATTENTION = [
    ((None, 5, 16), (None, 5, 16), 2, 8, None),  # self-attention
    ((None, 5, 16), (None, 7, 12), 2, 8, None),  # cross, other widths
    ((None, 3, 4, 16), (None, 3, 4, 16), 2, 8, (1, 2)),  # 2-D attention
]


@pytest.mark.parametrize(
    "query_shape, value_shape, heads, key_dim, axes",
    ATTENTION,
    ids=["self", "cross", "2d-axes"],
)
def test_multi_head_attention(query_shape, value_shape, heads, key_dim, axes):
    import keras

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    keras.utils.set_random_seed(0)
    layer = keras.layers.MultiHeadAttention(
        num_heads=heads, key_dim=key_dim, attention_axes=axes
    )
    layer.build(query_shape, value_shape)

    def graph(fixed):
        query = ov_opset.parameter([-1, *query_shape[1:]], ov.Type.f32)
        value = ov_opset.parameter([-1, *value_shape[1:]], ov.Type.f32)
        q, v = (OpenVINOKerasTensor(p.output(0)) for p in (query, value))
        if fixed:
            with keras_ov_einsum.enabled():
                y = layer(q, v)
                explanation = keras_ov_einsum.explain()
        else:
            y, explanation = layer(q, v), ()
        return ov.Model([y.output], [query, value]), explanation

    stock, _ = graph(False)
    fixed, explanation = graph(True)
    # query, key, value and output projections lowered; the attention
    # einsums (if any: keras 3.15 uses OpenVINO's fused attention for
    # the last axis) declined as two variable operands.
    # (The query scaling is recorded too: lowered when 1/sqrt(key_dim) is a
    # power of two, else declined; tests/test_prescale.py covers it.)
    einsums = [d for d in explanation if d.equation != prescale_part.label]
    declined = [d for d in einsums if not d.lowered]
    assert len([d for d in einsums if d.lowered]) == 4, str(explanation)
    for decision in declined:
        assert decision.reason == "no operand is a constant kernel"
    assert op_types(fixed).count("Einsum") == len(declined)
    if axes is not None:
        assert len(declined) == 2, str(explanation)
    rng = np.random.default_rng(1)
    q = rng.standard_normal((2, *query_shape[1:])).astype("float32")
    v = rng.standard_normal((2, *value_shape[1:])).astype("float32")
    eager = keras.ops.convert_to_numpy(layer(q, v))
    assert_close(run(fixed, q, v), run(stock, q, v), "float32")
    assert_close(run(fixed, q, v), eager, "float32")


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
    """Logits of the saved GPT-2 as one OpenVINO model, and explain()."""
    import keras_hub

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    backbone = keras_hub.models.GPT2Backbone.from_preset(str(preset))
    token_ids = ov_opset.parameter([-1, -1], ov.Type.i32)
    padding_mask = ov_opset.parameter([-1, -1], ov.Type.boolean)
    symbolic = {
        "token_ids": OpenVINOKerasTensor(token_ids.output(0)),
        "padding_mask": OpenVINOKerasTensor(padding_mask.output(0)),
    }
    explanation = ()
    with keras_ov_einsum.enabled() if fixed else contextlib.nullcontext():
        hidden = backbone(symbolic)
        logits = backbone.token_embedding(hidden, reverse=True)
        if fixed:
            explanation = keras_ov_einsum.explain()
    model = ov.Model([logits.output], [token_ids, padding_mask])
    logits = run(model, inputs["token_ids"], inputs["padding_mask"])
    return logits, model, explanation


def _confident(logits, margin):
    """Positions whose best token leads the second by more than margin."""
    top = np.sort(logits, axis=-1)
    return top[..., -1] - top[..., -2] > margin


GPT2 = dict(
    vocabulary_size=1000,
    num_layers=2,
    num_heads=2,
    hidden_dim=64,
    intermediate_dim=128,
    max_sequence_length=32,
)


@needs_frameworks
def test_gpt2_saved_weights_in_all_backends(tmp_path):
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(**GPT2)
    preset = tmp_path / "gpt2"
    backbone.save_to_preset(str(preset))
    token_ids = np.random.default_rng(0).integers(1, 1000, (2, 12))
    padding_mask = np.ones((2, 12), bool)
    padding_mask[1, 9:] = False  # a padded sequence
    inputs = {
        "token_ids": token_ids.astype("int32"),
        "padding_mask": padding_mask,
    }
    np.savez(tmp_path / "inputs.npz", **inputs)

    stock, stock_model, _ = _openvino_logits(preset, inputs, fixed=False)
    fixed, fixed_model, explanation = _openvino_logits(preset, inputs, True)
    # Per layer: the query, key, value and output projections lowered, the
    # two attention einsums left on stock; and the tied logits matmul.
    einsums = [
        d
        for d in explanation
        if d.equation not in (matmul_part.label, prescale_part.label)
    ]
    assert len([d for d in einsums if d.lowered]) == 2 * 4, str(explanation)
    attention = [d for d in einsums if not d.lowered]
    assert len(attention) == 2 * 2, str(explanation)
    assert {d.reason for d in attention} == {"no operand is a constant kernel"}
    assert op_types(fixed_model).count("Einsum") == 2 * 2
    assert op_types(stock_model).count("Einsum") == 2 * 6
    # With and without the fix: float32 rounding, the same tokens.
    assert_close(fixed, stock, "logits, fix vs stock")
    np.testing.assert_array_equal(fixed.argmax(-1), stock.argmax(-1))

    for framework in FRAMEWORKS:
        out = tmp_path / f"{framework}.npy"
        completed = subprocess.run(
            [
                sys.executable,
                "-c",
                textwrap.dedent(LOGITS_SCRIPT),
                str(preset),
                str(tmp_path / "inputs.npz"),
                str(out),
            ],
            env=dict(
                os.environ,
                KERAS_BACKEND=framework,
                PYTHONPATH=ROOT,
                TF_CPP_MIN_LOG_LEVEL="3",
            ),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        other = np.load(out)
        assert_close(fixed, other, "logits, across backends", framework)
        # The same greedy tokens wherever the choice is not a near tie.
        rtol, atol = TOLERANCE["logits, across backends"]
        margin = 10 * atol * max(1.0, float(np.abs(other).max()))
        sure = _confident(other, margin)
        assert sure.mean() > 0.5, framework  # the check is not vacuous
        np.testing.assert_array_equal(
            fixed.argmax(-1)[sure], other.argmax(-1)[sure], framework
        )


# (kernel shape): a weight used as is by one matmul and transposed by
# another (a tied encoder and decoder). Square, the CPU plugin keeps one
# packed copy for both reads when the fix feeds the transposed one to
# MatMul as transpose_b: the fix must leave it on stock.
TIED = [(4, 6), (6, 4), (5, 5), (64, 64)]


@pytest.mark.parametrize("shape", TIED, ids=[f"{a}x{b}" for a, b in TIED])
def test_tied_encoder_decoder(shape):
    import keras

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    weights = values(shape, "float32", seed=3)
    kernel = keras.Variable(weights, trainable=False)

    def model(fixed):
        x = ov_opset.parameter([-1, shape[0]], ov.Type.f32)
        y = ov_opset.parameter([-1, shape[1]], ov.Type.f32)
        explanation = ()
        with keras_ov_einsum.enabled() if fixed else contextlib.nullcontext():
            encoded = keras.ops.matmul(OpenVINOKerasTensor(x.output(0)), kernel)
            decoded = keras.ops.matmul(
                OpenVINOKerasTensor(y.output(0)), keras.ops.transpose(kernel)
            )
            if fixed:
                explanation = keras_ov_einsum.explain()
        return ov.Model([encoded.output, decoded.output], [x, y]), explanation

    x = values((3, shape[0]), "float32", seed=1)
    y = values((3, shape[1]), "float32", seed=2)
    truths = (x.astype("float64") @ weights, y.astype("float64") @ weights.T)
    stock, _ = model(fixed=False)
    fixed, (decision,) = model(fixed=True)
    want, got = run_outputs(stock, x, y), run_outputs(fixed, x, y)
    for index in range(2):
        assert_close(want[index], truths[index], "float32", "stock")
        assert_close(got[index], truths[index], "float32", "fixed")
    assert decision.lowered == (shape[0] != shape[1]), decision
