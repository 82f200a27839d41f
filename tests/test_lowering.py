"""Lowered einsums: the OpenVINO graph and the numbers, against the stock path.

Every test builds the same einsum twice, stock and with the fix, on a Keras
variable kernel (an OpenVINO Constant) and a Parameter input with dynamic
batch and sequence dimensions, as keras-hub's generate builds them.
"""

import numpy as np
import pytest

from graphs import (
    build_einsum_graph,
    constant_bytes,
    kernel_path,
    op_types,
    run_model,
)
from keras_ov_einsum.core import backend

N = None  # a dynamic dimension

# The lowering adds only small shape, order and axis constants to a graph.
SMALL_CONSTANT_BYTES = 512

# (equation, input shape with dynamic dims, concrete input shape, kernel shape)
# Every EinsumDense / constant-kernel equation that keras-hub 0.32 uses.
KERAS_HUB = [
    # attention projections (MultiHeadAttention and its cached variants)
    ("abc,cde->abde", (N, N, 16), (2, 3, 16), (16, 4, 8)),  # q/k/v
    ("abcd,cde->abe", (N, N, 4, 8), (2, 3, 4, 8), (4, 8, 16)),  # output
    ("btd,dnh->btnh", (N, N, 16), (2, 3, 16), (16, 4, 8)),
    ("btnh,nhd->btd", (N, N, 4, 8), (2, 3, 4, 8), (4, 8, 16)),
    ("bsd,dkh->bskh", (N, N, 16), (2, 3, 16), (16, 2, 8)),
    ("bqm,muh->bquh", (N, N, 16), (2, 3, 16), (16, 4, 8)),
    ("bquh,uhm->bqm", (N, N, 4, 8), (2, 3, 4, 8), (4, 8, 16)),
    ("bkm,mvh->bkvh", (N, N, 16), (2, 3, 16), (16, 2, 8)),
    ("bsm,mnh->bsnh", (N, N, 16), (2, 3, 16), (16, 4, 8)),
    ("bkm,mnh->bknh", (N, N, 16), (2, 3, 16), (16, 4, 8)),
    ("btm,mnh->btnh", (N, N, 16), (2, 3, 16), (16, 4, 8)),
    ("bqm,mnh->bqnh", (N, N, 16), (2, 3, 16), (16, 4, 8)),
    # feed-forward and gated MLP projections
    ("btd,df->btf", (N, N, 16), (2, 3, 16), (16, 32)),
    ("btf,fd->btd", (N, N, 32), (2, 3, 32), (32, 16)),
    ("abc,cd->abd", (N, N, 16), (2, 3, 16), (16, 24)),
    # per-expert / per-head kernels
    ("etm,emh->eth", (4, N, 16), (4, 3, 16), (4, 16, 8)),  # batched MatMul
    ("th,ehm->etm", (N, 16), (3, 16), (4, 16, 8)),  # kernel [N, K, N]
    ("th,ehi->eti", (N, 16), (3, 16), (4, 16, 8)),
    # convolution-like kernels on image patches
    ("bhwc,wkc->bhwk", (N, 3, 4, 8), (2, 3, 4, 8), (4, 6, 8)),  # transpose_b
    ("bhwc,hkc->bhwk", (N, 3, 4, 8), (2, 3, 4, 8), (3, 6, 8)),
]

# Forms beyond keras-hub's: ellipsis, summed-out labels, reversed operands,
# implicit output, spaces, (input shape, concrete shape, kernel shape, first?)
OTHER_FORMS = [
    ("...d,dn->...n", (N, N, 16), (2, 3, 16), (16, 8), False),
    ("...d,dn->...n", (16,), (16,), (16, 8), False),  # empty ellipsis
    ("b...d,dn->b...n", (N, 2, 3, 16), (2, 2, 3, 16), (16, 8), False),
    ("btxd,dn->btn", (N, N, 5, 16), (2, 3, 5, 16), (16, 8), False),  # x summed
    ("btd,dnz->btn", (N, N, 16), (2, 3, 16), (16, 8, 3), False),  # w summed
    ("dnh,btd->btnh", (N, N, 16), (2, 3, 16), (16, 4, 8), True),  # reversed
    ("nd,btd->bnt", (N, N, 16), (2, 3, 16), (8, 16), True),  # transpose_b
    ("btd,dn", (N, N, 16), (2, 3, 16), (16, 8), False),  # implicit output
    ("d,dn->n", (16,), (16,), (16, 8), False),  # vector @ matrix
    ("ebtd,edn->ebtn", (3, N, N, 16), (3, 2, 2, 16), (3, 16, 8), False),
    ("btsd,tdn->tbsn", (N, 2, N, 16), (2, 2, 3, 16), (2, 16, 8), False),
]

