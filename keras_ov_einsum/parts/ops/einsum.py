"""The einsum part: an einsum whose one operand is a constant kernel (a
Keras variable, as in every ``EinsumDense``) becomes a MatMul on a view of
that kernel (``einsum/``: parse, plan, build)."""

from ...core.graph import keras_result, stock_node
from ...core.outcome import declined
from ...core.part import BackendHook, Part
from ...einsum.build import build_lowered, plan_einsum

__all__ = ["EINSUM", "PART", "rewrite_einsum"]


def rewrite_einsum(result, subscripts, *operands, **kwargs):
    """Stock's ``einsum`` result rebuilt as a MatMul: its Einsum node's
    (already converted) inputs and its final Convert are kept, so dtypes
    and shapes are stock's."""
    einsum, convert_to = stock_node(result, "Einsum")
    if einsum is None:
        return declined("the stock path built no Einsum")
    planned = plan_einsum(subscripts, einsum.input_values())
    if not planned:
        return planned
    return keras_result(build_lowered(planned), convert_to)


def _operands(subscripts, *operands, **kwargs):
    return operands


def _equation(subscripts, *operands, **kwargs):
    return subscripts


EINSUM = BackendHook("numpy.einsum", operands=_operands)

PART = Part(
    name="einsum",
    summary="an einsum with a constant kernel (every EinsumDense) as a "
    "MatMul on a view of the kernel",
    hooks=(EINSUM,),
    rewrite=rewrite_einsum,
    label=_equation,
    sources=(
        "einsum/equation.py",
        "core/kernel.py",
        "einsum/plan.py",
        "einsum/build.py",
    ),
)
