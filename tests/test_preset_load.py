"""The preset_load part: a keras-hub preset's backbone is built without the
random draws its saved weights replace, and loads the same weights."""

import numpy as np
import pytest

import keras_ov_einsum
from graphs import gpt2_causal_lm
from keras_ov_einsum.core import backend
from keras_ov_einsum.parts.loading.preset_load import (
    BFLOAT16_LABEL,
    CAST_LABEL,
    SHARED_LABEL,
    VARIABLES_LABEL,
    bfloat16_bits,
)


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    import keras_hub

    path = tmp_path_factory.mktemp("preset") / "gpt2"
    causal_lm = gpt2_causal_lm()
    causal_lm.preprocessor = None
    backbone = causal_lm.backbone
    backbone.save_to_preset(str(path))
    return str(path), [np.asarray(v) for v in backbone.weights], keras_hub


@pytest.fixture
def no_random_draws(monkeypatch):
    """Every random initializer of the OpenVINO backend raises."""
    random = backend.module("random")

    def refuse(*args, **kwargs):
        raise AssertionError("a random initial value was drawn")

    for name in ("normal", "uniform", "truncated_normal"):
        monkeypatch.setattr(random, name, refuse)


def _values(backbone):
    return [np.asarray(v) for v in backbone.weights]


def _float_weights(backbone):
    import keras

    return [
        v
        for v in backbone.weights
        if "float" in keras.backend.standardize_dtype(v.dtype)
    ]


def test_loads_the_saved_weights_without_drawing(preset, no_random_draws):
    path, saved, keras_hub = preset
    with keras_ov_einsum.enabled():
        backbone = keras_hub.models.Backbone.from_preset(path)
        counts = keras_ov_einsum.explain().counts
    for got, want in zip(_values(backbone), saved, strict=True):
        np.testing.assert_array_equal(got, want)
    assert counts[VARIABLES_LABEL] == len(_float_weights(backbone))
    # No zero Broadcast survives the load: every weight is a Constant.
    kinds = {
        v.value.output.get_node().get_type_name() for v in backbone.weights
    }
    assert kinds == {"Constant"}


def test_stock_and_the_switch_draw_the_initial_values(preset, no_random_draws):
    path, _, keras_hub = preset
    with pytest.raises(AssertionError, match="random initial value"):
        keras_hub.models.Backbone.from_preset(path)
    with keras_ov_einsum.enabled(preset_load=False):
        with pytest.raises(AssertionError, match="random initial value"):
            keras_hub.models.Backbone.from_preset(path)


def test_without_the_weights_the_initializers_run(preset):
    path, saved, keras_hub = preset
    with keras_ov_einsum.enabled():
        backbone = keras_hub.models.Backbone.from_preset(
            path, load_weights=False
        )
        assert not keras_ov_einsum.explain().counts
    kernel = np.asarray(backbone.get_layer("token_embedding").embeddings)
    assert kernel.std() > 0  # drawn, not zeros
    assert not np.array_equal(kernel, saved[0])


def test_a_model_built_outside_a_preset_loader_is_initialized(no_random_draws):
    with keras_ov_einsum.enabled():
        with pytest.raises(AssertionError, match="random initial value"):
            gpt2_causal_lm()


def test_the_hooks_are_restored_as_they_were():
    Variable = backend.symbol("Variable")
    from keras_hub.src.models.backbone import Backbone
    from keras_hub.src.utils.preset_utils import KerasPresetLoader

    from_config = vars(Backbone)["from_config"]
    load_task = vars(KerasPresetLoader)["load_task"]
    assert "_initialize_with_initializer" not in vars(Variable)
    with keras_ov_einsum.enabled():
        assert vars(Backbone)["from_config"] is not from_config
        assert isinstance(vars(Backbone)["from_config"], classmethod)
        assert "_initialize_with_initializer" in vars(Variable)
    assert vars(Backbone)["from_config"] is from_config
    assert vars(KerasPresetLoader)["load_task"] is load_task
    assert "_initialize_with_initializer" not in vars(Variable)


def test_seed_states_keep_their_initializer(preset):
    """A dropout layer's seed state is a variable the weights file does not
    hold: it keeps its initializer (a seed drawn per layer, then a counter
    at 0), not zeros, which would give every layer the same fixed seed."""
    path, _, keras_hub = preset
    with keras_ov_einsum.enabled():
        backbone = keras_hub.models.Backbone.from_preset(path)
    seeds = [
        np.asarray(v)[0]
        for v in backbone.variables
        if "seed_generator" in v.path
    ]
    assert seeds and all(seed != 0 for seed in seeds)


