"""Tests for lpsampling.experiments.grid: the rows of the paper's Tables 1 and 2."""

from __future__ import annotations

from lpsampling.experiments import paper_grid


def test_paper_grid_rows():
    rows = paper_grid()
    assert rows[:3] == [("fp32", "sgld"), ("fp32", "sgd"), ("fp32", "csgld")]
    assert len(rows) == 3 + 2 * 7
    assert ("bfp8", "vc-csgldlp-l") in rows and ("fixed8", "sgdlp-l") in rows
    assert paper_grid(["bfp8"], ["sgd", "vc-sgldlp-l"]) == [
        ("fp32", "sgd"), ("bfp8", "vc-sgldlp-l")]
