"""What the stack a test runs on has (run.sh: the keras-3.15 stack carries
the other Keras backends and the harness; keras-nightly and keras-3.12
carry keras, keras-hub and openvino alone)."""

import importlib.util

import pytest

__all__ = ["needs_frameworks", "needs_harness"]


def _installed(*names):
    return all(importlib.util.find_spec(name) is not None for name in names)


needs_frameworks = pytest.mark.skipif(
    not _installed("tensorflow", "torch", "jax"),
    reason="TensorFlow, PyTorch and JAX are installed on the keras-3.15 "
    "stack only",
)
needs_harness = pytest.mark.skipif(
    not _installed("jax", "openvino_genai", "optimum"),
    reason="the harness runs from the keras-3.15 stack's venv (JAX builds "
    "its presets, openvino-genai and optimum-intel its native rows)",
)
