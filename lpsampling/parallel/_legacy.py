"""The names of lpsampling 0.1's ``parallel`` module, kept for one release.

Each is a thin call of the new API with the old signature and behaviour; importing one
from :mod:`lpsampling.parallel` emits a ``DeprecationWarning`` naming its replacement
(:data:`REPLACEMENTS`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.sharding import Mesh

from lpsampling.parallel._chains import init_chains, run_chains
from lpsampling.parallel._data import data_parallel_step
from lpsampling.parallel._faces import chain_step, optax_step
from lpsampling.parallel._mesh import (
    CHAINS,
    DATA,
    check_mesh,
    device_list,
    mesh_of,
    shard,
)
from lpsampling.parallel._mesh import (
    pmap_replicate as _pmap_replicate,
)


def make_chain_mesh(num_devices: int | None = None, *,
                    devices: Sequence[jax.Device] | None = None) -> Mesh:
    devs = device_list(num_devices, devices)
    return mesh_of((len(devs),), (CHAINS,), devs)


def make_data_mesh(num_devices: int | None = None, *,
                   devices: Sequence[jax.Device] | None = None) -> Mesh:
    devs = device_list(num_devices, devices)
    return mesh_of((len(devs),), (DATA,), devs)


def shard_chains(tree: Any, mesh: Mesh, *, axis_name: str = CHAINS) -> Any:
    return shard(tree, mesh, axis_name, what="shard_chains")


def shard_batch(batch: Any, mesh: Mesh, *, axis_name: str = DATA, batch_dim: int = 0) -> Any:
    axes = axis_name if batch_dim == 0 else (CHAINS, axis_name)
    return shard(batch, mesh, axes, what="shard_batch")


def pmap_replicate(tree: Any, devices: Sequence[jax.Device] | None = None, *,
                   axis_name: str = DATA) -> Any:
    return _pmap_replicate(tree, devices, axis_name)


def pmap_unreplicate(tree: Any) -> Any:
    return jax.tree.map(lambda x: x[0], tree)


def init_chain_states(optimizer, params: Any, keys: jax.Array) -> Any:
    return init_chains(optimizer, params, keys, what="init_chain_states")[1]


def optax_chain_step(optimizer, loss_fn: Callable, batch_fn: Callable,
                     sample_fn: Callable | None = None) -> Callable:
    return chain_step(optimizer, batch_fn, loss_fn=loss_fn, sample_fn=sample_fn)


def blackjax_chain_step(step: Callable, batch_fn: Callable, *step_args: Any,
                        sample_fn: Callable | None = None) -> Callable:
    return chain_step(step, batch_fn, step_args=step_args, sample_fn=sample_fn)


def run_chains_vmap(step_fn, init_carry, keys, num_steps):
    return run_chains(step_fn, init_carry, keys, num_steps, backend="vmap",
                      what="run_chains_vmap")


def run_chains_pmap(step_fn, init_carry, keys, num_steps, *, devices=None):
    return run_chains(step_fn, init_carry, keys, num_steps, backend="pmap", devices=devices,
                      what="run_chains_pmap")


def run_chains_sharded(step_fn, init_carry, keys, num_steps, *, mesh=None,
                       axis_name: str = CHAINS):
    return run_chains(step_fn, init_carry, keys, num_steps, mesh=mesh, axis=axis_name,
                      what="run_chains_sharded")


def make_optax_step(optimizer, loss_fn, *, axis_name=None) -> Callable:
    return optax_step(optimizer, loss_fn, axis_name=axis_name)


def data_parallel_step_pmap(optimizer, loss_fn, axis_name: str = DATA, *, devices=None):
    return data_parallel_step(optimizer, loss_fn, backend="pmap", axis=axis_name,
                              devices=devices, what="data_parallel_step_pmap")


def data_parallel_step_sharded(optimizer, loss_fn, mesh, *, axis_name: str = DATA):
    return data_parallel_step(optimizer, loss_fn, mesh=mesh, axis=axis_name,
                              what="data_parallel_step_sharded")


def data_parallel_kernel_pmap(step, axis_name: str = DATA, *, devices=None):
    return data_parallel_step(step, backend="pmap", axis=axis_name, devices=devices,
                              what="data_parallel_kernel_pmap")


def data_parallel_kernel_sharded(step, mesh, *, axis_name: str = DATA, num_args: int = 1):
    del num_args  # the new step compiles once per number of extra arguments
    return data_parallel_step(step, mesh=mesh, axis=axis_name,
                              what="data_parallel_kernel_sharded")


def chains_data_parallel_step_sharded(optimizer, loss_fn, mesh):
    check_mesh(mesh, [CHAINS, DATA], "chains_data_parallel_step_sharded")
    return data_parallel_step(optimizer, loss_fn, mesh=mesh,
                              what="chains_data_parallel_step_sharded")


def chains_data_parallel_kernel_sharded(step, mesh, *, num_args: int = 1):
    del num_args
    check_mesh(mesh, [CHAINS, DATA], "chains_data_parallel_kernel_sharded")
    return data_parallel_step(step, mesh=mesh, what="chains_data_parallel_kernel_sharded")


_RUN = "run_chains(sampler, carry, keys, num_steps, batch_fn=..., backend=...)"
REPLACEMENTS: dict[str, tuple[Any, str]] = {
    "CHAINS": (CHAINS, "the string 'chains'"),
    "DATA": (DATA, "the string 'data'"),
    "make_chain_mesh": (make_chain_mesh, "make_mesh(chains=-1)"),
    "make_data_mesh": (make_data_mesh, "make_mesh(data=-1)"),
    "shard_chains": (shard_chains, "shard(tree, mesh, 'chains')"),
    "shard_batch": (shard_batch, "shard(batch, mesh, 'data') or ('chains', 'data')"),
    "pmap_replicate": (pmap_replicate, "replicate(tree, backend='pmap')"),
    "pmap_unreplicate": (pmap_unreplicate, "jax.tree.map(lambda x: x[0], tree)"),
    "init_chain_states": (init_chain_states, "init_chains(sampler, params, keys)"),
    "optax_chain_step": (optax_chain_step, _RUN),
    "blackjax_chain_step": (blackjax_chain_step, _RUN),
    "run_chains_vmap": (run_chains_vmap, "run_chains(..., backend='vmap')"),
    "run_chains_pmap": (run_chains_pmap, "run_chains(..., backend='pmap')"),
    "run_chains_sharded": (run_chains_sharded, "run_chains(..., backend='sharded')"),
    "make_optax_step": (make_optax_step, "data_parallel_step(opt, loss_fn, backend='vmap')"),
    "data_parallel_step_pmap": (data_parallel_step_pmap,
                                "data_parallel_step(opt, loss_fn, backend='pmap')"),
    "data_parallel_step_sharded": (data_parallel_step_sharded,
                                   "data_parallel_step(opt, loss_fn, mesh=mesh)"),
    "data_parallel_kernel_pmap": (data_parallel_kernel_pmap,
                                  "data_parallel_step(algorithm, backend='pmap')"),
    "data_parallel_kernel_sharded": (data_parallel_kernel_sharded,
                                     "data_parallel_step(algorithm, mesh=mesh)"),
    "chains_data_parallel_step_sharded": (
        chains_data_parallel_step_sharded,
        "data_parallel_step(opt, loss_fn, mesh=make_mesh(chains, data))"),
    "chains_data_parallel_kernel_sharded": (
        chains_data_parallel_kernel_sharded,
        "data_parallel_step(algorithm, mesh=make_mesh(chains, data))"),
}
