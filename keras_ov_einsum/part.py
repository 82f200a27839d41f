"""What a part of the patch is, and the glue every part's rewrite shares.

A part is one module that ends with a ``PART = Part(...)`` declaration: its
``enable()`` switch, the backend functions it hooks and its rewrite. The
rewrite of a hooked function ``f(*args, **kwargs)`` is called as
``rewrite(stock_result, *args, **kwargs)`` after the stock ``f`` ran, and
answers with an ``Outcome`` (``outcome.py``): the value to return instead
of stock's, or the reason it declined; or None when the call is not its
case. A part may also build a call's result without stock's
(``replace``), where tracing stock's operations only to drop them costs
time. ``patch.py`` installs the parts listed in ``parts.py`` and does the
rest (stock first, fall back on any error, record for ``explain()``).
"""

import contextlib
import dataclasses
import functools
import importlib
import threading

from .outcome import Outcome

__all__ = [
    "CORE",
    "GENERATE",
    "Hook",
    "NUMPY",
    "Part",
    "as_in_generate",
    "inside_generate",
    "keras_result",
    "scoped",
    "stock_node",
]

NUMPY = "keras.src.backend.openvino.numpy"
CORE = "keras.src.backend.openvino.core"


def _every_argument(*args, **kwargs):
    return args


@dataclasses.dataclass(frozen=True)
class Hook:
    """A function the patch replaces: ``attribute`` of ``module`` (dotted
    for a class attribute, e.g. ``"Core.compile_model"``).

    ``operands(*args, **kwargs)`` picks the tensors of a call whose shapes
    and dtypes ``explain()`` shows.
    """

    module: str
    attribute: str
    operands: object = _every_argument

    def owner(self):
        """The module or class that holds the function."""
        owner = importlib.import_module(self.module)
        for name in self.attribute.split(".")[:-1]:
            owner = getattr(owner, name)
        return owner

    @property
    def name(self):
        return self.attribute.split(".")[-1]

    def __str__(self):
        return f"{self.module}.{self.attribute}"


@dataclasses.dataclass(frozen=True)
class Part:
    """One lowering, switched on and off by ``enable(name=...)``.

    ``rewrite``: see the module docstring. Several parts may hook one
    function; their rewrites are tried in the registry's order and the
    first that lowers the call wins.
    ``label``: ``explain()``'s name for a call, a string or a function of
    the call's arguments (an einsum is named by its equation).
    ``counted``: ``explain()`` counts the part's lowerings (the Outcome's
    ``count``) instead of listing them: for parts that act on most calls.
    ``requires``: the parts that must be on with it.
    ``wraps``: ``(Hook, factory)`` pairs for functions replaced otherwise:
    ``factory(original)`` returns the replacement (``original`` as the
    owner holds it: a classmethod object for a classmethod).
    ``sources``: this package's modules that carry the part into the keras
    patch (``upstream.py``), in dependency order; None: not upstreamed.
    ``replace``: called as ``replace(*args, **kwargs)`` before stock, for a
    part whose rewrite reads nothing of stock's result but its type: a
    lowered ``Outcome`` is returned instead of stock's result, which is
    then never built (a trace spends less time); None runs stock and the
    rewrite as usual, so a replace takes only the calls stock would
    answer (no stock error is lost) and leaves every decline, with its
    reason, to the rewrite.
    """

    name: str
    summary: str
    hooks: tuple = ()
    rewrite: object = None
    label: object = None
    default: bool = True
    counted: bool = False
    requires: tuple = ()
    wraps: tuple = ()
    sources: tuple = None
    replace: object = None

    def label_of(self, *args, **kwargs):
        if callable(self.label):
            return self.label(*args, **kwargs)
        return self.label


def stock_node(result, type_name):
    """The ``type_name`` node behind a stock result (a Keras tensor), and
    the element type of stock's final Convert after it (None: none)."""
    final = result.output.get_node()
    if final.get_type_name() == "Convert":
        node = final.input_value(0).get_node()
        if node.get_type_name() == type_name:
            return node, final.get_output_element_type(0)
    if final.get_type_name() == type_name:
        return final, None
    return None, None


def keras_result(outcome, convert_to=None):
    """``outcome`` with its output handed back as stock's result is: after
    stock's final Convert (``convert_to``), as a Keras tensor. A declined
    outcome or None passes through."""
    if not outcome:
        return outcome
    import openvino.opset13 as ov_opset
    from keras.src.backend.openvino.core import OpenVINOKerasTensor

    output = outcome.output
    if convert_to is not None:
        output = ov_opset.convert(output, convert_to).output(0)
    return Outcome(OpenVINOKerasTensor(output), outcome.description)


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
    """Whether this thread runs a keras-hub ``CausalLM.generate()`` (where
    it traces its graph), as the ``GENERATE`` wrap tells: the parts that
    may change float32 rounding where the results are token ids ask."""
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


# A ``wraps`` entry: the parts that ask ``inside_generate()`` list it.
GENERATE = (
    Hook("keras_hub.src.models.causal_lm", "CausalLM.generate"),
    _generate_wrapper,
)
