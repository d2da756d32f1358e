r"""Low-precision SGLD in blackjax's three layers: ``init``, ``build_kernel``, ``as_top_level_api``.

One step: ``θ ← θ + α·∇log p + sqrt(2αT)·ξ`` (blackjax units: ``α`` is ``step_size``, the
estimator returns ``∇log p`` of the full-data log density), run through
:func:`lpsampling.update.update_position` with ``η·g = −α·∇log p`` and noise variance ``2αT``.
With ``FULL`` formats the trajectory is ``blackjax.sgld``'s for the same keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Unpack

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm

from lpsampling._precision import PrecisionShortcuts, resolve_precision
from lpsampling.blackjax._util import as_position, gaussian_noise
from lpsampling.update import Precision, model_weights, update_position
from lpsampling.validation import finite_float, finite_pytree, float_pytree

__all__ = ["init", "build_kernel", "as_top_level_api"]

# Offsets for fold_in: the step's rng_key itself is blackjax's noise key.
WEIGHTS_STREAM = 1
UPDATE_STREAM = 2


def init(position: Any) -> Any:
    """The state of a chain started at ``position``: the position itself, its leaves as jax
    arrays (``init(1.0)`` works, as in blackjax). For ``accumulator="low"``/``"vc"`` start
    on the weight grid (e.g. :func:`lpsampling.init_weights`).

    Raises:
      TypeError: a leaf is not a real floating-point array.
      ValueError: a concrete leaf holds NaN or inf (named by its path).
    """
    return finite_pytree("position", float_pytree("position", as_position(position)))


def build_kernel(precision: Precision | None = None,
                 **shortcuts: Unpack[PrecisionShortcuts]) -> Callable:
    """The SGLD kernel with ``blackjax.sgmcmc.sgld``'s signature:
    ``kernel(rng_key, position, grad_estimator, minibatch, step_size, temperature=1.0)``.

    Args:
      precision: a :class:`lpsampling.Precision`; or the shortcuts ``weight_format=``,
        ``grad_format=``, ``accumulator=`` (defaults ``FULL``, ``FULL``, ``"full"``), not both.

    A step with a non-finite gradient, or a (traced) non-finite or negative step size or
    temperature, is skipped: the position comes back unchanged. The state is the bare
    position (as in ``blackjax.sgld``), so nothing counts the skips; compare the positions,
    or use the optax face (``nonfinite_count``) or cyclical SGLD (whose state counts them).
    """
    step = _step_with_flag(resolve_precision(precision, shortcuts, caller="build_kernel"))

    def kernel(rng_key, position, grad_estimator, minibatch, step_size, temperature=1.0):
        return step(rng_key, position, grad_estimator, minibatch, step_size, temperature)[0]

    return kernel


def _step_with_flag(precision: Precision) -> Callable:
    """The kernel returning ``(new_position, finite)``: ``finite`` is False when the step
    was skipped (non-finite gradient, step size or temperature; see
    :func:`lpsampling.update.update_position`) and the position left unchanged."""
    vc = precision.accumulator == "vc"

    def kernel(rng_key, position, grad_estimator, minibatch, step_size, temperature=1.0):
        position = as_position(position)
        weights_now = model_weights(
            jax.random.fold_in(rng_key, WEIGHTS_STREAM), position, precision)
        logdensity_grad = grad_estimator(weights_now, minibatch)
        descent = jax.tree.map(jnp.negative, logdensity_grad)
        noise = None if vc else gaussian_noise(rng_key, position)
        return update_position(
            jax.random.fold_in(rng_key, UPDATE_STREAM), position, descent,
            learning_rate=step_size, noise_variance=2 * temperature * step_size,
            precision=precision, noise=noise,
        )

    return kernel


def as_top_level_api(grad_estimator: Callable, *, precision: Precision | None = None,
                     **shortcuts: Unpack[PrecisionShortcuts]) -> SamplingAlgorithm:
    """Low-precision SGLD as a drop-in for ``blackjax.sgld(grad_estimator)``.

    ``init(position, rng_key=None)`` returns the position (see :func:`init`);
    ``step(rng_key, state, minibatch, step_size, temperature=1)`` the new position. Jit it
    yourself, as with blackjax. ``precision`` / shortcuts as in :func:`build_kernel`.
    """
    kernel = build_kernel(resolve_precision(precision, shortcuts, caller="sgld"))

    def init_fn(position, rng_key=None):
        del rng_key
        return init(position)

    def step_fn(rng_key, state, minibatch, step_size, temperature=1):
        # Concrete values are checked here; traced ones (under jit) are the caller's.
        finite_float("step_size", step_size, positive=True)
        finite_float("temperature", temperature)
        return kernel(rng_key, state, grad_estimator, minibatch, step_size, temperature)

    return SamplingAlgorithm(init_fn, step_fn)
