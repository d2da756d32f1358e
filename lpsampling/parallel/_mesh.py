"""Meshes and placement: ``make_mesh``, ``shard``, ``replicate`` and their checks."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lpsampling.validation import positive_int

CHAINS = "chains"
DATA = "data"
BACKENDS = ("sharded", "pmap", "vmap")


def check_backend(backend: str, allowed: Sequence[str] = BACKENDS) -> str:
    if backend not in allowed:
        raise ValueError(f"backend must be one of {tuple(allowed)}, got {backend!r}")
    return backend


def device_list(num_devices: int | None, devices: Sequence[jax.Device] | None) -> list:
    """The first ``num_devices`` of ``devices`` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    if num_devices is None:
        return devices
    positive_int("num_devices", num_devices)
    if num_devices > len(devices):
        raise ValueError(
            f"num_devices={num_devices} but only {len(devices)} devices are available")
    return devices[:num_devices]


def mesh_of(shape: tuple[int, ...], names: tuple[str, ...], devices) -> Mesh:
    types = (jax.sharding.AxisType.Explicit,) * len(names)
    return jax.make_mesh(shape, names, axis_types=types, devices=devices)


def make_mesh(chains: int | None = None, data: int | None = None, *,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with a ``"chains"`` axis, a ``"data"`` axis, or both (in that order).

    Each axis named gets that many devices; ``-1`` means "all the devices left" (at most one
    axis). ``make_mesh(chains=-1)`` puts every device on ``"chains"``, ``make_mesh(data=-1)``
    on ``"data"``, ``make_mesh(2, 4)`` is a 2-D ``("chains", "data")`` mesh of 2 × 4
    devices. ``devices`` defaults to ``jax.devices()`` (every process's devices).
    """
    devs = list(jax.devices() if devices is None else devices)
    sizes = {name: n for name, n in ((CHAINS, chains), (DATA, data)) if n is not None}
    if not sizes:
        raise TypeError("make_mesh needs chains= and/or data= (a size, or -1 for all devices)")
    if list(sizes.values()).count(-1) > 1:
        raise ValueError("make_mesh: at most one axis may be -1 (all the devices left)")
    for name, n in sizes.items():
        if n != -1:
            positive_int(name, n)
    fixed = int(np.prod([n for n in sizes.values() if n != -1]))
    for name, n in sizes.items():
        if n == -1:
            if len(devs) % fixed:
                raise ValueError(
                    f"make_mesh: {len(devs)} devices do not split into {fixed} × "
                    f"{name}; give {name} a size")
            sizes[name] = len(devs) // fixed
    need = int(np.prod(list(sizes.values())))
    if need > len(devs):
        raise ValueError(
            f"make_mesh({', '.join(str(n) for n in (chains, data) if n is not None)}) needs "
            f"{need} devices but only {len(devs)} are available")
    return mesh_of(tuple(sizes.values()), tuple(sizes), devs[:need])


def check_mesh(mesh: Any, required: Sequence[str], what: str) -> None:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{what} needs a jax.sharding.Mesh, got {type(mesh).__name__}")
    missing = [a for a in required if a not in mesh.axis_names]
    if missing:
        raise ValueError(
            f"{what} needs a mesh with axis names {tuple(required)}; the mesh has axes "
            f"{tuple(mesh.axis_names)} (missing {tuple(missing)}). Build one with "
            "make_mesh(chains=..., data=...), or pass the axis name used.")


# -------------------------------------------------------------------------- placement


def check_split(tree: Any, dim: int, n: int, what: str, unit: str) -> None:
    """Check that axis ``dim`` of every leaf of ``tree`` splits into ``n`` equal parts."""
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        shape = np.shape(x)
        name = jax.tree_util.keystr(path) or "<root>"
        if len(shape) <= dim:
            raise ValueError(
                f"{what}: leaf {name} of shape {shape} has no axis {dim} to split over "
                f"{n} {unit}")
        if shape[dim] % n:
            raise ValueError(
                f"{what}: leaf {name} has {shape[dim]} along axis {dim}, which does not "
                f"split evenly over {n} {unit} ({shape[dim]} % {n} = {shape[dim] % n})")


def check_batch_sizes(tree: Any, dim: int, what: str) -> None:
    """Check that every leaf of the minibatch ``tree`` that has an axis ``dim`` has the same
    size along it (``x`` and ``y`` of one batch); a mismatch would otherwise broadcast
    inside the loss. Names both leaves and both sizes."""
    first = None
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        shape = np.shape(x)
        if len(shape) <= dim:
            continue
        name = jax.tree_util.keystr(path) or "<root>"
        if first is None:
            first = (name, shape[dim])
        elif shape[dim] != first[1]:
            raise ValueError(
                f"{what}: the batch leaves differ in their batch size (axis {dim}): "
                f"{first[0]} has {first[1]} but {name} has {shape[dim]}; every leaf of a "
                f"minibatch must hold the same number of examples")


def _place_leaf(x: Any, sharding: NamedSharding) -> jax.Array:
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if sharding.is_fully_addressable or (
            isinstance(x, jax.Array) and not x.is_fully_addressable):
        return jax.device_put(x, sharding)
    # Several processes: every process holds the whole value and puts in its own shards.
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(x))
        global_data = jax.make_array_from_callback(data.shape, sharding, lambda i: data[i])
        return jax.random.wrap_key_data(global_data, impl=jax.random.key_impl(x))
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda i: value[i])


@functools.lru_cache(maxsize=256)
def _sharding(mesh: Mesh, spec: P, ndim: int) -> NamedSharding:
    """``NamedSharding(mesh, spec)`` with the spec padded with ``None`` to rank ``ndim``
    (the form jitted outputs carry, so that placed inputs and outputs compare equal)."""
    if ndim > len(spec):
        spec = P(*(tuple(spec) + (None,) * (ndim - len(spec))))
    return NamedSharding(mesh, spec)


def place(tree: Any, mesh: Mesh, spec: P) -> Any:
    """Put every leaf of ``tree`` on ``_sharding(mesh, spec, leaf.ndim)``."""
    return jax.tree.map(lambda x: _place_leaf(x, _sharding(mesh, spec, np.ndim(x))), tree)


def check_spec(tree: Any, mesh: Mesh, spec: P, what: str) -> None:
    """Every leaf axis that ``spec`` splits must split evenly over its mesh axis."""
    for dim, name in enumerate(spec):
        if name is not None:
            check_split(tree, dim, mesh.shape[name], what, f"devices of mesh axis {name!r}")


def shard(tree: Any, mesh: Mesh, axes: str | Sequence[str | None] | P = CHAINS, *,
          what: str = "shard") -> Any:
    """Split the leading axes of every leaf of ``tree`` over the named mesh axes.

    ``axes`` names one mesh axis per leading leaf axis: ``"chains"`` (chains ``(C, ...)``),
    ``"data"`` (a minibatch ``(B, ...)``), ``("chains", "data")`` (per-chain minibatches
    ``(C, B, ...)``), or a ``PartitionSpec``. Raises ``ValueError`` when an axis does not
    split evenly. In a multi-process job pass the same global value in every process.
    """
    spec = axes if isinstance(axes, P) else P(*((axes,) if isinstance(axes, str) else axes))
    check_mesh(mesh, [a for a in spec if a is not None], what)
    check_spec(tree, mesh, spec, what)
    return place(tree, mesh, spec)


def local_devices(devices: Sequence[jax.Device] | None) -> list:
    """The devices of this process that a pmap over ``devices`` runs on."""
    devs = jax.devices() if devices is None else list(devices)
    return [d for d in devs if d.process_index == jax.process_index()]


def pmap_replicate(tree: Any, devices: Sequence[jax.Device] | None, axis: str) -> Any:
    devs = local_devices(devices)
    sharding = NamedSharding(Mesh(np.array(devs), (axis,)), P(axis))
    return jax.tree.map(
        lambda x: jax.device_put(jnp.broadcast_to(x, (len(devs),) + jnp.shape(x)), sharding),
        tree)


def replicate(tree: Any, mesh: Mesh | None = None, *, backend: str = "sharded",
              axis: str = DATA) -> Any:
    """A copy of every leaf on every device of ``mesh`` (default: all devices).

    ``backend="sharded"``: ``NamedSharding(mesh, P())``, the form
    :func:`data_parallel_step` takes. ``backend="pmap"``: one copy per local device stacked
    on a new leading axis, placed as ``jax.pmap(..., axis_name=axis)`` places its outputs
    (so a pmapped step compiles once); take replica 0 back with ``x[0]``.
    """
    check_backend(backend, ("sharded", "pmap"))
    if backend == "pmap":
        return pmap_replicate(tree, None if mesh is None else list(mesh.devices.flat), axis)
    mesh = make_mesh(data=-1) if mesh is None else mesh
    check_mesh(mesh, [], "replicate")
    return place(tree, mesh, P())


def needs_cpu_sync(devices: Sequence[jax.Device]) -> bool:
    """Whether a step on ``devices`` should wait for its result before returning.

    XLA's in-process CPU collectives (jax 0.10) can deadlock when dozens of collective
    programs are queued without waiting (seen with 2 to 8 fake CPU devices, even with
    ``jax_cpu_enable_async_dispatch=False``). On CPU the data-parallel steps therefore wait
    for their outputs; on GPU/TPU they return at once, as usual.
    """
    devices = list(devices)
    return len(devices) > 1 and devices[0].platform == "cpu"


def sync(out: Any, wait: bool) -> Any:
    return jax.block_until_ready(out) if wait else out
