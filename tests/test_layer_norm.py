"""The layer_norm part: inside keras-hub's generate(), keras's layer
normalization over the last axis is one MVN node times gamma plus beta,
within float32 rounding of stock's; outside generate() and where the part
declines (rms_scaling, another axis, float64) stock's operations and
bits."""

import numpy as np
import openvino as ov
import pytest

import keras_ov_einsum
from graphs import (
    generate,
    gpt2_causal_lm,
    keras_parameter,
    op_types,
    patched,
    run_model,
)
from keras_ov_einsum.core.context import as_in_generate
from keras_ov_einsum.parts.ops.layer_norm import LABEL

WIDTH = 16
# keras's E[x^2] - E[x]^2 in ReduceMean and Power; MVN's one node.
STOCK_TYPES = {"ReduceMean", "Power", "Sqrt"}


@pytest.fixture
def generating():
    """As inside CausalLM.generate(), where keras-hub traces its graph."""
    with as_in_generate():
        yield


def _layer(dtype="float32", **config):
    import keras

    keras.utils.set_random_seed(0)
    layer = keras.layers.LayerNormalization(dtype=dtype, **config)
    layer.build((None, 5, WIDTH))
    # Weights unlike the initial ones (ones and zeros), so that a lost
    # scale or shift shows.
    rng = np.random.default_rng(2)
    for variable in layer.weights:
        variable.assign(rng.standard_normal(variable.shape) + 1.0)
    return layer


def _traced(layer, fixed, dtype="float32"):
    """(ov.Model of ``layer(x)`` on a Parameter [-1, 5, WIDTH], explain()
    or ())."""
    parameter, tensor = keras_parameter([-1, 5, WIDTH], dtype)
    with patched(fixed):
        output = layer(tensor)
        explanation = keras_ov_einsum.explain() if fixed else ()
    return ov.Model([output.output.get_node()], [parameter]), explanation


def _input(dtype="float32"):
    import ml_dtypes

    rng = np.random.default_rng(1)
    # A mean far from 0 against the spread: where keras's form rounds most.
    x = rng.standard_normal((3, 5, WIDTH)) * 2.0 + 3.0
    return x.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)


@pytest.mark.usefixtures("part_paths")
@pytest.mark.parametrize(
    "config",
    [{}, {"center": False}, {"scale": False}, {"epsilon": 0.5}],
    ids=["scale-and-shift", "no-shift", "no-scale", "epsilon"],
)
def test_in_generate_one_mvn(generating, config):
    layer = _layer(**config)
    stock, _ = _traced(layer, False)
    fixed, explanation = _traced(layer, True)
    types = op_types(fixed)
    assert types.count("MVN") == 1
    assert not STOCK_TYPES & set(types)
    assert STOCK_TYPES <= set(op_types(stock))
    assert explanation.counts[LABEL] == 1
    x = _input()
    got, want = run_model(fixed, x), run_model(stock, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("part_paths")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_inputs_are_normalized_in_float32_and_cast_back(generating, dtype):
    layer = _layer(dtype)
    stock, _ = _traced(layer, False, dtype)
    fixed, explanation = _traced(layer, True, dtype)
    assert op_types(fixed).count("MVN") == 1
    assert explanation.counts[LABEL] == 1
    mvn = next(n for n in fixed.get_ordered_ops() if n.get_type_name() == "MVN")
    assert mvn.get_output_element_type(0) == ov.Type.f32
    x = _input(dtype)
    got, want = run_model(fixed, x), run_model(stock, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    # One rounding of the half type apart at most.
    tolerance = 1e-2 if dtype == "bfloat16" else 2e-3
    np.testing.assert_allclose(
        got.astype("float32"),
        want.astype("float32"),
        rtol=tolerance,
        atol=tolerance,
    )


@pytest.mark.usefixtures("part_paths")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_the_result_has_stocks_type(generating, dtype):
    """The op's own result (the layer casts again after it)."""
    from keras import ops

    _, tensor = keras_parameter([-1, WIDTH], dtype)
    stock = ops.layer_normalization(tensor)
    with patched(True):
        output = ops.layer_normalization(tensor)
        explanation = keras_ov_einsum.explain()
    assert explanation.counts[LABEL] == 1
    assert output.dtype == stock.dtype == dtype
    assert output.output.get_element_type() == stock.output.get_element_type()


def test_in_generate_stocks_operations_are_not_traced(
    generating, part_paths, monkeypatch
):
    """The replace's point: keras's 19 operations a norm are not traced
    only to be dropped."""
    from keras.src.ops import nn

    calls = []
    stock = nn._layer_normalization

    def counted(*args, **kwargs):
        calls.append(args)
        return stock(*args, **kwargs)

    monkeypatch.setattr(nn, "_layer_normalization", counted)
    fixed, explanation = _traced(_layer(), True)
    assert op_types(fixed).count("MVN") == 1
    assert explanation.counts[LABEL] == 1
    assert len(calls) == (0 if part_paths == "replace" else 1)


@pytest.mark.usefixtures("part_paths")
def test_outside_generate_stocks_operations_and_bits():
    layer = _layer()
    stock, _ = _traced(layer, False)
    fixed, explanation = _traced(layer, True)
    assert "MVN" not in op_types(fixed)
    assert LABEL not in explanation.counts
    assert not explanation.declined
    x = _input()
    np.testing.assert_array_equal(run_model(fixed, x), run_model(stock, x))


def _declined(explanation):
    return [d.reason for d in explanation.declined if d.equation == LABEL]


@pytest.mark.usefixtures("part_paths")
@pytest.mark.parametrize(
    "config, reason",
    [
        ({"rms_scaling": True}, "rms_scaling"),
        ({"axis": 1}, "only the last axis"),
        ({"axis": [1, 2]}, "only the last axis"),
    ],
    ids=["rms_scaling", "axis-1", "two-axes"],
)
def test_what_is_not_a_last_axis_layer_norm_keeps_stocks_path(
    generating, config, reason
):
    import warnings

    with warnings.catch_warnings():  # keras deprecates rms_scaling
        warnings.simplefilter("ignore")
        layer = _layer(**config)
        stock, _ = _traced(layer, False)
        fixed, explanation = _traced(layer, True)
    assert "MVN" not in op_types(fixed)
    assert LABEL not in explanation.counts
    (declined,) = _declined(explanation)
    assert reason in declined
    x = _input()
    np.testing.assert_array_equal(run_model(fixed, x), run_model(stock, x))


@pytest.mark.usefixtures("part_paths")
def test_float64_keeps_stocks_path(generating):
    from keras import ops

    parameter, tensor = keras_parameter([-1, WIDTH], "float64")
    with patched(True):
        output = ops.layer_normalization(tensor)
        explanation = keras_ov_einsum.explain()
    model = ov.Model([output.output.get_node()], [parameter])
    assert "MVN" not in op_types(model)
    (declined,) = _declined(explanation)
    assert declined.startswith("float64")


def test_gpt2_generates_stocks_tokens():
    causal_lm = gpt2_causal_lm()
    stock_tokens, _, _ = generate(causal_lm)
    tokens, explanation, _ = generate(causal_lm, {})
    np.testing.assert_array_equal(tokens, stock_tokens)
    # Two decoder layers' two norms and the final one, traced once into
    # the stepwise part's step model.
    assert explanation.counts[LABEL] == 5
    _, without, _ = generate(causal_lm, {"layer_norm": False})
    assert LABEL not in without.counts
