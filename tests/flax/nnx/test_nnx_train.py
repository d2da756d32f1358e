"""Training an NNX model with flax.nnx.Optimizer and the lpsampling samplers: the
trajectory equals the optax + Linen one for the same keys (every sampler and accumulator),
lps.is_sampling reads the optimizer's state, and predict_bma averages a sample bank."""

from __future__ import annotations

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


@nnx.jit
def nnx_step(model, optimizer, key):
    grads = nnx.grad(lambda m: _loss(m(X, True, rngs=key)))(model)
    optimizer.update(model, grads)  # passes the params to the sampler


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_nnx_optimizer_trajectory_equals_optax_with_linen(name):
    make = SAMPLERS[name]
    linen = create_model("mlp", 3, QUANT, hidden=(8,))
    variables = linen.init({"params": jax.random.key(1), "quantize": rbg(2)}, X, train=False)

    # optax + Linen, as docs/optax.md
    tx = make(rbg(3))
    params = variables["params"]
    state = tx.init(params)
    params = lps.init_weights(params, FX, key=rbg(4))

    @jax.jit
    def linen_step(params, state, key):
        grads = jax.grad(lambda p: _loss(linen.apply({"params": p}, X, True,
                                                     rngs={"quantize": key})))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    # nnx.Optimizer + the NNX twin, as docs/nnx.md
    model = lnnx.MLP(16, 3, hidden=(8,), quant=QUANT, rngs=nnx.Rngs(0))
    lnnx.load_linen_variables(model, variables)
    optimizer = nnx.Optimizer(model, make(rbg(3)), wrt=nnx.Param)  # θ₀: the float weights
    nnx.update(model, lps.init_weights(nnx.state(model, nnx.Param), FX, key=rbg(4)))

    sampling = []
    for t in range(STEPS):
        key = jax.random.fold_in(rbg(5), t)
        params, state = linen_step(params, state, key)
        nnx_step(model, optimizer, key)
        jax.tree.map(np.testing.assert_array_equal,
                     nnx.to_pure_dict(nnx.state(model, nnx.Param)), params)  # bit for bit
        assert bool(lps.is_sampling(optimizer.opt_state)) == bool(lps.is_sampling(state))
        np.testing.assert_array_equal(lps.current_learning_rate(optimizer.opt_state),
                                      lps.current_learning_rate(state))
        sampling.append(bool(lps.is_sampling(optimizer.opt_state)))
    assert int(optimizer.step[...]) == STEPS
    if name.startswith("cyclical"):
        assert sampling == [False, False, True, True]  # exploration_ratio=0.5 of 4 steps
    elif name.startswith("sgd"):
        assert not any(sampling)
    else:
        assert all(sampling)
    # The weights the model runs on are on the weight grid.
    for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):
        np.testing.assert_array_equal(leaf, lps.quantize(leaf, FX, rounding="nearest"))


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
