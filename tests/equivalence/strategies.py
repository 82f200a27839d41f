"""Hypothesis strategies: two-operand einsums with their shapes and dtypes.

Every label gets a role, and the role decides where it appears:

    batch      x, kernel, output      rows      x, output
    contracted x, kernel              columns   kernel, output
    x-summed   x only                 k-summed  kernel only

Operand and output orders are shuffled. A case may also repeat a label
inside one operand (a diagonal), put an ellipsis anywhere in the variable
operand, the output and (rarely: it is declined) the kernel, give a label
size 1 in x where the kernel has more (NumPy broadcasts it), use NumPy's
implicit output, put the kernel first, leave axes of the variable operand
dynamic, and reach the kernel through a view (see builders.KERNEL_VIEWS).
Labels include upper-case letters, the ones the parser also gives to
ellipsis axes.
"""

import dataclasses
import itertools
import os

from hypothesis import strategies as st

from .builders import KERNEL_VIEWS

__all__ = [
    "DTYPES",
    "DTYPE_PAIRS",
    "EinsumCase",
    "MAX_SIZE",
    "Mismatch",
    "SharedKernel",
    "einsum_cases",
    "mismatched_cases",
    "shared_kernels",
]

# Every dimension the strategies draw is at most this (STYLE: JAX's tests
# cap sizes so CI stays bounded). Products of up to 5 labels stay small.
MAX_SIZE = int(os.environ.get("KERAS_OV_EINSUM_MAX_SIZE", "4"))

DTYPES = ("float32", "float16", "bfloat16", "int8", "int32")
# (variable dtype, kernel dtype): every ordered pair; the stock backend
# promotes the mixed ones (int8 x int8 computes in int32, float16 x
# bfloat16 in float32, an integer and a float in the float type).
DTYPE_PAIRS = tuple(itertools.product(DTYPES, DTYPES))

# role -> the most labels of it in one case, in the order they are drawn
ROLE_COUNTS = {
    "contracted": 3,
    "columns": 3,
    "rows": 3,
    "batch": 2,
    "x_summed": 1,
    "k_summed": 1,
}
IN_X = {"batch", "contracted", "rows", "x_summed"}
IN_KERNEL = {"batch", "contracted", "columns", "k_summed"}
IN_OUTPUT = {"batch", "rows", "columns"}
LABELS = "abcdefghijklmnABC"
ELLIPSIS = "..."


@dataclasses.dataclass(frozen=True)
class EinsumCase:
    equation: str
    x_shape: tuple
    kernel_shape: tuple
    dynamic: tuple  # per axis of x: built as a dynamic (-1) dimension
    kernel_first: bool
    x_dtype: str = "float32"
    kernel_dtype: str = "float32"
    kernel_view: str = "variable"

    @property
    def operand_shapes(self):
        if self.kernel_first:
            return (self.kernel_shape, self.x_shape)
        return (self.x_shape, self.kernel_shape)


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """A case whose variable operand disagrees with the kernel on the size
    of one label: ``case.x_shape`` is what is fed, ``axis`` is the axis of
    x that disagrees; it is dynamic in the graph when ``case.dynamic`` says
    so, and then the error can only come when the model runs."""

    case: EinsumCase
    axis: int


def _positive(**bounds):
    for name, value in bounds.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _choices(name, given, allowed):
    given = tuple(given)
    if not given:
        raise ValueError(f"{name} must not be empty")
    unknown = [value for value in given if value not in allowed]
    if unknown:
        raise ValueError(f"{name}: unknown {unknown!r}; known: {allowed!r}")
    return given


def _check(
    max_labels, max_size, max_ellipsis, dtype_pairs, kernel_views, flags
):
    _positive(max_labels=max_labels, max_size=max_size)
    if max_labels > len(LABELS):
        raise ValueError(
            f"max_labels must be at most {len(LABELS)}, got {max_labels!r}"
        )
    if not isinstance(max_ellipsis, int) or not 0 <= max_ellipsis <= 3:
        raise ValueError(f"max_ellipsis must be 0..3, got {max_ellipsis!r}")
    pairs = _choices(
        "dtype_pairs", (tuple(pair) for pair in dtype_pairs), DTYPE_PAIRS
    )
    views = _choices("kernel_views", kernel_views, tuple(KERNEL_VIEWS))
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool, got {value!r}")
    return pairs, views


def _one_in(draw, n):
    """True about once in ``n`` draws. (Hypothesis draws the low end of an
    integer range far more often than uniformly, and the last element of a
    ``sampled_from`` a little less: so the rare outcome is the last one.)"""
    return draw(st.sampled_from(range(n))) == n - 1


def _insert(draw, labels, token):
    """``labels`` with ``token`` inserted at a drawn position."""
    at = draw(st.integers(0, len(labels)))
    return labels[:at] + [token] + labels[at:]


