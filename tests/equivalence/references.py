"""Everything the suite compares against, and every tolerance, in one place.

``numpy.einsum`` in float64 is the ground truth; TensorFlow, PyTorch and JAX
are called directly in this process; Keras under another backend runs in a
subprocess (see test_frameworks.py and test_models.py). Each comparison
goes through ``assert_close`` with a tolerance from ``TOLERANCE``.
"""

import hypothesis
import ml_dtypes
import numpy as np

__all__ = [
    "FRAMEWORKS",
    "TOLERANCE",
    "assert_close",
    "assert_same_error",
    "event",
    "framework_einsum",
    "note",
    "numpy_reference",
    "values",
]

FRAMEWORKS = ("tensorflow", "torch", "jax")

# What is compared -> (rtol, atol); atol is relative to the largest
# magnitude of the expected result (at least 1), so that sums of many
# products are judged by their own scale.
TOLERANCE = {
    # An einsum result in its dtype: one rounding of each product and sum.
    # The inputs are multiples of 1/4 in -3..3.75 (see ``values``): every
    # float32 result is exact, whatever the order of the sums, so 1e-5
    # leaves room only for a reordered float16/bfloat16 rounding.
    "float32": (1e-5, 1e-5),
    "float16": (2e-2, 2e-2),
    "bfloat16": (5e-2, 5e-2),
    "int32": (0, 0),
    "int64": (0, 0),
    # GPT-2 logits, float32, OpenVINO with and without the fix: the same
    # graph but for the projections, so only reordered float32 sums.
    "logits, fix vs stock": (1e-5, 1e-5),
    # GPT-2 logits, float32, across backends: each framework has its own
    # kernels (and softmax, layer norm, gelu), a few float32 ulps apart.
    "logits, across backends": (1e-4, 1e-4),
}


def values(shape, dtype, seed):
    """Small integers: exact in every dtype here, so any mismatch is a bug
    in the lowering, not rounding (floats get a fraction on top)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(-3, 4, shape).astype("float64")
    if dtype in ("float32", "float16", "bfloat16"):
        data = data + rng.integers(0, 4, shape) / 4.0
    numpy_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    return data.astype(numpy_dtype)


def numpy_reference(equation, *operands):
    """The ground truth: NumPy's einsum of the operands in float64."""
    return np.einsum(equation, *[op.astype("float64") for op in operands])


def assert_close(got, want, kind, context=""):
    """``got`` equals ``want`` within ``TOLERANCE[kind]``, shapes equal."""
    rtol, atol = TOLERANCE[kind]
    want = np.asarray(want, dtype="float64")
    got = np.asarray(got, dtype="float64")
    assert got.shape == want.shape, (got.shape, want.shape, context)
    np.testing.assert_allclose(
        got,
        want,
        rtol=rtol,
        atol=atol * max(1.0, float(np.abs(want).max(initial=0))),
        err_msg=context,
    )


def assert_same_error(error, call):
    """``call()`` raises exactly the type of ``error`` (the stock error)."""
    try:
        call()
    except Exception as raised:
        assert type(raised) is type(error), (raised, error)
    else:
        raise AssertionError(f"stock raised {error!r}, this did not")


def framework_einsum(framework, equation, *operands, dtype="float32"):
    """``einsum`` of TensorFlow, PyTorch or JAX, called in this process on
    the operands converted to ``dtype``; returned as a float64 array."""
    if framework == "tensorflow":
        import tensorflow as tf

        tensors = [tf.cast(op.astype("float64"), dtype) for op in operands]
        return tf.cast(tf.einsum(equation, *tensors), "float64").numpy()
    if framework == "torch":
        import torch

        tensors = [
            torch.from_numpy(np.ascontiguousarray(op, "float64")).to(
                getattr(torch, dtype)
            )
            for op in operands
        ]
        return torch.einsum(equation, *tensors).double().numpy()
    if framework == "jax":
        import jax.numpy as jnp

        tensors = [jnp.asarray(op.astype("float64"), dtype) for op in operands]
        return np.asarray(jnp.einsum(equation, *tensors), "float64")
    raise ValueError(f"unknown framework {framework!r}")


def event(text):
    """Hypothesis's ``event``; nothing outside a Hypothesis test (the
    helpers here also serve plain pytest tests)."""
    if hypothesis.currently_in_test_context():
        hypothesis.event(text)


def note(text):
    """Hypothesis's ``note``; nothing outside a Hypothesis test."""
    if hypothesis.currently_in_test_context():
        hypothesis.note(text)
