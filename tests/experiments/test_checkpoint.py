"""Tests for lpsampling.experiments.checkpoint: crash, resume (bit-identical), refusals."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from helpers import Crash, crash_at

from lpsampling.experiments import RunConfig, run_experiment, train


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_is_bit_identical(tmp_path, digits, tiny):
    # BatchNorm (batch_stats bank), activation quantizers, VC sampler key in the state.
    cfg = RunConfig(model="resnet-mini", method="vc-sgldlp-l", format="fixed8", **tiny)
    ref = run_experiment(cfg, dataset=digits, progress=False)

    ck = tmp_path / "ck"
    out = tmp_path / "result.json"
    cfg_ck = cfg.replace(checkpoint_dir=str(ck), checkpoint_every=3)
    # steps 1..8, 4 per epoch; checkpoints at 3 and 6; crash at 7 (mid epoch 1, after the
    # sample of epoch 0 was taken)
    with pytest.raises(Crash):
        run_experiment(cfg_ck, dataset=digits, out=out, progress=False, on_step=crash_at(7))
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
