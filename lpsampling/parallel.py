r"""Chains across devices and data-parallel chains, on JAX's own distributed engine.

Three layouts, each with a ``jax.pmap`` path and a ``jax.jit`` + ``NamedSharding`` +
``jax.shard_map`` path (preferred); both give the same numbers. Every step goes through the
optax or the blackjax face, i.e. :func:`lpsampling.update.update_position`.

1. Independent chains over a ``"chains"`` axis: a chain's samples depend only on its own
   key and initial carry (:func:`run_chains_sharded`, :func:`run_chains_pmap`,
   :func:`run_chains_vmap`).
2. One chain data-parallel over a ``"data"`` axis: gradients averaged with ``pmean``, the
   same random draws on every replica, so the replicas stay bit-identical.
3. Both at once on a ``("chains", "data")`` mesh (:func:`make_mesh`).

The sharded paths run unchanged under ``jax.distributed.initialize`` (call it before
importing lpsampling). Examples and multi-host setup: ``docs/parallel.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lpsampling.optax import SGMCMCState

__all__ = [
    "CHAINS",
    "DATA",
    "make_chain_mesh",
    "make_data_mesh",
    "make_mesh",
    "shard_chains",
    "shard_batch",
    "replicate",
    "pmap_replicate",
    "pmap_unreplicate",
    "init_chain_states",
    "optax_chain_step",
    "blackjax_chain_step",
    "run_chains_vmap",
    "run_chains_pmap",
    "run_chains_sharded",
    "make_optax_step",
    "pmean_grad_estimator",
    "data_parallel_step_pmap",
    "data_parallel_step_sharded",
    "data_parallel_kernel_pmap",
    "data_parallel_kernel_sharded",
    "chains_data_parallel_step_sharded",
    "chains_data_parallel_kernel_sharded",
    "initialize_distributed",
]

CHAINS = "chains"
DATA = "data"

StepFn = Callable[[Any, jax.Array], tuple[Any, Any]]


# ----------------------------------------------------------------------------- meshes


def _device_list(num_devices: int | None, devices: Sequence[jax.Device] | None):
    devices = list(jax.devices() if devices is None else devices)
    if num_devices is None:
        return devices
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"num_devices must be a positive int, got {num_devices!r}")
    if num_devices > len(devices):
        raise ValueError(
            f"num_devices={num_devices} but only {len(devices)} devices are available")
    return devices[:num_devices]


def _mesh(shape: tuple[int, ...], names: tuple[str, ...], devices) -> Mesh:
    types = (jax.sharding.AxisType.Explicit,) * len(names)
    return jax.make_mesh(shape, names, axis_types=types, devices=devices)


def make_chain_mesh(num_devices: int | None = None, *,
                    devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"chains"`` over the first ``num_devices`` devices (all by
    default, all processes included)."""
    devs = _device_list(num_devices, devices)
    return _mesh((len(devs),), (CHAINS,), devs)


