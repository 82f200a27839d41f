"""``multiply(x @ kernel + bias, s)`` with ``s`` a power of two becomes
``(x * s) @ kernel + bias * s``: no Multiply after the MatMul, the numbers
of stock and NumPy; other scales, and products something else also reads,
stay stock."""

import numpy as np
import pytest

import keras_ov_einsum
from graphs import generate, gpt2_causal_lm, run_model
from keras_ov_einsum.core import backend
from keras_ov_einsum.parts.ops.prescale import PART as prescale_part
from prescales import (
    multiply_after_projection,
    numpy_scaled_projection,
    scaled_projection,
)


@pytest.mark.parametrize("scale", [0.125, 0.25, 2.0, -0.5, 2.0**-20])
@pytest.mark.parametrize("bias", [True, False])
def test_a_power_of_two_scales_the_input(scale, bias):
    stock, _, layer = scaled_projection(scale, fixed=False, bias=bias)
    fixed, explanation, _ = scaled_projection(scale, fixed=True, bias=bias)
    (decision,) = [d for d in explanation if d.equation == prescale_part.label]
    assert decision.lowered, decision.reason
    assert multiply_after_projection(stock)
    assert not multiply_after_projection(fixed)
    (matmul,) = [
        n for n in fixed.get_ordered_ops() if n.get_type_name() == "MatMul"
    ]
    assert matmul.input_value(0).get_node().get_type_name() == "Multiply"
    x = np.random.default_rng(1).standard_normal((2, 3, 8)).astype("float32")
    got, want = run_model(fixed, x), run_model(stock, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * abs(scale))
    np.testing.assert_allclose(
        got,
        numpy_scaled_projection(layer, x, scale),
        rtol=1e-5,
        atol=1e-5 * abs(scale),
    )


def test_bfloat16_keeps_its_type():
    stock, _, _ = scaled_projection(0.125, fixed=False, dtype="bfloat16")
    fixed, explanation, _ = scaled_projection(
        0.125, fixed=True, dtype="bfloat16"
    )
    (decision,) = [d for d in explanation if d.equation == prescale_part.label]
    assert decision.lowered
    assert not multiply_after_projection(fixed)
    assert (
        fixed.output(0).get_element_type() == stock.output(0).get_element_type()
    )


def test_other_scales_are_declined():
    scale = 1 / np.sqrt(32)  # a 32-wide head's query scale
    stock, _, _ = scaled_projection(scale, fixed=False)
    fixed, explanation, _ = scaled_projection(scale, fixed=True)
    (decision,) = [d for d in explanation if d.equation == prescale_part.label]
    assert not decision.lowered
    assert "not a power of two" in decision.reason
    assert multiply_after_projection(fixed)
    x = np.random.default_rng(2).standard_normal((1, 4, 8)).astype("float32")
    np.testing.assert_array_equal(run_model(fixed, x), run_model(stock, x))


def test_a_projection_read_elsewhere_is_left_alone():
    # Rewriting it would keep a second MatMul on the same kernel.
    fixed, explanation, _ = scaled_projection(0.125, fixed=True, also_read=True)
    assert not [d for d in explanation if d.equation == prescale_part.label]
    assert multiply_after_projection(fixed)


def test_gpt2_with_64_wide_heads_generates_stock_tokens():
    # keras-hub's GPT-2 scales each query by 1/sqrt(64) = 0.125 (GPT-2
    # Medium's heads are 64 wide too), in the prompt pass and the loop of
    # keras-hub's own generate graph, when keras's explicit attention path
    # runs (the attention part hands the scale to the fused attention).
    causal_lm = gpt2_causal_lm(hidden_dim=128)
    stock_tokens, _, _ = generate(causal_lm)
    parts = {"attention": False, "stepwise": False}
    fixed_tokens, explanation, _ = generate(causal_lm, parts)
    np.testing.assert_array_equal(fixed_tokens, stock_tokens)
    scalings = [d for d in explanation if d.equation == prescale_part.label]
    assert len(scalings) == 4 and all(d.lowered for d in scalings)
    assert all("0.125" in d.reason for d in scalings)


