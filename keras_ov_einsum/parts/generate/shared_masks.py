"""Build each decoder layer's causal mask and rotary tables once a call.

In keras-hub's ``call_with_cache`` every decoder layer computes its own
causal mask (from its input's and its cache's shapes and the cache
index), every rotary attention layer its own cos/sin tables (from the
sequence length and the cache index; twice for a Llama layer: for its
queries and for its keys), and every key or value cache write its own
index rows (the ``slice_update`` part's slabs, with that part on). Within
one call these are the same values: the layers see one residual stream of
one shape, caches sliced from one stacked cache, one cache index. Traced
on OpenVINO each copy is a subgraph of its own (Range, ShapeOf, Gather,
Broadcast, Unsqueeze...: 25 operations a layer for GPT-2's mask, 28 for
its two cache writes' rows), which keras traces and the plugin's compile
passes walk before its common-subexpression pass merges them.

While a GPT-2, Llama or Gemma causal LM's ``call_with_cache`` runs (the
prompt pass and the step of stock's generate, and this package's
``stepwise`` step model), this part hands a layer the tensor an earlier
layer built when every input the computation reads is the same: the same
tensors (padding mask, attention mask, cache index, positions, the input's
Keras mask), the same static sizes and flags, the same layer
configuration. The dynamic sizes (batch, sequence, cache length) are the
same for every layer of one call by the structure of these models' own
``call_with_cache``, so a subclass that overrides it, or a backbone from
outside keras-hub, shares nothing. The graph computes the same values; it
holds one copy.
"""

import contextlib
import functools
import inspect
import threading

from ...core import decisions
from ...core.part import Hook, Part
from ..ops import slice_update

__all__ = ["PART", "SHARED_LABEL"]

SHARED_LABEL = (
    "shared_masks: a layer's mask, rotary tables or cache-write index rows "
    "taken from an earlier layer"
)
_scope = threading.local()  # .memo: [(key, result)] during one call
# The causal LMs whose call_with_cache runs one stack of these layers on one
# residual stream and one stacked cache.
_CAUSAL_LMS = (
    ("keras_hub.src.models.gpt2.gpt2_causal_lm", "GPT2CausalLM"),
    ("keras_hub.src.models.llama.llama_causal_lm", "LlamaCausalLM"),
    ("keras_hub.src.models.gemma.gemma_causal_lm", "GemmaCausalLM"),
)
_PLAIN = (int, float, bool, str, type(None))


def _call_wrapper(stock_call_with_cache):
    """``call_with_cache``: the layers it calls share within the call, when
    it is keras-hub's own: not overridden by a subclass (which may call it
    around other computations) and running a keras-hub backbone."""

    @functools.wraps(stock_call_with_cache)
    def call_with_cache(self, *args, **kwargs):
        if not _own_call_with_cache(type(self)) or not type(
            self.backbone
        ).__module__.startswith("keras_hub."):
            return stock_call_with_cache(self, *args, **kwargs)
        with _sharing():
            return stock_call_with_cache(self, *args, **kwargs)

    return call_with_cache


def _own_call_with_cache(model_class):
    """Whether ``model_class`` runs the ``call_with_cache`` of one of
    ``_CAUSAL_LMS``, not a subclass's own."""
    for klass in model_class.__mro__:
        if "call_with_cache" in vars(klass):
            return (klass.__module__, klass.__name__) in _CAUSAL_LMS
    return False


@contextlib.contextmanager
def _sharing():
    """Inside the block, ``_shared`` hands out one result per key."""
    outer = getattr(_scope, "memo", None)
    _scope.memo = []
    try:
        yield
    finally:
        _scope.memo = outer


def _shared(key, build):
    """``build()``'s result, or the result an earlier call with an equal
    ``key`` built within the current ``call_with_cache``."""
    memo = getattr(_scope, "memo", None)
    if memo is None:
        return build()
    for earlier, result in memo:
        if _equal(earlier, key):
            decisions.count(SHARED_LABEL)
            return result
    result = build()
    memo.append((key, result))
    return result


