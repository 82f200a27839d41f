"""Build no Convert from an operand to the type it already has.

Keras's OpenVINO backend brings the two operands of a binary op (``add``,
``multiply``, ``matmul``, the tensor operators, ...) to one type with
``core.align_operand_types``, which compares each operand's Keras dtype
name (``"float32"``) with the OpenVINO result type (``Type.f32``). A
``str`` never equals an ``openvino.Type``, so stock converts both operands
on every call, nearly always to their own type: a good part of a generate
graph's operations (docs/lowering.md counts them), which OpenVINO removes
while compiling, after the passes before that have walked them.

The part runs the stock function (its checks, errors and result type) and
hands back an operand itself wherever stock's Convert targets that
operand's own type, the identity: values, dtypes and shapes are stock's.
A Convert that changes the type is kept.
"""

from ...core.outcome import lowered
from ...core.part import BackendHook, Part

__all__ = ["PART", "drop_identity_converts", "is_identity_convert"]


def is_identity_convert(node):
    """Whether ``node`` is a Convert to the type its input already has."""
    return (
        node.get_type_name() == "Convert"
        and node.get_output_element_type(0)
        == node.input_value(0).get_element_type()
    )


def drop_identity_converts(operands, aligned):
    """``aligned`` (stock's outputs for ``operands``) with every
    ``Convert(operand)`` to the operand's own type replaced by the operand.

    Returns the outputs as a tuple, and how many Converts were left out.
    """
    kept, dropped = [], 0
    for operand, output in zip(operands, aligned, strict=True):
        node = output.get_node()
        identity = is_identity_convert(node) and node.input_value(0) == operand
        kept.append(operand if identity else output)
        dropped += identity
    return tuple(kept), dropped


def rewrite_align_operand_types(aligned, x1, x2, *args, **kwargs):
    """Stock's aligned operands without its Converts to their own type.
    Older keras takes no ``force_float``: arguments pass through as given."""
    kept, dropped = drop_identity_converts((x1, x2), aligned)
    if not dropped:
        return None
    return lowered(kept, "Converts to the operand's own type", dropped)


PART = Part(
    name="align_types",
    summary="no Convert of a binary op's operand to the type it already has",
    # Every binding of it: core.py's operators call it by its own name,
    # numpy.py imports it as _align_operand_types (core/backend.py).
    hooks=(BackendHook("align_operand_types"),),
    rewrite=rewrite_align_operand_types,
    label="align_operand_types: Converts to the operand's own type left out",
    counted=True,
    # Upstream, align_operand_types itself is fixed in place
    # (upstream/generator.py).
    sources=(),
)
