r"""Cyclical low-precision SGLD (Zhang et al., 2020) in blackjax's three layers.

Step ``k`` has step size ``α_k = α₀/2·(cos(π·(k mod L)/L) + 1)`` with cycle length
``L = total_steps // num_cycles``; the first ``exploration_ratio`` of each cycle are SGD steps
(no noise), the rest SGLD steps (:mod:`lpsampling.blackjax.sgmcmc.sgld`'s kernel).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Unpack

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm

from lpsampling._precision import PrecisionShortcuts, resolve_precision
from lpsampling.blackjax._util import as_position
from lpsampling.blackjax.sgmcmc import sgld
from lpsampling.schedules import cycle_length, cyclical_schedule, is_sampling_step
from lpsampling.update import Precision
from lpsampling.validation import finite_float, finite_pytree, float_pytree, unit_interval

__all__ = ["CyclicalSGLDState", "init", "build_kernel", "as_top_level_api"]


class CyclicalSGLDState(NamedTuple):
    """State of cyclical SGLD.

    ``position`` is the chain; ``count`` the number of steps taken; ``step_size`` the step
    size of the most recent step and ``sampling`` whether it was a sampling (noisy) step:
    collect ``position`` (or :func:`lpsampling.blackjax.weights` of it) when ``sampling``.
    ``nonfinite_count`` counts the steps skipped (position unchanged) because the gradient,
    or a traced temperature, was not finite (or the temperature negative), as the optax
    face's ``SGMCMCState.nonfinite_count`` does.
    """

    position: Any
    count: jax.Array
    step_size: jax.Array
    sampling: jax.Array
    nonfinite_count: jax.Array = None  # an int32 scalar after init (None only if omitted)


def init(position: Any) -> CyclicalSGLDState:
    """The state before the first step (leaves of ``position`` as jax arrays)."""
    return CyclicalSGLDState(
        finite_pytree("position", float_pytree("position", as_position(position))),
        jnp.zeros([], jnp.int32),
        jnp.zeros([], jnp.float32),
        jnp.zeros([], jnp.bool_), jnp.zeros([], jnp.int32))


def build_kernel(*, init_step_size: float, num_cycles: int, total_steps: int,
                 exploration_ratio: float = 0.0, precision: Precision | None = None,
                 **shortcuts: Unpack[PrecisionShortcuts]) -> Callable:
    """The cyclical kernel ``kernel(rng_key, state, grad_estimator, minibatch,
    temperature=1.0) -> CyclicalSGLDState`` for the schedule given here.

    ``precision`` / shortcuts as in :func:`lpsampling.blackjax.sgmcmc.sgld.build_kernel`.
    """
    return _build_kernel(init_step_size, num_cycles, total_steps, exploration_ratio,
                         resolve_precision(precision, shortcuts, caller="build_kernel"))


def _build_kernel(init_step_size, num_cycles, total_steps, exploration_ratio,
                  precision: Precision) -> Callable:
    exploration_ratio = unit_interval("exploration_ratio", exploration_ratio)
    init_step_size = finite_float("init_step_size", init_step_size, positive=True)
    length = cycle_length(total_steps, num_cycles)
    schedule = cyclical_schedule(init_step_size, length)
    sgld_kernel = sgld._step_with_flag(precision)

    def kernel(rng_key, state, grad_estimator, minibatch, temperature=1.0):
        step_size = jnp.asarray(schedule(state.count), jnp.float32)
        sampling = is_sampling_step(state.count, length, exploration_ratio)
        temp = jnp.where(sampling, temperature, 0.0)
        position, finite = sgld_kernel(rng_key, state.position, grad_estimator, minibatch,
                                       step_size, temp)
        skipped = jnp.logical_not(finite).astype(jnp.int32)
        nonfinite = skipped if state.nonfinite_count is None else state.nonfinite_count + skipped
        return CyclicalSGLDState(position, state.count + 1, step_size, sampling, nonfinite)

    return kernel


def as_top_level_api(grad_estimator: Callable, *, init_step_size: float, num_cycles: int,
                     total_steps: int, exploration_ratio: float = 0.0,
                     precision: Precision | None = None,
                     **shortcuts: Unpack[PrecisionShortcuts]) -> SamplingAlgorithm:
    """Cyclical SGLD in blackjax style (blackjax units: ``α`` on the full-data log density).

    ``init(position, rng_key=None)`` → :class:`CyclicalSGLDState`;
    ``step(rng_key, state, minibatch, temperature=1.0)`` → the new state.
    """
    kernel = _build_kernel(init_step_size, num_cycles, total_steps, exploration_ratio,
                           resolve_precision(precision, shortcuts, caller="cyclical_sgld"))

    def init_fn(position, rng_key=None):
        del rng_key
        return init(position)

    def step_fn(rng_key, state, minibatch, temperature=1.0):
        finite_float("temperature", temperature)
        return kernel(rng_key, state, grad_estimator, minibatch, temperature)

    return SamplingAlgorithm(init_fn, step_fn)
