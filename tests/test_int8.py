"""The opt-in int8 part: Keras's int8 layers stay int8 in the CPU plugin,
and their results are the exact integers: stock's int32 results bit for
bit, except where stock's own float32 sums round (pinned below)."""

import numpy as np
import openvino as ov
import openvino.opset13 as ov_opset
import pytest

import keras_ov_einsum
from graphs import F32, generate, gpt2_causal_lm, op_types
from keras_ov_einsum.core import backend
from keras_ov_einsum.parts.int8.int8 import (
    DYNAMIC_QUANTIZATION,
    MAX_EXACT_CONTRACTION,
    PRECISION,
    compile_options,
)

# keras-hub's projections, quantized: attention's query/key/value and output
# EinsumDense, the feed-forward Dense layers (up, and down with K = 4 *
# hidden = 1024, the largest exact contraction).
HIDDEN, HEADS = 256, 4
LAYERS = [
    ("abc,cde->abde", (None, HEADS, HIDDEN // HEADS), "de", HIDDEN),
    ("abcd,cde->abe", (None, HIDDEN), "e", (HEADS, HIDDEN // HEADS)),
    ("dense", 4 * HIDDEN, None, HIDDEN),
    ("dense", HIDDEN, None, 4 * HIDDEN),
]


def _weights_only():
    """keras's int8 config that quantizes the weights, not the inputs."""
    import keras

    return keras.quantizers.Int8QuantizationConfig(activation_quantizer=None)


def _quantized_layer(
    equation, output_shape, bias_axes, input_tail, config=None
):
    import keras

    keras.utils.set_random_seed(0)
    if equation == "dense":
        layer = keras.layers.Dense(output_shape)
    else:
        layer = keras.layers.EinsumDense(
            equation, output_shape=output_shape, bias_axes=bias_axes
        )
    tail = input_tail if isinstance(input_tail, tuple) else (input_tail,)
    layer.build((None, None) + tail)
    layer.quantize("int8", config=config)
    return layer, tail


def _activations(tail):
    """Rows whose first half is a hundred times smaller than the rest: the
    plugin's dynamic quantization (groups of 32 along K) rounds such rows,
    so a result that is still exact shows it was off."""
    x = np.random.default_rng(1).standard_normal((2, 3) + tail)
    flat = x.reshape(2, 3, -1)
    flat[..., : flat.shape[-1] // 2] *= 0.01
    return x.astype("float32")


def _compiled(layer, tail, parts, config=F32):
    """Trace ``layer`` on a Parameter and compile it, both under ``parts``
    (None: stock); returns (compiled model, explain())."""
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    parameter = ov_opset.parameter([-1, -1, *tail], ov.Type.f32)

    def trace_and_compile():
        y = layer(OpenVINOKerasTensor(parameter.output(0)))
        model = ov.Model([y.output], [parameter])
        return ov.Core().compile_model(model, "CPU", config)

    if parts is None:
        return trace_and_compile(), ()
    with keras_ov_einsum.enabled(**parts):
        return trace_and_compile(), keras_ov_einsum.explain()


def _equals_stock(layer, tail, parts):
    """``layer`` compiled stock and under ``parts``: the same results on
    ``_activations(tail)``, dtype, shape and bits. Returns the compiled
    model under ``parts`` and its explain()."""
    x = _activations(tail)
    stock, _ = _compiled(layer, tail, None)
    fixed, decisions = _compiled(layer, tail, parts)
    want, got = stock(x)[0], fixed(x)[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    return fixed, decisions


def _fully_connected_weight_types(compiled):
    return [
        node.input(1).get_element_type()
        for node in compiled.get_runtime_model().get_ordered_ops()
        if node.get_rt_info()["layerType"].astype(str) == "FullyConnected"
    ]


@pytest.mark.parametrize(
    "equation, output_shape, bias_axes, input_tail",
    LAYERS,
    ids=["query", "attention-output", "dense-up", "dense-down"],
)
def test_quantized_layer_equals_stock_and_stays_int8(
    equation, output_shape, bias_axes, input_tail
):
    layer, tail = _quantized_layer(
        equation, output_shape, bias_axes, input_tail
    )
    fixed, decisions = _equals_stock(layer, tail, {"int8": True})

    (decision,) = decisions
    assert decision.lowered, decision.reason
    assert decision.reason.endswith("int8 kernel kept int8")  # one part
    assert _fully_connected_weight_types(fixed) == [ov.Type.i8]
    # Stock's int32 MatMul runs as a float32 FullyConnected on a float32
    # copy of the kernel: four bytes a weight.
    stock, _ = _compiled(layer, tail, None)
    assert _fully_connected_weight_types(stock) == [ov.Type.f32]


@pytest.mark.parametrize(
    "equation, output_shape, bias_axes, input_tail",
    LAYERS,
    ids=["query", "attention-output", "dense-up", "dense-down"],
)
def test_weights_only_layer_equals_stock_and_stays_int8(
    equation, output_shape, bias_axes, input_tail
):
    """``Int8QuantizationConfig(activation_quantizer=None)``: float32 inputs
    times the int8 kernel. Stock folds the kernel into a float32 copy; the
    int8 part keeps it int8 and computes stock's float32 product."""
    layer, tail = _quantized_layer(
        equation, output_shape, bias_axes, input_tail, _weights_only()
    )
    assert layer.inputs_quantizer is None
    x = _activations(tail)
    stock, _ = _compiled(layer, tail, None)
    fixed, decisions = _compiled(layer, tail, {"int8": True})
    want, got = stock(x)[0], fixed(x)[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    # The same float32 products, summed by another kernel of the plugin
    # (int8 weights decompressed inside the layer): float32 rounding only.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    (decision,) = decisions
    assert decision.lowered, decision.reason
    assert decision.reason.endswith("int8 kernel kept int8 (weights only)")
    assert _fully_connected_weight_types(fixed) == [ov.Type.i8]
    assert _fully_connected_weight_types(stock) == [ov.Type.f32]


@pytest.mark.parametrize("weights_only", [False, True])
def test_tied_logits_equal_stock_and_stay_int8(weights_only):
    """An int8 ``ReversibleEmbedding``'s logits, ``matmul(x,
    transpose(table))`` (keras-hub's tied GPT-2 and Gemma heads): the
    product on the untransposed int8 table, where stock folds the table
    into a transposed float32 copy. keras's default int8 quantizes x as
    well (an exact integer product, stock's bits); weights-only multiplies
    float32 x (float32 rounding)."""
    import functools

    import keras

    keras.utils.set_random_seed(0)
    layer = keras.layers.ReversibleEmbedding(300, 64)
    layer.build((None, None))
    layer.quantize("int8", config=_weights_only() if weights_only else None)
    logits = functools.partial(layer, reverse=True)
    x = _activations((64,))
    stock, _ = _compiled(logits, (64,), None)
    fixed, decisions = _compiled(logits, (64,), {"int8": True})
    want, got = stock(x)[0], fixed(x)[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    if weights_only:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, want)
    (decision,) = [d for d in decisions if d.equation.startswith("matmul")]
    assert decision.lowered, decision.reason
    assert "MatMul(transpose_b=True), kernel [300, 64]" in decision.reason
    assert _fully_connected_weight_types(fixed) == [ov.Type.i8]
    assert _fully_connected_weight_types(stock) == [ov.Type.f32]


def test_weights_only_gpt2_generates_stock_tokens_with_int8_weights():
    """A weights-only int8 GPT-2: stock's tokens, and every FullyConnected
    layer int8, the tied embedding's logits too (stock: all float32)."""
    causal_lm = gpt2_causal_lm(quantize="int8", quantize_config=_weights_only())
    stock_tokens, _, stock = generate(causal_lm)
    tokens, decisions, fixed = generate(causal_lm, {"int8": True})
    np.testing.assert_array_equal(tokens, stock_tokens)
    kept = [d for d in decisions if "(weights only)" in d.reason]
    # q, k, v, output, up, down per layer and the logits, traced once into
    # the stepwise part's step model.
    assert len(kept) == 2 * 6 + 1
    fixed = causal_lm.generate_function.compiled_model
    assert set(_fully_connected_weight_types(stock)) == {ov.Type.f32}
    assert _fully_connected_weight_types(fixed) == [ov.Type.i8] * (2 * 6 + 1)


def test_a_longer_contraction_is_summed_in_exact_parts():
    k = 4 * MAX_EXACT_CONTRACTION + 8  # five parts, the last one short
    layer, tail = _quantized_layer("dense", 8, None, k)
    x = _activations(tail)
    stock, _ = _compiled(layer, tail, None)
    fixed, decisions = _compiled(layer, tail, {"int8": True})
    np.testing.assert_array_equal(fixed(x)[0], stock(x)[0])
    (decision,) = decisions
    assert decision.lowered and decision.equation == "matmul(x, kernel)"
    assert decision.reason.endswith(
        "int8 kernel kept int8 in 5 exact parts of K (views of its rows, no "
        "copy)"
    )
    assert _fully_connected_weight_types(fixed) == [ov.Type.i8] * 5


@pytest.mark.parametrize("transposed", [False, True])
def test_the_parts_of_a_kernel_are_views_of_its_rows(transposed):
    """A [K, N] kernel's parts of K are runs of its rows, consecutive in
    its buffer: Constants on them copy nothing. A [N, K] kernel's parts
    are not contiguous: a VariadicSplit, which the compile folds into a
    copy, and the reason says so."""
    k, n = 3 * MAX_EXACT_CONTRACTION, 5
    rng = np.random.default_rng(3)
    kernel = rng.integers(-128, 128, (n, k) if transposed else (k, n))
    kernel = kernel.astype(np.int8)
    equation = "bk,nk->bn" if transposed else "bk,kn->bn"
    model, fixed, decisions = _int8_einsum(
        equation, (-1, k), kernel, {"int8": True}
    )
    x = rng.integers(-128, 128, (2, k)).astype(np.int8)
    exact = np.einsum(equation, x.astype(np.int64), kernel.astype(np.int64))
    np.testing.assert_array_equal(fixed(x)[0], exact)
    int8_constants = [
        node
        for node in model.get_ordered_ops()
        if node.get_type_name() == "Constant"
        and node.get_element_type() == ov.Type.i8
    ]
    splits = [
        node
        for node in model.get_ordered_ops()
        if node.get_type_name() == "VariadicSplit"
        and node.input_value(0).get_element_type() == ov.Type.i8
    ]
    if transposed:
        assert decisions[0].reason.endswith(
            "in 3 exact parts of K (split: a copy of its int8 bytes)"
        )
        assert len(int8_constants) == 1 and len(splits) == 1
        return
    assert decisions[0].reason.endswith(
        "in 3 exact parts of K (views of its rows, no copy)"
    )
    assert not splits and len(int8_constants) == 3
    rows = MAX_EXACT_CONTRACTION * n  # bytes of one part
    starts = sorted(node.get_data().ctypes.data for node in int8_constants)
    assert starts == [starts[0] + i * rows for i in range(3)]
    for node in int8_constants:
        offset = (node.get_data().ctypes.data - starts[0]) // n
        np.testing.assert_array_equal(
            node.get_data(), kernel[offset : offset + MAX_EXACT_CONTRACTION]
        )


def test_where_stock_rounds_the_parts_are_exact():
    """Stock computes its int32 MatMul as a float32 FullyConnected: a sum
    beyond 2**24 that float32 cannot hold comes back rounded. The int8 form
    sums exact parts in int32 and gives NumPy's (and every other Keras
    backend's) integer."""
    k = 4 * MAX_EXACT_CONTRACTION
    kernel = np.zeros((k, 8), np.int8)
    kernel[: k // 2], kernel[-1] = 127, 1
    x = np.zeros((2, k), np.int8)
    x[:, : k // 2], x[:, -1] = 127, 1
    exact = x.astype(np.int64) @ kernel.astype(np.int64)
    assert exact[0, 0] == 2048 * 127 * 127 + 1 == 33032193
    _, fixed, decisions = _int8_einsum(
        "bk,kn->bn", (-1, k), kernel, {"int8": True}
    )
    assert "4 exact parts" in decisions[0].reason
    np.testing.assert_array_equal(fixed(x)[0], exact)
    _, stock, _ = _int8_einsum("bk,kn->bn", (-1, k), kernel, {"einsum": False})
    # float32 holds no odd integer above 2**24: stock's sum is rounded, to a
    # value that depends on its order of summation (33032192 on a quiet
    # machine, 33031184 seen beside other processes).
    assert stock(x)[0][0, 0] != exact[0, 0]


def _int8_einsum(equation, x_shape, kernel, parts):
    import keras

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    parameter = ov_opset.parameter(list(x_shape), ov.Type.i8)
    variable = keras.Variable(kernel, dtype="int8", trainable=False)
    with keras_ov_einsum.enabled(**parts):
        y = keras.ops.einsum(
            equation, OpenVINOKerasTensor(parameter.output(0)), variable
        )
        model = ov.Model([y.output], [parameter])
        compiled = ov.Core().compile_model(model, "CPU", F32)
        return model, compiled, keras_ov_einsum.explain()


@pytest.mark.parametrize("value", [-128, 127])
def test_the_largest_exact_sums(value):
    """Every product 2**14 in size, K = 1024: the sum is 2**24, the largest
    integer float32 reaches by steps of one; any rounding would show."""
    k = MAX_EXACT_CONTRACTION
    x = np.full((3, k), value, np.int8)
    x[1, ::2], x[1, 1::2] = 127, -128  # partial sums that swing
    kernel = np.full((k, 5), value, np.int8)
    kernel[:, 1] = 1
    _, compiled, decisions = _int8_einsum(
        "bk,kn->bn", (-1, k), kernel, {"int8": True}
    )
    assert (
        decisions[0].lowered and "int8 kernel kept int8" in decisions[0].reason
    )
    got = compiled(x)[0]
    want = x.astype(np.int64) @ kernel.astype(np.int64)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def _rounded_by_dynamic_quantization():
    """(x, kernel, exact x @ kernel) for a case the plugin's dynamic
    quantization rounds: half of each row's groups of 32 have their largest
    value far below 127."""
    rng = np.random.default_rng(0)
    k = 256
    x = rng.integers(-127, 128, (4, k)).astype(np.int8)
    x[:, : k // 2] //= 16
    kernel = rng.integers(-127, 128, (k, 32)).astype(np.int8)
    return x, kernel, x.astype(np.int64) @ kernel.astype(np.int64)


def _skip_unless_dynamic_quantization_rounds(model, x, want):
    """Dynamic quantization is a CPU-dependent optimisation: the plugin
    applies it where the CPU has int8 dot-product instructions (seen on an
    Intel CPU with AVX-512), and not on, e.g., an AVX2-only AMD EPYC, where
    the int8 form is exact whatever the option says."""
    quantized = ov.Core().compile_model(
        model, "CPU", {**F32, DYNAMIC_QUANTIZATION: 32}
    )
    if np.array_equal(quantized(x)[0], want):
        pytest.skip("the CPU plugin does no dynamic quantization on this CPU")
    return quantized


def test_dynamic_quantization_is_what_the_compile_option_turns_off():
    """The same int8 graph compiled with the plugin's dynamic quantization
    on is not exact: the option the patch adds is what keeps it so."""
    x, kernel, want = _rounded_by_dynamic_quantization()
    k = kernel.shape[0]
    model, compiled, _ = _int8_einsum(
        "bk,kn->bn", (-1, k), kernel, {"int8": True}
    )
    np.testing.assert_array_equal(compiled(x)[0], want)
    rounded = _skip_unless_dynamic_quantization_rounds(model, x, want)
    assert _fully_connected_weight_types(rounded) == [ov.Type.i8]


def test_compile_options(caplog):
    kernel = np.ones((64, 8), np.int8)
    marked, _, _ = _int8_einsum("bk,kn->bn", (-1, 64), kernel, {"int8": True})
    plain, _, _ = _int8_einsum("bk,kn->bn", (-1, 64), kernel, {})
    assert "Multiply" in op_types(marked) and "Multiply" not in op_types(plain)
    exact = {DYNAMIC_QUANTIZATION: 0, PRECISION: "f32"}
    assert compile_options(marked, "CPU", None) == exact
    assert compile_options(marked, "CPU", F32) == exact
    as_type = {PRECISION: ov.Type.f32}
    assert compile_options(marked, "CPU", as_type) == {**exact, **as_type}
    assert not caplog.records
    # The caller's choice stands, with a warning when it rounds.
    chosen = {DYNAMIC_QUANTIZATION: 64, PRECISION: "bf16"}
    assert compile_options(marked, "CPU", chosen) == chosen
    assert len(caplog.records) == 2
    assert "DYNAMIC_QUANTIZATION_GROUP_SIZE=64" in caplog.records[0].message
    assert compile_options(plain, "CPU", None) is None
    assert compile_options(marked, "GPU", F32) == F32  # not measured there
    assert compile_options("model.xml", "CPU", F32) == F32


DQ_PARTS = {"int8": True, "dynamic_quantization": True}


def _group_size(compiled):
    return int(compiled.get_property(DYNAMIC_QUANTIZATION))


def test_dynamic_quantization_is_left_to_the_plugin_for_weights_only():
    """With the dynamic_quantization part a weights-only int8 layer is
    compiled with the plugin's own group size (OpenVINO's default, as
    genai's int8 IRs), still float32 inputs on int8 weights, within a
    hundredth of stock's scale; without it, and for keras's default int8
    (an int8 x int8 product, exact only without), the option is 0."""
    layer, tail = _quantized_layer("dense", 16, None, 256, _weights_only())
    x = _activations(tail)
    stock, _ = _compiled(layer, tail, None)
    default, _ = _compiled(layer, tail, None, config=None)  # the plugin's
    quantized, decisions = _compiled(layer, tail, DQ_PARTS, config=None)
    exact, _ = _compiled(layer, tail, {"int8": True}, config=None)
    assert all(d.lowered for d in decisions), decisions
    assert _group_size(quantized) == _group_size(default)
    assert _group_size(exact) == 0
    assert quantized.get_property(PRECISION) == ov.Type.f32
    assert _fully_connected_weight_types(quantized) == [ov.Type.i8]
    want = stock(x)[0]
    got = quantized(x)[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=0.01 * np.abs(want).max())

    product, _ = _quantized_layer("dense", 16, None, 256)  # default int8
    compiled, _ = _compiled(product, tail, DQ_PARTS, config=None)
    assert _group_size(compiled) == 0


def test_dynamic_quantization_weights_only_gpt2_generates():
    """A weights-only GPT-2 under the part: int8 FullyConnected layers
    compiled with the plugin's group size, and tokens."""
    causal_lm = gpt2_causal_lm(quantize="int8", quantize_config=_weights_only())
    tokens, _, _ = generate(causal_lm, DQ_PARTS)
    fixed = causal_lm.generate_function.compiled_model
    assert _fully_connected_weight_types(fixed) == [ov.Type.i8] * (2 * 6 + 1)
    assert _group_size(fixed) != 0
    assert np.asarray(tokens).shape[-1] > 0


def test_every_compile_entry_point_gets_the_option():
    """keras compiles with ``openvino.compile_model``, keras-hub with a
    ``Core``: both reach the patched method while enabled, neither after."""
    x, kernel, want = _rounded_by_dynamic_quantization()
    k = kernel.shape[0]
    model, _, _ = _int8_einsum("bk,kn->bn", (-1, k), kernel, {"int8": True})
    _skip_unless_dynamic_quantization_rounds(model, x, want)
    with keras_ov_einsum.enabled(int8=True):
        for compiled in (
            ov.compile_model(model, "CPU", F32),
            ov.Core().compile_model(model, "CPU", F32),
            ov.Core().compile_model(model, "CPU"),
        ):
            np.testing.assert_array_equal(compiled(x)[0], want)
    # Disabled: compiled as the caller asked, dynamic quantization on.
    assert not np.array_equal(ov.compile_model(model, "CPU", F32)(x)[0], want)


def test_enable_and_disable():
    original = ov.Core.compile_model
    with pytest.raises(ValueError, match="needs einsum=True"):
        keras_ov_einsum.enable(einsum=False, int8=True)
    assert not keras_ov_einsum.is_enabled()
    keras_ov_einsum.enable()  # int8 is opt-in: Core left alone
    assert ov.Core.compile_model is original
    keras_ov_einsum.disable()
    keras_ov_einsum.enable(int8=True)
    assert ov.Core.compile_model is not original
    keras_ov_einsum.disable()
    assert ov.Core.compile_model is original


def test_int8_part_off_keeps_the_int32_lowering():
    kernel = np.ones((64, 8), np.int8)
    model, _, decisions = _int8_einsum("bk,kn->bn", (-1, 64), kernel, {})
    (decision,) = decisions
    assert decision.lowered and "int8" not in decision.reason
    assert "Einsum" not in op_types(model) and "Multiply" not in op_types(model)


def test_quantized_gpt2_generates_stock_tokens_with_int8_weights():
    """A 2-layer GPT-2, ``quantize("int8")``: the same tokens as stock, and
    every FullyConnected layer of the compiled model int8 (stock: float32),
    the down projection's K = 1100 in two exact parts."""
    causal_lm = gpt2_causal_lm(
        intermediate_dim=MAX_EXACT_CONTRACTION + 76, quantize="int8"
    )
    stock_tokens, _, stock = generate(causal_lm)
    # The Loop graph (prompt pass and step, each projection twice); the
    # stepwise part's single step model is tested in test_stepwise.py.
    tokens, decisions, fixed = generate(
        causal_lm, {"int8": True, "stepwise": False}
    )
    np.testing.assert_array_equal(tokens, stock_tokens)
    kept = [d for d in decisions if "int8 kernel kept int8" in d.reason]
    # q, k, v, output, up, down per layer and the tied logits, traced for
    # the prompt and the cached decoding step.
    assert len(kept) == 2 * 2 * 6 + 2
    # The logits on the untransposed [vocabulary, hidden] int8 table.
    logits = [d for d in kept if "MatMul(transpose_b=True)" in d.reason]
    assert len(logits) == 2
    assert all("kernel [512, 64]" in d.reason for d in logits)
    split = [d for d in kept if "in 2 exact parts" in d.reason]
    assert len(split) == 2 * 2 and all(
        d.shapes[1] == (MAX_EXACT_CONTRACTION + 76, 64) for d in split
    )
    stock_types = _fully_connected_weight_types(stock)
    fixed_types = _fully_connected_weight_types(fixed)
    assert ov.Type.i8 not in stock_types
    assert stock_types and ov.Type.i8 not in stock_types
    assert fixed_types and set(fixed_types) == {ov.Type.i8}


def _cpu_options(compiled):
    """(dynamic quantization group size, inference precision) the CPU
    compiled with: virtual devices (AUTO, HETERO) report the CPU's own in
    DEVICE_PROPERTIES."""
    supported = compiled.get_property("SUPPORTED_PROPERTIES")
    if "DEVICE_PROPERTIES" in supported:
        options = compiled.get_property("DEVICE_PROPERTIES")["CPU"]
    else:
        options = {key: compiled.get_property(key) for key in (DQ, PRECISION)}
    return int(options[DQ]), options[PRECISION]


DQ = DYNAMIC_QUANTIZATION
EXACT_CPU_OPTIONS = (0, ov.Type.f32)

# Every way of naming the device that may compile on the CPU:
# (id, compile(model) -> compiled model)
COMPILE_PATHS = [
    ("AUTO", lambda model: ov.Core().compile_model(model, "AUTO")),
    ("AUTO:CPU", lambda model: ov.Core().compile_model(model, "AUTO:CPU")),
    ("HETERO:CPU", lambda model: ov.Core().compile_model(model, "HETERO:CPU")),
    ("MULTI:CPU", lambda model: ov.Core().compile_model(model, "MULTI:CPU")),
    ("openvino.compile_model", lambda model: ov.compile_model(model)),
    ("Core, no device", lambda model: ov.Core().compile_model(model)),
]


@pytest.mark.parametrize(
    "compile_model",
    [row[1] for row in COMPILE_PATHS],
    ids=[row[0] for row in COMPILE_PATHS],
)
def test_every_device_that_may_be_the_cpu_gets_the_options(compile_model):
    """The exact options reach the CPU whatever names it (on CPUs with
    bfloat16 units and the plugin's dynamic quantization, AUTO gave 1903
    of 1920 results wrong without them)."""
    x, kernel, want = _rounded_by_dynamic_quantization()
    model, _, _ = _int8_einsum(
        "bk,kn->bn", (-1, kernel.shape[0]), kernel, {"int8": True}
    )
    with keras_ov_einsum.enabled(int8=True):
        compiled = compile_model(model)
    assert _cpu_options(compiled) == EXACT_CPU_OPTIONS
    np.testing.assert_array_equal(compiled(x)[0], want)


def test_a_device_that_is_not_the_cpu_is_warned_about(caplog):
    kernel = np.ones((64, 8), np.int8)
    marked, _, _ = _int8_einsum("bk,kn->bn", (-1, 64), kernel, {"int8": True})
    assert compile_options(marked, "AUTO:GPU", F32) == F32
    assert "measured on the CPU only" in caplog.records[-1].message
    assert compile_options(marked, "HETERO:GPU,CPU", None) == {
        DQ: 0,
        PRECISION: "f32",
    }


def test_a_saved_and_read_model_gets_the_options(tmp_path):
    """OpenVINO does not save rt_info set from Python: the int8 form is
    recognised by its own pattern in a model read back."""
    x, kernel, want = _rounded_by_dynamic_quantization()
    model, _, _ = _int8_einsum(
        "bk,kn->bn", (-1, kernel.shape[0]), kernel, {"int8": True}
    )
    ov.save_model(model, tmp_path / "int8.xml")
    read = ov.Core().read_model(tmp_path / "int8.xml")
    with keras_ov_einsum.enabled(int8=True):
        compiled = ov.Core().compile_model(read, "CPU")
    assert _cpu_options(compiled) == EXACT_CPU_OPTIONS
    np.testing.assert_array_equal(compiled(x)[0], want)


def test_an_exported_model_is_warned_about_and_recognised(tmp_path):
    """keras's export builds the ov.Model and serializes it with no compile
    in between: the part cannot add the options there, so it warns when it
    builds the form; compiled while enabled, the exported IR (the down
    projection split in parts) gets them."""
    import keras

    keras.utils.set_random_seed(0)
    k = MAX_EXACT_CONTRACTION + 64  # two exact parts
    model = keras.Sequential([keras.Input((k,)), keras.layers.Dense(16)])
    model.quantize("int8")
    path = str(tmp_path / "dense.xml")
    with keras_ov_einsum.enabled(int8=True):
        with pytest.warns(UserWarning, match="DYNAMIC_QUANTIZATION_GROUP_SIZE"):
            model.export(path, format="openvino", verbose=False)
    read = ov.Core().read_model(path)
    with keras_ov_einsum.enabled(int8=True):
        compiled = ov.Core().compile_model(read, "AUTO")
    assert _cpu_options(compiled) == EXACT_CPU_OPTIONS
    x = np.random.default_rng(2).standard_normal((3, k)).astype("float32")
    want = keras.ops.convert_to_numpy(model(x))
    got = compiled(x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