@st.composite
def _parts(draw, max_labels, max_size, max_ellipsis, repeated, kernel_dots):
    """The labels of x, the kernel and the output, and every size."""
    # Labels per role, drawn within max_labels in all. Mostly (3 in 4)
    # matrix products with K, N > 1, the forms the lowering is for; the
    # rest keep the declined forms covered too.
    matrix = not _one_in(draw, 4)
    budget, roles = max_labels, []
    for role, most in ROLE_COUNTS.items():
        least = 1 if matrix and role in ("contracted", "columns") else 0
        count = draw(st.integers(min(least, budget), min(most, budget)))
        roles += [role] * count
        budget -= count
    labels = draw(st.permutations(LABELS))[: len(roles)]
    roles = dict(zip(labels, roles))
    sizes = {}
    for label, role in roles.items():
        # K, N and batch sizes of 1 are declined (see plan.py): rarer.
        first = role in ("contracted", "columns") and label == next(
            other for other in labels if roles[other] == role
        )
        large = (matrix and first) or (role == "batch" and not _one_in(draw, 4))
        sizes[label] = draw(
            st.integers(min(2 if large else 1, max_size), max_size)
        )
    x = draw(st.permutations([x for x in labels if roles[x] in IN_X]))
    kernel = draw(st.permutations([k for k in labels if roles[k] in IN_KERNEL]))
    output = draw(st.permutations([o for o in labels if roles[o] in IN_OUTPUT]))
    if not x or not kernel:
        # A scalar operand: keep the case, with one fresh label each side.
        spare = [label for label in LABELS if label not in labels]
        if not x:
            x = [spare.pop()]
            sizes[x[0]] = draw(st.integers(1, max_size))
            output = _insert(draw, output, x[0])
        if not kernel:
            kernel = [spare.pop()]
            sizes[kernel[0]] = draw(st.integers(1, max_size))
            output = _insert(draw, output, kernel[0])
    if repeated and _one_in(draw, 6):
        # A diagonal in the variable operand: stock only.
        x = _insert(draw, x, draw(st.sampled_from(x)))
    if repeated and _one_in(draw, 12):
        kernel = _insert(draw, kernel, draw(st.sampled_from(kernel)))

    # An ellipsis in x (and the output) in one case in three, in the
    # kernel (always declined) in one in twelve; it may be of no axis.
    # Broadcast axes are right-aligned, as in NumPy; either side may have
    # a 1 where the other has a size.
    x_dots = max_ellipsis > 0 and _one_in(draw, 3)
    kernel_dots = kernel_dots and _one_in(draw, 12)
    x_rank = draw(st.integers(0, max_ellipsis)) if x_dots else 0
    kernel_rank = draw(st.integers(0, max_ellipsis)) if kernel_dots else 0
    broadcast = [
        draw(st.integers(1, max_size)) for _ in range(max(x_rank, kernel_rank))
    ]

    def broadcast_sizes(rank):
        return [
            1 if size > 1 and _one_in(draw, 4) else size
            for size in broadcast[len(broadcast) - rank :]
        ]

    x_broadcast = broadcast_sizes(x_rank) if x_dots else []
    kernel_broadcast = broadcast_sizes(kernel_rank) if kernel_dots else []
    if x_dots:
        x = _insert(draw, x, ELLIPSIS)
    if kernel_dots:
        kernel = _insert(draw, kernel, ELLIPSIS)
    if x_dots or kernel_dots:
        output = _insert(draw, output, ELLIPSIS)
    return x, kernel, output, sizes, x_broadcast, kernel_broadcast


def _shape(term, sizes, broadcast):
    shape = []
    for token in term:
        shape.extend(broadcast if token == ELLIPSIS else [sizes[token]])
    return tuple(shape)


@st.composite
def einsum_cases(
    draw,
    *,
    max_labels=6,
    max_size=MAX_SIZE,
    max_ellipsis=2,
    dtype_pairs=(("float32", "float32"),),
    kernel_views=("variable",),
    allow_repeated=True,
    allow_kernel_ellipsis=True,
):
    """Draw an ``EinsumCase`` whose kernel operand is meant to be constant.

    Up to ``max_labels`` named labels, of sizes 1..``max_size``; up to
    ``max_ellipsis`` broadcast axes; the (x, kernel) dtypes drawn from
    ``dtype_pairs`` (float32 for half of the cases when it is among them:
    exact comparisons find the most) and the kernel view from
    ``kernel_views``. ``allow_repeated`` allows diagonals,
    ``allow_kernel_ellipsis`` an ellipsis in the kernel.
    """
    pairs, views = _check(
        max_labels,
        max_size,
        max_ellipsis,
        dtype_pairs,
        kernel_views,
        dict(
            allow_repeated=allow_repeated,
            allow_kernel_ellipsis=allow_kernel_ellipsis,
        ),
    )
    return draw(
        _cases(
            max_labels,
            max_size,
            max_ellipsis,
            pairs,
            views,
            allow_repeated,
            allow_kernel_ellipsis,
        )
    )


