r"""Samplers as optax transformations: ``lps.sgld``, ``lps.sgd``, ``lps.cyclical_sgld``.

Each returns an :class:`optax.GradientTransformationExtraArgs` whose ``update`` takes the
gradient of the **mean** minibatch loss and the params, and returns updates such that
``optax.apply_updates(params, updates)`` is exactly the next weights the model runs on. With
``accumulator="full"`` (SGLDLP-F) the float32 chain ``θ`` lives in ``state.accumulator`` and
the params are ``Q_W(θ)``; with ``"low"`` / ``"vc"`` the params are the chain, on the weight
grid. Steps with non-finite gradients are skipped and counted in ``state.nonfinite_count``.
Start from grid weights (:func:`init_weights`). The manual (first forward pass, collecting
samples, chaining): the optax page of the documentation (``docs/optax.md``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lpsampling._precision import resolve_precision
from lpsampling.formats import Format, Full
from lpsampling.quantize import quantize_tree
from lpsampling.schedules import cycle_length, cyclical_schedule, is_sampling_step
from lpsampling.update import Precision, model_weights, update_position
from lpsampling.validation import (
    finite_float,
    finite_pytree,
    float_pytree,
    positive_int,
    prng_key,
    unit_interval,
)

__all__ = [
    "SGMCMCState",
    "sgld",
    "sgd",
    "cyclical_sgld",
    "init_weights",
    "is_sampling",
    "current_learning_rate",
]


class SGMCMCState(NamedTuple):
    """State of an lpsampling optax transformation.

    Attributes:
      count: number of updates applied (int32), skipped non-finite steps excluded.
      key: the PRNG key of the next step (split every step, as ``optax.add_noise``).
      accumulator: the float32 chain ``θ`` for SGLDLP-F with a grid weight format, else None.
      learning_rate: the step size used by the most recent update (float32).
      sampling: whether the most recent update was a sampling (noisy) step.
      nonfinite_count: number of steps skipped because the gradients were not finite.
    """

    count: chex.Array
    key: chex.Array
    accumulator: Any
    learning_rate: chex.Array
    sampling: chex.Array
    nonfinite_count: chex.Array


def _concrete_float(value) -> float | None:
    """``float(value)`` when it is known now (not a tracer, not a schedule), else None."""
    if callable(value) or isinstance(value, jax.core.Tracer):
        return None
    return float(value)


def _num_data(value):
    """``N`` as a float (a Python int above 2**31 would overflow in the first update)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return float(positive_int("num_data", value))
    checked = finite_float("num_data", value, positive=True)
    return value if checked is None else checked


def _precision(precision, weight_format, grad_format, accumulator, caller) -> Precision:
    """The factory's :class:`Precision`: ``precision=`` or the keyword shortcuts (explicit
    keywords rather than ``**shortcuts``, so that ``optax.inject_hyperparams`` can bind
    them)."""
    given = {"weight_format": weight_format, "grad_format": grad_format,
             "accumulator": accumulator}
    shortcuts = {k: val for k, val in given.items() if val is not None}
    return resolve_precision(precision, shortcuts, caller=caller)


def _constant(name: str, value, **kw):
    """A concrete hyperparameter checked and as a float; a schedule or tracer unchanged."""
    checked = finite_float(name, value, **kw)
    return value if checked is None else checked


