r"""Low-precision SGHMC in blackjax's three layers: ``init``, ``build_kernel``,
``as_top_level_api`` (a drop-in for ``blackjax.sghmc``).

blackjax's SGHMC is the Euler scheme of Chen et al. (2014) with Ma et al.'s (2015) scaling:
each ``step`` draws a fresh momentum ``p ~ N(0, I)``, then takes ``num_integration_steps``
steps ``θ ← θ + ε·p``, ``p ← (1 − αε)·p + ε·∇log p(θ) + sqrt(εT(2α − εTβ))·ξ`` (``ε`` the
step size, the estimator returning ``∇log p`` of the full-data log density) and returns
``θ``. Each step runs through :func:`lpsampling.update.update_momentum` with those
coefficients, so the precision modes are those of :func:`lpsampling.sghmc`: ``"low"`` rounds
``θ`` and ``p`` onto the weight grid, ``"vc"`` replaces the momentum noise by the
variance-corrected quantizer (``θ``, which has no noise in this scheme, is stochastically
rounded), ``"full"`` keeps both in float32 and evaluates the gradient at ``Q_W(θ)``. With
``FULL`` formats the trajectory is ``blackjax.sghmc``'s for the same keys.

For the exact-integration scheme of low-precision SGHMC (Wang et al. 2024) in optax form,
see :func:`lpsampling.sghmc`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Unpack

import jax
from blackjax.base import SamplingAlgorithm

from lpsampling._precision import PrecisionShortcuts, resolve_precision
from lpsampling.blackjax._util import as_position, gaussian_noise
from lpsampling.blackjax.sgmcmc.sgld import UPDATE_STREAM, WEIGHTS_STREAM
from lpsampling.update import (
    MomentumCoefficients,
    Precision,
    hyperparameters_valid,
    model_weights,
    update_momentum,
)
from lpsampling.validation import finite_float, finite_pytree, float_pytree, positive_int

__all__ = ["init", "build_kernel", "as_top_level_api", "euler_coefficients"]


def init(position: Any) -> Any:
    """The state of a chain started at ``position``: the position itself, its leaves as
    jax arrays (as :func:`lpsampling.blackjax.sgmcmc.sgld.init`)."""
    return finite_pytree("position", float_pytree("position", as_position(position)))


def euler_coefficients(step_size, temperature=1.0, alpha=0.01,
                       beta=0.0) -> MomentumCoefficients:
    """blackjax's SGHMC step (``blackjax.sgmcmc.diffusions.sghmc``) as the coefficients of
    the momentum rule, for ``grads = ∇log p``; computed with blackjax's own expressions (so
    Python floats stay double until they meet the arrays, as there). ``valid`` is False for
    a non-finite or negative step size or temperature (the step is then skipped)."""
    return MomentumCoefficients(
        decay=1.0 - alpha * step_size,
        v_grad=step_size,
        x_velocity=step_size,
        var_v=step_size * temperature * (2 * alpha - step_size * temperature * beta),
        valid=hyperparameters_valid(step_size, temperature),
    )


def build_kernel(alpha: float = 0.01, beta: float = 0, precision: Precision | None = None,
                 **shortcuts: Unpack[PrecisionShortcuts]) -> Callable:
    """The SGHMC kernel with ``blackjax.sgmcmc.sghmc.build_kernel(alpha, beta)``'s
    signature: ``kernel(rng_key, position, grad_estimator, minibatch, step_size,
    num_integration_steps, temperature=1.0)`` → the new position.

    Args:
      alpha: friction ``α`` (blackjax's default 0.01); beta: ``β``, the estimated gradient
        noise (default 0).
      precision: a :class:`lpsampling.Precision`; or the shortcuts ``weight_format=``,
        ``grad_format=``, ``accumulator=`` (defaults ``FULL``, ``FULL``, ``"full"``).

    A step with a non-finite gradient, step size or temperature, or a negative noise
    variance ``εT(2α − εTβ)``, is skipped (position and momentum unchanged).
    """
    alpha = finite_float("alpha", alpha)
    beta = finite_float("beta", beta)
    precision = resolve_precision(precision, shortcuts, caller="build_kernel")
    vc = precision.accumulator == "vc"

    def kernel(rng_key, position, grad_estimator, minibatch, step_size,
               num_integration_steps, temperature=1.0):
        position = as_position(position)

        def body_fn(state, key):
            x, p = state
            weights_now = model_weights(jax.random.fold_in(key, WEIGHTS_STREAM), x, precision)
            logdensity_grad = grad_estimator(weights_now, minibatch)
            x, p, _ = update_momentum(
                jax.random.fold_in(key, UPDATE_STREAM), x, p, logdensity_grad,
                coefficients=euler_coefficients(step_size, temperature, alpha, beta),
                precision=precision, noise=None if vc else gaussian_noise(key, x))
            return (x, p), None

        momentum = gaussian_noise(rng_key, position)
        keys = jax.random.split(rng_key, num_integration_steps)
        (position, _), _ = jax.lax.scan(body_fn, (position, momentum), keys)
        return position

    return kernel


def as_top_level_api(grad_estimator: Callable, num_integration_steps: int = 10,
                     alpha: float = 0.01, beta: float = 0, *,
                     precision: Precision | None = None,
                     **shortcuts: Unpack[PrecisionShortcuts]) -> SamplingAlgorithm:
    """Low-precision SGHMC as a drop-in for ``blackjax.sghmc(grad_estimator,
    num_integration_steps, alpha, beta)``.

    ``init(position, rng_key=None)`` returns the position; ``step(rng_key, state,
    minibatch, step_size, temperature=1)`` the new position after
    ``num_integration_steps`` steps from a fresh momentum. Jit it yourself, as with
    blackjax. ``precision`` / shortcuts as in :func:`build_kernel`.
    """
    num_integration_steps = positive_int("num_integration_steps", num_integration_steps)
    kernel = build_kernel(alpha, beta, resolve_precision(precision, shortcuts, caller="sghmc"))

    def init_fn(position, rng_key=None):
        del rng_key
        return init(position)

    def step_fn(rng_key, state, minibatch, step_size, temperature=1):
        # Concrete values are checked here; traced ones (under jit) are the caller's.
        finite_float("step_size", step_size, positive=True)
        finite_float("temperature", temperature)
        return kernel(rng_key, state, grad_estimator, minibatch, step_size,
                      num_integration_steps, temperature)

    return SamplingAlgorithm(init_fn, step_fn)


