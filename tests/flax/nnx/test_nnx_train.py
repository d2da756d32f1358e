"""Training an NNX model with flax.nnx.Optimizer and the lpsampling samplers: the
trajectory equals the optax + Linen one for the same keys (every sampler and accumulator),
lps.is_sampling reads the optimizer's state, and predict_bma averages a sample bank."""

from __future__ import annotations

import functools

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import lpsampling as lps
from lpsampling.flax import QuantConfig, ResNet, create_model
from lpsampling.flax import nnx as lnnx


def rbg(seed: int) -> jax.Array:
    """A key of the counter-based "unsafe_rbg" PRNG (compiles much faster on CPU than
    threefry, as in tests/flax/test_models.py)."""
    return jax.random.key(seed, impl="unsafe_rbg")


FX = lps.FixedPoint(8, 4)
QUANT = QuantConfig.uniform(FX)  # stochastic rounding of activations and errors
X = jax.random.normal(jax.random.key(0), (8, 4, 4))
LABELS = jnp.arange(8) % 3
STEPS = 4
N = 100


def _samplers():
    common = dict(weight_format=FX, grad_format=FX)
    cyc = dict(num_data=N, num_cycles=1, total_steps=STEPS, exploration_ratio=0.5)
    out = {
        "sgld-full": lambda k: lps.sgld(0.05, num_data=N, accumulator="full", key=k, **common),
        "sgld-low": lambda k: lps.sgld(0.05, num_data=N, accumulator="low", key=k, **common),
        "sgld-vc": lambda k: lps.sgld(0.05, num_data=N, weight_decay=1e-3, accumulator="vc",
                                      key=k, **common),
        "cyclical_sgld-vc": lambda k: lps.cyclical_sgld(0.05, accumulator="vc", key=k,
                                                        **cyc, **common),
        "sgd-low": lambda k: lps.sgd(0.05, accumulator="low", key=k, **common),
    }
    # SGHMC lives on its own branch until it is merged; then it runs here too.
    if hasattr(lps, "sghmc"):
        out["sghmc-vc"] = lambda k: lps.sghmc(0.05, num_data=N, accumulator="vc", key=k,
                                               **common)
        out["cyclical_sghmc-full"] = lambda k: lps.cyclical_sghmc(
            0.05, accumulator="full", key=k, **cyc, **common)
    return out


SAMPLERS = _samplers()


def _loss(logits):
    return optax.softmax_cross_entropy_with_integer_labels(logits, LABELS).mean()


def test_nnx_optimizer_trajectory_equals_optax_with_linen():
    """Every sampler and accumulator of SAMPLERS, side by side: one compiled Linen step
    and one nnx.jit step advance all of them (two compilations instead of two per
    sampler); each sampler's chain is its own computation and is compared on its own."""
    names = list(SAMPLERS)
    linen = create_model("mlp", 3, QUANT, hidden=(8,))
    variables = linen.init({"params": jax.random.key(1), "quantize": rbg(2)}, X, train=False)

    # optax + Linen, as docs/optax.md
    txs = [SAMPLERS[name](rbg(3)) for name in names]
    states = [tx.init(variables["params"]) for tx in txs]
    params = [lps.init_weights(variables["params"], FX, key=rbg(4))] * len(names)

    @jax.jit
    def linen_step(params, states, key):
        new_params, new_states = [], []
        for tx, p, st in zip(txs, params, states, strict=True):
            grads = jax.grad(lambda p: _loss(linen.apply({"params": p}, X, True,
                                                         rngs={"quantize": key})))(p)
            updates, st = tx.update(grads, st, p)
            new_params.append(optax.apply_updates(p, updates))
            new_states.append(st)
        return new_params, new_states

    # nnx.Optimizer + the NNX twin, as docs/nnx.md
    models, optimizers = [], []
    for name in names:
        model = lnnx.MLP(16, 3, hidden=(8,), quant=QUANT, rngs=nnx.Rngs(0))
        lnnx.load_linen_variables(model, variables)
        # θ₀ of the sampler: the float weights; then the model runs on grid weights
        optimizers.append(nnx.Optimizer(model, SAMPLERS[name](rbg(3)), wrt=nnx.Param))
        nnx.update(model, lps.init_weights(nnx.state(model, nnx.Param), FX, key=rbg(4)))
        models.append(model)

    @nnx.jit
    def nnx_step(models, optimizers, key):
        for model, optimizer in zip(models, optimizers, strict=True):
            grads = nnx.grad(lambda m: _loss(m(X, True, rngs=key)))(model)
            optimizer.update(model, grads)  # passes the params to the sampler

    sampling = {name: [] for name in names}
    for t in range(STEPS):
        key = jax.random.fold_in(rbg(5), t)
        params, states = linen_step(params, states, key)
        nnx_step(models, optimizers, key)
        for name, model, optimizer, p, st in zip(names, models, optimizers, params, states,
                                                 strict=True):
            jax.tree.map(functools.partial(np.testing.assert_array_equal, err_msg=name),
                         nnx.to_pure_dict(nnx.state(model, nnx.Param)), p)  # bit for bit
            assert bool(lps.is_sampling(optimizer.opt_state)) == bool(lps.is_sampling(st))
            np.testing.assert_array_equal(lps.current_learning_rate(optimizer.opt_state),
                                          lps.current_learning_rate(st), err_msg=name)
            sampling[name].append(bool(lps.is_sampling(optimizer.opt_state)))
    for name, model, optimizer in zip(names, models, optimizers, strict=True):
        assert int(optimizer.step[...]) == STEPS, name
        if name.startswith("cyclical"):
            # exploration_ratio=0.5 of 4 steps
            assert sampling[name] == [False, False, True, True], name
        elif name.startswith("sgd"):
            assert not any(sampling[name]), name
        else:
            assert all(sampling[name]), name
        # The weights the model runs on are on the weight grid.
        for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):
            assert helpers.on_grid(leaf, FX), name


