"""The small_pages part: a keras-hub preset's weights file is read with
NumPy's huge-page advice off, and the advice is as before afterwards."""

import numpy as np
import pytest

import keras_ov_einsum
from graphs import gpt2_causal_lm
from keras_ov_einsum import small_pages
from keras_ov_einsum.small_pages import ADVICE_OFF_LABEL, hugepage_advice

pytestmark = pytest.mark.skipif(
    hugepage_advice() is None, reason="this NumPy has no huge-page advice"
)


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "gpt2"
    causal_lm = gpt2_causal_lm()
    causal_lm.preprocessor = None
    causal_lm.backbone.save_to_preset(str(path))
    return str(path), [np.asarray(v) for v in causal_lm.backbone.weights]


@pytest.fixture
def reads(monkeypatch):
    """The advice NumPy had at each array read from a weights file."""
    store = _h5_store()
    seen = []
    stock_getitem = store.__getitem__

    def getitem(self, key):
        seen.append(hugepage_advice())
        return stock_getitem(self, key)

    monkeypatch.setattr(store, "__getitem__", getitem)
    return seen


def _h5_store():
    """keras's reader of a weights file's entries (H5Entry in older keras)."""
    from keras.src.saving import saving_lib

    return getattr(saving_lib, "H5IOStore", None) or saving_lib.H5Entry


@pytest.fixture
def advice():
    """Sets NumPy's advice for a test and puts it back after."""
    setter = small_pages._setter()
    before = setter(True)
    yield setter
    setter(before)


def _load(path):
    import keras_hub

    return keras_hub.models.Backbone.from_preset(path)


@pytest.mark.parametrize("before", [True, False])
def test_the_weights_are_read_without_the_advice(preset, reads, advice, before):
    path, saved = preset
    advice(before)
    with keras_ov_einsum.enabled():
        backbone = _load(path)
        counts = keras_ov_einsum.explain().counts
    assert reads and not any(reads)
    assert hugepage_advice() is before
    assert counts[ADVICE_OFF_LABEL] == 1
    for got, want in zip(backbone.weights, saved, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)


def test_stock_reads_with_the_advice(preset, reads, advice):
    path, _ = preset
    with keras_ov_einsum.enabled(small_pages=False):
        _load(path)
        counts = keras_ov_einsum.explain().counts
    assert reads and all(reads)
    assert ADVICE_OFF_LABEL not in counts


def test_the_advice_comes_back_after_a_failed_load(preset, advice, monkeypatch):
    def broken(self, key):
        raise OSError("a truncated weights file")

    path, _ = preset
    monkeypatch.setattr(_h5_store(), "__getitem__", broken)
    # keras gathers the layers' errors into one ValueError.
    with keras_ov_einsum.enabled(), pytest.raises(ValueError, match="loaded"):
        _load(path)
    assert hugepage_advice() is True


def test_overlapping_loads_restore_the_advice_when_the_last_ends(advice):
    """Two loads at once (threads, or a load inside a load): the first to
    end must not turn the advice back on under the other."""
    during = []

    def inner_load(loader, backbone):
        during.append(hugepage_advice())

    inner = small_pages._load_weights_wrapper(inner_load)

    def outer_load(loader, backbone):
        inner(loader, backbone)
        during.append(hugepage_advice())

    small_pages._load_weights_wrapper(outer_load)(None, None)
    assert during == [False, False]
    assert hugepage_advice() is True
