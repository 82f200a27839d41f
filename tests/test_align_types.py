"""The align_types part: a binary op's operand already of the result type
reaches the op without a Convert; Converts that change a type stay; values,
dtypes and errors are stock's."""

import numpy as np
import openvino as ov
import pytest

import keras_ov_einsum
from binary_ops import (
    binary_graph,
    identity_converts,
    operand,
    random_inputs,
)
from graphs import generate, gpt2_causal_lm, patched, run_model
from keras_ov_einsum.core import backend
from keras_ov_einsum.core.registry import default_switches
from keras_ov_einsum.parts.ops.align_types import (
    PART as align_types_part,
)


@pytest.mark.parametrize(
    "name", ["add", "subtract", "multiply", "maximum", "+", "*"]
)
def test_same_type_operands_get_no_convert(name):
    a, b = operand("float32", (2, 3)), operand("float32", (2, 3))
    stock, _ = binary_graph(name, a, b, fixed=False)
    fixed, explanation = binary_graph(name, a, b, fixed=True)
    # Stock converts both float32 operands to float32.
    assert len(identity_converts(stock)) == 2
    assert identity_converts(fixed) == []
    assert explanation.counts == {align_types_part.label: 2}
    inputs = random_inputs(stock)
    got, want = run_model(fixed, *inputs), run_model(stock, *inputs)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_a_convert_that_changes_the_type_stays():
    # int32 + float32 computes in float32: the int32 operand is converted.
    a, b = operand("int32", (2, 3)), operand("float32", (2, 3))
    stock, _ = binary_graph("add", a, b, fixed=False)
    fixed, explanation = binary_graph("add", a, b, fixed=True)
    assert len(identity_converts(stock)) == 1
    assert identity_converts(fixed) == []
    (convert,) = [
        n for n in fixed.get_ordered_ops() if n.get_type_name() == "Convert"
    ]
    assert convert.input_value(0).get_element_type() == ov.Type.i32
    assert convert.get_output_element_type(0) == ov.Type.f32
    assert explanation.counts == {align_types_part.label: 1}
    inputs = random_inputs(stock)
    np.testing.assert_array_equal(
        run_model(fixed, *inputs), run_model(stock, *inputs)
    )


@pytest.mark.parametrize(
    "a_type, b_type", [("bfloat16", float), ("int8", int), ("float16", int)]
)
def test_python_scalars_keep_stock_types(a_type, b_type):
    a, b = operand(a_type, (4,)), operand(b_type, ())
    stock, _ = binary_graph("multiply", a, b, fixed=False)
    fixed, _ = binary_graph("multiply", a, b, fixed=True)
    assert identity_converts(fixed) == []
    assert (
        fixed.output(0).get_element_type() == stock.output(0).get_element_type()
    )
    inputs = random_inputs(stock)
    np.testing.assert_array_equal(
        run_model(fixed, *inputs), run_model(stock, *inputs)
    )


def test_stock_errors_are_kept():
    # Only operands of a dynamic element type fail to align; Keras cannot
    # wrap one as a tensor, so call the (wrapped) function itself.
    import openvino.opset13 as ov_opset

    core = backend.module("core")

    def dynamic_type():
        return ov_opset.parameter([2], ov.Type.dynamic).output(0)

    errors = []
    for fixed in (False, True):
        with patched(fixed):
            wrapped = hasattr(
                core.align_operand_types, "__keras_ov_einsum_original__"
            )
            assert wrapped == fixed
            with pytest.raises(ValueError) as error:
                core.align_operand_types(
                    dynamic_type(), dynamic_type(), "add()"
                )
        errors.append(str(error.value))
    assert errors[0] == errors[1]
    assert "dynamic operand type" in errors[0]


def test_gpt2_generates_stock_tokens_and_compiles_to_the_same_layers():
    causal_lm = gpt2_causal_lm()
    stock_tokens, _, stock = generate(causal_lm)
    # align_types alone: every other part off.
    parts = dict.fromkeys(default_switches(), False)
    parts["align_types"] = True
    fixed_tokens, explanation, fixed = generate(causal_lm, parts)
    np.testing.assert_array_equal(fixed_tokens, stock_tokens)
    # Hundreds of Converts left out (280 in this 2-layer model), and
    # OpenVINO compiles what it compiled before: it removes a Convert to the
    # same type itself.
    assert explanation.counts[align_types_part.label] > 200
    assert not [d for d in explanation if d.equation == align_types_part.label]

    def layers(compiled):
        return sorted(
            node.get_rt_info()["layerType"].astype(str)
            for node in compiled.get_runtime_model().get_ordered_ops()
        )

    assert layers(fixed) == layers(stock)


def test_the_switch_leaves_align_operand_types_stock():
    core = backend.module("core")
    backend_numpy = backend.module("numpy")

    a, b = operand("float32", (2, 3)), operand("float32", (2, 3))
    parts = {"align_types": False}
    fixed, explanation = binary_graph("add", a, b, fixed=True, parts=parts)
    assert len(identity_converts(fixed)) == 2
    assert explanation.counts == {}
    with keras_ov_einsum.enabled(**parts):
        for function in (
            core.align_operand_types,
            backend_numpy._align_operand_types,
        ):
            assert not hasattr(function, "__keras_ov_einsum_original__")
