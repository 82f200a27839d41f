"""The opt-in int4 part: keras's int4 Dense and EinsumDense read their
packed kernel as a 4-bit Constant, which the CPU plugin's FullyConnected
reads 4-bit; the decompressed weights are keras's arithmetic to the bit,
the outputs stock's within float32 rounding (stock's compile distributes
the scale over the zero point: pinned below)."""

import numpy as np
import openvino as ov
import openvino.opset13 as ov_opset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_ov_einsum
from graphs import F32, generate, op_types
from keras_ov_einsum.core import backend
from keras_ov_einsum.parts.int4 import int4
from keras_ov_einsum.parts.int8.int8 import DYNAMIC_QUANTIZATION, PRECISION

UNAVAILABLE = int4.PART.unavailable()
# keras 3.16 computes int4 layers elsewhere: the part is left out there.
needs_the_part = pytest.mark.skipif(
    UNAVAILABLE is not None, reason=str(UNAVAILABLE)
)

INT4 = {"int4": True}
UNPACKING = {"BitwiseAnd", "BitwiseRightShift", "BitwiseXor"}

# (layer, input tail, block size): keras's default groups of 128 (two
# groups; one group of all of K when K is smaller), and one scale a column.
LAYERS = [
    (("dense", 96), (256,), 128),
    (("dense", 96), (64,), 128),
    (("dense", 96), (256,), -1),
    (("abc,cde->abde", (None, 4, 16), "de"), (256,), 128),
    (("abcd,cde->abe", (None, 64), "e"), (4, 64), 128),
]
IDS = ["dense", "dense-one-group", "dense-per-column", "query", "output"]


def _config(block_size, **kwargs):
    import keras

    return keras.quantizers.Int4QuantizationConfig(
        block_size=block_size, **kwargs
    )


def _quantized_layer(spec, tail, block_size, seed=0, **config):
    import keras

    keras.utils.set_random_seed(seed)
    if spec[0] == "dense":
        layer = keras.layers.Dense(spec[1])
    else:
        equation, output_shape, bias_axes = spec
        layer = keras.layers.EinsumDense(
            equation, output_shape=output_shape, bias_axes=bias_axes
        )
    layer.build((None, None, *tail))
    if layer.bias is not None:  # a bias that shows
        layer.bias.assign(
            np.linspace(-1, 1, np.prod(layer.bias.shape)).reshape(
                layer.bias.shape
            )
        )
    layer.quantize("int4", config=_config(block_size, **config))
    return layer


def _traced(layer, tail, parts):
    """``layer`` traced on a Parameter under ``parts`` (None: stock):
    (ov.Model, compiled, the layer's decisions)."""
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    parameter = ov_opset.parameter([-1, -1, *tail], ov.Type.f32)

    def trace():
        y = layer(OpenVINOKerasTensor(parameter.output(0)))
        model = ov.Model([y.output], [parameter])
        return model, ov.Core().compile_model(model, "CPU", F32)

    if parts is None:
        return (*trace(), ())
    with keras_ov_einsum.enabled(**parts):
        model, compiled = trace()
        decisions = [
            d for d in keras_ov_einsum.explain() if " int4 " in d.equation
        ]
    return model, compiled, decisions


def _fully_connected_weight_types(compiled):
    return [
        node.input(1).get_element_type()
        for node in compiled.get_runtime_model().get_ordered_ops()
        if node.get_rt_info()["layerType"].astype(str) == "FullyConnected"
    ]


def _four_bit_constants(model):
    return [
        node
        for node in model.get_ordered_ops()
        if node.get_type_name() == "Constant"
        and node.get_element_type() == ov.Type.i4
    ]


def _weights(layer, distributed=False):
    """keras's [K, N] float32 weights in NumPy: ``(q - zero) * scale``
    (``distributed``: ``q * scale - zero * scale``, as stock's compile
    folds it), ``q / scale`` per column."""
    from keras import ops, quantizers

    rows, columns = int4._sizes(layer)
    q = quantizers.unpack_int4(layer._kernel, columns, axis=-1)
    q = ops.convert_to_numpy(q).astype(np.float32)
    scale = ops.convert_to_numpy(layer.kernel_scale)
    if int4._block_size(layer) is None:
        return q, scale  # Dense: (x @ q) / scale
    groups = np.arange(rows) // int4._block_size(layer)
    zero = ops.convert_to_numpy(layer.kernel_zero).astype(np.float32)
    scale, zero = scale[groups], zero[groups]
    if distributed:
        return q * scale - zero * scale, None
    return (q - zero) * scale, None


