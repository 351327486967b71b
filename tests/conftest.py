"""Shared test setup: Hypothesis profiles and float64 by default for gradient checks.

Profiles: ``ci`` (the default; deterministic, few examples, fast) and ``thorough``
(many examples, random). Select with ``pytest --hypothesis-profile=thorough`` or
``HYPOTHESIS_PROFILE=thorough pytest``.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=12,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng():
    """A NumPy generator with a fixed seed, for test data."""
    return np.random.default_rng(1234)
