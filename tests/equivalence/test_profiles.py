"""The profile CI runs draws the same cases on every run."""

import os

import pytest
from hypothesis import settings


def test_ci_profile_is_derandomized():
    if os.environ.get("KERAS_OV_EINSUM_PROFILE", "ci") != "ci":
        pytest.skip("another profile was chosen")
    # Hypothesis's own seed, not a random one, and no replay of examples
    # a local run saved: a clean clone and a used checkout draw alike.
    assert settings.default.derandomize
    assert settings.default.database is None
