"""Shared fixtures of the experiment-runner tests."""

from __future__ import annotations

import pytest

from lpsampling.data import load_dataset


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture
def tiny():
    """A tiny run: 128 training examples in batches of 32 -> 4 steps per epoch (the CLI
    tests use the same setting, so compiled functions are shared in one session)."""
    return dict(train_subset=128, test_subset=64, batch_size=32, epochs=2, samples=2)
