"""Independent chains over a ``"chains"`` axis: ``init_chains`` and ``run_chains``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from lpsampling.optax import SGMCMCState
from lpsampling.parallel._faces import StepFn, chain_step, is_optax
from lpsampling.parallel._mesh import (
    CHAINS,
    check_backend,
    check_mesh,
    local_devices,
    make_mesh,
    place,
)
from lpsampling.validation import positive_int


def _num_chains(keys: Any) -> int:
    if not isinstance(keys, jax.Array) and not isinstance(keys, np.ndarray):
        raise TypeError(f"keys must be an array of PRNG keys, got {type(keys).__name__}")
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if (typed and keys.ndim != 1) or (not typed and keys.ndim != 2):
        raise ValueError(
            "keys must hold one PRNG key per chain: shape (C,) for jax.random.key keys or "
            f"(C, 2) for raw jax.random.PRNGKey keys; got shape {keys.shape}. "
            "Use keys = jax.random.split(key, num_chains)")
    return int(keys.shape[0])


def _check_leading(tree: Any, num: int, what: str, name: str, keys_word: str) -> None:
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        shape = np.shape(x)
        if not shape or shape[0] != num:
            raise ValueError(
                f"{what}: {num} {keys_word} but {name} leaf "
                f"{jax.tree_util.keystr(path) or '<root>'} has shape {shape}; every leaf "
                f"needs a leading chain axis of size {num}")


def _is_sampler_state(x: Any) -> bool:
    return isinstance(x, SGMCMCState)


def init_chains(sampler: Any, params: Any, keys: jax.Array, *,
                what: str = "init_chains") -> Any:
    """The initial carry of ``C`` chains for :func:`run_chains`, each with its own key.

    ``params`` has a leading chain axis ``C`` and ``keys`` shape ``(C,)``. optax sampler:
    returns ``(params, opt_states)`` where the key of the lpsampling sampler state inside
    each optimizer state (found through ``optax.chain`` etc.) is the chain's key, so chain
    ``i`` starts as ``lps.sgld(..., key=keys[i]).init(params[i])`` would (the ``j``-th of
    several sampler states gets ``fold_in(keys[i], j)``); ``ValueError`` when there is none.
    blackjax sampler: ``vmap(sampler.init)(params, keys)``.
    """
    num = _num_chains(keys)
    _check_leading(params, num, what, "params", "keys")
    if not is_optax(sampler):
        return jax.vmap(sampler.init)(params, keys)

    def one(p, key):
        state = sampler.init(p)
        found = [x for x in jax.tree.leaves(state, is_leaf=_is_sampler_state)
                 if _is_sampler_state(x)]
        if not found:
            raise ValueError(
                f"{what}: the optimizer state holds no lpsampling sampler state "
                "(lps.sgld / lps.sgd / lps.cyclical_sgld) whose key could be set per chain")
        index = iter(range(len(found)))

        def set_key(x):
            if not _is_sampler_state(x):
                return x
            return x._replace(
                key=key if len(found) == 1 else jax.random.fold_in(key, next(index)))

        return jax.tree.map(set_key, state, is_leaf=_is_sampler_state)

    return params, jax.vmap(one)(params, keys)


def _one_chain(step_fn: StepFn, num_steps: int):
    def run(carry, key):
        return jax.lax.scan(step_fn, carry, jax.random.split(key, num_steps))
    return run


@functools.lru_cache(maxsize=64)
def _runner(step_fn: StepFn, num_steps: int, backend: str, mesh: Mesh | None,
            axis: str, devices: tuple | None) -> Callable:
    body = jax.vmap(_one_chain(step_fn, num_steps))
    if backend == "vmap":
        return jax.jit(body)
    if backend == "pmap":
        return jax.pmap(body, devices=None if devices is None else list(devices))
    spec = P(axis)
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(spec, spec),
                                 out_specs=(spec, spec), check_vma=False))


def run_chains(step: Any, carry: Any, keys: jax.Array, num_steps: int, *,
               mesh: Mesh | None = None, backend: str = "sharded", axis: str = CHAINS,
               batch_fn: Callable[[jax.Array], Any] | None = None,
               loss_fn: Callable | None = None, step_args: tuple = (),
               sample_fn: Callable[[Any], Any] | None = None,
               devices: Sequence[jax.Device] | None = None,
               what: str = "run_chains") -> tuple[Any, Any]:
    """Run ``C`` independent chains, ``C/D`` per device by ``vmap``.

    Args:
      step: an optax or blackjax sampler (then ``batch_fn``, and ``loss_fn`` for optax or
        ``step_args`` such as ``(step_size,)`` for blackjax, say how to step it; the sample
        is ``sample_fn(carry)``, default the params / the state), or your own pure
        ``step_fn(carry, key) -> (carry, sample)``.
      carry: pytree whose leaves have a leading chain axis ``C`` (:func:`init_chains`).
      keys: ``C`` PRNG keys (``jax.random.split(key, C)``); chain ``i`` runs on
        ``jax.random.split(keys[i], num_steps)``, so its samples never depend on the layout.
      num_steps: steps per chain (``lax.scan``).
      mesh: for ``"sharded"``, the mesh whose axis ``axis`` holds the chains (default
        ``make_mesh(chains=-1)``); for ``"pmap"``, its devices (default all, local ones).
      backend: ``"sharded"`` (``jax.jit`` + ``shard_map``), ``"pmap"`` (legacy) or
        ``"vmap"`` (one device); all give the same samples. ``C`` must split over ``D``.

    Returns:
      ``(final_carry, samples)``: samples have leaves of shape ``(C, num_steps, ...)``
      (``"sharded"``: sharded over the chains; gather them across processes with
      ``multihost_utils.process_allgather``).
    """
    check_backend(backend)
    num_steps = positive_int(f"{what}: num_steps", num_steps)
    step_fn = step
    if batch_fn is not None or not callable(step):
        step_fn = chain_step(step, batch_fn, loss_fn=loss_fn, step_args=step_args,
                             sample_fn=sample_fn)
    num = _num_chains(keys)
    _check_leading(carry, num, what, "init_carry", "chains (keys)")
    if backend == "sharded":
        mesh = make_mesh(chains=-1) if mesh is None else mesh
        check_mesh(mesh, [axis], what)
        n_dev = mesh.shape[axis]
    elif backend == "pmap":
        if mesh is not None:
            devices = list(mesh.devices.flat)
        n_dev = len(local_devices(devices))
    else:
        n_dev = 1
    if num % n_dev:
        raise ValueError(
            f"{what}: {num} chains do not split evenly over {n_dev} devices "
            f"({num} % {n_dev} = {num % n_dev}); use a multiple of {n_dev} "
            "chains or fewer devices")
    devs = None if devices is None else tuple(devices)
    run = _runner(step_fn, num_steps, backend, mesh if backend == "sharded" else None, axis,
                  devs if backend == "pmap" else None)
    if backend == "sharded":
        return run(*place((carry, keys), mesh, P(axis)))
    if backend == "vmap":
        return run(carry, keys)
    split = lambda x: x.reshape((n_dev, num // n_dev) + x.shape[1:])
    merge = lambda x: x.reshape((num,) + x.shape[2:])
    out = run(jax.tree.map(split, carry), split(keys))
    return jax.tree.map(merge, out)