@st.composite
def _cases(
    draw, max_labels, max_size, max_ellipsis, pairs, views, repeated, dots
):
    parts = draw(_parts(max_labels, max_size, max_ellipsis, repeated, dots))
    x, kernel, output, sizes, x_broadcast, kernel_broadcast = parts
    x_term, kernel_term = "".join(x), "".join(kernel)
    kernel_first = draw(st.booleans())
    terms = [kernel_term, x_term] if kernel_first else [x_term, kernel_term]
    if _one_in(draw, 4):
        equation = ",".join(terms)  # implicit output: NumPy's rule applies
    else:
        equation = ",".join(terms) + "->" + "".join(output)
    # NumPy (and stock OpenVINO) broadcast a label of size 1 in one
    # operand against its size in the other: a valid einsum, and one the
    # lowering must decline.
    x_sizes = dict(sizes)
    for label in sorted(set(x) & set(kernel) - {ELLIPSIS}):
        if sizes[label] > 1 and _one_in(draw, 12):
            x_sizes[label] = 1
    x_shape = _shape(x, x_sizes, x_broadcast)
    if ("float32", "float32") in pairs and draw(st.booleans()):
        x_dtype, kernel_dtype = "float32", "float32"
    else:
        x_dtype, kernel_dtype = draw(st.sampled_from(pairs))
    return EinsumCase(
        equation=equation,
        x_shape=x_shape,
        kernel_shape=_shape(kernel, sizes, kernel_broadcast),
        dynamic=tuple(
            # A dynamic label shared with the kernel is declined: rarer.
            _one_in(draw, 6 if token in kernel else 2)
            for token in x
            for _ in (x_broadcast if token == ELLIPSIS else [token])
        ),
        kernel_first=kernel_first,
        x_dtype=x_dtype,
        kernel_dtype=kernel_dtype,
        kernel_view=draw(st.sampled_from(views)),
    )


@st.composite
def mismatched_cases(draw, *, max_labels=4, max_size=MAX_SIZE):
    """A ``Mismatch``: an einsum whose x gives a label shared with the
    kernel another size (static, or dynamic and wrong only at run time)."""
    _positive(max_labels=max_labels, max_size=max_size)
    x, kernel, output, sizes, _, _ = draw(
        _parts(max_labels, max_size, 0, False, False)
    )
    shared = [
        axis
        for axis, label in enumerate(x)
        if label in kernel and label != ELLIPSIS
    ]
    if not shared:
        # Make one: the first kernel label is contracted against x too.
        x = _insert(draw, x, kernel[0])
        shared = [x.index(kernel[0])]
    axis = draw(st.sampled_from(shared))
    wrong = draw(
        st.sampled_from(
            [n for n in range(1, max_size + 2) if n != sizes[x[axis]]]
        )
    )
    x_shape = list(_shape(x, sizes, []))
    x_shape[axis] = wrong
    dynamic = [draw(st.booleans()) for _ in x_shape]
    kernel_first = draw(st.booleans())
    terms = ["".join(x), "".join(kernel)]
    if kernel_first:
        terms.reverse()
    case = EinsumCase(
        equation=",".join(terms) + "->" + "".join(output),
        x_shape=tuple(x_shape),
        kernel_shape=_shape(kernel, sizes, []),
        dynamic=tuple(dynamic),
        kernel_first=kernel_first,
    )
    return Mismatch(case=case, axis=axis)


@dataclasses.dataclass(frozen=True)
class SharedKernel:
    """Several einsums of one kernel in one graph (tied weights): each
    contracts other kernel axes, so each may need its own layout."""

    kernel_shape: tuple
    equations: tuple
    x_shapes: tuple


@st.composite
def shared_kernels(draw, *, max_rank=4, max_size=MAX_SIZE, max_einsums=3):
    """A ``SharedKernel``: 2..``max_einsums`` projections of a kernel of
    rank 2..``max_rank`` with sizes 2..``max_size`` (no declined sizes)."""
    _positive(max_rank=max_rank, max_size=max_size, max_einsums=max_einsums)
    if max_rank < 2 or max_size < 2 or max_einsums < 2:
        raise ValueError("max_rank, max_size and max_einsums must be >= 2")
    kernel = "abcd"[: draw(st.integers(2, min(max_rank, 4)))]
    sizes = {label: draw(st.integers(2, max_size)) for label in kernel}
    equations, x_shapes = [], []
    for _ in range(draw(st.integers(2, max_einsums))):
        contracted = draw(
            st.lists(
                st.sampled_from(kernel),
                min_size=1,
                max_size=len(kernel) - 1,
                unique=True,
            )
        )
        rows = "xy"[: draw(st.integers(1, 2))]
        for row in rows:
            sizes[row] = draw(st.integers(1, max_size))
        x = draw(st.permutations(list(rows) + contracted))
        columns = [label for label in kernel if label not in contracted]
        output = draw(st.permutations(list(rows) + columns))
        equations.append(f"{''.join(x)},{kernel}->{''.join(output)}")
        x_shapes.append(tuple(sizes[label] for label in x))
    return SharedKernel(
        kernel_shape=tuple(sizes[label] for label in kernel),
        equations=tuple(equations),
        x_shapes=tuple(x_shapes),
    )
