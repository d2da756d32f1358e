"""Tests for lpsampling.train: names, the sampling plan, checkpoints and resume, errors."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from lpsampling import bank as lps_bank
from lpsampling.data import load_dataset
from lpsampling.formats import FULL, BlockFloatingPoint, FixedPoint
from lpsampling.train import (
    METHODS,
    EmptySampleBankError,
    RunConfig,
    evaluate,
    get_format,
    get_method,
    method_label,
    paper_grid,
    run_experiment,
    sample_epochs,
    train,
    write_json_atomic,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# A tiny run: 128 training examples in batches of 32 -> 4 steps per epoch.
TINY = dict(train_subset=128, test_subset=64, batch_size=32, epochs=2, samples=2)


# --------------------------------------------------------------------------------------
# names


@pytest.mark.parametrize(
    "field, value, listed",
    [
        ("method", "sgldx", "valid methods: sgld, sgd, csgld"),
        ("format", "fp16", "valid formats: fp32, fixed8, bfp8"),
        ("dataset", "mnist", "valid datasets: digits, fashion_mnist, cifar10"),
        ("model", "vgg16", "valid models: logreg, mlp, cnn, resnet18"),
        ("schedule", "cosine", "valid schedules: constant, decay, cyclical"),
    ],
)
def test_unknown_names_list_the_choices(field, value, listed):
    with pytest.raises(ValueError, match=listed):
        RunConfig(**{field: value})


def test_method_mapping_and_labels():
    assert get_method("VC_SGLDLP-L") == METHODS["vc-sgldlp-l"]
    table = {
        "sgld": ("sgld", "full"), "sgd": ("sgd", "full"), "csgld": ("cyclical", "full"),
        "sgldlp-l": ("sgld", "low"), "vc-sgldlp-l": ("sgld", "vc"),
        "sgdlp-l": ("sgd", "low"), "sgldlp-f": ("sgld", "full"), "sgdlp-f": ("sgd", "full"),
        "vc-csgldlp-l": ("cyclical", "vc"), "csgld-f": ("cyclical", "full"),
    }
    for name, (kind, acc) in table.items():
        spec = get_method(name)
        assert (spec.kind, spec.accumulator) == (kind, acc), name
    assert method_label("sgld", "fp32") == "SGLDFP"
    assert method_label("sgld", "fixed8") == "SGLDLP-F"
    assert method_label("csgld", "bfp8") == "cSGLD-F"
    assert method_label("sgldlp-l", "bfp8") == "naive SGLDLP-L"
    assert RunConfig(method="VC-cSGLDLP-L", format="BFP8").label == "VC cSGLDLP-L"
    with pytest.raises(ValueError, match="needs a low-precision format"):
        RunConfig(method="vc-sgldlp-l", format="fp32")


def test_formats():
    f = get_format("fixed8")
    assert f.weight == FixedPoint(8, 8) and f.grad == FixedPoint(8, 8)
    assert f.activation == FULL and f.error == FULL
    assert get_format("fixed8-6").weight == FixedPoint(8, 6)
    b = get_format("bfp8")
    # per output unit/filter in Flax's (..., in, out) layout; per example for activations
    assert b.weight == BlockFloatingPoint(8, axis=-1)
    assert b.activation == BlockFloatingPoint(8, axis=0) == b.error
    assert get_format("fp32").is_full
    with pytest.raises(ValueError, match="valid formats"):
        get_format("fixed1")


def test_schedule_rules():
    assert RunConfig(method="sgld").schedule == "decay"
    assert RunConfig(method="csgld", epochs=6, num_cycles=3).schedule == "cyclical"
    with pytest.raises(ValueError, match="cyclical"):
        RunConfig(method="sgld", schedule="cyclical")
    with pytest.raises(ValueError, match="multiple of num_cycles"):
        RunConfig(method="csgld", epochs=10, num_cycles=3)


def test_sample_plan():
    assert sample_epochs(RunConfig(epochs=10, samples=3)) == [7, 8, 9]
    assert sample_epochs(RunConfig(method="sgd", epochs=10)) == [9]  # final weights only
    cyc = RunConfig(method="csgld", epochs=12, num_cycles=3, cycle_samples=2)
    assert sample_epochs(cyc) == [2, 3, 6, 7, 10, 11]
    paper = RunConfig(method="csgld", epochs=245, num_cycles=7)
    assert len(sample_epochs(paper)) == 35  # 5 per 35-epoch cycle
    assert RunConfig(epochs=245).resolved_samples == 50
    with pytest.raises(ValueError, match="exceeds epochs"):
        RunConfig(epochs=3, samples=4)


def test_paper_grid_rows():
    rows = paper_grid()
    assert rows[:3] == [("fp32", "sgld"), ("fp32", "sgd"), ("fp32", "csgld")]
    assert len(rows) == 3 + 2 * 7
    assert ("bfp8", "vc-csgldlp-l") in rows and ("fixed8", "sgdlp-l") in rows
    assert paper_grid(["bfp8"], ["sgd", "vc-sgldlp-l"]) == [
        ("fp32", "sgd"), ("bfp8", "vc-sgldlp-l")]


# --------------------------------------------------------------------------------------
# checkpoint / resume


class Crash(RuntimeError):
    pass


def _crash_at(k):
    def hook(step):
        if step == k:
            raise Crash(f"simulated crash at step {k}")
    return hook


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_is_bit_identical(tmp_path, digits):
    # BatchNorm (batch_stats bank), activation quantizers, VC sampler key in the state.
    cfg = RunConfig(model="resnet-mini", method="vc-sgldlp-l", format="fixed8", **TINY)
    ref = run_experiment(cfg, dataset=digits, progress=False)

    ck = tmp_path / "ck"
    out = tmp_path / "result.json"
    cfg_ck = cfg.replace(checkpoint_dir=str(ck), checkpoint_every=3)
    # steps 1..8, 4 per epoch; checkpoints at 3 and 6; crash at 7 (mid epoch 1, after the
    # sample of epoch 0 was taken)
    with pytest.raises(Crash):
        run_experiment(cfg_ck, dataset=digits, out=out, progress=False, on_step=_crash_at(7))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name != "ck"]  # no temp JSON left
    assert sorted(p.name for p in ck.iterdir() if p.name[0].isdigit()) == ["3", "6"]
    # a save interrupted by a crash leaves only orbax's temporary directory, which is
    # never taken for a checkpoint (and is cleaned up)
    stale = ck / "7.orbax-checkpoint-tmp"
    stale.mkdir()
    (stale / "junk").write_text("half-written")

    # another configuration may not continue this checkpoint
    with pytest.raises(ValueError, match="another configuration.*lr"):
        train(cfg_ck.replace(lr=0.1), dataset=digits, resume=True, progress=False)
    # nor may a fresh run overwrite it
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        train(cfg_ck, dataset=digits, progress=False)

    res = run_experiment(cfg_ck, dataset=digits, out=out, resume=True, progress=False)
    assert res.output.resumed_from == 6
    assert not stale.exists()
    _leaves_equal(res.output.state, ref.output.state)
    assert res.record["metrics"] == ref.record["metrics"]
    assert res.record["history"] == ref.record["history"]
    np.testing.assert_array_equal(res.probs, ref.probs)
    rec = json.loads(out.read_text())
    assert rec["complete"] is True and rec["metrics"] == ref.record["metrics"]
    assert rec["metrics"]["num_samples"] == 2 and rec["bank"]["stats_nbytes"] > 0


def test_empty_bank_is_a_clear_error(digits):
    cfg = RunConfig(method="sgd", **TINY)
    out = train(cfg, dataset=digits, progress=False)
    empty = lps_bank.init(out.state.params, FULL, 1)
    hollow = dataclasses.replace(out, state=out.state._replace(bank=empty))
    with pytest.raises(EmptySampleBankError, match="sample bank is empty"):
        evaluate(hollow, dataset=digits)
    metrics, probs = evaluate(out, dataset=digits)
    assert metrics["num_samples"] == 1 and probs.shape == (64, 10)


def test_run_record_and_low_precision_bank(digits, tmp_path):
    cfg = RunConfig(method="sgldlp-l", format="fixed8", **TINY)
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


def test_write_json_atomic_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(TypeError):
        write_json_atomic(target, {"bad": object()})
    assert os.listdir(tmp_path) == []
    write_json_atomic(target, {"ok": 1})
    assert json.loads(target.read_text()) == {"ok": 1}
