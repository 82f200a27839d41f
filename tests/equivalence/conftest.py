"""Hypothesis profiles for the equivalence suite, chosen with the
KERAS_OV_EINSUM_PROFILE environment variable (see CONTRIBUTING.md).

``ci`` (the default, what ``./run.sh test`` runs) draws the same cases on
every run (``derandomize``, no example database): the suite cannot pass or
fail by chance, and every case that once failed is pinned with ``@example``.
``explore`` draws new cases on every run, to find new failures locally;
``thorough`` searches much longer (new cases, at least 10,000 examples for
every property that compiles one model pair per example).
"""

import os

# The backend is fixed at the first `import keras`: before anything here
# or in the test modules imports it (tests/conftest.py does the same).
os.environ.setdefault("KERAS_BACKEND", "openvino")

from hypothesis import HealthCheck, settings  # noqa: E402

__all__ = ["PROFILES"]

# Compiling an OpenVINO model per example is slow and its time varies:
# no deadline, and slow data generation is expected, not a health problem.
_COMMON = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
# profile -> its settings (test_frameworks' property, which calls three
# frameworks per example, runs a fifth of the examples)
PROFILES = {
    "ci": dict(max_examples=300, derandomize=True, database=None),
    "explore": dict(max_examples=300),
    "thorough": dict(max_examples=10_000),
}

for _name, _settings in PROFILES.items():
    settings.register_profile(_name, **_settings, **_COMMON)
_chosen = os.environ.get("KERAS_OV_EINSUM_PROFILE", "ci")
if _chosen not in PROFILES:
    raise ValueError(
        f"KERAS_OV_EINSUM_PROFILE={_chosen!r}; known: {sorted(PROFILES)}"
    )
settings.load_profile(_chosen)
