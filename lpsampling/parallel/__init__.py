r"""Chains across devices and data-parallel chains, on ``jax.jit`` + ``NamedSharding``.

Two layouts, for either face (an optax ``lps.sgld(...)`` or a blackjax
``lps.blackjax.sgld(...)``, passed as one argument): independent chains over a ``"chains"``
mesh axis (:func:`run_chains`; a chain's samples depend only on its key and initial carry),
and one chain data-parallel over a ``"data"`` axis (:func:`data_parallel_step`; gradients
averaged with ``pmean``, the same random draws on every replica, so the replicas stay
bit-identical), or both on a 2-D mesh (:func:`make_mesh`). ``backend="sharded"`` (default,
``shard_map``), ``"pmap"`` (legacy) and ``"vmap"`` (one device) give the same samples.
Runs unchanged across hosts after :func:`initialize_distributed`. Examples: ``docs/parallel.md``.
"""

from __future__ import annotations

import warnings

from lpsampling.parallel._chains import init_chains, run_chains
from lpsampling.parallel._data import data_parallel_step
from lpsampling.parallel._distributed import initialize_distributed
from lpsampling.parallel._faces import pmean_grad_estimator
from lpsampling.parallel._mesh import make_mesh, replicate, shard

__all__ = [
    "make_mesh",
    "shard",
    "replicate",
    "init_chains",
    "run_chains",
    "data_parallel_step",
    "pmean_grad_estimator",
    "initialize_distributed",
]


def __getattr__(name: str):
    """The 0.1 names (``run_chains_pmap``, ...): deprecated aliases, kept for one release."""
    from lpsampling.parallel._legacy import REPLACEMENTS

    if name not in REPLACEMENTS:
        raise AttributeError(f"module 'lpsampling.parallel' has no attribute {name!r}")
    value, replacement = REPLACEMENTS[name]
    warnings.warn(
        f"lpsampling.parallel.{name} is deprecated and will be removed in the next release; "
        f"use {replacement}", DeprecationWarning, stacklevel=2)
    return value


def __dir__() -> list[str]:
    from lpsampling.parallel._legacy import REPLACEMENTS

    return sorted(set(globals()) | set(REPLACEMENTS))
