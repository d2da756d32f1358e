r"""Samplers as blackjax kernels: drop-ins for ``blackjax.sgld`` in every precision mode.

blackjax's units: ``step_size`` is ``α``, the gradient estimator returns the gradient of the
*full-data* log density ``∇log p(θ | data)``, and one step is
``θ ← θ + α·∇log p + sqrt(2αT)·ξ``. This is the update rule of :mod:`lpsampling.update`
with ``η·g = −α·∇log p`` and noise variance ``2αT``: the estimator's output is quantized
onto ``grad_format`` as it comes (in these units), the step runs through the same
:func:`lpsampling.update.update_position` as the optax face.

The state is the chain ``θ``: for ``accumulator="full"`` with a grid weight format it is the
full-precision accumulator, and the gradient is evaluated at ``Q_W(θ)`` drawn with this
step's key; use :func:`weights` for the grid weights to predict with. For ``"low"`` and
``"vc"`` the state is the grid weights themselves.

With ``FULL`` formats the Gaussian noise is drawn from the step's ``rng_key`` exactly as
``blackjax.sgld`` draws it (one normal vector over the raveled position, in its dtype), so
both give the same trajectory for the same keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm

from lpsampling.formats import FULL, Format
from lpsampling.schedules import cycle_length, cyclical_schedule, is_sampling_step
from lpsampling.update import Precision, model_weights, update_position

__all__ = [
    "sgld",
    "cyclical_sgld",
    "build_kernel",
    "weights",
    "CyclicalSGLDState",
]

# Offsets for fold_in: the step's rng_key itself is blackjax's noise key.
_WEIGHTS_STREAM = 1
_UPDATE_STREAM = 2


def _blackjax_gaussian_noise(rng_key, position):
    """Standard normals exactly as ``blackjax.util.generate_gaussian_noise`` draws them:
    one vector over the raveled position in its promoted dtype, cut back into leaves
    (without concatenating the position itself)."""
    leaves, treedef = jax.tree_util.tree_flatten(position)
    dtype = jnp.result_type(*leaves)
    sizes = [int(jnp.size(x)) for x in leaves]
    flat = jax.random.normal(rng_key, shape=(sum(sizes),), dtype=dtype)
    out, start = [], 0
    for x, n in zip(leaves, sizes, strict=True):
        out.append(flat[start:start + n].reshape(jnp.shape(x)).astype(x.dtype))
        start += n
    return jax.tree_util.tree_unflatten(treedef, out)


def build_kernel(
    weight_format: Format = FULL,
    grad_format: Format = FULL,
    accumulator: str = "full",
) -> Callable:
    """The low-precision SGLD kernel with blackjax's signature:
    ``kernel(rng_key, position, grad_estimator, minibatch, step_size, temperature=1.0)``.
    A ``step_size`` of ``None``-noise is not offered: for SGD steps pass ``temperature=0``.
    """
    precision = Precision(weight_format, grad_format, accumulator)

    def kernel(rng_key, position, grad_estimator, minibatch, step_size, temperature=1.0):
        weights_now = model_weights(
            jax.random.fold_in(rng_key, _WEIGHTS_STREAM), position, precision)
        logdensity_grad = grad_estimator(weights_now, minibatch)
        descent = jax.tree.map(jnp.negative, logdensity_grad)
        noise = None if accumulator == "vc" else _blackjax_gaussian_noise(rng_key, position)
        new_position, _ = update_position(
            jax.random.fold_in(rng_key, _UPDATE_STREAM), position, descent,
            learning_rate=step_size, noise_variance=2 * temperature * step_size,
            precision=precision, noise=noise,
        )
        return new_position

    return kernel


def sgld(
    grad_estimator: Callable,
    *,
    weight_format: Format = FULL,
    grad_format: Format = FULL,
    accumulator: str = "full",
) -> SamplingAlgorithm:
    """Low-precision SGLD as a drop-in for ``blackjax.sgld(grad_estimator)``.

    ``init(position, rng_key=None)`` returns the position; ``step(rng_key, state,
    minibatch, step_size, temperature=1.0)`` returns the new position. Jit it yourself,
    as with blackjax.
    """
    kernel = build_kernel(weight_format, grad_format, accumulator)

    def init_fn(position, rng_key=None):
        del rng_key
        return position

    def step_fn(rng_key, state, minibatch, step_size, temperature=1.0):
        return kernel(rng_key, state, grad_estimator, minibatch, step_size, temperature)

    return SamplingAlgorithm(init_fn, step_fn)


class CyclicalSGLDState(NamedTuple):
    """State of :func:`cyclical_sgld`.

    ``position`` is the chain; ``count`` the number of steps taken; ``step_size`` the step
    size of the most recent step and ``sampling`` whether it was a sampling (noisy) step:
    collect ``position`` (or :func:`weights` of it) when ``sampling`` is True.
    """

    position: Any
    count: jax.Array
    step_size: jax.Array
    sampling: jax.Array


def cyclical_sgld(
    grad_estimator: Callable,
    *,
    init_step_size: float,
    num_cycles: int,
    total_steps: int,
    exploration_ratio: float = 0.0,
    weight_format: Format = FULL,
    grad_format: Format = FULL,
    accumulator: str = "full",
) -> SamplingAlgorithm:
    """Cyclical SGLD in blackjax style (blackjax units: ``α`` on the full-data log density).

    ``init(position, rng_key=None)`` → :class:`CyclicalSGLDState`;
    ``step(rng_key, state, minibatch, temperature=1.0)`` → new state. The step size follows
    ``α_k = α₀/2·(cos(π·(k mod L)/L) + 1)``; steps in the first ``exploration_ratio`` of a
    cycle are SGD (no noise), the rest SGLD.
    """
    if not 0.0 <= float(exploration_ratio) < 1.0:
        raise ValueError(f"exploration_ratio must be in [0, 1), got {exploration_ratio!r}")
    if not float(init_step_size) > 0:
        raise ValueError(f"init_step_size must be > 0, got {init_step_size!r}")
    length = cycle_length(total_steps, num_cycles)
    schedule = cyclical_schedule(init_step_size, length)
    kernel = build_kernel(weight_format, grad_format, accumulator)

    def init_fn(position, rng_key=None):
        del rng_key
        return CyclicalSGLDState(
            position, jnp.zeros([], jnp.int32), jnp.zeros([], jnp.float32),
            jnp.zeros([], jnp.bool_))

    def step_fn(rng_key, state, minibatch, temperature=1.0):
        step_size = jnp.asarray(schedule(state.count), jnp.float32)
        sampling = is_sampling_step(state.count, length, exploration_ratio)
        temp = jnp.where(sampling, temperature, 0.0)
        position = kernel(rng_key, state.position, grad_estimator, minibatch, step_size, temp)
        return CyclicalSGLDState(position, state.count + 1, step_size, sampling)

    return SamplingAlgorithm(init_fn, step_fn)


def weights(
    position: Any,
    *,
    rng_key: jax.Array,
    weight_format: Format = FULL,
    grad_format: Format = FULL,
    accumulator: str = "full",
) -> Any:
    """The weights to run the model on for a state: ``Q_W(θ)`` for SGLDLP-F, else ``θ``."""
    return model_weights(rng_key, position, Precision(weight_format, grad_format, accumulator))
