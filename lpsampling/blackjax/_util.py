"""Helpers shared by the blackjax face's algorithms."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["as_position", "gaussian_noise"]


def as_position(position: Any) -> Any:
    """An array-like position tree as jax arrays (``jnp.asarray`` per leaf).

    Python scalars, lists and NumPy arrays are converted with JAX's dtype promotion (a
    Python float becomes a weakly typed float32 under the default config); a tree whose
    leaves are all jax arrays (or tracers) is returned as it is.
    """
    leaves, treedef = jax.tree_util.tree_flatten(position)
    if all(isinstance(x, jax.Array) for x in leaves):
        return position
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in leaves])


def gaussian_noise(rng_key: jax.Array, position: Any) -> Any:
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
