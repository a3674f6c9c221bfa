"""Shared fixtures: small random models and inputs used across test files."""
import os

import numpy as np
import pytest

# With libtpu installed (requirements-tpu-aot.txt), JAX processes take /tmp/libtpu_lockfile;
# the compile-only TPU tests run beside the rest of the suite and its subprocesses.
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')


@pytest.fixture
def rng():
    return np.random.default_rng(0)