def _identity_rows(layer, tail, compiled):
    """The layer's weights plus its bias as ``compiled`` computes them: its
    outputs on the rows of the identity (each sums one product and zeros:
    exact in any order), as [K, N]."""
    rows, columns = int4._sizes(layer)
    eye = np.eye(rows, dtype=np.float32).reshape(1, rows, *tail)
    return compiled(eye)[0].reshape(rows, columns)


def _plus_bias(layer, weights):
    """``weights`` plus the layer's bias, in float32 as the graph adds it."""
    if layer.bias is None:
        return weights
    return weights + np.ravel(layer.bias.numpy()).astype(np.float32)


@needs_the_part
@pytest.mark.parametrize("spec, tail, block_size", LAYERS, ids=IDS)
def test_the_kernel_stays_4_bit_and_the_weights_are_keras(
    spec, tail, block_size
):
    layer = _quantized_layer(spec, tail, block_size)
    stock_model, stock, _ = _traced(layer, tail, None)
    model, fixed, decisions = _traced(layer, tail, INT4)

    (decision,) = decisions
    assert decision.lowered, decision.reason
    assert decision.reason.endswith(
        "int4 kernel kept 4-bit (a scale a column)"
        if block_size == -1
        else "with zero points)"
    )
    # One 4-bit Constant on the packed kernel's own bytes (half a byte a
    # weight, no copy), no unpacking in the graph (stock unpacks it there).
    (constant,) = _four_bit_constants(model)
    packed = layer._kernel.value.output.get_node()
    assert constant.get_byte_size() == packed.get_byte_size()
    rows, columns = int4._sizes(layer)
    assert constant.get_byte_size() == rows * columns // 2
    assert (
        constant.get_tensor_view().data.ctypes.data
        == packed.get_tensor_view().data.ctypes.data
    )
    assert not UNPACKING & set(op_types(model))
    assert UNPACKING <= set(op_types(stock_model))
    # The plugin's FullyConnected reads the 4-bit weights; stock's reads a
    # float32 copy, eight times the packed bytes (grouped), or stock's
    # compiled model unpacks the kernel at every inference (per column:
    # a MatMul on Eltwise layers, seen with openvino 2026.4).
    assert _fully_connected_weight_types(fixed) == [ov.Type.i4]
    assert _fully_connected_weight_types(stock) in ([ov.Type.f32], [])

    # The weights: keras's arithmetic (NumPy's) to the bit.
    weights, column_scale = _weights(layer)
    got = _identity_rows(layer, tail, fixed)
    if column_scale is not None:
        # Dense per column divides the product by the scales after it, as
        # stock does (OpenVINO compiles both Divides alike, not as NumPy
        # divides): the weights are stock's to the bit.
        np.testing.assert_array_equal(got, _identity_rows(layer, tail, stock))
    else:
        np.testing.assert_array_equal(got, _plus_bias(layer, weights))
        # Stock's compile folds keras's (q - zero) * scale into
        # q * scale - zero * scale: an ulp off here and there.
        distributed, _ = _weights(layer, distributed=True)
        np.testing.assert_array_equal(
            _identity_rows(layer, tail, stock), _plus_bias(layer, distributed)
        )
        assert not np.array_equal(distributed, weights)

    # The outputs: stock's within float32 rounding.
    x = np.random.default_rng(1).standard_normal((2, 3, *tail))
    x = x.astype(np.float32)
    want, got = stock(x)[0], fixed(x)[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@needs_the_part
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    dense=st.booleans(),
    groups=st.integers(1, 3),
    group=st.sampled_from([32, 64, 128]),
    half_columns=st.integers(1, 24),
    block=st.sampled_from(["grouped", "per column"]),
    seed=st.integers(0, 2**16),
)
def test_random_layers_equal_keras_and_stock(
    dense, groups, group, half_columns, block, seed
):
    """Random shapes: the weights keras's to the bit, the outputs stock's
    within float32 rounding."""
    k, n = groups * group, 2 * half_columns
    block_size = group if block == "grouped" else -1
    if dense:
        spec, tail = ("dense", n), (k,)
    else:
        spec, tail = ("abc,cd->abd", (None, n), "d"), (k,)
        if block_size == -1:
            block_size = group  # per column: declined (tested below)
    layer = _quantized_layer(spec, tail, block_size, seed=seed)
    _, stock, _ = _traced(layer, tail, None)
    _, fixed, decisions = _traced(layer, tail, INT4)
    assert [d.lowered for d in decisions] == [True], decisions
    weights, column_scale = _weights(layer)
    want = _identity_rows(layer, tail, stock)
    if column_scale is None:
        want = _plus_bias(layer, weights)
    np.testing.assert_array_equal(_identity_rows(layer, tail, fixed), want)
    x = np.random.default_rng(seed).standard_normal((2, 5, *tail))
    x = x.astype(np.float32)
    np.testing.assert_allclose(fixed(x)[0], stock(x)[0], rtol=1e-5, atol=1e-5)


