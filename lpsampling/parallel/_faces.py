"""The one place that tells the optax face from the blackjax face.

Every public function of :mod:`lpsampling.parallel` takes the sampler through one argument:
an optax ``GradientTransformation`` (``lps.sgld`` & co.), a blackjax ``SamplingAlgorithm``
(``lps.blackjax.sgld`` & co., or anything with ``init`` and ``step``), or a bare
blackjax-style ``step(rng_key, state, minibatch, *args)``. blackjax is never imported here
(importing it starts the JAX backend, see ``initialize_distributed``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

StepFn = Callable[[Any, jax.Array], tuple[Any, Any]]


def is_optax(sampler: Any) -> bool:
    return isinstance(sampler, optax.GradientTransformation)


def _blackjax_step(sampler: Any, loss_fn: Any, what: str) -> Callable:
    if loss_fn is not None:
        raise TypeError(
            f"{what}: loss_fn is for optax samplers; a blackjax sampler takes the data "
            "through its gradient estimator")
    step = getattr(sampler, "step", None)
    if callable(step) and callable(getattr(sampler, "init", None)):
        return step
    if callable(sampler):
        return sampler
    raise TypeError(
        f"{what}: expected an optax GradientTransformation (lps.sgld, ...), a blackjax "
        f"SamplingAlgorithm (lps.blackjax.sgld, ...) or a blackjax step function, got "
        f"{type(sampler).__name__}")


def optax_step(optimizer: optax.GradientTransformation,
               loss_fn: Callable[[Any, Any], jax.Array], *,
               axis_name: str | tuple[str, ...] | None = None) -> Callable:
    """One sampler step ``(params, opt_state, batch) -> (params, opt_state, loss)``;
    ``loss_fn(params, batch)`` is the mean minibatch loss. With ``axis_name`` the gradient
    and loss are averaged over that named axis with ``jax.lax.pmean``. Not jitted."""

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        if axis_name is not None:
            loss, grads = jax.lax.pmean((loss, grads), axis_name)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


class Face(NamedTuple):
    """A step ``fn(a0, a1, batch, *extra)`` of either face and how pmap maps ``a0, a1``:
    optax ``(params, opt_state, batch)``, both replicated (``(0, 0)``); blackjax
    ``(rng_key, state, minibatch, *args)``, the key shared (``(None, 0)``)."""

    fn: Callable
    pmap_axes: tuple


def face(sampler: Any, loss_fn: Any, axis_name: str | None, what: str) -> Face:
    if is_optax(sampler):
        if loss_fn is None:
            raise TypeError(f"{what}: an optax sampler needs loss_fn(params, batch)")
        return Face(optax_step(sampler, loss_fn, axis_name=axis_name), (0, 0))
    return Face(_blackjax_step(sampler, loss_fn, what), (None, 0))


def pmean_grad_estimator(grad_estimator: Callable, axis_name: str | tuple[str, ...] = "data"
                         ) -> Callable:
    """A blackjax gradient estimator averaged over the devices of ``axis_name``.

    Each device estimates the full-data gradient from its share of the minibatch
    (``N/b·Σ_local ∇log p + ∇log prior``); the mean over devices is the estimate from the
    whole minibatch. Build the blackjax sampler on it for :func:`data_parallel_step`
    (``backend="sharded"`` or ``"pmap"``); ``backend="vmap"`` takes the plain estimator.
    """

    def estimator(position, minibatch):
        return jax.lax.pmean(grad_estimator(position, minibatch), axis_name)

    return estimator


# ------------------------------------------------------------------- one step of one chain


def _default_sample(carry: Any) -> Any:
    return carry[0] if isinstance(carry, tuple) else carry


@functools.lru_cache(maxsize=64)
def _cached_chain_step(sampler, batch_fn, loss_fn, step_args, sample_fn) -> StepFn:
    return _build_chain_step(sampler, batch_fn, loss_fn, step_args, sample_fn)


def _build_chain_step(sampler, batch_fn, loss_fn, step_args, sample_fn) -> StepFn:
    if is_optax(sampler):
        step = face(sampler, loss_fn, None, "run_chains").fn
        sample_fn = sample_fn or _default_sample

        def optax_step_fn(carry, key):
            params, state = carry
            params, state, _ = step(params, state, batch_fn(key))
            carry = (params, state)
            return carry, sample_fn(carry)

        return optax_step_fn

    step = _blackjax_step(sampler, loss_fn, "run_chains")
    sample_fn = sample_fn or (lambda state: state)

    def blackjax_step_fn(state, key):
        k_batch, k_step = jax.random.split(key)
        state = step(k_step, state, batch_fn(k_batch), *step_args)
        return state, sample_fn(state)

    return blackjax_step_fn


def chain_step(sampler: Any, batch_fn: Callable[[jax.Array], Any], *,
               loss_fn: Callable | None = None, step_args: tuple = (),
               sample_fn: Callable[[Any], Any] | None = None) -> StepFn:
    """``step_fn(carry, key) -> (carry, sample)`` of one chain, for either face.

    optax: ``carry = (params, opt_state)``, the minibatch is ``batch_fn(key)``, the noise key
    lives in ``opt_state``, the sample defaults to the params. blackjax: ``carry`` is the
    state, ``key`` is split into a minibatch key and the kernel key, the kernel runs as
    ``step(k, state, batch_fn(k_batch), *step_args)``, the sample defaults to the state.
    The same arguments give the same function (cached), so a runner compiles once.
    """
    if batch_fn is None:
        raise TypeError("run_chains: a sampler needs batch_fn(key) -> minibatch")
    args = (sampler, batch_fn, loss_fn, tuple(step_args), sample_fn)
    try:
        return _cached_chain_step(*args)
    except TypeError:  # unhashable step_args (arrays): build afresh
        return _build_chain_step(*args)