def make_data_mesh(num_devices: int | None = None, *,
                   devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over the first ``num_devices`` devices."""
    devs = _device_list(num_devices, devices)
    return _mesh((len(devs),), (DATA,), devs)


def make_mesh(num_chains_axis: int, num_data_axis: int, *,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 2-D ``("chains", "data")`` mesh of ``num_chains_axis × num_data_axis`` devices."""
    for name, n in (("num_chains_axis", num_chains_axis), ("num_data_axis", num_data_axis)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive int, got {n!r}")
    devs = list(jax.devices() if devices is None else devices)
    if num_chains_axis * num_data_axis > len(devs):
        raise ValueError(
            f"make_mesh({num_chains_axis}, {num_data_axis}) needs "
            f"{num_chains_axis * num_data_axis} devices but only {len(devs)} are available")
    devs = devs[:num_chains_axis * num_data_axis]
    return _mesh((num_chains_axis, num_data_axis), (CHAINS, DATA), devs)


def _check_mesh(mesh: Any, required: Sequence[str], what: str) -> None:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{what} needs a jax.sharding.Mesh, got {type(mesh).__name__}")
    missing = [a for a in required if a not in mesh.axis_names]
    if missing:
        raise ValueError(
            f"{what} needs a mesh with axis names {tuple(required)}; the mesh has axes "
            f"{tuple(mesh.axis_names)} (missing {tuple(missing)}). Build one with "
            "make_chain_mesh / make_data_mesh / make_mesh, or pass the axis name used.")


# -------------------------------------------------------------------------- placement


def _leading(tree: Any, dim: int, n: int, what: str, unit: str) -> None:
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


def _place(tree: Any, mesh: Mesh, spec: P) -> Any:
    """Put every leaf of ``tree`` on ``_sharding(mesh, spec, leaf.ndim)``."""
    return jax.tree.map(lambda x: _place_leaf(x, _sharding(mesh, spec, np.ndim(x))), tree)


def shard_chains(tree: Any, mesh: Mesh, *, axis_name: str = CHAINS) -> Any:
    """Put every leaf's leading (chain) axis over the mesh axis ``axis_name``.

    Raises ``ValueError`` when a leading axis does not split evenly over that axis.
    """
    _check_mesh(mesh, [axis_name], "shard_chains")
    _leading(tree, 0, mesh.shape[axis_name], "shard_chains",
             f"devices of mesh axis {axis_name!r}")
    return _place(tree, mesh, P(axis_name))


def shard_batch(batch: Any, mesh: Mesh, *, axis_name: str = DATA,
                batch_dim: int = 0) -> Any:
    """Split axis ``batch_dim`` (0; 1 for per-chain batches ``(C, B, ...)``) of every leaf
    of ``batch`` over the mesh axis ``axis_name`` (and, for ``batch_dim=1``, axis 0 over
    ``"chains"``). In a multi-process job pass the same global batch in every process."""
    _check_mesh(mesh, [axis_name] + ([CHAINS] if batch_dim == 1 else []), "shard_batch")
    _leading(batch, batch_dim, mesh.shape[axis_name], "shard_batch",
             f"devices of mesh axis {axis_name!r}")
    spec = P(axis_name) if batch_dim == 0 else P(CHAINS, axis_name)
    return _place(batch, mesh, spec)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Replicate every leaf on every device of ``mesh`` (``NamedSharding(mesh, P())``)."""
    _check_mesh(mesh, [], "replicate")
    return _place(tree, mesh, P())


def _pmap_devices(devices: Sequence[jax.Device] | None) -> list:
    """The devices of this process that a pmap over ``devices`` runs on."""
    devs = jax.devices() if devices is None else list(devices)
    return [d for d in devs if d.process_index == jax.process_index()]


def pmap_replicate(tree: Any, devices: Sequence[jax.Device] | None = None, *,
                   axis_name: str = DATA) -> Any:
    """One copy of every leaf per local device (a new leading axis), placed exactly as
    ``jax.pmap(..., axis_name=axis_name)`` places its outputs, so that a pmapped step fed
    with the result compiles once (pass the step's ``axis_name``)."""
    devs = _pmap_devices(devices)
    sharding = NamedSharding(Mesh(np.array(devs), (axis_name,)), P(axis_name))
    return jax.tree.map(
        lambda x: jax.device_put(jnp.broadcast_to(x, (len(devs),) + jnp.shape(x)), sharding),
        tree)


def pmap_unreplicate(tree: Any) -> Any:
    """The first replica of every leaf of a pmapped (replicated) pytree."""
    return jax.tree.map(lambda x: x[0], tree)


def _needs_cpu_sync(devices: Sequence[jax.Device]) -> bool:
    """Whether a step on ``devices`` should wait for its result before returning.

    XLA's in-process CPU collectives (jax 0.10) can deadlock when dozens of collective
    programs are queued without waiting (seen with 2 to 8 fake CPU devices, even with
    ``jax_cpu_enable_async_dispatch=False``). On CPU the data-parallel steps therefore wait
    for their outputs; on GPU/TPU they return at once, as usual.
    """
    devices = list(devices)
    return len(devices) > 1 and devices[0].platform == "cpu"


def _sync(out: Any, sync: bool) -> Any:
    return jax.block_until_ready(out) if sync else out


# ---------------------------------------------------------------- per-chain step builders


def _is_sampler_state(x: Any) -> bool:
    return isinstance(x, SGMCMCState)


def init_chain_states(optimizer: optax.GradientTransformation, params: Any,
                      keys: jax.Array) -> Any:
    """``optimizer.init`` for ``C`` chains at once, each with its own PRNG key.

    ``params`` has a leading chain axis ``C`` and ``keys`` has shape ``(C,)``. The key of
    the lpsampling sampler state inside the optimizer state (found through ``optax.chain``
    etc.) is replaced by the chain's key, so chain ``i`` starts exactly as
    ``lps.sgld(..., key=keys[i]).init(params[i])`` would; with several sampler states the
    ``j``-th gets ``fold_in(keys[i], j)``. Raises ``ValueError`` when the state holds none.
    """
    num = _num_chains(keys)
    for path, x in jax.tree_util.tree_leaves_with_path(params):
        if not np.shape(x) or np.shape(x)[0] != num:
            raise ValueError(
                f"init_chain_states: {num} keys but params leaf "
                f"{jax.tree_util.keystr(path) or '<root>'} has shape {np.shape(x)}; every "
                f"leaf needs a leading chain axis of size {num}")

    def one(p, key):
        state = optimizer.init(p)
        found = [x for x in jax.tree.leaves(state, is_leaf=_is_sampler_state)
                 if _is_sampler_state(x)]
        if not found:
            raise ValueError(
                "init_chain_states: the optimizer state holds no lpsampling sampler state "
                "(lps.sgld / lps.sgd / lps.cyclical_sgld) whose key could be set per chain")
        index = iter(range(len(found)))

        def set_key(x):
            if not _is_sampler_state(x):
                return x
            return x._replace(
                key=key if len(found) == 1 else jax.random.fold_in(key, next(index)))

        return jax.tree.map(set_key, state, is_leaf=_is_sampler_state)

    return jax.vmap(one)(params, keys)


def _default_sample(carry: Any) -> Any:
    return carry[0] if isinstance(carry, tuple) else carry


def optax_chain_step(optimizer: optax.GradientTransformation,
                     loss_fn: Callable[[Any, Any], jax.Array],
                     batch_fn: Callable[[jax.Array], Any],
                     sample_fn: Callable[[Any], Any] | None = None) -> StepFn:
    """A ``step_fn(carry, key) -> (carry, sample)`` for the ``run_chains_*`` runners from an
    optax sampler: ``carry = (params, opt_state)``, the minibatch is ``batch_fn(key)``, the
    noise key lives in ``opt_state``; the sample is ``sample_fn(carry)`` (default: the
    params the model runs on)."""
    step = make_optax_step(optimizer, loss_fn)
    sample_fn = sample_fn or _default_sample

    def step_fn(carry, key):
        params, state = carry
        params, state, _ = step(params, state, batch_fn(key))
        carry = (params, state)
        return carry, sample_fn(carry)

    return step_fn


def blackjax_chain_step(step: Callable, batch_fn: Callable[[jax.Array], Any], *step_args: Any,
                        sample_fn: Callable[[Any], Any] | None = None) -> StepFn:
    """A ``step_fn(carry, key) -> (carry, sample)`` from a blackjax-style
    ``step(rng_key, state, minibatch, *step_args)`` (e.g. ``lps.blackjax.sgld(...).step``
    with ``step_args = (step_size,)``): the key is split into a minibatch key and the
    kernel key; the sample is ``sample_fn(state)`` (default: the state)."""
    sample_fn = sample_fn or (lambda state: state)

    def step_fn(state, key):
        k_batch, k_step = jax.random.split(key)
        state = step(k_step, state, batch_fn(k_batch), *step_args)
        return state, sample_fn(state)

    return step_fn


# ------------------------------------------------------------------ independent chains


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


def _check_chains(init_carry: Any, keys: Any, num_steps: int, n_devices: int,
                  what: str) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"{what}: num_steps must be a positive int, got {num_steps!r}")
    num = _num_chains(keys)
    for path, x in jax.tree_util.tree_leaves_with_path(init_carry):
        shape = np.shape(x)
        if not shape or shape[0] != num:
            raise ValueError(
                f"{what}: {num} chains (keys) but init_carry leaf "
                f"{jax.tree_util.keystr(path) or '<root>'} has shape {shape}; every leaf "
                f"needs a leading chain axis of size {num}")
    if num % n_devices:
        raise ValueError(
            f"{what}: {num} chains do not split evenly over {n_devices} devices "
            f"({num} % {n_devices} = {num % n_devices}); use a multiple of {n_devices} "
            "chains or fewer devices")
    return num


def _one_chain(step_fn: StepFn, num_steps: int):
    def run(carry, key):
        return jax.lax.scan(step_fn, carry, jax.random.split(key, num_steps))
    return run


@functools.lru_cache(maxsize=64)
def _vmap_runner(step_fn, num_steps):
    return jax.jit(jax.vmap(_one_chain(step_fn, num_steps)))


@functools.lru_cache(maxsize=64)
def _pmap_runner(step_fn, num_steps, devices):
    return jax.pmap(jax.vmap(_one_chain(step_fn, num_steps)),
                    devices=None if devices is None else list(devices))


@functools.lru_cache(maxsize=64)
def _sharded_runner(step_fn, num_steps, mesh, axis_name):
    spec = P(axis_name)
    body = jax.shard_map(jax.vmap(_one_chain(step_fn, num_steps)), mesh=mesh,
                         in_specs=(spec, spec), out_specs=(spec, spec), check_vma=False)
    return jax.jit(body)


def run_chains_vmap(step_fn: StepFn, init_carry: Any, keys: jax.Array,
                    num_steps: int) -> tuple[Any, Any]:
    """Run ``C`` independent chains on one device with ``vmap`` (the reference layout).

    Args:
      step_fn: one step of one chain, ``step_fn(carry, key) -> (carry, sample)``; pure and
        jittable (``optax_chain_step`` / ``blackjax_chain_step`` build one).
      init_carry: pytree whose leaves have a leading chain axis ``C``.
      keys: ``C`` PRNG keys, one per chain (``jax.random.split(key, C)``); chain ``i``
        runs on ``jax.random.split(keys[i], num_steps)``.
      num_steps: steps per chain (``lax.scan``).

    Returns:
      ``(final_carry, samples)``: samples have leaves of shape ``(C, num_steps, ...)``.
    """
    _check_chains(init_carry, keys, num_steps, 1, "run_chains_vmap")
    return _vmap_runner(step_fn, num_steps)(init_carry, keys)


def run_chains_pmap(step_fn: StepFn, init_carry: Any, keys: jax.Array, num_steps: int, *,
                    devices: Sequence[jax.Device] | None = None) -> tuple[Any, Any]:
    """:func:`run_chains_vmap` spread over the (local) devices with ``jax.pmap``: the chain
    axis ``C`` is reshaped to ``(D, C/D)`` and vmapped inside each device. Same results as
    :func:`run_chains_vmap`; ``C`` must be a multiple of ``D``. Outputs have shape
    ``(C, ...)`` again."""
    devs = _pmap_devices(devices)
    num = _check_chains(init_carry, keys, num_steps, len(devs), "run_chains_pmap")
    d = len(devs)
    split = lambda x: x.reshape((d, num // d) + x.shape[1:])
    merge = lambda x: x.reshape((num,) + x.shape[2:])
    key_devs = None if devices is None else tuple(devices)
    carry, samples = _pmap_runner(step_fn, num_steps, key_devs)(
        jax.tree.map(split, init_carry), split(keys))
    return jax.tree.map(merge, carry), jax.tree.map(merge, samples)


def run_chains_sharded(step_fn: StepFn, init_carry: Any, keys: jax.Array, num_steps: int, *,
                       mesh: Mesh | None = None,
                       axis_name: str = CHAINS) -> tuple[Any, Any]:
    """:func:`run_chains_vmap` with the chain axis sharded over the mesh axis ``axis_name``
    (``jax.jit`` + ``NamedSharding`` + ``jax.shard_map``; ``C/D`` chains per device by
    vmap). Same results as :func:`run_chains_vmap`. ``mesh`` defaults to
    ``make_chain_mesh()`` (all devices). Outputs stay sharded over the chains (in a
    multi-process job gather them with ``multihost_utils.process_allgather``)."""
    mesh = make_chain_mesh() if mesh is None else mesh
    _check_mesh(mesh, [axis_name], "run_chains_sharded")
    _check_chains(init_carry, keys, num_steps, mesh.shape[axis_name], "run_chains_sharded")
    init_carry, keys = _place((init_carry, keys), mesh, P(axis_name))
    return _sharded_runner(step_fn, num_steps, mesh, axis_name)(init_carry, keys)


# ------------------------------------------------------------ data-parallel single chain


def make_optax_step(optimizer: optax.GradientTransformation,
                    loss_fn: Callable[[Any, Any], jax.Array], *,
                    axis_name: str | tuple[str, ...] | None = None) -> Callable:
    """One sampler step ``(params, opt_state, batch) -> (params, opt_state, loss)``.

    ``loss_fn(params, batch)`` is the **mean** minibatch loss (the optax face's unit). With
    ``axis_name`` the gradient and loss are averaged over that named axis with
    ``jax.lax.pmean`` (use inside ``pmap`` / ``shard_map``; equal shares per device make
    the mean of means the mean over the whole minibatch). Not jitted.
    """

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        if axis_name is not None:
            loss, grads = jax.lax.pmean((loss, grads), axis_name)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def pmean_grad_estimator(grad_estimator: Callable, axis_name: str | tuple[str, ...] = DATA
                         ) -> Callable:
    """A blackjax gradient estimator averaged over the devices of ``axis_name``.

    Each device estimates the full-data gradient from its share of the minibatch
    (``N/b·Σ_local ∇log p + ∇log prior``); the mean over devices is the estimate from the
    whole minibatch. Use inside :func:`data_parallel_kernel_pmap` /
    :func:`data_parallel_kernel_sharded` (or your own ``pmap``, or ``shard_map`` with
    ``check_vma=False``: with ``check_vma=True`` JAX already sums the gradient of a
    replicated position over the axis).
    """

    def estimator(position, minibatch):
        return jax.lax.pmean(grad_estimator(position, minibatch), axis_name)

    return estimator


def _split_local_batch(batch: Any, n: int, what: str) -> Any:
    _leading(batch, 0, n, what, "local devices")
    return jax.tree.map(lambda x: jnp.reshape(x, (n, -1) + np.shape(x)[1:]), batch)


def data_parallel_step_pmap(optimizer: optax.GradientTransformation,
                            loss_fn: Callable[[Any, Any], jax.Array],
                            axis_name: str = DATA, *,
                            devices: Sequence[jax.Device] | None = None) -> Callable:
    """A data-parallel sampler step with ``jax.pmap``.

    Returns ``step(params, opt_state, batch) -> (params, opt_state, loss)`` where
    ``params`` and ``opt_state`` are replicated with a leading device axis
    (:func:`pmap_replicate`), ``batch`` is the minibatch ``(B, ...)`` (under
    ``jax.distributed``: this process's share), split into ``D`` equal shares over the
    local devices (``ValueError`` when ``B % D != 0``), and ``loss`` is the minibatch mean
    loss per replica. Gradients are averaged with ``pmean``; all replicas hold
    bit-identical params.
    """
    devs = _pmap_devices(devices)
    pstep = jax.pmap(make_optax_step(optimizer, loss_fn, axis_name=axis_name),
                     axis_name=axis_name, devices=None if devices is None else list(devices))

    sync = _needs_cpu_sync(devs)

    def step(params, opt_state, batch):
        return _sync(pstep(params, opt_state,
                           _split_local_batch(batch, len(devs), "data_parallel_step_pmap")),
                     sync)

    return step


def _sharded_call(fn: Callable, mesh: Mesh, in_specs: tuple, out_specs: Any,
                  checks: Callable[..., None] | None = None) -> Callable:
    """``jax.jit(jax.shard_map(fn))`` behind a wrapper that places each argument on its
    ``NamedSharding`` (arguments already there are used as they are) so that every call
    sees the same input shardings and nothing is traced twice."""
    body = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                                 check_vma=False))
    sync = _needs_cpu_sync(mesh.devices.flat)

    def call(*args):
        if len(args) != len(in_specs):
            raise TypeError(f"expected {len(in_specs)} arguments, got {len(args)}")
        if checks is not None:
            checks(*args)
        placed = tuple(_place(a, mesh, s) for a, s in zip(args, in_specs, strict=True))
        return _sync(body(*placed), sync)

    return call


def data_parallel_step_sharded(optimizer: optax.GradientTransformation,
                               loss_fn: Callable[[Any, Any], jax.Array], mesh: Mesh, *,
                               axis_name: str = DATA) -> Callable:
    """A data-parallel sampler step with ``jax.jit`` + ``NamedSharding`` (``shard_map``).

    Returns ``step(params, opt_state, batch) -> (params, opt_state, loss)``: the minibatch
    ``(B, ...)`` is sharded over the mesh axis ``axis_name`` (``ValueError`` when ``B`` does
    not split evenly), params and optimizer state are replicated
    (``NamedSharding(mesh, P())``) and stay so. Inputs not yet on those shardings are put
    there (see :func:`replicate`, :func:`shard_batch`). Same numbers as
    :func:`data_parallel_step_pmap`.
    """
    _check_mesh(mesh, [axis_name], "data_parallel_step_sharded")
    n = mesh.shape[axis_name]

    def checks(params, opt_state, batch):
        _leading(batch, 0, n, "data_parallel_step_sharded",
                 f"devices of mesh axis {axis_name!r}")

    return _sharded_call(make_optax_step(optimizer, loss_fn, axis_name=axis_name), mesh,
                         (P(), P(), P(axis_name)), (P(), P(), P()), checks)


def data_parallel_kernel_pmap(step: Callable, axis_name: str = DATA, *,
                              devices: Sequence[jax.Device] | None = None) -> Callable:
    """A data-parallel blackjax step with ``jax.pmap``.

    ``step(rng_key, state, minibatch, *args)`` is a blackjax-style step whose gradient
    estimator was wrapped with :func:`pmean_grad_estimator` (same ``axis_name``). Returns
    ``pstep(rng_key, state, minibatch, *args) -> state`` with ``state`` replicated
    (:func:`pmap_replicate`), ``rng_key`` and ``args`` (step size, temperature) the same
    for every replica, and ``minibatch`` ``(B, ...)`` split over the local devices.
    """
    devs = _pmap_devices(devices)
    sync = _needs_cpu_sync(devs)
    cache: dict[int, Callable] = {}

    def pstep(rng_key, state, minibatch, *args):
        if len(args) not in cache:
            cache[len(args)] = jax.pmap(
                step, axis_name=axis_name, in_axes=(None, 0, 0) + (None,) * len(args),
                devices=None if devices is None else list(devices))
        return _sync(cache[len(args)](
            rng_key, state,
            _split_local_batch(minibatch, len(devs), "data_parallel_kernel_pmap"), *args), sync)

    return pstep


def data_parallel_kernel_sharded(step: Callable, mesh: Mesh, *, axis_name: str = DATA,
                                 num_args: int = 1) -> Callable:
    """A data-parallel blackjax step with ``jax.jit`` + ``NamedSharding``.

    Like :func:`data_parallel_kernel_pmap`: ``pstep(rng_key, state, minibatch, *args)``
    with ``num_args`` extra arguments (e.g. 1 for ``step_size``; 2 with ``temperature``),
    key, state and args replicated, minibatch sharded over ``axis_name``.
    """
    _check_mesh(mesh, [axis_name], "data_parallel_kernel_sharded")
    n = mesh.shape[axis_name]

    def checks(rng_key, state, minibatch, *args):
        _leading(minibatch, 0, n, "data_parallel_kernel_sharded",
                 f"devices of mesh axis {axis_name!r}")

    return _sharded_call(step, mesh, (P(), P(), P(axis_name)) + (P(),) * num_args, P(),
                         checks)


def _chains_data_checks(mesh: Mesh, what: str, chain_args: Sequence[int], batch_arg: int):
    nc, nd = mesh.shape[CHAINS], mesh.shape[DATA]

    def checks(*args):
        for i in chain_args:
            _leading(args[i], 0, nc, what, "devices of mesh axis 'chains'")
        _leading(args[batch_arg], 0, nc, what, "devices of mesh axis 'chains'")
        _leading(args[batch_arg], 1, nd, what, "devices of mesh axis 'data'")

    return checks


def chains_data_parallel_step_sharded(optimizer: optax.GradientTransformation,
                                      loss_fn: Callable[[Any, Any], jax.Array],
                                      mesh: Mesh) -> Callable:
    """Many data-parallel chains on a ``("chains", "data")`` mesh (:func:`make_mesh`).

    Returns ``step(params, opt_state, batch) -> (params, opt_state, loss)`` where
    ``params`` and ``opt_state`` have a leading chain axis ``C`` (sharded over
    ``"chains"``, vmapped inside a device; see :func:`init_chain_states`) and ``batch``
    has leaves ``(C, B, ...)``: chain ``c``'s minibatch, split over ``"data"``. ``loss``
    has shape ``(C,)``. Each chain gives the numbers of its own data-parallel chain.
    """
    _check_mesh(mesh, [CHAINS, DATA], "chains_data_parallel_step_sharded")
    step = jax.vmap(make_optax_step(optimizer, loss_fn, axis_name=DATA))
    return _sharded_call(
        step, mesh, (P(CHAINS), P(CHAINS), P(CHAINS, DATA)), (P(CHAINS),) * 3,
        _chains_data_checks(mesh, "chains_data_parallel_step_sharded", (0, 1), 2))


def chains_data_parallel_kernel_sharded(step: Callable, mesh: Mesh, *,
                                        num_args: int = 1) -> Callable:
    """The blackjax counterpart of :func:`chains_data_parallel_step_sharded`:
    ``pstep(rng_keys, states, minibatches, *args)`` with ``rng_keys`` of shape ``(C,)``
    and ``states`` ``(C, ...)`` over ``"chains"``, ``minibatches`` ``(C, B, ...)`` over
    ``("chains", "data")``, ``num_args`` extra arguments shared by all chains. The
    gradient estimator must be wrapped with ``pmean_grad_estimator(ge, "data")``."""
    _check_mesh(mesh, [CHAINS, DATA], "chains_data_parallel_kernel_sharded")
    vstep = jax.vmap(step, in_axes=(0, 0, 0) + (None,) * num_args)
    return _sharded_call(
        vstep, mesh, (P(CHAINS), P(CHAINS), P(CHAINS, DATA)) + (P(),) * num_args, P(CHAINS),
        _chains_data_checks(mesh, "chains_data_parallel_kernel_sharded", (0, 1), 2))


# ---------------------------------------------------------------------- many processes


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None, *,
                           local_device_ids: int | Sequence[int] | None = None,
                           initialization_timeout: int = 300,
                           heartbeat_timeout_seconds: int = 100,
                           shutdown_timeout_seconds: int = 300,
                           cpu_collectives: str | None = "gloo") -> None:
    """``jax.distributed.initialize`` with CPU collectives enabled and bounded timeouts.

    Call it in every process before anything starts the JAX backend. With no address,
    count or id (TPU pod slices, SLURM, Open MPI, ...) JAX detects them. ``cpu_collectives``
    (``"gloo"``, ``"mpi"``, or None to leave the setting alone) sets
    ``jax_cpu_collectives_implementation`` so that the CPU devices of different processes
    can run collectives. When a process dies, JAX's coordination service ends the others
    after about ``heartbeat_timeout_seconds`` (``initialization_timeout`` while
    connecting, ``shutdown_timeout_seconds`` at exit).

    Raises ``RuntimeError`` when the backend is already running. Importing blackjax starts
    it (blackjax 1.7), and lpsampling imports blackjax for its blackjax face: in that case
    call ``jax.distributed.initialize`` yourself before ``import lpsampling`` (see
    ``docs/parallel.md``).
    """
    import sys

    from jax._src import xla_bridge  # private, only to give a clear error

    if xla_bridge.backends_are_initialized():
        hint = ""
        if "blackjax" in sys.modules:
            hint = (" blackjax is imported, and importing it starts the backend (blackjax "
                    "1.7 runs jnp.log at import; lpsampling imports blackjax for its "
                    "blackjax face): call jax.distributed.initialize(...) before importing "
                    "lpsampling or blackjax.")
        raise RuntimeError(
            "initialize_distributed must run before any JAX computation or device query "
            "(jax.devices(), jnp arrays, ...), but the JAX backend is already running." + hint)
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address, num_processes, process_id,
        local_device_ids=local_device_ids, initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds,
        shutdown_timeout_seconds=shutdown_timeout_seconds)