def _bank_of_samples(model, count, fmt=FX):
    bank = lps.bank.init(nnx.state(model, nnx.Param), fmt, capacity=count)
    for s in range(count):
        sample = lps.quantize_tree(nnx.state(model, nnx.Param), fmt, key=rbg(10 + s))
        bank = lps.bank.add(bank, sample)
    return bank


def test_predict_bma_averages_the_banked_samples_like_linen():
    linen = create_model("mlp", 3, QUANT, hidden=(8,))
    model = lnnx.MLP(16, 3, hidden=(8,), quant=QUANT, rngs=nnx.Rngs(0))
    before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    bank = _bank_of_samples(model, 3)
    probs = lnnx.predict_bma(model, bank, X, key=rbg(7))
    logits = jnp.stack([
        linen.apply({"params": nnx.to_pure_dict(lps.bank.get(bank, s))}, X, False,
                    rngs={"quantize": jax.random.fold_in(rbg(7), s)})
        for s in range(3)])
    # float32 softmax sums in another order: a few ulp of probabilities <= 1.
    np.testing.assert_allclose(probs, lps.metrics.bayesian_model_average(logits), atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal,
                 nnx.to_pure_dict(nnx.state(model, nnx.Param)), before)  # restored
    # Without a key the model's own "quantize" stream is used, and advances.
    count = int(model.rngs.count[...])
    assert lnnx.predict_bma(model, bank, X).shape == (8, 3)
    assert int(model.rngs.count[...]) == count + 3


def test_predict_bma_with_batch_statistics():
    tiny = dict(stage_sizes=(1,), widths=(2,), strides=(1,), pool_size=4)
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    model = lnnx.ResNet((4, 4, 3), 3, rngs=nnx.Rngs(0), **tiny)
    bank = _bank_of_samples(model, 2, lps.FULL)
    stats_bank = lps.bank.init(nnx.state(model, nnx.BatchStat), lps.FULL, capacity=2)
    stats = []
    for s in range(2):
        st = jax.tree.map(lambda a, s=s: a + 0.5 * s, nnx.state(model, nnx.BatchStat))
        stats.append(st)
        stats_bank = lps.bank.add(stats_bank, st)
    linen = ResNet(3, **tiny)
    logits = jnp.stack([
        linen.apply({"params": nnx.to_pure_dict(lps.bank.get(bank, s)),
                     "batch_stats": nnx.to_pure_dict(stats[s])}, x, False)
        for s in range(2)])
    probs = lnnx.predict_bma(model, bank, x, stats_bank=stats_bank)
    np.testing.assert_allclose(probs, lps.metrics.bayesian_model_average(logits), atol=1e-6)
    with pytest.raises(ValueError, match="add both together"):
        lnnx.predict_bma(model, bank, x, stats_bank=lps.bank.add(stats_bank, stats[0]))


def test_predict_bma_checks():
    model = lnnx.MLP(16, 3, hidden=(4,), rngs=nnx.Rngs(0))
    empty = lps.bank.init(nnx.state(model, nnx.Param), FX, capacity=2)
    with pytest.raises(ValueError, match="empty"):
        lnnx.predict_bma(model, empty, X)
    with pytest.raises(TypeError, match="SampleBank"):
        lnnx.predict_bma(model, nnx.state(model, nnx.Param), X)
    with pytest.raises((TypeError, ValueError), match="key"):
        lnnx.predict_bma(model, empty, X, key=3)
