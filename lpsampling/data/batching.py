"""CIFAR augmentation in pure JAX and a deterministic shuffled minibatch iterator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling.validation import positive_int

__all__ = ["random_crop_flip", "batches"]

# ----------------------------------------------------------------------------
# Augmentation and batching
# ----------------------------------------------------------------------------


def random_crop_flip(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """Per-example random crop and horizontal flip (standard CIFAR augmentation).

    Each image is zero-padded by ``padding`` pixels on every side, a window of
    the original ``H x W`` size is cut at an offset drawn uniformly from
    ``{0, ..., 2 * padding}`` in each direction, and the result is mirrored
    left-right with probability 1/2.  Pure JAX (``jax.vmap`` over examples with
    ``jax.lax.dynamic_slice``), so it works under ``jax.jit``; ``padding`` must
    be static there.

    Note that the padding value is 0 in the array's own units: for normalised
    images that is the dataset mean colour, not black.

    Args:
      key: PRNG key (raw ``uint32[2]`` or typed); the only source of randomness.
      images: ``(N, H, W, C)`` batch.
      padding: pixels of zero padding per side (``>= 0``).

    Returns:
      Array with the same shape and dtype as ``images``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    padding = positive_int("padding", padding, minimum=0)
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

    def one(k: jax.Array, img: jax.Array) -> jax.Array:
        k_crop, k_flip = jax.random.split(k)
        dy, dx = jax.random.randint(k_crop, (2,), 0, 2 * padding + 1)
        crop = jax.lax.dynamic_slice(img, (dy, dx, 0), (h, w, c))
        return jnp.where(jax.random.bernoulli(k_flip), crop[:, ::-1, :], crop)

    return jax.vmap(one)(jax.random.split(key, n), padded)


def _numpy_rng(key_or_seed: Any) -> np.random.Generator:
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed
    if isinstance(key_or_seed, int | np.integer):
        return np.random.default_rng(int(key_or_seed))
    key = key_or_seed
    if jnp.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    words = np.asarray(key)
    if words.dtype.kind not in "ui":
        raise TypeError(
            f"key_or_seed must be an int seed, a numpy Generator or a JAX PRNG key, "
            f"got {type(key_or_seed).__name__}"
        )
    return np.random.default_rng(words.astype(np.uint64).ravel().tolist())


def batches(
    key_or_seed: int | jax.Array | np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    drop_remainder: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One shuffled pass (epoch) over ``(x, y)`` in minibatches.

    The permutation comes from a numpy RNG seeded by ``key_or_seed`` (an int, a
    JAX PRNG key, or a ``numpy.random.Generator`` used as is), so the same seed
    or key gives the same batches.  Use a different seed/key per epoch.

    Args:
      key_or_seed: int seed, JAX PRNG key, or numpy ``Generator``.
      x: ``(N, ...)`` inputs.
      y: ``(N, ...)`` targets.
      batch_size: examples per batch.
      drop_remainder: if true, the last ``N % batch_size`` examples of the
        permutation are skipped so every batch has exactly ``batch_size``
        examples; if false, the last batch may be smaller.

    Yields:
      ``(x_batch, y_batch)`` numpy arrays with leading dimension
      ``batch_size`` (or less for the final batch when ``drop_remainder`` is
      false).

    Raises:
      ValueError: mismatched lengths, non-positive ``batch_size``, or
        ``drop_remainder`` with fewer than ``batch_size`` examples (which would
        yield nothing).
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y have different lengths ({n} vs {len(y)})")
    batch_size = positive_int("batch_size", batch_size)
    if drop_remainder and n < batch_size:
        raise ValueError(
            f"batch_size {batch_size} exceeds the {n} examples with drop_remainder=True"
        )
    rng = _numpy_rng(key_or_seed)  # validated before the first next()
    x_np, y_np = np.asarray(x), np.asarray(y)
    return _batch_gen(rng.permutation(n), x_np, y_np, batch_size, drop_remainder)


def _batch_gen(
    perm: np.ndarray, x: np.ndarray, y: np.ndarray, batch_size: int, drop_remainder: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    n = len(perm)
    stop = n - n % batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
        idx = perm[start : start + batch_size]
        yield x[idx], y[idx]
