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

from jaxspeech.data.corpus import default_data_root

SHARED_DATA = default_data_root()


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The real-recordings folder (``../shared/data``); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA}; set JAXSPEECH_DATA")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
