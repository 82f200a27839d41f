"""Attention in keras-hub's ``generate()`` through ``dot_product_attention``,
whatever the layer's dropout rate.

keras's ``MultiHeadAttention._compute_attention`` calls
``ops.dot_product_attention`` (on OpenVINO one ScaledDotProductAttention,
which the CPU plugin runs as one fused layer) unless the layer has
dropout, returns its scores or is not 4-D. It tests the dropout *rate*,
not whether dropout runs: a layer built with ``dropout=0.1`` (GPT-2, BERT
and most keras-hub models) takes the explicit path at inference too: a
query scaling, two einsums, a Softmax, a Dropout that does nothing and the
mask's Select, small layers the plugin runs one by one every step.

Inside ``generate()``, a call that runs no dropout (``training`` falsy)
and returns no scores takes keras's own fused branch: the layer's rate
reads as 0 for the call (under a lock; its config is unchanged after it).
The scale then applies to the scores instead of the query, and the fused
layer sums in its own order: float32 rounding. So only inside
``generate()``, whose results are token ids (the tests compare them with
stock's); everything else (an encoder's outputs, a causal LM's logits)
keeps stock's path and bits.

keras-hub's Llama attention makes the same choice with
``fused_attention_op_available()`` (yes on JAX and torch; on OpenVINO two
einsums, a scale, a masked Softmax and casts). Inside ``generate()`` the
part answers yes for it, so keras-hub's own fused branch runs
(docs/native-gap.md has the decoding step with and without it).
"""

import functools
import inspect
import threading

from ...core import backend, decisions
from ...core.context import GENERATE, inside_generate
from ...core.part import Hook, Part

__all__ = ["LABEL", "LLAMA_LABEL", "PART"]

LABEL = (
    "attention: MultiHeadAttention in generate() through "
    "dot_product_attention (its dropout runs only in training)"
)
LLAMA_LABEL = (
    "attention: Llama attention in generate() through "
    "dot_product_attention (keras-hub's own branch on JAX and torch)"
)
_MHA = "keras.src.layers.attention.multi_head_attention"
_LLAMA_ATTENTION = "keras_hub.src.models.llama.llama_attention"
# Held while a layer's dropout rate reads as 0: no other thread sees it.
_lock = threading.RLock()


def _compute_attention_wrapper(stock_compute_attention):
    signature = inspect.signature(stock_compute_attention)

    @functools.wraps(stock_compute_attention)
    def compute_attention(self, *args, **kwargs):
        arguments = signature.bind(self, *args, **kwargs).arguments
        # The conditions of keras's own branch, but for the dropout rate:
        # dropout that does not run is no reason to leave it.
        applies = (
            inside_generate()
            and self._dropout > 0.0
            and not arguments.get("training")
            and not arguments.get("return_attention_scores")
            and len(arguments["query"].shape) == 4
        )
        if not applies:
            return stock_compute_attention(self, *args, **kwargs)
        with _lock:
            rate = self._dropout
            self._dropout = 0.0
            try:
                result = stock_compute_attention(self, *args, **kwargs)
            finally:
                self._dropout = rate
        decisions.count(LABEL)
        return result

    return compute_attention


def _fused_available_wrapper(stock_available):
    """``fused_attention_op_available`` as keras-hub's Llama attention
    module sees it: yes inside generate()."""

    @functools.wraps(stock_available)
    def fused_attention_op_available():
        if inside_generate():
            decisions.count(LLAMA_LABEL)
            return True
        return stock_available()

    return fused_attention_op_available


def _unavailable():
    """keras 3.12's OpenVINO backend has no ``dot_product_attention`` (it
    raises NotImplementedError), the branch this part leads to."""
    import numpy as np

    x = np.zeros((1, 1, 1, 2), "float32")
    try:
        backend.module("nn").dot_product_attention(x, x, x)
    except NotImplementedError as error:
        return f"the backend's dot_product_attention raises: {error}"
    return None


PART = Part(
    name="attention",
    summary="inside generate(), attention as one fused "
    "ScaledDotProductAttention, whatever the unused dropout rate",
    wraps=(
        (
            Hook(_MHA, "MultiHeadAttention._compute_attention"),
            _compute_attention_wrapper,
        ),
        (
            Hook(_LLAMA_ATTENTION, "fused_attention_op_available"),
            _fused_available_wrapper,
        ),
        # Attention calls inside it (its graph's trace) may be fused.
        GENERATE,
    ),
    unavailable=_unavailable,
)
