"""Tests for lpsampling.experiments.evaluation: the BMA record and its errors."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from lpsampling import bank as lps_bank
from lpsampling.experiments import (
    EmptySampleBankError,
    RunConfig,
    evaluate,
    run_experiment,
    train,
)
from lpsampling.formats import FULL


def test_empty_bank_is_a_clear_error(digits, tiny):
    cfg = RunConfig(method="sgd", **tiny)
    out = train(cfg, dataset=digits, progress=False)
    empty = lps_bank.init(out.state.params, FULL, 1)
    hollow = dataclasses.replace(out, state=out.state._replace(bank=empty))
    with pytest.raises(EmptySampleBankError, match="sample bank is empty"):
        evaluate(hollow, dataset=digits)
    metrics, probs = evaluate(out, dataset=digits)
    assert metrics["num_samples"] == 1 and probs.shape == (64, 10)


def test_run_record_and_low_precision_bank(digits, tmp_path, tiny):
    cfg = RunConfig(method="sgldlp-l", format="fixed8", **tiny)
    res = run_experiment(cfg, dataset=digits, out=tmp_path / "r.json", progress=False)
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["label"] == "naive SGLDLP-L" and rec["format_label"] == "8-bit fixed"
    m = rec["metrics"]
    for k in ("error", "nll", "ece", "paper_ece", "last_sample_error"):
        assert 0.0 <= m[k] < 30.0
    assert m["ece_num_bins"] == 15 and m["paper_ece_num_bins"] == 9
    assert rec["bank"]["ratio_vs_float32"] == pytest.approx(0.25)
    assert len(rec["history"]) == 2 and rec["steps"] == 8
    np.testing.assert_allclose(res.probs.sum(-1), 1.0, rtol=1e-5)
    # samples are on the weight grid (they are the weights the model ran on)
    w = jax.tree.leaves(res.output.state.params)
    for x in w:
        x = np.asarray(x)
        np.testing.assert_array_equal(x * 256, np.round(x * 256))
        assert x.min() >= -0.5 and x.max() <= 0.49609375
