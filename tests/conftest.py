"""Shared pytest fixtures (kept minimal)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# The QPyTorch reference vectors live next to the repository, not inside it.
QTORCH_REFERENCE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "qtorch_reference.npz"
)


@pytest.fixture(scope="session")
def qref():
    """The QPyTorch reference vectors as a dict of NumPy arrays (skip if the file is absent)."""
    if not QTORCH_REFERENCE.exists():
        pytest.skip(f"QPyTorch reference vectors not found: {QTORCH_REFERENCE} is missing")
    with np.load(QTORCH_REFERENCE) as data:
        return {name: data[name] for name in data.files}


# Property tests (hypothesis): one deterministic profile for CI and local runs alike
# (derandomized, no example database, no per-example deadline since the first example of
# a shape pays for JAX compilation; 40 examples per property keep the suite within its 15
# minutes). HYPOTHESIS_PROFILE=explore searches with fresh seeds.
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "explore", deadline=None, max_examples=1000, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# The conformance runner (tests/conformance: the peers' own suites in every precision mode,
# minutes of compiling) is its own CI step in .ci/run, so that `python -m pytest -q` stays
# within its time budget; it runs when named: `python -m pytest tests/conformance -q`.
CONFORMANCE = Path(__file__).resolve().parent / "conformance"


def _names_conformance(config) -> bool:
    for arg in config.args:
        target = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if target == CONFORMANCE or CONFORMANCE in target.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    if Path(collection_path).resolve() == CONFORMANCE and not _names_conformance(config):
        return True
    return None


def pytest_report_header(config):
    if not _names_conformance(config):
        return ("conformance runner not collected (its own CI step): "
                "python -m pytest tests/conformance -q")
    return None
