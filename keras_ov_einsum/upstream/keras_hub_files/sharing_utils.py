"""Compute once what every decoder layer of one forward pass builds alike.

A causal LM's `call_with_cache` runs its decoder layers on one residual
stream, with caches sliced from one stacked cache and one cache index:
each layer's causal mask is the same, and so are the cos/sin tables of
each rotary embedding (a Llama layer builds them twice, for its queries and
its keys). Traced (OpenVINO, XLA, `tf.function`), every copy is a subgraph
of its own that the backend traces and its compiler walks before it merges
them; run eagerly, each is computed again.

A method decorated with `share_across_layers(key)` returns, inside a
`sharing_across_layers()` block, the result of an earlier call whose key
is equal: the same tensors, equal plain values, equal static shapes. Its
dynamic sizes (batch, sequence, cache length) are not compared: the block
must be one where they are the same for every layer, as they are in
GPT-2's, Llama's and Gemma's `call_with_cache`. Outside a block the method
runs as it is.
"""

import contextlib
import functools
import inspect
import threading

from keras.src.backend.common.masking import get_keras_mask

_scope = threading.local()  # .memo: [(key, result)] inside a block
_PLAIN = (int, float, bool, str, type(None))


@contextlib.contextmanager
def sharing_across_layers():
    """A block (or, called, a decorator) inside which the methods decorated
    with `share_across_layers` share their results."""
    outer = getattr(_scope, "memo", None)
    _scope.memo = []
    try:
        yield
    finally:
        _scope.memo = outer


def share_across_layers(key, layer_config=False):
    """Share a layer method's result within a `sharing_across_layers()`
    block.

    Args:
        key: A function of the method's arguments (by name, the layer's
            excluded) that returns what must be equal for two calls to
            share a result: tensors must be the same objects, plain values
            equal, in nested tuples, lists and dicts.
        layer_config: Whether the layers' configs (but for their names) and
            compute dtypes must be equal too.

    Returns:
        A decorator.
    """

    def decorator(method):
        signature = inspect.signature(method)

        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            memo = getattr(_scope, "memo", None)
            if memo is None:
                return method(self, *args, **kwargs)
            arguments = signature.bind(self, *args, **kwargs)
            arguments.apply_defaults()
            named = dict(arguments.arguments)
            named.pop(next(iter(signature.parameters)))
            call_key = (method.__qualname__, key(**named))
            if layer_config:
                config = self.get_config()
                config.pop("name", None)
                call_key += (repr(sorted(config.items())), self.compute_dtype)
            for earlier, result in memo:
                if _equal(earlier, call_key):
                    return result
            result = method(self, *args, **kwargs)
            memo.append((call_key, result))
            return result

        return wrapper

    return decorator


def mask_key(sequence, cache):
    """The key of a causal mask built from the arguments named `sequence`
    (the layer's input) and `cache`: their static shapes and Keras masks,
    and every other argument."""

    def key(**arguments):
        return (
            _shape_and_mask(arguments.pop(sequence)),
            _shape_and_mask(arguments.pop(cache)),
            arguments,
        )

    return key


def _shape_and_mask(tensor):
    if tensor is None:
        return None
    return tuple(tensor.shape), get_keras_mask(tensor)


def _equal(a, b):
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, _PLAIN) and isinstance(b, _PLAIN):
        return type(a) is type(b) and a == b
    return a is b
