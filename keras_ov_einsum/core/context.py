"""Where a call runs: inside keras-hub's ``generate()`` or not.

Some parts change float32 rounding (a fused attention, one MVN node); they
act only where the results are token ids: while a keras-hub
``CausalLM.generate()`` runs, which is where keras-hub traces its generate
graph. The ``GENERATE`` wraps entry tells them.
"""

import contextlib
import functools
import threading

from .part import Hook

__all__ = ["GENERATE", "as_in_generate", "inside_generate", "scoped"]


@contextlib.contextmanager
def scoped(scope, name, value):
    """``scope.name`` (a thread-local flag, False when unset) is ``value``
    inside the block and its outer value again after it: how a wrapped
    function tells the functions it calls that they run inside it."""
    outer = getattr(scope, name, False)
    setattr(scope, name, value)
    try:
        yield
    finally:
        setattr(scope, name, outer)


_generate = threading.local()  # .running: inside CausalLM.generate()


def inside_generate():
    """Whether this thread runs a keras-hub ``CausalLM.generate()``."""
    return getattr(_generate, "running", False)


def as_in_generate():
    """A block that counts as inside ``generate()`` (tools, tests)."""
    return scoped(_generate, "running", True)


def _generate_wrapper(stock_generate):
    @functools.wraps(stock_generate)
    def generate(*args, **kwargs):
        with as_in_generate():
            return stock_generate(*args, **kwargs)

    return generate


# A ``wraps`` entry: the parts that ask ``inside_generate()`` list it (it
# is installed once, whichever of them are on).
GENERATE = (
    Hook("keras_hub.src.models.causal_lm", "CausalLM.generate"),
    _generate_wrapper,
)
