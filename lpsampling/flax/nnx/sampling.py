"""Posterior samples of an NNX model: Bayesian model averaging over a sample bank.

Training with :class:`flax.nnx.Optimizer` needs nothing from here: the lpsampling samplers
are optax transformations, ``nnx.Optimizer.update`` passes them the params and applies
their updates, and ``lps.bank.add(bank, nnx.state(model, nnx.Param))`` collects samples.
:func:`predict_bma` turns a bank back into predictions. The whole loop: ``docs/nnx.md``.
"""

from __future__ import annotations

import jax
from flax import nnx

from lpsampling import bank as sample_bank
from lpsampling import metrics
from lpsampling.validation import prng_key

__all__ = ["predict_bma"]


@nnx.jit
def _logits(model: nnx.Module, x: jax.Array, key: jax.Array | None) -> jax.Array:
    return model(x, False, rngs=key)


def _check_bank(name: str, bank: sample_bank.SampleBank) -> int:
    if not isinstance(bank, sample_bank.SampleBank):
        raise TypeError(f"{name} must be an lps.bank.SampleBank, got {type(bank).__name__}")
    return int(sample_bank.size(bank))


def predict_bma(
    model: nnx.Module,
    bank: sample_bank.SampleBank,
    x: jax.Array,
    *,
    stats_bank: sample_bank.SampleBank | None = None,
    key: jax.Array | None = None,
) -> jax.Array:
    r"""Bayesian-model-average class probabilities of ``model`` over the samples of ``bank``.

    ``p(c | x) = (1/S) Σ_s softmax(f(x; θ_s))_c`` over the ``S`` samples held, each run in
    evaluation mode (``model(x, False, rngs=...)``: BatchNorm on running statistics,
    activations still quantized, as in the paper). The softmaxes are accumulated in float32
    one sample at a time (:func:`lpsampling.metrics.bma_update`), so memory does not grow
    with ``S``.

    Args:
      model: an :mod:`lpsampling.flax.nnx` model (any NNX module called as
        ``model(x, train, rngs=...)``). Its weights and statistics are restored afterwards.
      bank: samples of ``nnx.state(model, nnx.Param)`` (``lps.bank.init/add``).
      x: a batch of inputs.
      stats_bank: for models with BatchNorm, the ``nnx.state(model, nnx.BatchStat)`` saved
        with each sample (same count); None evaluates every sample with the model's
        current statistics.
      key: quantization key; sample ``s`` uses ``fold_in(key, s)``. None draws from the
        model's own ``"quantize"`` stream (which advances), or nothing when the model
        quantizes deterministically.

    Returns:
      float32 probabilities of shape ``(batch, num_classes)``.

    Raises:
      ValueError: the bank is empty, or ``stats_bank`` holds another number of samples.
      TypeError: a bank is not an ``lps.bank.SampleBank``.
    """
    if key is not None:
        prng_key("key", key)
    held = _check_bank("bank", bank)
    if held == 0:
        raise ValueError("the sample bank is empty: add samples with lps.bank.add first")
    if stats_bank is not None:
        held_stats = _check_bank("stats_bank", stats_bank)
        if held_stats != held or int(stats_bank.count) != int(bank.count):
            raise ValueError(f"stats_bank holds {held_stats} of {int(stats_bank.count)} "
                             f"samples, bank {held} of {int(bank.count)}: add both together")
    # A copy of the arrays (nnx.state returns live views of the model's variables).
    saved = jax.tree.map(lambda a: a, nnx.state(model, (nnx.Param, nnx.BatchStat)))
    state = None
    try:
        for s in range(held):
            nnx.update(model, sample_bank.get(bank, s))
            if stats_bank is not None:
                nnx.update(model, sample_bank.get(stats_bank, s))
            k = None if key is None else jax.random.fold_in(key, s)
            logits = _logits(model, x, k)
            if state is None:
                state = metrics.bma_init(*logits.shape)
            state = metrics.bma_update(state, logits)
    finally:
        nnx.update(model, saved)
    return metrics.bma_probs(state)
