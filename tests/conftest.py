"""Shared pytest fixtures (kept minimal)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