def test_weights_are_assigned_without_a_copy(preset, monkeypatch):
    """Stock copies every weight read from the file into a new Constant;
    the part makes the Constant on the array read (shared memory)."""
    core = backend.module("core")

    path, saved, keras_hub = preset
    copies = []
    constant = core.ov_opset.constant

    def counting(value, *args, **kwargs):
        if getattr(value, "size", 0) >= 32 * 64:  # a weight, not a shape
            copies.append(value.shape)
        return constant(value, *args, **kwargs)

    monkeypatch.setattr(core.ov_opset, "constant", counting)
    keras_hub.models.Backbone.from_preset(path)
    assert copies  # stock: the initial values and the loaded weights
    copies.clear()
    with keras_ov_einsum.enabled():
        backbone = keras_hub.models.Backbone.from_preset(path)
        counts = keras_ov_einsum.explain().counts
    assert copies == []
    assert counts[SHARED_LABEL] == len(_float_weights(backbone))
    for got, want in zip(_values(backbone), saved, strict=True):
        np.testing.assert_array_equal(got, want)


def _constant_bits(variable):
    """The bytes of a variable's Constant as uint16 (bfloat16 or float16
    bits)."""
    node = variable.value.output.get_node()
    assert node.get_type_name() == "Constant"
    return np.asarray(node.get_data()).view(np.uint16)


@pytest.mark.parametrize(
    "dtype, label",
    # bfloat16: rounded in NumPy where stock rounds through a Python list;
    # float16: cast once, where stock casts and copies the result.
    [("bfloat16", BFLOAT16_LABEL), ("float16", CAST_LABEL)],
)
def test_half_weights_carry_stocks_bits(preset, dtype, label):
    """A float32 preset loaded as bfloat16 or float16: the same bits as
    stock's load."""
    path, _, keras_hub = preset
    stock = keras_hub.models.Backbone.from_preset(path, dtype=dtype)
    with keras_ov_einsum.enabled():
        backbone = keras_hub.models.Backbone.from_preset(path, dtype=dtype)
        counts = keras_ov_einsum.explain().counts
    assert counts[label] == len(_float_weights(backbone)) > 0
    for got, want in zip(
        _float_weights(backbone), _float_weights(stock), strict=True
    ):
        assert str(got.dtype) == dtype
        np.testing.assert_array_equal(_constant_bits(got), _constant_bits(want))


def test_float16_casts_carry_numpys_bits_at_the_edges():
    """The float32 -> float16 cast OpenVINO folds gives NumPy's bits (what
    stock's ``astype`` gives) for the edges and any bit pattern but NaN;
    an array holding a NaN is cast by NumPy, payload bits and all."""
    from keras_ov_einsum.parts.loading.preset_load import (
        _cast_constant,
        _float16_by_openvino,
    )

    edges = np.array(
        [0.0, -0.0, np.inf, -np.inf, 65504, 65519, 65520, 1e6, -1e6]
        + [5.96e-8, 2.98e-8, 2.99e-8, 1e-9, 6.1e-5, 6.09e-5]
        + [1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-11 + 2**-20],
        np.float32,
    )
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 2**32, 2**20, dtype=np.uint64)
    patterns = patterns.astype(np.uint32).view(np.float32)
    patterns = patterns[~np.isnan(patterns)]
    with np.errstate(over="ignore"):
        for values in (edges, patterns):
            got = _float16_by_openvino(values).get_data().view(np.uint16)
            want = values.astype(np.float16).view(np.uint16)
            np.testing.assert_array_equal(got, want)
        signaling = np.array([1.0, np.nan], np.float32)
        signaling.view(np.uint32)[1] = 0x7F800001
        node = _cast_constant(signaling, "float16").output.get_node()
        np.testing.assert_array_equal(
            node.get_data().view(np.uint16),
            signaling.astype(np.float16).view(np.uint16),
        )


def test_bfloat16_bits_are_openvinos_at_the_edges():
    """OpenVINO's float-to-bfloat16 rounding, not round-to-nearest-even:
    ties, the values just below them, infinities, NaNs (signaling ones
    too), subnormals, and the negative NaNs whose 32-bit sum wraps to
    zero."""
    import openvino as ov
    import openvino.opset13 as ov_opset

    rng = np.random.default_rng(0)
    edges = np.array(
        [
            0x3F808000,  # a tie, last kept bit 0
            0x3F818000,  # a tie, last kept bit 1
            0x3F807FFF,
            0x3F80FFFF,
            0x7F7FFFFF,  # the largest float32: rounds to infinity
            0x7F800000,
            0xFF800000,
            0x7FC00000,
            0x7F800001,  # a signaling NaN: stock's comes back quiet
            0xFF810000,
            0xFFFF8000,  # wraps to +0
            0xFFFFFFFF,
            0x00018000,
            0x80000000,
        ],
        np.uint32,
    )
    values = np.concatenate(
        [
            edges,
            rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32),
        ]
    ).view(np.float32)
    stock = ov_opset.constant(values, ov.Type.bf16).get_data()
    np.testing.assert_array_equal(
        bfloat16_bits(values), np.asarray(stock).view(np.uint16)
    )
