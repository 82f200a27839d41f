"""Hypothesis strategies: two-operand einsums with their shapes and dtypes.

Every label gets a role, and the role decides where it appears:

    batch      x, kernel, output      rows      x, output
    contracted x, kernel              columns   kernel, output
    x-summed   x only                 k-summed  kernel only

Operand and output orders are shuffled, and a case may also repeat a label
inside one operand (a diagonal), put an ellipsis in front of the variable
operand, use NumPy's implicit output, or put the kernel first.
"""

import dataclasses
import os

from hypothesis import strategies as st

__all__ = ["EinsumCase", "einsum_cases", "DTYPE_PAIRS", "MAX_SIZE"]

# Array sizes are capped so that CI stays bounded (STYLE: JAX's tests do so).
MAX_SIZE = int(os.environ.get("KERAS_OV_EINSUM_MAX_SIZE", "4"))

ROLES = ("batch", "contracted", "rows", "columns", "x_summed", "k_summed")
IN_X = {"batch", "contracted", "rows", "x_summed"}
IN_KERNEL = {"batch", "contracted", "columns", "k_summed"}
IN_OUTPUT = {"batch", "rows", "columns"}

# (variable dtype, kernel dtype): same types and the pairs Keras promotes.
DTYPE_PAIRS = [
    ("float32", "float32"),
    ("float32", "float16"),
    ("float32", "bfloat16"),
    ("float16", "float16"),
    ("bfloat16", "bfloat16"),
    ("float16", "float32"),
    ("float32", "int8"),
    ("int8", "int8"),
    ("int32", "int32"),
    ("int32", "float32"),
]


@dataclasses.dataclass(frozen=True)
class EinsumCase:
    equation: str
    x_shape: tuple
    kernel_shape: tuple
    dynamic: tuple  # per axis of x: built as a dynamic (-1) dimension
    kernel_first: bool
    x_dtype: str = "float32"
    kernel_dtype: str = "float32"

    @property
    def operand_shapes(self):
        if self.kernel_first:
            return (self.kernel_shape, self.x_shape)
        return (self.x_shape, self.kernel_shape)


def _check_bounds(**bounds):
    for name, value in bounds.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


@st.composite
def einsum_cases(
    draw,
    *,
    max_labels=5,
    max_size=MAX_SIZE,
    max_ellipsis=2,
    dtype_pairs=(("float32", "float32"),),
    allow_repeated=True,
):
    """Draw an ``EinsumCase`` whose kernel operand is meant to be constant."""
    _check_bounds(max_labels=max_labels, max_size=max_size)
    if max_ellipsis < 0:
        raise ValueError(f"max_ellipsis must be >= 0, got {max_ellipsis!r}")
    count = draw(st.integers(1, max_labels))
    labels = draw(
        st.lists(
            st.sampled_from("abcdefghijklmnop"),
            min_size=count,
            max_size=count,
            unique=True,
        )
    )
    roles = {label: draw(st.sampled_from(ROLES)) for label in labels}
    sizes = {label: draw(st.integers(1, max_size)) for label in labels}
    if draw(st.integers(0, 3)):
        # Mostly matrix products with K, N > 1, the forms the lowering is
        # for; the rest keep the declined forms covered too.
        roles[labels[0]] = "contracted"
        sizes[labels[0]] = draw(st.integers(min(2, max_size), max_size))
        if len(labels) > 1:
            roles[labels[1]] = "columns"
            sizes[labels[1]] = draw(st.integers(min(2, max_size), max_size))
    x = draw(st.permutations([x for x in labels if roles[x] in IN_X]))
    kernel = draw(st.permutations([k for k in labels if roles[k] in IN_KERNEL]))
    output = draw(st.permutations([o for o in labels if roles[o] in IN_OUTPUT]))
    if not x or not kernel:
        # A scalar operand: keep the case, with one label each side.
        x, kernel = x or ["z"], kernel or ["y"]
        sizes.setdefault("z", 2)
        sizes.setdefault("y", 3)
        output = output + [extra for extra in ("z", "y") if extra not in output]
    if allow_repeated and draw(st.booleans()) and draw(st.booleans()):
        # A diagonal: one label twice in the variable operand.
        x = x + [draw(st.sampled_from(x))]

    ellipsis = draw(st.integers(0, max_ellipsis))
    broadcast = [draw(st.integers(1, max_size)) for _ in range(ellipsis)]
    x_term = "".join(x)
    out_term = "".join(output)
    if ellipsis or draw(st.booleans()) and draw(st.booleans()):
        x_term = "..." + x_term
        out_term = "..." + out_term
    kernel_term = "".join(kernel)
    kernel_first = draw(st.booleans())
    terms = [kernel_term, x_term] if kernel_first else [x_term, kernel_term]
    if draw(st.booleans()) and draw(st.booleans()):
        equation = ",".join(terms)  # implicit output: NumPy's rule applies
    else:
        equation = ",".join(terms) + "->" + out_term

    x_shape = tuple(broadcast) + tuple(sizes[label] for label in x)
    kernel_shape = tuple(sizes[label] for label in kernel)
    dynamic = tuple(draw(st.booleans()) for _ in x_shape)
    x_dtype, kernel_dtype = draw(st.sampled_from(list(dtype_pairs)))
    return EinsumCase(
        equation=equation,
        x_shape=x_shape,
        kernel_shape=kernel_shape,
        dynamic=dynamic,
        kernel_first=kernel_first,
        x_dtype=x_dtype,
        kernel_dtype=kernel_dtype,
    )