def test_the_switch_leaves_multiply_stock():
    parts = {"prescale": False}
    fixed, explanation, _ = scaled_projection(0.125, fixed=True, parts=parts)
    assert not [d for d in explanation if d.equation == prescale_part.label]
    assert multiply_after_projection(fixed)
    with keras_ov_einsum.enabled(**parts):
        backend_numpy = backend.module("numpy")

        assert not hasattr(
            backend_numpy.multiply, "__keras_ov_einsum_original__"
        )


# Scales at or beyond the type's range: scaling the input first is not
# the same product there. (dtype, scale, part of the reason)
OUT_OF_RANGE_SCALES = [
    ("float32", np.nan, "not a number"),
    ("float16", 2.0**-30, "not a normal float16"),
    # Finite and normal, but x * s overflows (underflows) for inputs whose
    # scaled product need not.
    ("float16", 2.0**12, "can overflow or underflow float16"),
    ("float32", 2.0**100, "can overflow or underflow float32"),
    ("float32", 2.0**-100, "can overflow or underflow float32"),
]


@pytest.mark.parametrize(
    "dtype, scale, reason",
    OUT_OF_RANGE_SCALES,
    ids=[f"{row[0]}-{row[1]:g}" for row in OUT_OF_RANGE_SCALES],
)
def test_scales_out_of_the_exact_range_keep_stock_results(dtype, scale, reason):
    stock, _, layer = scaled_projection(scale, fixed=False, dtype=dtype)
    fixed, explanation, _ = scaled_projection(scale, fixed=True, dtype=dtype)
    (decision,) = [d for d in explanation if d.equation == prescale_part.label]
    assert not decision.lowered
    assert reason in decision.reason
    assert multiply_after_projection(fixed)
    # Large enough that x * 2**12 overflows float16 (beyond 65504).
    x = 20 * np.random.default_rng(3).standard_normal((2, 3, 8))
    x = x.astype(dtype)
    got, want = run_model(fixed, x), run_model(stock, x)
    np.testing.assert_array_equal(got, want)  # NaN where stock has NaN
    with np.errstate(all="ignore"):
        expected = numpy_scaled_projection(layer, x, scale).astype(dtype)
    # NumPy's infinities: stock's too, except where the CPU plugin, which
    # fuses the Multiply into the layer, already gives NaN.
    infinite = np.isinf(expected) & ~np.isnan(want)
    assert infinite.any() or not np.isinf(scale)
    np.testing.assert_array_equal(got[infinite], expected[infinite])


# Scales infinite in the computation type: (dtype, scale).
INFINITE_SCALES = [
    ("float32", np.inf),
    ("float32", -np.inf),
    # A power of two as stored (a float32 constant), inf once converted to
    # float16: scaled first, every output was NaN.
    ("float16", 2.0**16),
]


@pytest.mark.parametrize("split_heads", [True, False], ids=["btnh", "bte"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize(
    "dtype, scale",
    INFINITE_SCALES,
    ids=[f"{row[0]}-{row[1]:g}" for row in INFINITE_SCALES],
)
def test_an_infinite_scale_multiplies_the_sign(dtype, scale, bias, split_heads):
    """sign(projection) * inf, NumPy's values: the CPU plugin folds a
    Multiply by inf after the lowered MatMul (``bte``: no Reshape between)
    into its weights, every output NaN (tests/test_openvino_bugs.py), and
    stock's Einsum gives NaN for some."""
    fixed, explanation, layer = scaled_projection(
        scale, fixed=True, dtype=dtype, bias=bias, split_heads=split_heads
    )
    (decision,) = [d for d in explanation if d.equation == prescale_part.label]
    assert decision.lowered
    assert decision.reason.startswith("Sign(projection) * ")
    assert not multiply_after_projection(fixed)
    (sign,) = [
        n for n in fixed.get_ordered_ops() if n.get_type_name() == "Sign"
    ]
    (reader,) = sign.output(0).get_target_inputs()
    assert reader.get_node().get_type_name() == "Multiply"
    x = 20 * np.random.default_rng(3).standard_normal((2, 3, 8))
    x = x.astype(dtype)
    with np.errstate(all="ignore"):
        as_computed = float(np.asarray(scale).astype(dtype))  # inf
        expected = numpy_scaled_projection(layer, x, as_computed)
    assert np.isinf(expected).all()
    np.testing.assert_array_equal(run_model(fixed, x), expected.astype(dtype))
