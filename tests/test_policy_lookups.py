"""The policy_lookups part: a dtype policy map answers a path it does not
hold with its default at once when no key can be a pattern; the policy is
stock's for every path, and maps with patterns keep stock's lookup."""

import keras
import pytest
from causal_lms import causal_lm
from keras.src.dtype_policies.dtype_policy_map import DTypePolicyMap

import keras_ov_einsum
from keras_ov_einsum.parts.loading.policy_lookups import LABEL

INT8 = keras.dtype_policies.get("int8_from_float32")
FLOAT16 = keras.dtype_policies.DTypePolicy("float16")


_STOCK_GETITEM = DTypePolicyMap.__getitem__  # imported before any enable()


def _stock_lookup(policy_map, key):
    """What keras answers without the part."""
    return _STOCK_GETITEM(policy_map, key)


def _plain_map():
    policy_map = DTypePolicyMap(default_policy="float32")
    policy_map["backbone/layer_0/query"] = INT8
    policy_map["backbone/layer_0/key"] = INT8
    return policy_map


def test_a_quantized_keras_hub_model_gets_stock_policies(tmp_path):
    import keras_hub

    saved = causal_lm("gpt2")
    saved.backbone.quantize("int8")
    saved.save_to_preset(str(tmp_path))
    with keras_ov_einsum.enabled():
        model = keras_hub.models.CausalLM.from_preset(str(tmp_path))
        policy_map = model.backbone.dtype_policy
        assert isinstance(policy_map, DTypePolicyMap)  # keras-hub's, loaded
        layers = model.backbone._flatten_layers()
        paths = [layer.path for layer in layers if layer.path is not None]
        got = {path: policy_map[path] for path in paths}
        counts = keras_ov_einsum.explain().counts
    want = {path: _stock_lookup(policy_map, path) for path in paths}
    assert got == want
    held = sum(path in policy_map._policy_map for path in paths)
    assert 0 < held < len(paths)
    assert counts[LABEL] >= len(paths) - held


def test_a_path_the_map_does_not_hold_gets_the_default():
    policy_map = _plain_map()
    with keras_ov_einsum.enabled():
        assert policy_map["backbone/layer_0/query"] is INT8
        assert policy_map["backbone/layer_0/norm"] is policy_map.default_policy
        counts = keras_ov_einsum.explain().counts
    assert counts[LABEL] == 1


def test_a_pattern_among_the_keys_gets_stock_lookup():
    policy_map = _plain_map()
    policy_map["backbone/layer_1/.*"] = FLOAT16
    with keras_ov_einsum.enabled():
        assert policy_map["backbone/layer_1/value"] is FLOAT16
        assert policy_map["backbone/layer_2/value"].name == "float32"
        counts = keras_ov_einsum.explain().counts
    assert LABEL not in counts


def test_a_pattern_added_later_is_seen():
    """The keys are checked again when they change: a path that got the
    default before matches a pattern added since."""
    policy_map = _plain_map()
    with keras_ov_einsum.enabled():
        assert policy_map["backbone/layer_1/value"].name == "float32"
        policy_map["backbone/layer_1/.*"] = FLOAT16
        assert policy_map["backbone/layer_1/value"] is FLOAT16
        del policy_map["backbone/layer_1/.*"]
        assert policy_map["backbone/layer_1/value"].name == "float32"


def test_stock_errors_stand():
    policy_map = _plain_map()
    policy_map["backbone/.*"] = FLOAT16
    policy_map["backbone/layer_0/.*"] = FLOAT16
    with keras_ov_einsum.enabled():
        with pytest.raises(ValueError, match="matches multiple"):
            policy_map["backbone/layer_0/value"]
        with pytest.raises(TypeError):
            _plain_map()[None]  # stock: re.fullmatch of a key against None


def test_the_default_is_stock_whatever_keras_global_policy():
    """A map made without a default answers what stock answers while
    keras's global policy changes."""
    policy_map = DTypePolicyMap()
    policy_map["backbone/layer_0/query"] = INT8
    try:
        for name in ("mixed_float16", "float32"):
            keras.config.set_dtype_policy(name)
            with keras_ov_einsum.enabled():
                got = policy_map["backbone/norm"]
            assert got == _stock_lookup(policy_map, "backbone/norm")
    finally:
        keras.config.set_dtype_policy("float32")