def _activation_quantizer():
    import keras

    return keras.quantizers.AbsMaxQuantizer(axis=-1)


# (layer, tail, block size, config, the reason's start)
DECLINES = [
    (
        ("dense", 96),
        (256,),
        -1,
        {"activation_quantizer": "quantizer"},
        "inputs quantized (int8 x int4)",
    ),
    (
        ("abc,cde->abde", (None, 4, 16), "de"),
        (256,),
        -1,
        {},
        "per-column int4 EinsumDense",
    ),
    (("dense", 95), (256,), 128, {}, "95 columns: keras pads"),
    (("dense", 96), (200,), 128, {}, "K = 200 is no whole number of groups"),
    (
        ("abc,ecd->abde", (None, 4, 16), "de"),
        (256,),
        128,
        {},
        "the kernel is not read as [K, N]",
    ),
]
DECLINE_IDS = ["int8-inputs", "einsum-per-column", "odd", "partial", "order"]


@needs_the_part
@pytest.mark.parametrize(
    "spec, tail, block_size, config, reason", DECLINES, ids=DECLINE_IDS
)
def test_declines_leave_stocks_graph_and_say_why(
    spec, tail, block_size, config, reason
):
    if config.get("activation_quantizer") == "quantizer":
        config = {"activation_quantizer": _activation_quantizer()}
    if spec[0] == "abc,ecd->abde":
        import keras

        keras.utils.set_random_seed(0)
        layer = keras.layers.EinsumDense(
            spec[0], output_shape=spec[1], bias_axes=spec[2]
        )
        layer.build((None, None, *tail))
        layer.quantize("int4", config=_config(block_size))
    else:
        layer = _quantized_layer(spec, tail, block_size, **config)
    # The other parts' forms (the default parts) with and without int4.
    _, without, _ = _traced(layer, tail, {})
    model, fixed, decisions = _traced(layer, tail, INT4)
    (decision,) = decisions
    assert not decision.lowered
    assert decision.reason.startswith(reason), decision.reason
    assert not _four_bit_constants(model)
    x = np.random.default_rng(1).standard_normal((2, 3, *tail))
    x = x.astype(np.float32)
    np.testing.assert_array_equal(fixed(x)[0], without(x)[0])


@needs_the_part
def test_lora_is_declined():
    layer = _quantized_layer(("dense", 32), (128,), 128)
    layer.enable_lora(2)
    model, _, decisions = _traced(layer, (128,), INT4)
    (decision,) = decisions
    assert decision.reason == "LoRA is enabled"
    assert not _four_bit_constants(model)


