"""Attention in keras-hub's ``generate()`` through ``dot_product_attention``,
whatever the layer's dropout rate.

keras's ``MultiHeadAttention._compute_attention`` calls
``ops.dot_product_attention`` (on OpenVINO one ScaledDotProductAttention
node, which the CPU plugin runs as one fused layer) unless the layer has
dropout, returns its scores or is not 4-D. It tests the dropout *rate*, not
whether dropout runs: a layer built with ``dropout=0.1`` (GPT-2, BERT and
most keras-hub encoders and decoders) takes the explicit path at inference
too, where dropout is the identity: a query scaling, two einsums, a
Softmax, a Dropout that does nothing and the mask's Select, per layer:
about a third of the small layers of GPT-2 Medium's decoding step
(docs/native-gap.md).

Here, while a keras-hub ``CausalLM.generate()`` runs (where it traces
its generate graph), a call that runs no dropout (``training`` falsy) and
returns no scores takes keras's own ``dot_product_attention`` branch, as a
layer without dropout would: the layer's rate reads as 0 for the duration
of the call (under a lock; the layer's config is unchanged after it). The
same attention with the scale applied to the scores instead of the query
and the fused layer's summation order: float32 rounding. So only inside
generate(), whose results are token ids (the tests compare them with
stock's); everything else (an encoder's outputs, a causal LM's logits)
keeps stock's path and bits.
"""

import functools
import inspect
import threading

from . import decisions
from .part import Hook, Part, scoped

__all__ = ["LABEL", "PART"]

LABEL = (
    "attention: MultiHeadAttention in generate() through "
    "dot_product_attention (its dropout runs only in training)"
)
_MHA = "keras.src.layers.attention.multi_head_attention"
_CAUSAL_LM = "keras_hub.src.models.causal_lm"
# Held while a layer's dropout rate reads as 0: no other thread sees it.
_lock = threading.RLock()
_scope = threading.local()  # .generating: inside CausalLM.generate()


def _generate_wrapper(stock_generate):
    """``CausalLM.generate``: attention calls inside it (its graph's trace)
    may be fused."""

    @functools.wraps(stock_generate)
    def generate(self, *args, **kwargs):
        with scoped(_scope, "generating", True):
            return stock_generate(self, *args, **kwargs)

    return generate


def _compute_attention_wrapper(stock_compute_attention):
    signature = inspect.signature(stock_compute_attention)

    @functools.wraps(stock_compute_attention)
    def compute_attention(self, *args, **kwargs):
        try:
            arguments = signature.bind(self, *args, **kwargs).arguments
            # The conditions of keras's own branch, but for the dropout
            # rate: dropout that does not run is no reason to leave it.
            applies = (
                getattr(_scope, "generating", False)
                and self._dropout > 0.0
                and not arguments.get("training")
                and not arguments.get("return_attention_scores")
                and len(arguments["query"].shape) == 4
            )
        except Exception:  # Never let the fast path break a model.
            applies = False
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


PART = Part(
    name="attention",
    summary="inside keras-hub's generate(), keras MultiHeadAttention calls "
    "that run no dropout go through dot_product_attention, one fused "
    "ScaledDotProductAttention layer, as keras does for layers without "
    "dropout (GPT-2's have 0.1)",
    wraps=(
        (
            Hook(_MHA, "MultiHeadAttention._compute_attention"),
            _compute_attention_wrapper,
        ),
        (Hook(_CAUSAL_LM, "CausalLM.generate"), _generate_wrapper),
    ),
)
