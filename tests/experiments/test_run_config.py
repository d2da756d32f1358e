"""Tests for lpsampling.experiments.config: schedules and the sampling plan."""

from __future__ import annotations

import pytest

from lpsampling.experiments import RunConfig, get_format, get_method, sample_epochs


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


def test_names_resolved_once_into_specs():
    cfg = RunConfig(method="VC_SGLDLP-L", format="BFP8", dataset="Fashion-MNIST", model="CNN")
    assert cfg.method_spec is get_method("vc-sgldlp-l") and cfg.format_spec == get_format("bfp8")
    assert (cfg.method, cfg.format, cfg.dataset, cfg.model) == (
        "vc-sgldlp-l", "bfp8", "fashion_mnist", "cnn")
    # the specs are derived, not arguments: the record and the checkpoint hold the names
    d = cfg.to_dict()
    assert "method_spec" not in d and "format_spec" not in d and d["method"] == "vc-sgldlp-l"
    assert list(d) == [f for f in RunConfig.__dataclass_fields__ if not f.endswith("_spec")]
    again = cfg.replace(method="sgldlp-l")
    assert again.method_spec is get_method("sgldlp-l") and again != cfg
    # the compiled engine is shared by every seed and by paths / evaluation options
    key = cfg.compile_key()
    assert key == cfg.replace(seed=7, checkpoint_dir="/tmp/x", num_bins=9).compile_key()
    assert key != cfg.replace(lr=0.1).compile_key()
    assert hash(key) == hash(cfg.replace(seed=3).compile_key())


def test_compute_option_and_its_refusals():
    from lpsampling.experiments.checkpoint import _config_mismatch

    cfg = RunConfig(method="vc-sgldlp-l", format="bfp8", compute="int8")
    assert cfg.compute == "int8" and cfg.training_dict()["compute"] == "int8"
    assert RunConfig().compute == "float32"
    for fmt in ("fixed8", "fp32"):
        with pytest.raises(ValueError, match="keeps its activations in float32"):
            RunConfig(format=fmt, compute="int8")
    with pytest.raises(ValueError, match="wl <= 8"):
        RunConfig(method="vc-sgldlp-l", format="bfp12", compute="int8")
    with pytest.raises(ValueError, match="logreg"):
        RunConfig(model="logreg", format="bfp8", compute="int8")
    with pytest.raises(ValueError, match="compute must be one of"):
        RunConfig(compute="int4")
    # a checkpoint written before the option existed resumes as float32, not as int8
    old = RunConfig(format="bfp8").training_dict()
    del old["compute"]
    assert _config_mismatch(old, RunConfig(format="bfp8")) == []
    assert _config_mismatch(old, RunConfig(format="bfp8", compute="int8"))