CASES = [row + (False,) for row in KERAS_HUB] + OTHER_FORMS


def _kernel(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _operands(equation, concrete, kernel, kernel_first):
    x = np.random.default_rng(1).standard_normal(concrete).astype("float32")
    if kernel_first:
        return x, np.einsum(equation, kernel.astype("float64"), x)
    return x, np.einsum(equation, x.astype("float64"), kernel)


@pytest.mark.parametrize(
    "equation, input_shape, concrete, kernel_shape, kernel_first",
    CASES,
    ids=[row[0].replace(" ", "_") for row in CASES],
)
def test_lowered_graph_and_numbers(
    equation, input_shape, concrete, kernel_shape, kernel_first
):
    kernel = _kernel(kernel_shape)
    stock = build_einsum_graph(
        equation, input_shape, kernel, fixed=False, kernel_first=kernel_first
    )
    fixed = build_einsum_graph(
        equation, input_shape, kernel, fixed=True, kernel_first=kernel_first
    )
    (decision,) = fixed.explanation
    assert decision.lowered, decision.reason

    # The graph: a MatMul in place of the Einsum, fed by the kernel's own
    # Constant (a view of it), and no new constant of any size.
    types = op_types(fixed.model)
    assert "Einsum" in op_types(stock.model)
    assert "Einsum" not in types
    assert types.count("MatMul") == 1
    assert _matmul_kernel_source(fixed.model) == fixed.kernel_node.get_name()
    extra = constant_bytes(fixed.model) - constant_bytes(stock.model)
    assert 0 <= extra <= SMALL_CONSTANT_BYTES
    kernel_constants = [
        node
        for node in fixed.model.get_ordered_ops()
        if node.get_type_name() == "Constant"
        and node.get_byte_size() >= kernel.nbytes
    ]
    assert [node.get_name() for node in kernel_constants] == [
        fixed.kernel_node.get_name()
    ]

    # The numbers: float64 NumPy is the truth, stock is the contract.
    x, expected = _operands(equation, concrete, kernel, kernel_first)
    got = run_model(fixed.model, x)
    want = run_model(stock.model, x)
    assert got.dtype == want.dtype == np.float32
    assert got.shape == want.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# The unit roundoff of each inference precision the CPU plugin may choose:
# a value rounded to it moves by at most this fraction of itself.
UNIT_ROUNDOFF = {"f32": 2.0**-24, "bf16": 2.0**-8, "f16": 2.0**-11}


@pytest.mark.parametrize(
    "equation, input_shape, concrete, kernel_shape, kernel_first",
    CASES,
    ids=[row[0].replace(" ", "_") for row in CASES],
)
def test_stock_bits_under_f32_and_one_rounding_under_the_default_hint(
    equation, input_shape, concrete, kernel_shape, kernel_first
):
    """The values contract: stock's bits under INFERENCE_PRECISION_HINT=f32.
    Under the CPU's default hint (bfloat16 where the CPU has bfloat16 units)
    the plugin rounds a layer's operands and its result to that precision,
    and the lowered graph's layers are not stock's: each graph's result is
    the product of operands rounded at most once each (every product term
    within (2u + u**2) of itself, u the unit roundoff: bfloat16 2**-8),
    rounded at most once itself (u * |result|) and summed in float32 in its
    own order (K * 2**-24 * sum(|x| |w|) for K terms). Two such results
    differ by at most the sum of both bounds: with M = sum(|x| |w|),
    |fixed - stock| <= u (|fixed| + |stock|) + 2 (2u + u**2) M
    + 2 K 2**-24 M. (Seen on a CPU with bfloat16 units: up to 0.73 u M,
    and up to 47 u |result| where the sum cancels.)"""
    import openvino as ov

    kernel = _kernel(kernel_shape)
    graphs = [
        build_einsum_graph(
            equation, input_shape, kernel, fixed=fixed, kernel_first=first
        ).model
        for fixed, first in ((False, kernel_first), (True, kernel_first))
    ]
    x, _ = _operands(equation, concrete, kernel, kernel_first)
    want, got = (run_model(model, x) for model in graphs)
    np.testing.assert_array_equal(got, want)

    compiled = ov.Core().compile_model(graphs[0], "CPU")
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    unit = UNIT_ROUNDOFF[precision.to_string()]
    want, got = (run_model(model, x, config={}) for model in graphs)
    if unit == UNIT_ROUNDOFF["f32"]:
        # No bfloat16 or float16 units: the default is float32, and so are
        # the bits.
        np.testing.assert_array_equal(got, want)
        return
    operands = (
        (np.abs(kernel), np.abs(x))
        if kernel_first
        else (
            np.abs(x),
            np.abs(kernel),
        )
    )
    magnitude = np.einsum(equation, *(a.astype("float64") for a in operands))
    # The kernel's size bounds K, the number of products in a sum.
    bound = (
        unit * (np.abs(got) + np.abs(want))
        + 2 * (2 * unit + unit**2) * magnitude
        + 2 * kernel.size * UNIT_ROUNDOFF["f32"] * magnitude
    )
    assert np.all(np.abs(got.astype("float64") - want) <= bound)


def _matmul_kernel_source(model):
    """Name of the Constant behind the MatMul's second input."""
    chain, constant = kernel_path(model)
    assert set(chain) <= {"Reshape", "Transpose", "Convert", "ReduceSum"}
    return constant.get_name()


@pytest.mark.parametrize(
    "equation, kernel_shape, forced",
    [
        ("btd,dnh->btnh", (16, 4, 8), False),  # [K, N...]: reshape only
        ("bhwc,wkc->bhwk", (4, 6, 8), False),  # [B, N, K]: transpose_b
        ("th,ehi->eti", (4, 16, 8), True),  # [N, K, N]: must be transposed
    ],
)
def test_kernel_transposed_only_when_label_order_forces_it(
    equation, kernel_shape, forced
):
    input_shape = {"b": (N, N, 16), "t": (N, 16)}[equation[0]]
    if equation.startswith("bhwc"):
        input_shape = (N, 3, 4, 8)
    fixed = build_einsum_graph(
        equation, input_shape, _kernel(kernel_shape), fixed=True
    )
    chain, _ = kernel_path(fixed.model)
    assert ("Transpose" in chain) == forced


def test_interleaved_kernel_transposed_once_and_shared():
    """Two einsums of one interleaved kernel share one Transpose node."""
    import keras
    import openvino as ov
    import openvino.opset13 as ov_opset

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    import keras_ov_einsum

    kernel = keras.Variable(_kernel((4, 16, 8)), trainable=False)
    parameter = ov_opset.parameter([-1, 16], ov.Type.f32)
    x = OpenVINOKerasTensor(parameter.output(0))
    with keras_ov_einsum.enabled():
        first = keras.ops.einsum("th,ehi->eti", x, kernel)
        second = keras.ops.einsum("th,ehi->eti", keras.ops.negative(x), kernel)
    model = ov.Model([first.output, second.output], [parameter])
    transposes = [
        node
        for node in model.get_ordered_ops()
        if node.get_type_name() == "Transpose"
        and node.input_value(0).get_node().get_type_name() == "Constant"
    ]
    assert len(transposes) == 1


def _resident_bytes():
    """This process's resident set, from the kernel's own counter (as
    benchmarks/sampler.py reads it)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.parametrize("fixed", [False, True], ids=["stock", "fixed"])
def test_dropped_models_free_their_interleaved_kernels(fixed):
    """No memory outlives the graph that uses it: models built on an
    interleaved kernel (which the lowering transposes) and dropped, one
    after another, leave the resident set where it was. A cache holding
    each kernel's nodes kept one 64 MB kernel per dropped model."""
    import gc

    import keras
    import openvino as ov
    import openvino.opset13 as ov_opset

    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    import keras_ov_einsum
    from graphs import patched

    # 64 MB, above glibc's largest mmap threshold (32 MB): freeing it
    # returns it to the system, so the resident set shows what is kept.
    kernel_shape = (16, 1024, 1024)
    kernel_bytes = 4 * int(np.prod(kernel_shape))

    def build_and_drop():
        kernel = keras.Variable(
            np.ones(kernel_shape, np.float32), trainable=False
        )
        parameter = ov_opset.parameter([-1, 1024], ov.Type.f32)
        x = OpenVINOKerasTensor(parameter.output(0))
        y = keras.ops.einsum("th,ehi->eti", x, kernel)
        model = ov.Model([y.output], [parameter])
        assert ("Transpose" in op_types(model)) == fixed
        del model, y, x, parameter, kernel
        gc.collect()

    # Enabled once around every model, as an application enables it: the
    # models are dropped while the part stays on.
    with patched(fixed):
        build_and_drop()  # first use: allocator and import costs
        before = _resident_bytes()
        models = 5
        for _ in range(models):
            build_and_drop()
        # Measured while still enabled: disable() may drop what a part kept.
        growth = _resident_bytes() - before
        if fixed:
            decisions = keras_ov_einsum.explain()
            assert all(decision.lowered for decision in decisions)
    assert growth < kernel_bytes, (
        f"{growth / 2**20:.0f} MB kept after {models} dropped models of a "
        f"{kernel_bytes / 2**20:.0f} MB kernel"
    )


# Declined einsums: the reason is recorded and the graph is the stock one.
# (equation, input shape, kernel shape, part of the reason)
DECLINED = [
    ("ii,ij->ij", (4, 4), (4, 5), "label 'i' repeats within the input"),
    ("bi,j->bij", (N, 4), (5,), "no label is contracted"),
    ("d,d->", (16,), (16,), "a matrix-vector product (K or N is 1)"),
    ("btd,dn->btn", (N, N, 7), (8, 4), "size 7 in the input but 8"),
    ("...d,...dn->...n", (3, 8), (3, 8, 4), "the kernel has an ellipsis"),
]


@pytest.mark.parametrize(
    "equation, input_shape, kernel_shape, reason",
    DECLINED,
    ids=[row[0] for row in DECLINED],
)
def test_declined_keeps_the_stock_graph(
    equation, input_shape, kernel_shape, reason
):
    kernel = _kernel(kernel_shape)
    try:
        stock = build_einsum_graph(equation, input_shape, kernel, fixed=False)
    except Exception as error:  # stock rejects it: the fix must too, alike
        with pytest.raises(type(error)):
            build_einsum_graph(equation, input_shape, kernel, fixed=True)
        return
    fixed = build_einsum_graph(equation, input_shape, kernel, fixed=True)
    (decision,) = fixed.explanation
    assert not decision.lowered
    assert reason in decision.reason
    assert op_types(fixed.model) == op_types(stock.model)
    assert constant_bytes(fixed.model) == constant_bytes(stock.model)


def test_spaces_are_parsed_but_stock_errors_are_kept():
    """Keras's stock OpenVINO einsum rejects spaces; the patch keeps that.

    The lowering itself understands them (the upstream patch calls it
    before the stock Einsum is built), so it is tested on its own here.
    """
    import openvino as ov
    import openvino.opset13 as ov_opset

    from keras_ov_einsum.einsum.build import lower_einsum

    equation = " b t d , d n -> n t b "
    kernel = _kernel((16, 8))
    with pytest.raises(RuntimeError) as stock_error:
        build_einsum_graph(equation, (N, N, 16), kernel, fixed=False)
    with pytest.raises(type(stock_error.value)):
        build_einsum_graph(equation, (N, N, 16), kernel, fixed=True)

    parameter = ov_opset.parameter([-1, -1, 16], ov.Type.f32)
    lowered = lower_einsum(
        equation, [parameter.output(0), ov_opset.constant(kernel).output(0)]
    )
    assert lowered, lowered
    model = ov.Model([lowered.output], [parameter])
    x, expected = _operands(
        equation.replace(" ", ""), (2, 3, 16), kernel, False
    )
    np.testing.assert_allclose(
        run_model(model, x), expected, rtol=1e-5, atol=1e-5
    )
