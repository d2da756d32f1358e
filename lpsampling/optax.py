r"""Samplers as optax transformations: ``lps.sgld``, ``lps.sgd``, ``lps.cyclical_sgld``,
``lps.sghmc``, ``lps.cyclical_sghmc``.

Each returns an :class:`optax.GradientTransformationExtraArgs` whose ``update`` takes the
gradient of the **mean** minibatch loss and the params, and returns updates such that
``optax.apply_updates(params, updates)`` is exactly the next weights the model runs on. With
``accumulator="full"`` (SGLDLP-F) the float32 chain ``θ`` lives in ``state.accumulator`` and
the params are ``Q_W(θ)``; with ``"low"`` / ``"vc"`` the params are the chain, on the weight
grid. SGHMC and SGD with momentum keep the momentum ``v`` in ``state.momentum`` (full
precision for ``"full"``, on its grid for ``"low"`` / ``"vc"``). Steps with non-finite
gradients are skipped and counted in ``state.nonfinite_count``.
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
from lpsampling.update import (
    Precision,
    heavy_ball_coefficients,
    model_weights,
    sghmc_coefficients,
    update_momentum,
    update_position,
)
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
    "sghmc",
    "cyclical_sghmc",
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
      step_size: the learning rate used by the most recent update (float32). Not named
        ``learning_rate``: ``optax.tree.get(state, "learning_rate")`` must find the
        one hyperparameter that ``optax.inject_hyperparams`` injects.
      sampling: whether the most recent update was a sampling (noisy) step.
      nonfinite_count: number of steps skipped because the gradients were not finite.
      momentum: the momentum ``v`` of SGHMC (a velocity) or of SGD with momentum (the
        trace of gradients, as ``optax.sgd``), else None.
    """

    count: chex.Array
    key: chex.Array
    accumulator: Any
    step_size: chex.Array
    sampling: chex.Array
    nonfinite_count: chex.Array
    momentum: Any = None


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
    coefficients_fn=None,
    momentum_format: Format | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Build one sampler; every public factory is a thin call of this one.

    ``coefficients_fn(lr, noise_scale)`` (``noise_scale = T/N``, or None without noise)
    selects the momentum rule (:func:`lpsampling.update.update_momentum`) with those
    coefficients; without it the chain follows :func:`~lpsampling.update.update_position`.
    """
    # 0 is allowed (a no-op step), as optax does: warmup schedules start there, and
    # inject_hyperparams evaluates a schedule eagerly at init (count 0)
    learning_rate = _constant("learning_rate", learning_rate)
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
        momentum = None
        if coefficients_fn is not None:
            # v starts at 0 (as the paper's code and optax's trace), in the dtype of the
            # chain it moves: float32 on a grid, wider for full-precision accumulators
            momentum = jax.tree.map(
                lambda p: jnp.zeros(jnp.shape(p), jnp.promote_types(
                    jnp.asarray(p).dtype, jnp.float32)
                    if precision.accumulator == "full" else jnp.float32),
                params)
        return SGMCMCState(
            count=jnp.zeros([], jnp.int32),
            key=key,
            accumulator=acc,
            step_size=jnp.zeros([], jnp.float32),
            sampling=jnp.zeros([], jnp.bool_),
            nonfinite_count=jnp.zeros([], jnp.int32),
            momentum=momentum,
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
        new_momentum = None
        if coefficients_fn is None:
            new_chain, finite = update_position(
                k_update, chain, updates,
                learning_rate=lr, noise_variance=variance, precision=precision,
                weight_decay=wd,
            )
        else:
            scale = None
            if noise:
                scale = jnp.asarray(temperature / num_data, jnp.float32)
                if sampling_fn is not None:
                    scale = jnp.where(sampling, scale, 0.0)
            new_chain, new_momentum, finite = update_momentum(
                k_update, chain, state.momentum, updates,
                coefficients=coefficients_fn(lr, scale), precision=precision,
                weight_decay=wd, momentum_format=momentum_format,
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
            step_size=lr,
            sampling=jnp.logical_and(sampling, finite),
            nonfinite_count=state.nonfinite_count + (~finite).astype(jnp.int32),
            momentum=new_momentum,
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
    momentum: float | None = None,
    *,
    weight_decay: float = 0.0,
    weight_format: Format | None = None,
    grad_format: Format | None = None,
    accumulator: str | None = None,
    precision: Precision | None = None,
    key: jax.Array,
) -> optax.GradientTransformationExtraArgs:
    """Low-precision SGD (SGDFP, SGDLP-F, SGDLP-L): :func:`sgld` without noise.
    ``accumulator="vc"`` without noise is plain stochastic rounding, like ``"low"``.

    ``momentum=β`` (optional, as ``optax.sgd``'s ``momentum``, Polyak's heavy ball):
    ``v ← β·v + Q_G(g) + wd·θ``, ``θ ← θ − η·v`` with ``v`` (``state.momentum``) the trace
    of gradients, i.e. SGHMC's momentum rule without noise
    (:func:`lpsampling.update.heavy_ball_coefficients`). In ``"low"`` / ``"vc"`` modes the
    trace is rounded onto ``grad_format`` (gradient units; FULL keeps it unrounded).
    ``momentum=None`` (the default) is SGD without momentum, unchanged.
    """
    precision = _precision(precision, weight_format, grad_format, accumulator, "sgd")
    coefficients_fn = None
    if momentum is not None:
        beta = _constant("momentum", momentum)

        def coefficients_fn(lr, scale):
            del scale
            return heavy_ball_coefficients(lr, beta)

    return _make(
        learning_rate, noise=False, num_data=None, temperature=None,
        weight_decay=weight_decay, key=key, name="sgd", precision=precision,
        coefficients_fn=coefficients_fn, momentum_format=precision.grad_format,
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


def _sghmc_fn(friction, inverse_mass):
    friction = _constant("friction", friction, positive=True)
    inverse_mass = _constant("inverse_mass", inverse_mass, positive=True)

    def coefficients_fn(lr, scale):
        return sghmc_coefficients(lr, friction=friction, inverse_mass=inverse_mass,
                                  noise_scale=scale)

    return coefficients_fn


def sghmc(
    learning_rate: optax.ScalarOrSchedule,
    *,
    num_data: int,
    friction: float = 2.0,
    inverse_mass: float = 1.0,
    temperature: float = 1.0,
    weight_decay: float = 0.0,
    weight_format: Format | None = None,
    grad_format: Format | None = None,
    accumulator: str | None = None,
    precision: Precision | None = None,
    key: jax.Array,
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic gradient Hamiltonian Monte Carlo in any precision mode (SGHMCLP-F,
    naive SGHMCLP-L, VC SGHMCLP-L; Wang, Chen, Song & Zhang, TMLR 2024).

    With ``E = e^{−γη}``, ``g = Q_G(grad) + wd·θ`` (the mean loss) and the velocity ``v``
    in ``state.momentum`` (starting at 0):
    ``v ← E·v − uγ⁻¹(1−E)·g + ξᵛ``, ``θ ← θ + γ⁻¹(1−E)·v − uγ⁻²(γη+E−1)·g + ξˣ``, the
    exact integration of underdamped Langevin dynamics over a time ``η`` whose stationary
    law is ``θ ∝ exp(−N·L/T)``; the correlated noise has ``Var ξᵛ = u(1−E²)·T/N`` (see
    :func:`lpsampling.update.sghmc_coefficients`). ``accumulator="low"`` rounds both
    right-hand sides onto the weight grid; ``"vc"`` replaces both noises by the
    variance-corrected quantizer; ``"full"`` keeps ``θ`` (``state.accumulator``) and ``v``
    in float32 and runs the model on ``Q_W(θ)``.

    Args:
      learning_rate: ``η``, the time step (scalar or ``optax.Schedule``). For large
        friction SGHMC behaves as SGLD with step ``uη/γ``.
      num_data: ``N``; temperature: ``T``; weight_decay: ``wd`` (as :func:`sgld`).
      friction: ``γ > 0`` (default 2, as the authors' code).
      inverse_mass: ``u > 0`` (default 1, as the authors' code).
      precision / weight_format / grad_format / accumulator / key: as :func:`sgld`; the
        momentum lives on the weight grid.
    """
    return _make(
        learning_rate, noise=True, num_data=num_data, temperature=temperature,
        weight_decay=weight_decay, key=key, name="sghmc",
        precision=_precision(precision, weight_format, grad_format, accumulator, "sghmc"),
        coefficients_fn=_sghmc_fn(friction, inverse_mass),
    )