@needs_the_part
def test_compiled_without_options_the_layer_computes_in_float32():
    """The int8 part's compile options reach a model with a 4-bit layer,
    with the int8 part itself off: no dynamic quantization of the inputs
    (the plugin's default where the CPU has int8 dot products), the f32
    precision hint."""
    layer = _quantized_layer(("dense", 64), (256,), 128)
    model, _, _ = _traced(layer, (256,), INT4)
    with keras_ov_einsum.enabled(int4=True):
        compiled = ov.Core().compile_model(model, "CPU")
    assert int(compiled.get_property(DYNAMIC_QUANTIZATION)) == 0
    assert compiled.get_property(PRECISION) == ov.Type.f32
    stock_model, _, _ = _traced(layer, (256,), None)
    plain = ov.Core().compile_model(stock_model, "CPU")
    assert int(plain.get_property(DYNAMIC_QUANTIZATION)) != 0


@needs_the_part
def test_enable_and_disable():
    original = ov.Core.compile_model
    keras_ov_einsum.enable()  # int4 is opt-in
    assert ov.Core.compile_model is original
    keras_ov_einsum.disable()
    keras_ov_einsum.enable(int4=True)
    assert ov.Core.compile_model is not original
    keras_ov_einsum.disable()
    assert ov.Core.compile_model is original