def _equal(a, b):
    """Keys are equal when their plain values are equal and their other
    objects (tensors) are the same objects."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, _PLAIN) and isinstance(b, _PLAIN):
        return type(a) is type(b) and a == b
    return a is b


def _static(tensor):
    """The static sizes and rank of a tensor (None: dynamic)."""
    return None if tensor is None else tuple(tensor.shape)


def _keras_mask(tensor):
    # merge_padding_and_attention_mask reads it when no padding mask is given
    return getattr(tensor, "_keras_mask", None)


def _memoized(stock, key_of):
    """The layer method ``stock`` with its result shared within a call
    under the key ``key_of(layer, {argument name: value})``."""
    signature = inspect.signature(stock)

    @functools.wraps(stock)
    def method(self, *args, **kwargs):
        if getattr(_scope, "memo", None) is None:
            return stock(self, *args, **kwargs)
        arguments = signature.bind(self, *args, **kwargs)
        arguments.apply_defaults()
        key = (stock.__qualname__, key_of(self, arguments.arguments))
        return _shared(key, lambda: stock(self, *args, **kwargs))

    return method


def _mask_wrapper(sequence, cache, tensors, flags):
    """A wrapper for a layer's mask method whose arguments named
    ``sequence`` and ``cache`` are the layer's input and cache, ``tensors``
    other tensor arguments and ``flags`` plain ones."""

    def key_of(layer, named):
        return (
            _static(named[sequence]),
            _keras_mask(named[sequence]),
            named[cache] is None,
            _static(named[cache]),
            tuple(named[name] for name in tensors),
            tuple(named[name] for name in flags),
        )

    return lambda stock_mask: _memoized(stock_mask, key_of)


def _rotary_key(layer, named):
    """``RotaryEmbedding._compute_cos_sin_embedding``'s tables depend on
    the layer's configuration, the input's rank, feature size and sequence
    length (not its heads: a Llama layer's keys share its queries'), the
    start index and the positions."""
    shape = named["inputs"].shape
    config = layer.get_config()
    config.pop("name", None)
    return (
        repr(sorted(config.items())),
        str(layer.compute_dtype),
        len(shape),
        shape[-1],
        named["start_index"],
        named["positions"],
    )


def _shared_slab_indices(next_indices, inputs, start_indices, updates):
    """The pass at ``slice_update.SLAB_INDICES``: the cache writes' index
    rows, shared within a call: every attention layer of one call writes
    its keys and values, of one shape, at the same start indices."""
    if getattr(_scope, "memo", None) is None:
        return next_indices(inputs, start_indices, updates)

    def slab_indices(updates_output, starts):
        key = (
            "slice_update",
            _static(updates),
            _static(inputs),
            tuple(start_indices),
            len(starts),
        )
        return _shared(
            key, lambda: slice_update._slab_indices(updates_output, starts)
        )

    return slab_indices


_DECODER = "keras_hub.src.layers.modeling.transformer_decoder"
_LLAMA = "keras_hub.src.models.llama.llama_decoder"
_GEMMA = "keras_hub.src.models.gemma.gemma_decoder_block"
_ROTARY = "keras_hub.src.layers.modeling.rotary_embedding"
_SELF_ATTENTION_MASK = "_compute_self_attention_mask"
# The tensors (besides the input and the cache) that keras-hub's decoder
# layers build their masks from.
_DECODER_MASK_TENSORS = (
    "decoder_padding_mask",
    "decoder_attention_mask",
    "self_attention_cache_update_index",
)

PART = Part(
    name="shared_masks",
    summary="the causal mask, rotary tables and cache-write index rows built "
    "once a call, not once a layer",
    passes=((slice_update.SLAB_INDICES, _shared_slab_indices),),
    wraps=tuple(
        (Hook(module, f"{name}.call_with_cache"), _call_wrapper)
        for module, name in _CAUSAL_LMS
    )
    + (
        (
            Hook(_DECODER, f"TransformerDecoder.{_SELF_ATTENTION_MASK}"),
            _mask_wrapper(
                "decoder_sequence",
                "self_attention_cache",
                _DECODER_MASK_TENSORS,
                ("use_causal_mask",),
            ),
        ),
        (
            Hook(_LLAMA, f"LlamaTransformerDecoder.{_SELF_ATTENTION_MASK}"),
            _mask_wrapper(
                "decoder_sequence",
                "self_attention_cache",
                _DECODER_MASK_TENSORS,
                (),
            ),
        ),
        (
            Hook(_GEMMA, "GemmaDecoderBlock._compute_attention_mask"),
            _mask_wrapper(
                "x", "cache", ("padding_mask", "cache_update_index"), ()
            ),
        ),
        (
            Hook(_ROTARY, "RotaryEmbedding._compute_cos_sin_embedding"),
            lambda stock_cos_sin: _memoized(stock_cos_sin, _rotary_key),
        ),
    ),
)
