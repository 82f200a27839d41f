"""Everything the suite compares against, and the tolerances, in one place.

``numpy.einsum`` in float64 is the ground truth. Tolerances are per result
dtype and cover one rounding of each product and sum in that type.
"""

import ml_dtypes
import numpy as np

__all__ = [
    "TOLERANCE",
    "assert_close",
    "numpy_reference",
    "values",
    "framework_einsum",
]

# result dtype -> (rtol, atol)
TOLERANCE = {
    "float32": (1e-5, 1e-5),
    "float16": (2e-2, 2e-2),
    "bfloat16": (5e-2, 5e-2),
    "int32": (0, 0),
    "int64": (0, 0),
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
    return np.einsum(equation, *[op.astype("float64") for op in operands])


def assert_close(got, want, dtype, context=""):
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(
        np.asarray(got, dtype="float64"),
        np.asarray(want, dtype="float64"),
        rtol=rtol,
        atol=atol * max(1.0, float(np.abs(want).max(initial=0))),
        err_msg=context,
    )


def framework_einsum(framework, equation, *operands):
    """``einsum`` of TensorFlow, PyTorch or JAX, called in this process."""
    if framework == "tensorflow":
        import tensorflow as tf

        return tf.einsum(equation, *operands).numpy()
    if framework == "torch":
        import torch

        tensors = [
            torch.from_numpy(np.ascontiguousarray(op)) for op in operands
        ]
        return torch.einsum(equation, *tensors).numpy()
    if framework == "jax":
        import jax.numpy as jnp

        return np.asarray(jnp.einsum(equation, *operands))
    raise ValueError(f"unknown framework {framework!r}")
