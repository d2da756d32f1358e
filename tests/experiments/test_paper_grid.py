"""Tests for lpsampling.experiments.grid: the rows of the paper's Tables 1 and 2."""

from __future__ import annotations

from lpsampling.experiments import paper_grid, reference_row


def test_paper_grid_rows():
    rows = paper_grid()
    assert rows[:3] == [("fp32", "sgld"), ("fp32", "sgd"), ("fp32", "csgld")]
    assert len(rows) == 3 + 2 * 7
    assert ("bfp8", "vc-csgldlp-l") in rows and ("fixed8", "sgdlp-l") in rows
    assert paper_grid(["bfp8"], ["sgd", "vc-sgldlp-l"]) == [
        ("fp32", "sgd"), ("bfp8", "vc-sgldlp-l")]


def test_paper_grid_adds_sghmc_rows_when_asked():
    # sghmc runs in full precision (an fp32 row); the low-precision SGHMC methods get one
    # row per low-precision format, after the paper's rows
    assert paper_grid(["fixed8", "bfp8"], ["sgld", "sghmc", "vc-sghmclp-l", "SGHMCLP_L"]) == [
        ("fp32", "sgld"), ("fp32", "sghmc"), ("fixed8", "vc-sghmclp-l"),
        ("bfp8", "vc-sghmclp-l"), ("fixed8", "sghmclp-l"), ("bfp8", "sghmclp-l")]
    assert paper_grid() == paper_grid(methods=None)
    assert all("hmc" not in m for _, m in paper_grid())


def test_reference_rows_follow_the_claims():
    rows = [(f.replace("fixed4-4", "fixed4"), m, False) for f, m in paper_grid(["fixed4"])]
    rows.insert(4, ("fixed4", "vc-sgldlp-l", True))
    ref = {r: reference_row(r, rows) for r in rows}
    assert ref[("fp32", "sgd", False)] is None
    assert ref[("fp32", "sgld", False)] == ("fp32", "sgd", False)
    assert ref[("fixed4", "vc-sgldlp-l", False)] == ("fixed4", "sgldlp-l", False)
    assert ref[("fixed4", "vc-sgldlp-l", True)] == ("fixed4", "vc-sgldlp-l", False)
    assert ref[("fixed4", "sgldlp-l", False)] == ("fixed4", "sgdlp-l", False)
    assert ref[("fixed4", "sgldlp-f", False)] == ("fixed4", "sgdlp-f", False)
    assert ref[("fixed4", "sgdlp-l", False)] == ("fixed4", "sgdlp-f", False)
    assert ref[("fixed4", "sgdlp-f", False)] == ("fp32", "sgd", False)
    assert ref[("fixed4", "vc-csgldlp-l", False)] == ("fixed4", "sgdlp-l", False)
    assert ref[("fixed4", "csgld-f", False)] == ("fixed4", "sgdlp-f", False)
