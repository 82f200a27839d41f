"""The untracked_vocabulary part: keras-hub's byte-pair tokenizer keeps
its vocabulary and merges as a plain dict and list (stock: keras's tracking
proxies, built item by item), with stock's tokens and saved assets."""

import numpy as np

import keras_ov_einsum
from keras_ov_einsum.parts.loading.untracked_vocabulary import LABEL

VOCABULARY = {"<|endoftext|>": 0, "a": 1, "b": 2, "Ġ": 3, "ab": 4, "Ġa": 5}
MERGES = ["a b", "Ġ a"]
TEXT = ["ab a b", "ba ab"]


def _tokenizer():
    import keras_hub

    return keras_hub.tokenizers.BytePairTokenizer(
        vocabulary=VOCABULARY, merges=MERGES
    )


def test_plain_values_and_stocks_tokens(tmp_path):
    from keras.src.utils.tracking import TrackedDict, TrackedList

    stock = _tokenizer()
    assert isinstance(stock.vocabulary, TrackedDict)
    assert isinstance(stock.merges, TrackedList)
    with keras_ov_einsum.enabled():
        tokenizer = _tokenizer()
        counts = keras_ov_einsum.explain().counts
    assert type(tokenizer.vocabulary) is dict
    assert type(tokenizer.merges) is list
    assert counts[LABEL] == 1
    assert tokenizer.vocabulary == VOCABULARY and tokenizer.merges == MERGES
    for got, want in zip(tokenizer(TEXT), stock(TEXT), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # Its assets save and load back as stock's.
    tokenizer.save_assets(str(tmp_path))
    reloaded = _tokenizer()
    reloaded.load_assets(str(tmp_path))
    assert reloaded.vocabulary == VOCABULARY and reloaded.merges == MERGES
    assert tokenizer.weights == stock.weights == []


def test_clearing_the_vocabulary_is_stocks():
    with keras_ov_einsum.enabled():
        tokenizer = _tokenizer()
        tokenizer.set_vocabulary_and_merges(None, None)
        counts = keras_ov_einsum.explain().counts
    assert tokenizer.vocabulary is None and tokenizer.merges is None
    assert counts[LABEL] == 1  # the construction only
