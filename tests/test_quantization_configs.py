"""The quantization_configs part: a keras-hub preset keeps each layer's
quantization config, so a weights-only int8 model (or any other config)
loads as it was saved; stock rebuilds it with keras's default quantizers."""

import json
import logging
import os
import warnings

import numpy as np
import pytest
from causal_lms import FAMILIES, causal_lm

import keras_ov_einsum
from keras_ov_einsum.parts.loading.quantization_configs import (
    FILE,
    LABEL,
    SAVED_LABEL,
)

OFF = {"quantization_configs": False}


def _quantized(family, activation_quantizer=None):
    import keras

    model = causal_lm(family)
    config = keras.quantizers.Int8QuantizationConfig(
        activation_quantizer=activation_quantizer
    )
    model.backbone.quantize("int8", config=config)
    return model


def _inputs_quantizers(model):
    return {
        layer.path: layer.inputs_quantizer
        for layer in model.backbone._flatten_layers()
        if hasattr(layer, "inputs_quantizer")
    }


def _logits(model):
    token_ids = np.array([[1, 5, 9, 2, 7]], "int32")
    inputs = {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}
    return np.asarray(model(inputs))


def _declined(explained):
    """This part's declines (another part's, such as a fallback to stock,
    are that part's tests' concern)."""
    return [d for d in explained if d.equation == LABEL and not d.lowered]


def _save(model, path, **switches):
    with keras_ov_einsum.enabled(**switches):
        model.save_to_preset(str(path))
        return keras_ov_einsum.explain()


def _load(path, **switches):
    import keras_hub

    with keras_ov_einsum.enabled(**switches):
        model = keras_hub.models.CausalLM.from_preset(str(path))
        return model, keras_ov_einsum.explain()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_weights_only_model_loads_weights_only(family, tmp_path):
    saved = _quantized(family)
    expected = _logits(saved)
    explained = _save(saved, tmp_path)
    quantized = _inputs_quantizers(saved)
    assert quantized and all(q is None for q in quantized.values())
    assert explained.counts[SAVED_LABEL] == len(quantized)

    loaded, explained = _load(tmp_path)
    assert _inputs_quantizers(loaded) == quantized  # every one None
    assert explained.counts[LABEL] == len(quantized)
    np.testing.assert_array_equal(_logits(loaded), expected)

    # Stock builds every layer with keras's activation quantizer: another
    # model, with other logits.
    stock, _ = _load(tmp_path, **OFF)
    assert all(q is not None for q in _inputs_quantizers(stock).values())
    assert not np.array_equal(_logits(stock), expected)


def test_a_custom_activation_quantizer_comes_back(tmp_path):
    import keras

    quantizer = keras.quantizers.AbsMaxQuantizer(value_range=(-63, 63))
    saved = _quantized("gpt2", activation_quantizer=quantizer)
    expected = _logits(saved)
    _save(saved, tmp_path)
    loaded, _ = _load(tmp_path)
    ranges = {
        path: tuple(q.value_range)
        for path, q in _inputs_quantizers(loaded).items()
    }
    assert ranges and set(ranges.values()) == {(-63, 63)}
    np.testing.assert_array_equal(_logits(loaded), expected)
    stock, _ = _load(tmp_path, **OFF)
    assert {
        tuple(q.value_range) for q in _inputs_quantizers(stock).values()
    } == {(-127, 127)}


def test_stock_loads_a_preset_that_has_the_file(tmp_path):
    saved = _quantized("llama")
    _save(saved, tmp_path)
    assert (tmp_path / FILE).exists()
    stock, explained = _load(tmp_path, **OFF)
    assert LABEL not in explained.counts
    assert _inputs_quantizers(stock).keys() == _inputs_quantizers(saved).keys()


def test_no_config_no_file_and_a_stale_one_goes(tmp_path):
    _save(_quantized("gpt2"), tmp_path)
    assert (tmp_path / FILE).exists()
    # The same folder, now a float32 model: the old configs must not stay
    # to be read back.
    _save(causal_lm("gpt2"), tmp_path)
    assert not (tmp_path / FILE).exists()
    loaded, explained = _load(tmp_path)
    assert not _inputs_quantizers(loaded)
    assert LABEL not in explained.counts


def test_a_config_unread_or_of_another_mode_is_declined(tmp_path):
    _save(_quantized("gpt2"), tmp_path)
    configs = json.loads((tmp_path / FILE).read_text())
    path = sorted(configs)[0]
    other = sorted(configs)[1]
    modeless = sorted(configs)[2]  # keras's base class, which has no mode
    configs[modeless] = {
        **configs[modeless],
        "class_name": "QuantizationConfig",
    }
    configs[path] = {
        **configs[path],
        "class_name": "Int4QuantizationConfig",
        "config": {"weight_quantizer": None, "activation_quantizer": None},
    }
    configs[other] = {**configs[other], "class_name": "NoSuchConfig"}
    (tmp_path / FILE).write_text(json.dumps(configs))
    loaded, explained = _load(tmp_path)
    quantizers = _inputs_quantizers(loaded)
    # Those three get keras's default quantizer, the others their saved one.
    assert all(quantizers[p] is not None for p in (path, other, modeless))
    assert sum(q is None for q in quantizers.values()) == len(quantizers) - 3
    declined = {
        d.reason.split(":")[0]: d.reason
        for d in explained
        if d.equation == LABEL
    }
    assert declined.keys() == {path, other, modeless}
    assert "'int4'" in declined[path]
    assert "mode None" in declined[modeless]
    assert "cannot be read" in declined[other]
    assert not any(d.lowered for d in explained if d.equation == LABEL)


