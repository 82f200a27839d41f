"""keras-hub's byte-pair tokenizer keeps its vocabulary and merges as plain
values, not tracked by keras item by item.

``BytePairTokenizer.set_vocabulary_and_merges`` (every ``from_preset`` of
GPT-2 and the other byte-pair models) assigns the vocabulary dict and the
merges list to the layer twice (once for its TensorFlow tables, once for
its ``tokenizers`` one). A keras layer wraps each dict or list it is given
in a tracking proxy that asks, for every element, whether it is a layer,
a variable or a metric: every token and merge, each time, most of the
tokenizer's load (docs/native-gap.md).

None of these values can hold a layer or variable, so this part runs the
method under keras's own ``DotNotTrackScope``: the attributes are the
plain dict and list (a ``TrackedDict`` and ``TrackedList`` are a dict and
a list too), the tokenizer's tables and its tokens are stock's. Only where
the method is keras-hub's own (a subclass that overrides it keeps stock's
tracking).
"""

import functools

from ...core import decisions
from ...core.part import Hook, Part

__all__ = ["LABEL", "PART"]

LABEL = "untracked_vocabulary: a byte-pair vocabulary and merges kept untracked"
_BPE = "keras_hub.src.tokenizers.byte_pair_tokenizer"


def _set_vocabulary_and_merges_wrapper(stock_set):
    @functools.wraps(stock_set)
    def set_vocabulary_and_merges(self, vocabulary, merges):
        from keras.src.utils.tracking import DotNotTrackScope

        if vocabulary is None or merges is None:
            return stock_set(self, vocabulary, merges)
        with DotNotTrackScope():
            result = stock_set(self, vocabulary, merges)
        decisions.count(LABEL)
        return result

    return set_vocabulary_and_merges


PART = Part(
    name="untracked_vocabulary",
    summary="the byte-pair tokenizer's vocabulary and merges set without "
    "keras tracking each item",
    wraps=(
        (
            Hook(_BPE, "BytePairTokenizer.set_vocabulary_and_merges"),
            _set_vocabulary_and_merges_wrapper,
        ),
    ),
)
