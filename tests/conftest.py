"""Shared fixtures: eight simulated devices, the real-recordings folder, a seeded RNG."""

from __future__ import annotations

import os
import pathlib

# Eight simulated CPU devices, so data-parallel code is tested on a real mesh. Must be set
# before jax is imported anywhere in the test session.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import numpy as np
import pytest

from jaxspeech.data.corpus import resolve_data_root
from jaxspeech.errors import ConfigError


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The real-recordings folder (``$JAXSPEECH_DATA``, else ``../shared/data``); skips the
    test when it is absent."""
    try:
        return resolve_data_root()
    except ConfigError as err:
        pytest.skip(f"real recordings not found: {err}")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