def test_a_config_that_cannot_be_saved_is_left_out(tmp_path):
    import keras

    class Unsaveable(keras.quantizers.Int8QuantizationConfig):
        def get_config(self):
            raise TypeError("not serializable")

    model = _quantized("gpt2")
    layers = [
        layer
        for layer in model.backbone._flatten_layers()
        if getattr(layer, "quantization_config", None) is not None
    ]
    layers[0].quantization_config = Unsaveable(activation_quantizer=None)
    explained = _save(model, tmp_path)  # stock's save is not failed
    configs = json.loads((tmp_path / FILE).read_text())
    assert layers[0].path not in configs
    assert len(configs) == len(layers) - 1
    (declined,) = [d for d in explained if d.equation == LABEL]
    assert layers[0].path in declined.reason
    assert "cannot be saved" in declined.reason


def _serialized_quantizer(**config):
    import keras
    from keras.src.saving import serialization_lib

    serialized = serialization_lib.serialize_keras_object(
        keras.quantizers.AbsMaxQuantizer()
    )
    return {**serialized, "config": {**serialized["config"], **config}}


def _with_inner(**fields):
    return lambda entry: {
        **entry,
        "config": {**entry["config"], **fields},
    }


# An entry of the file changed so that keras cannot build its layer with it
# and run it. Before the part checked the config it built, a wrong type in
# a field raised inside the build (from_preset failed, or the guard fell
# back with an internal error) or inside the layer's call (the model loaded,
# then failed to run).
MALFORMED = {
    "weight quantizer of the wrong type": _with_inner(weight_quantizer=5),
    "activation quantizer of the wrong type": _with_inner(
        activation_quantizer=5
    ),
    "activation quantizer that fails": _with_inner(
        activation_quantizer=_serialized_quantizer(epsilon="abc")
    ),
    "config not an object": lambda entry: {**entry, "config": 7},
    "unknown class": lambda entry: {**entry, "class_name": "NoSuchConfig"},
    "entry not an object": lambda entry: 5,
}


@pytest.mark.parametrize("malformed", MALFORMED)
def test_a_malformed_entry_gets_keras_s_defaults(tmp_path, malformed):
    _save(_quantized("gpt2"), tmp_path)
    configs = json.loads((tmp_path / FILE).read_text())
    path = sorted(configs)[0]
    configs[path] = MALFORMED[malformed](configs[path])
    (tmp_path / FILE).write_text(json.dumps(configs))
    loaded, explained = _load(tmp_path)
    quantizers = _inputs_quantizers(loaded)
    assert quantizers[path] is not None  # keras's default
    assert all(q is None for p, q in quantizers.items() if p != path)
    (declined,) = _declined(explained)
    assert declined.reason.startswith(f"{path}: ")
    assert declined.reason.endswith(": keras's default quantizers")
    assert explained.counts[LABEL] == len(quantizers) - 1
    assert np.isfinite(_logits(loaded)).all()  # the model runs


def _truncated(path):
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def _a_directory(path):
    path.unlink()
    path.mkdir()


# A file the part cannot use. Before it warned, all but a directory in the
# file's place loaded keras's defaults silently (the reason in explain()
# only); a directory, or a file it may not read, failed inside the part.
UNUSABLE = {
    "truncated": _truncated,
    "not an object": lambda path: path.write_text("[1, 2]"),
    "a directory in its place": _a_directory,
    "not readable": lambda path: path.chmod(0),
}


@pytest.mark.parametrize("unusable", UNUSABLE)
def test_a_file_it_cannot_use_warns_once(tmp_path, caplog, unusable):
    if unusable == "not readable" and os.geteuid() == 0:
        pytest.skip("root reads a file whatever its permissions")
    _save(_quantized("gpt2"), tmp_path)
    UNUSABLE[unusable](tmp_path / FILE)
    path = str(tmp_path / FILE)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with caplog.at_level(logging.WARNING, logger="keras_ov_einsum"):
                # load_task, then load_backbone inside it: one load.
                loaded, explained = _load(tmp_path)
    finally:
        if unusable == "not readable":
            (tmp_path / FILE).chmod(0o644)  # for tmp_path's cleanup
    assert all(q is not None for q in _inputs_quantizers(loaded).values())
    (warned,) = [w for w in caught if path in str(w.message)]
    assert issubclass(warned.category, UserWarning)
    (logged,) = [r for r in caplog.records if path in r.getMessage()]
    assert logged.levelno == logging.WARNING
    (declined,) = _declined(explained)
    assert declined.reason.startswith(f"{path}: cannot be read")
    assert LABEL not in explained.counts


def test_a_file_that_cannot_be_read_leaves_stock_s_load(tmp_path):
    _save(_quantized("gpt2"), tmp_path)
    (tmp_path / FILE).write_text("{not json")
    with pytest.warns(UserWarning, match="cannot be used"):
        loaded, explained = _load(tmp_path)
    assert all(q is not None for q in _inputs_quantizers(loaded).values())
    (declined,) = [d for d in explained if d.equation == LABEL]
    assert not declined.lowered and "cannot be read" in declined.reason