def _make(
    learning_rate,
    *,
    noise: bool,
    num_data,
    temperature,
    weight_decay,
    precision: Precision,
    key,
    sampling_fn=None,
    name: str,
) -> optax.GradientTransformationExtraArgs:
    """Build one sampler; every public factory is a thin call of this one."""
    learning_rate = _constant("learning_rate", learning_rate, positive=True)
    weight_decay = _constant("weight_decay", weight_decay)
    if noise:
        num_data = _num_data(num_data)
        temperature = _constant("temperature", temperature)
    prng_key("key", key)
    lr_schedule = learning_rate if callable(learning_rate) else None
    static_wd = _concrete_float(weight_decay)
    wd = None if static_wd == 0.0 else weight_decay

    def init_fn(params):
        finite_pytree("params", float_pytree("params", params))
        acc = None
        if precision.has_accumulator:
            acc = jax.tree.map(
                lambda p: jnp.asarray(p).astype(jnp.promote_types(p.dtype, jnp.float32)),
                params,
            )
        return SGMCMCState(
            count=jnp.zeros([], jnp.int32),
            key=key,
            accumulator=acc,
            learning_rate=jnp.zeros([], jnp.float32),
            sampling=jnp.zeros([], jnp.bool_),
            nonfinite_count=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{name}.update needs params: call update(grads, state, params)")
        float_pytree("grads", updates)
        lr = lr_schedule(state.count) if lr_schedule is not None else learning_rate
        lr = jnp.asarray(lr, jnp.float32)
        sampling = jnp.asarray(noise)
        variance = None
        if noise:
            variance = 2.0 * lr * temperature / num_data
            if sampling_fn is not None:
                sampling = sampling_fn(state.count)
                variance = jnp.where(sampling, variance, 0.0)
        next_key, k_update, k_weights = jax.random.split(state.key, 3)
        chain = state.accumulator if precision.has_accumulator else params
        new_chain, finite = update_position(
            k_update, chain, updates,
            learning_rate=lr, noise_variance=variance, precision=precision,
            weight_decay=wd,
        )
        if precision.has_accumulator:
            new_params = model_weights(k_weights, new_chain, precision, like=params)
            new_params = jax.tree.map(
                lambda new, old: jnp.where(finite, new, old), new_params, params)
            new_acc = new_chain
        else:
            new_params, new_acc = new_chain, None
        new_updates = jax.tree.map(lambda new, old: new - old, new_params, params)
        new_state = SGMCMCState(
            count=state.count + finite.astype(jnp.int32),
            key=next_key,
            accumulator=new_acc,
            learning_rate=lr,
            sampling=jnp.logical_and(sampling, finite),
            nonfinite_count=state.nonfinite_count + (~finite).astype(jnp.int32),
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sgld(
    learning_rate: optax.ScalarOrSchedule,
    *,
    num_data: int,
    temperature: float = 1.0,
    weight_decay: float = 0.0,
    weight_format: Format | None = None,
    grad_format: Format | None = None,
    accumulator: str | None = None,
    precision: Precision | None = None,
    key: jax.Array,
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic gradient Langevin dynamics in any precision mode.

    ``θ ← θ − η·(Q_G(g) + wd·θ) + sqrt(2ηT/N)·ξ`` with the accumulator rule of
    ``accumulator`` (see :mod:`lpsampling.update`).

    Args:
      learning_rate: ``η`` on the mean minibatch loss (scalar or ``optax.Schedule``).
      num_data: ``N``, the number of training examples (sets the noise ``2ηT/N``).
      temperature: ``T`` (1 samples the posterior; the paper's CIFAR runs use 1e-3).
      weight_decay: ``wd``, a Gaussian prior ``wd·N/2·|θ|²`` expressed per datum.
      precision: a :class:`lpsampling.Precision`; or its keyword shortcuts (not both):
      weight_format: grid of the weights the model runs on (default ``FULL``: no grid).
      grad_format: grid of the gradients (stochastic rounding; default ``FULL``).
      accumulator: ``"full"`` (SGLDLP-F, the default), ``"low"`` (naive SGLDLP-L) or
        ``"vc"`` (variance-corrected SGLDLP-L).
      key: PRNG key for all noise and stochastic rounding (kept in the state).

    Constant ``learning_rate``, ``num_data``, ``temperature`` and ``weight_decay`` must be
    finite and in range (checked here, by :mod:`lpsampling.validation`).
    """
    return _make(
        learning_rate, noise=True, num_data=num_data, temperature=temperature,
        weight_decay=weight_decay, key=key, name="sgld",
        precision=_precision(precision, weight_format, grad_format, accumulator, "sgld"),
    )


def sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float = 0.0,
    weight_format: Format | None = None,
    grad_format: Format | None = None,
    accumulator: str | None = None,
    precision: Precision | None = None,
    key: jax.Array,
) -> optax.GradientTransformationExtraArgs:
    """Low-precision SGD without momentum (SGDFP, SGDLP-F, SGDLP-L): :func:`sgld` without
    noise. ``accumulator="vc"`` without noise is plain stochastic rounding, like ``"low"``.
    """
    return _make(
        learning_rate, noise=False, num_data=None, temperature=None,
        weight_decay=weight_decay, key=key, name="sgd",
        precision=_precision(precision, weight_format, grad_format, accumulator, "sgd"),
    )


def cyclical_sgld(
    init_lr: float,
    *,
    num_data: int,
    num_cycles: int,
    total_steps: int,
    exploration_ratio: float = 0.0,
    temperature: float = 1.0,
    weight_decay: float = 0.0,
    weight_format: Format | None = None,
    grad_format: Format | None = None,
    accumulator: str | None = None,
    precision: Precision | None = None,
    key: jax.Array,
) -> optax.GradientTransformationExtraArgs:
    r"""Cyclical SGLD (Zhang et al., ICLR 2020) in any precision mode.

    Step size ``η_k = η₀/2·(cos(π·(k mod L)/L) + 1)`` with ``L = ⌈total_steps/num_cycles⌉``;
    the first ``exploration_ratio`` of each cycle are SGD steps (no noise), the rest SGLD
    sampling steps. ``exploration_ratio=0`` puts noise on every step, as in the
    low-precision paper's cyclical runs; the original cSGLD paper samples only late in
    each cycle (e.g. ``exploration_ratio=0.8``). After each update ``state.sampling``
    tells whether it was a sampling step.
    """
    precision = _precision(precision, weight_format, grad_format, accumulator, "cyclical_sgld")
    init_lr = finite_float("init_lr", init_lr, positive=True)
    ratio = unit_interval("exploration_ratio", exploration_ratio)
    length = cycle_length(total_steps, num_cycles)
    return _make(
        cyclical_schedule(init_lr, length), noise=True, num_data=num_data,
        temperature=temperature, weight_decay=weight_decay, precision=precision, key=key,
        sampling_fn=lambda count: is_sampling_step(count, length, ratio),
        name="cyclical_sgld",
    )


def init_weights(params: Any, weight_format: Format, *, key: jax.Array) -> Any:
    """The weights of the first forward pass: ``Q_W(θ₀)`` by stochastic rounding."""
    if isinstance(weight_format, Full):
        return params
    return quantize_tree(params, weight_format, key=key, rounding="stochastic")


def _find(state, field: str):
    found = [
        x for x in jax.tree_util.tree_leaves(
            state, is_leaf=lambda x: isinstance(x, SGMCMCState))
        if isinstance(x, SGMCMCState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"expected exactly one lpsampling sampler state inside state, found {len(found)}")
    # A container may box the state's arrays (flax.nnx.Optimizer keeps each in an OptArray
    # variable, itself a pytree around the array): unbox without importing flax.
    (value,) = jax.tree_util.tree_leaves(getattr(found[0], field))
    return value


def is_sampling(state: Any) -> jax.Array:
    """Whether the most recent update of the lpsampling sampler inside ``state`` was a
    sampling (noisy) step. Works through ``optax.chain``, ``inject_hyperparams``, etc.,
    and on ``flax.nnx.Optimizer(...).opt_state``."""
    return _find(state, "sampling")


def current_learning_rate(state: Any) -> jax.Array:
    """The step size used by the most recent update of the sampler inside ``state``."""
    return _find(state, "learning_rate")
