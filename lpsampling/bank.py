"""The posterior sample bank: a ring buffer of packed samples (``lps.bank.init/add/get/...``).

A :class:`SampleBank` keeps the last ``capacity`` samples of a params pytree, each leaf a
stacked :class:`~lpsampling.storage.Packed` (codes of shape ``(S,) + layout``; ``FULL``
stores plain arrays), so 50 samples of an 8-bit model take about a quarter of their float32
memory. All functions are pure; :func:`add` and :func:`get` run under ``jax.jit``. Bytes
are counted by :func:`nbytes`. Manual and layouts: ``docs/storage.md``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling.formats import ZERO_BLOCK_EXPONENT, Format, check_format
from lpsampling.quantize import check_float_array
from lpsampling.storage import (
    Packed,
    _array_nbytes,
    _check_concrete,
    _is_concrete,
    _is_packed,
    pack,
    unpack,
)
from lpsampling.validation import integer_index, positive_int

__all__ = ["SampleBank", "init", "add", "get", "stack", "size", "nbytes"]




class SampleBank(NamedTuple):
    """A ring buffer of posterior samples (a pytree; pass it through ``jax.jit`` freely).

    Attributes:
      samples: the params pytree with each leaf replaced by a stacked :class:`Packed`
        whose codes (and exponents) have a leading capacity axis ``S``; for the ``FULL``
        format each leaf is instead a plain array of shape ``(S,) + leaf.shape`` in the
        leaf's dtype (float32 params are stored as float32).
      count: int32 scalar, the number of samples ever added (may exceed the capacity; the
        newest ``capacity`` are kept; it wraps after 2**31 - 1 additions).
    """

    samples: Any
    count: jax.Array

    @property
    def capacity(self) -> int:
        """The number of slots ``S``."""
        leaves = jax.tree.leaves(self.samples)
        return int(leaves[0].shape[0])


def _bank_leaves(bank: SampleBank) -> list[Any]:
    return jax.tree.leaves(bank.samples, is_leaf=_is_packed)


def init(params: Any, fmt: Format, capacity: int) -> SampleBank:
    """An empty bank for ``capacity`` samples of ``params`` stored in format ``fmt``.

    Args:
      params: a pytree of floating-point arrays (only shapes and dtypes are used).
      fmt: the storage format (normally the weight format of the sampler); ``FULL`` stores
        the samples unpacked.
      capacity: the number of slots (>= 1).
    """
    check_format(fmt)
    capacity = positive_int("capacity", capacity)
    if not jax.tree.leaves(params):
        raise ValueError("bank.init: params has no array leaves")
    jax.tree.map(lambda p: check_float_array(p, "params leaf"), params)
    return SampleBank(samples=_bank_init(params, fmt, capacity),
                      count=jnp.zeros((), jnp.int32))


def _bank_init(params: Any, fmt: Format, capacity: int) -> Any:
    # Built from the packed layout's shapes (jax.eval_shape), not by packing zeros inside
    # jit: XLA would constant-fold the whole encoding, which takes seconds on ResNet-18.
    def init_leaf(p):
        if fmt.is_identity:
            return jnp.zeros((capacity,) + tuple(p.shape), p.dtype)
        spec = jax.eval_shape(lambda: pack(jnp.zeros(p.shape, p.dtype), fmt))
        codes = jnp.zeros((capacity,) + spec.codes.shape, spec.codes.dtype)
        exponents = None
        if spec.exponents is not None:
            exponents = jnp.full((capacity,) + spec.exponents.shape, ZERO_BLOCK_EXPONENT,
                                 spec.exponents.dtype)
        return Packed(codes, exponents, spec.fmt, spec.shape, spec.dtype)

    return jax.tree.map(init_leaf, params)


def _check_leaf_shape(p: Any, want: tuple[int, ...]) -> None:
    if tuple(np.shape(p)) != tuple(want):
        raise ValueError(
            f"params leaf of shape {tuple(np.shape(p))} does not match the bank's {tuple(want)}"
        )


@jax.jit
def _bank_add(samples: Any, count: jax.Array, params: Any) -> tuple[Any, jax.Array]:
    cap = jax.tree.leaves(samples)[0].shape[0]
    slot = jnp.asarray(count, jnp.int32) % cap
    put = lambda a, b: jax.lax.dynamic_update_index_in_dim(a, b.astype(a.dtype), slot, 0)

    def add_leaf(p, s):
        if _is_packed(s):
            return jax.tree.map(put, s, pack(jnp.asarray(p).astype(s.dtype), s.fmt))
        return put(s, jnp.asarray(p))

    return jax.tree.map(add_leaf, params, samples), count + 1


def add(bank: SampleBank, params: Any) -> SampleBank:
    """Store ``params`` in slot ``count % capacity`` and increment ``count`` (pure, jit-able).

    The params are rounded to the bank's format with nearest rounding (the identity for
    params already on the weight grid) and cast to the dtype the bank was built for. When
    the bank is full the oldest sample is overwritten.

    Raises:
      ValueError: if a leaf's shape differs from the bank's, or (for concrete params) a
        leaf holds NaN/inf that the format cannot store (under ``jit`` those are stored as
        zero / the saturated value, as for :func:`~lpsampling.storage.pack`).
    """

    def check(p, s):
        _check_leaf_shape(p, s.shape if _is_packed(s) else s.shape[1:])
        if _is_packed(s) and _is_concrete(p):
            _check_concrete(p, s.fmt)

    jax.tree.map(check, params, bank.samples)
    samples, count = _bank_add(bank.samples, bank.count, params)
    return SampleBank(samples=samples, count=count)


def size(bank: SampleBank) -> jax.Array:
    """The number of samples held: ``min(count, capacity)`` (int32 scalar array)."""
    return jnp.minimum(bank.count, bank.capacity)


def nbytes(bank: SampleBank) -> int:
    """Bytes of sample storage (codes + block exponents, or the float arrays for ``FULL``).

    Counts all ``capacity`` slots, filled or not; the 4-byte ``count`` is not included.
    """
    total = 0
    for leaf in _bank_leaves(bank):
        total += leaf.nbytes if _is_packed(leaf) else _array_nbytes(leaf)
    return total


@jax.jit
def _bank_get(samples: Any, count: jax.Array, i: jax.Array) -> Any:
    cap = jax.tree.leaves(samples)[0].shape[0]
    count = jnp.asarray(count, jnp.int32)
    held = jnp.minimum(count, cap)
    idx = jnp.remainder(jnp.asarray(i, jnp.int32), jnp.maximum(held, 1))
    slot = (count - held + idx) % cap
    take = lambda a: jax.lax.dynamic_index_in_dim(a, slot, 0, keepdims=False)

    def get_leaf(leaf):
        if _is_packed(leaf):
            return unpack(jax.tree.map(take, leaf))
        return take(leaf)

    return jax.tree.map(get_leaf, samples, is_leaf=_is_packed)


@jax.jit
def _bank_take(samples: Any, order: jax.Array) -> Any:
    def take_leaf(leaf):
        if _is_packed(leaf):
            return unpack(jax.tree.map(lambda a: jnp.take(a, order, axis=0), leaf))
        return jnp.take(leaf, order, axis=0)

    return jax.tree.map(take_leaf, samples, is_leaf=_is_packed)


def get(bank: SampleBank, i: int | jax.Array) -> Any:
    """The ``i``-th retained sample, oldest first, as an (unpacked) params pytree.

    ``i`` counts among the retained samples in the order they were added: 0 is the oldest
    still held, ``size - 1`` (or ``-1``) the newest. Negative ``i`` counts from the newest.

    ``i`` must be an integer: a Python or NumPy integer, or a 0-d integer array (traced ones
    included).

    Raises:
      TypeError: ``i`` is not an integer (a float such as ``1.5`` or ``1.0``, a bool, a
        string, a non-scalar array).
      ValueError: "the sample bank is empty", when ``count`` is concrete and zero.
      IndexError: when ``i`` and ``count`` are concrete and ``i`` is out of range.
    Under ``jit`` nothing can be checked: ``i`` is taken modulo the size, and an empty bank
    returns zeros.
    """
    i = integer_index("i", i)
    cap = bank.capacity
    count = bank.count
    if _is_concrete(count):
        held = min(int(count), cap)
        if held == 0:
            raise ValueError("the sample bank is empty")
        if isinstance(i, int) and not -held <= i < held:
            raise IndexError(f"sample index {i} out of range for a bank holding {held}")
    return _bank_get(bank.samples, count, i)


def stack(bank: SampleBank) -> Any:
    """All retained samples, oldest first, unpacked, with a leading sample axis (eager).

    Returns the params pytree whose leaves have shape ``(size,) + leaf.shape``.

    Raises:
      ValueError: "the sample bank is empty" when no sample has been added.
    """
    cap = bank.capacity
    count = int(bank.count)
    held = min(count, cap)
    if held == 0:
        raise ValueError("the sample bank is empty")
    order = jnp.asarray((np.arange(held) + count - held) % cap, jnp.int32)
    return _bank_take(bank.samples, order)


# --------------------------------------------------------------------------------------
# The first release's flat names (``lps.sample_bank_init``, ...): deprecated aliases.


def _deprecated_alias(new: Callable) -> Callable:
    old = f"sample_bank_{new.__name__}"

    @functools.wraps(new)
    def alias(*args, **kwargs):
        warnings.warn(
            f"{old} is deprecated and will be removed in the next release; use "
            f"lpsampling.bank.{new.__name__} (lps.bank.{new.__name__})",
            DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated alias of :func:`lpsampling.bank.{new.__name__}`."
    return alias


DEPRECATED_ALIASES: dict[str, Callable] = {
    f"sample_bank_{fn.__name__}": _deprecated_alias(fn)
    for fn in (init, add, get, stack, size, nbytes)
}