@needs_the_part
@pytest.mark.parametrize(
    "block_size, soft_cap",
    [(128, None), (512, None), (-1, None), (64, 30.0)],
    ids=["groups", "one-group", "per-row", "soft-cap"],
)
def test_tied_logits_read_the_4_bit_table(block_size, soft_cap):
    """A tied int4 ``ReversibleEmbedding``'s logits, ``x @ table.T``
    (keras-hub's GPT-2 and Gemma heads): a MatMul(transpose_b=True) on the
    [vocabulary, hidden] table's 4-bit Constant, where stock unpacks and
    transposes a float32 copy."""
    import functools

    import keras
    from keras import ops, quantizers

    keras.utils.set_random_seed(0)
    vocabulary, hidden = 300, 256
    layer = keras.layers.ReversibleEmbedding(
        vocabulary, hidden, logit_soft_cap=soft_cap
    )
    layer.build((None, None))
    layer.quantize("int4", config=_config(block_size))
    logits = functools.partial(layer, reverse=True)
    tail = (hidden,)
    stock_model, stock, _ = _traced(logits, tail, None)
    model, fixed, decisions = _traced(logits, tail, INT4)

    (decision,) = decisions
    assert decision.lowered, decision.reason
    assert "MatMul(transpose_b=True), table [300, 256]" in decision.reason
    (constant,) = _four_bit_constants(model)
    assert constant.get_byte_size() == vocabulary * hidden // 2
    assert not UNPACKING & set(op_types(model))
    assert UNPACKING <= set(op_types(stock_model))
    assert _fully_connected_weight_types(fixed) == [ov.Type.i4]
    assert ov.Type.i4 not in _fully_connected_weight_types(stock)

    eye = np.eye(hidden, dtype=np.float32)[None]
    got = fixed(eye)[0][0]
    if block_size == -1:
        # Divided by the rows' scales after the product, as stock does.
        np.testing.assert_array_equal(got, stock(eye)[0][0])
    elif soft_cap is None:
        q = quantizers.unpack_int4(layer._embeddings, hidden, axis=-1)
        q = ops.convert_to_numpy(q).astype(np.float32)
        groups = np.arange(hidden) // min(block_size, hidden)
        zero = ops.convert_to_numpy(layer.embeddings_zero)[:, groups]
        scale = ops.convert_to_numpy(layer.embeddings_scale)[:, groups]
        np.testing.assert_array_equal(got, ((q - zero) * scale).T)
    x = np.random.default_rng(1).standard_normal((2, 3, hidden))
    x = x.astype(np.float32)
    want, got = stock(x)[0], fixed(x)[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@needs_the_part
@pytest.mark.parametrize("block_size", [-1, 128], ids=["per-row", "groups"])
def test_tied_logits_of_quantized_inputs(block_size):
    """keras 3.15 builds a loaded int4 ``ReversibleEmbedding`` with an
    inputs quantizer (``quantize("int4")`` builds none): its logits
    multiply int8 inputs by the table. Per row, the products are integers
    (at most 2**10 in size) whose float32 sums are exact, as stock's int32
    ones: stock's bits. In groups, stock's float32 product: its values
    within float32 rounding."""
    import functools

    import keras

    keras.utils.set_random_seed(0)
    layer = keras.layers.ReversibleEmbedding(300, 256)
    layer.build((None, None))
    layer.quantize("int4", config=_config(block_size))
    layer.inputs_quantizer = keras.quantizers.AbsMaxQuantizer(axis=-1)
    logits = functools.partial(layer, reverse=True)
    _, stock, _ = _traced(logits, (256,), None)
    model, fixed, decisions = _traced(logits, (256,), INT4)
    (decision,) = decisions
    assert decision.lowered, decision.reason
    assert decision.reason.endswith(", inputs quantized")
    assert _fully_connected_weight_types(fixed) == [ov.Type.i4]
    x = np.random.default_rng(1).standard_normal((2, 3, 256))
    x = x.astype(np.float32)
    want, got = stock(x)[0], fixed(x)[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    if block_size == -1:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@needs_the_part
def test_a_reloaded_int4_gpt2_preset_generates_stock_tokens(tmp_path):
    """An int4 GPT-2 saved and loaded back (its logits now quantize their
    inputs, keras's load): the 13 layers on 4-bit weights, stock's
    tokens."""
    import keras_hub
    from causal_lms import causal_lm

    model = causal_lm("gpt2")
    model.backbone.quantize("int4")
    model.save_to_preset(str(tmp_path))
    model = keras_hub.models.CausalLM.from_preset(str(tmp_path))
    model.compile(sampler="greedy")
    assert model.backbone.token_embedding.inputs_quantizer is not None
    stock_tokens, _, _ = generate(model)
    tokens, decisions, _ = generate(model, INT4)
    np.testing.assert_array_equal(tokens, stock_tokens)
    kept = [d for d in decisions if " int4 " in d.equation and d.lowered]
    assert len(kept) == 13
    assert sum("inputs quantized" in d.reason for d in kept) == 1


@needs_the_part
def test_untied_reverse_embeddings_are_declined():
    """Untied reverse embeddings are packed along K (two rows a byte): no
    4-bit layout OpenVINO reads."""
    import functools

    import keras

    keras.utils.set_random_seed(0)
    layer = keras.layers.ReversibleEmbedding(300, 64, tie_weights=False)
    layer.build((None, None))
    layer.quantize("int4", config=_config(64))
    model, _, decisions = _traced(
        functools.partial(layer, reverse=True), (64,), INT4
    )
    (decision,) = decisions
    assert decision.reason.startswith("untied reverse embeddings")
    assert not _four_bit_constants(model)


@needs_the_part
@pytest.mark.parametrize(
    "family, projections, logits",
    [("gpt2", 6, 1), ("llama", 7, 0)],
    ids=["gpt2", "llama"],
)
def test_int4_causal_lm_generates_stock_tokens_on_4_bit_weights(
    family, projections, logits
):
    """``quantize("int4")`` tiny GPT-2 and Llama: the step model's
    projections (q, k, v, output and the feed-forward layers of each of
    its two layers) and GPT-2's tied logits read 4-bit weights (Llama's
    untied head is declined), and greedy decoding gives stock's tokens."""
    from causal_lms import causal_lm

    model = causal_lm(family)
    model.backbone.quantize("int4")
    stock_tokens, _, stock = generate(model)
    tokens, decisions, _ = generate(model, INT4)
    np.testing.assert_array_equal(tokens, stock_tokens)
    kept = [d for d in decisions if " int4 " in d.equation and d.lowered]
    assert len(kept) == 2 * projections + logits
    fixed = model.generate_function.compiled_model
    types = _fully_connected_weight_types(fixed)
    assert types.count(ov.Type.i4) == 2 * projections + logits
    assert ov.Type.i4 not in _fully_connected_weight_types(stock)


@pytest.mark.skipif(UNAVAILABLE is None, reason="the part is available")
def test_where_keras_computes_int4_elsewhere_the_part_is_left_out():
    keras_ov_einsum.enable(int4=True)
    (decision,) = keras_ov_einsum.explain()
    assert decision.equation == "int4: not installed"
    assert decision.reason == UNAVAILABLE
