"""One chain data-parallel over a ``"data"`` axis (and many such chains on a 2-D mesh)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from lpsampling.parallel._faces import face
from lpsampling.parallel._mesh import (
    CHAINS,
    DATA,
    check_backend,
    check_batch_sizes,
    check_mesh,
    check_spec,
    check_split,
    local_devices,
    make_mesh,
    needs_cpu_sync,
    place,
    sync,
)


def _by_num_args(build: Callable[[int], Callable]) -> Callable[[tuple], Callable]:
    """``build(n)`` once per number ``n`` of extra arguments (blackjax's step size, ...)."""
    cache: dict[int, Callable] = {}

    def get(args: tuple) -> Callable:
        if len(args) < 3:
            raise TypeError(f"a data-parallel step takes at least 3 arguments, got {len(args)}")
        n = len(args) - 3
        if n not in cache:
            cache[n] = build(n)
        return cache[n]

    return get


def data_parallel_step(sampler: Any, loss_fn: Callable[[Any, Any], jax.Array] | None = None,
                       *, mesh: Mesh | None = None, backend: str = "sharded",
                       axis: str = DATA, devices: Sequence[jax.Device] | None = None,
                       what: str = "data_parallel_step") -> Callable:
    """A sampler step whose minibatch is split over the devices of the mesh axis ``axis``.

    optax sampler (``loss_fn(params, batch)``, the mean minibatch loss): returns
    ``step(params, opt_state, batch) -> (params, opt_state, loss)``. blackjax sampler,
    built on :func:`pmean_grad_estimator` (or its bare step): returns
    ``step(rng_key, state, minibatch, *args) -> state``, ``rng_key`` and ``args`` shared.
    Gradients are averaged over ``axis`` and every replica draws the same random numbers,
    so the replicas stay bit-identical.

    ``backend="sharded"``: ``jax.jit`` + ``shard_map`` on ``mesh`` (default
    ``make_mesh(data=-1)``); state replicated (:func:`replicate`), batch ``(B, ...)``
    sharded, inputs put there if they are not. If ``mesh`` also has a ``"chains"`` axis
    (:func:`make_mesh` ``(chains, data)``), the state has a leading chain axis ``C`` over
    ``"chains"`` (:func:`init_chains`; blackjax: one key per chain) and the batch is
    ``(C, B, ...)``. ``backend="pmap"``: ``jax.pmap`` over the mesh's (local) devices,
    state from ``replicate(..., backend="pmap")``, the batch (this process's share) split
    over the local devices; same numbers. ``backend="vmap"``: the same step on one device
    with the plain estimator (the reference), vmapped over the chains of a 2-D ``mesh``.
    ``B`` must split evenly, and be the same for every leaf of the batch (``x`` and ``y``),
    else ``ValueError``.
    """
    check_backend(backend)
    if backend == "sharded" and mesh is None:
        mesh = make_mesh(data=-1)
    if backend == "sharded":
        check_mesh(mesh, [axis], what)
    chains = mesh is not None and CHAINS in mesh.axis_names and CHAINS != axis
    if backend == "vmap":
        fn = face(sampler, loss_fn, None, what).fn
        get = _by_num_args(lambda n: jax.jit(
            jax.vmap(fn, in_axes=(0, 0, 0) + (None,) * n) if chains else fn))

        def vmap_step(*args):
            body = get(args)
            check_batch_sizes(args[2], 1 if chains else 0, what)
            return body(*args)

        return vmap_step
    if backend == "pmap":
        if chains:
            raise ValueError(f"{what}: backend='pmap' takes a 1-D mesh; for chains × data "
                             "use backend='sharded'")
        return _pmap_step(sampler, loss_fn, axis, devices if mesh is None
                          else list(mesh.devices.flat), what)
    fn = face(sampler, loss_fn, axis, what).fn
    lead = P(CHAINS) if chains else P()
    batch = P(CHAINS, axis) if chains else P(axis)
    wait = needs_cpu_sync(mesh.devices.flat)

    def build(n):
        body = jax.vmap(fn, in_axes=(0, 0, 0) + (None,) * n) if chains else fn
        return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(lead, lead, batch) + (P(),) * n,
                                     out_specs=lead, check_vma=False))

    get = _by_num_args(build)

    def step(*args):
        body = get(args)
        check_batch_sizes(args[2], 1 if chains else 0, what)
        if chains:
            for a in args[:2]:
                check_split(a, 0, mesh.shape[CHAINS], what, "devices of mesh axis 'chains'")
        check_spec(args[2], mesh, batch, what)
        specs = (lead, lead, batch) + (P(),) * (len(args) - 3)
        placed = tuple(place(a, mesh, s) for a, s in zip(args, specs, strict=True))
        return sync(body(*placed), wait)

    return step


def _pmap_step(sampler: Any, loss_fn: Any, axis: str,
               devices: Sequence[jax.Device] | None, what: str) -> Callable:
    """The legacy ``jax.pmap`` path of :func:`data_parallel_step`."""
    fn, pmap_axes = face(sampler, loss_fn, axis, what)
    devs = local_devices(devices)
    wait = needs_cpu_sync(devs)
    get = _by_num_args(lambda n: jax.pmap(
        fn, axis_name=axis, in_axes=pmap_axes + (0,) + (None,) * n,
        devices=None if devices is None else list(devices)))

    def step(*args):
        body = get(args)
        batch = args[2]
        check_batch_sizes(batch, 0, what)
        check_split(batch, 0, len(devs), what, "local devices")
        batch = jax.tree.map(lambda x: jnp.reshape(x, (len(devs), -1) + np.shape(x)[1:]),
                             batch)
        return sync(body(args[0], args[1], batch, *args[3:]), wait)

    return step