def cyclical_sghmc(
    init_lr: float,
    *,
    num_data: int,
    num_cycles: int,
    total_steps: int,
    exploration_ratio: float = 0.0,
    friction: float = 2.0,
    inverse_mass: float = 1.0,
    temperature: float = 1.0,
    weight_decay: float = 0.0,
    weight_format: Format | None = None,
    grad_format: Format | None = None,
    accumulator: str | None = None,
    precision: Precision | None = None,
    key: jax.Array,
) -> optax.GradientTransformationExtraArgs:
    r"""Cyclical SGHMC: :func:`sghmc` with :func:`cyclical_sgld`'s cosine schedule on
    ``η`` and its exploration stage (no noise for the first ``exploration_ratio`` of each
    cycle; ``state.sampling`` tells whether the most recent update was a sampling step).
    The momentum carries over from one cycle to the next."""
    precision = _precision(precision, weight_format, grad_format, accumulator,
                           "cyclical_sghmc")
    init_lr = finite_float("init_lr", init_lr, positive=True)
    ratio = unit_interval("exploration_ratio", exploration_ratio)
    length = cycle_length(total_steps, num_cycles)
    return _make(
        cyclical_schedule(init_lr, length), noise=True, num_data=num_data,
        temperature=temperature, weight_decay=weight_decay, precision=precision, key=key,
        sampling_fn=lambda count: is_sampling_step(count, length, ratio),
        name="cyclical_sghmc", coefficients_fn=_sghmc_fn(friction, inverse_mass),
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
    return _find(state, "step_size")
