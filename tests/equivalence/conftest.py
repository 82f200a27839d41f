"""Hypothesis profiles for the equivalence suite.

``ci`` (the default) keeps the whole suite within minutes on 2 cores;
``thorough`` searches much longer. Choose with KERAS_OV_EINSUM_PROFILE.
"""

import os

from hypothesis import HealthCheck, settings

# Compiling an OpenVINO model per example is slow and its time varies:
# no deadline, and slow data generation is expected, not a health problem.
_COMMON = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("ci", max_examples=150, **_COMMON)
settings.register_profile("thorough", max_examples=10_000, **_COMMON)
settings.load_profile(os.environ.get("KERAS_OV_EINSUM_PROFILE", "ci"))
