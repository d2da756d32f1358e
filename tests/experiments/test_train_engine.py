"""Tests for lpsampling.experiments.engine: the public make_train_step is the step of train."""

from __future__ import annotations

import jax
import numpy as np

from lpsampling.data import batches
from lpsampling.experiments import RunConfig, make_train_step, prepare_data, train
from lpsampling.experiments.loop import epoch_rng


def test_make_train_step_replays_train_bit_identically(digits, tiny):
    cfg = RunConfig(method="vc-sgldlp-l", format="fixed8", **tiny)
    ds = prepare_data(cfg, digits)
    step = make_train_step(cfg, ds)
    assert step.engine.steps_per_epoch == 4 and step.engine.total_steps == 8
    state, k = step.state, 0
    for epoch in range(cfg.epochs):
        for x, y in batches(epoch_rng(cfg.seed, epoch), ds.x_train, ds.y_train,
                            cfg.batch_size):
            state, (lr, sampling) = step(state, x, y, k)
            k += 1
    assert k == 8 and bool(sampling) and float(lr) > 0
    ref = train(cfg, dataset=digits, progress=False)
    assert ref.engine is step.engine  # one compiled engine per configuration
    for a, b in zip(jax.tree.leaves((state.params, state.opt_state)),
                    jax.tree.leaves((ref.state.params, ref.state.opt_state)), strict=True):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_one_engine_runs_every_temperature(digits, tiny):
    """The temperature is an argument of the compiled step: the runs at T = 1, at T = 0
    (the control) and a rerun at T = 1 share one engine, T changes the chain, and the
    shared engine does not carry one run's temperature into another."""
    cfg = RunConfig(method="vc-sgldlp-l", format="fixed8", temperature=1.0, **tiny)
    hot = train(cfg, dataset=digits, progress=False)
    cold = train(cfg.replace(temperature=0.0), dataset=digits, progress=False)
    again = train(cfg, dataset=digits, progress=False)
    assert hot.engine is cold.engine is again.engine
    leaves = [jax.tree.leaves(r.state.params) for r in (hot, cold, again)]
    assert any(not np.array_equal(a, b) for a, b in zip(leaves[0], leaves[1], strict=True))
    for a, b in zip(leaves[0], leaves[2], strict=True):
        np.testing.assert_array_equal(a, b)
