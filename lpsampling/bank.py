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
from lpsampling.validation import integer_index, positive_int, prng_key

__all__ = ["SampleBank", "init", "add", "get", "get_packed", "stack", "size", "nbytes",
           "predict"]




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


def _slot(samples: Any, count: jax.Array, i: jax.Array) -> jax.Array:
    """The ring-buffer slot of the ``i``-th retained sample (oldest first; modulo the size)."""
    cap = jax.tree.leaves(samples)[0].shape[0]
    count = jnp.asarray(count, jnp.int32)
    held = jnp.minimum(count, cap)
    idx = jnp.remainder(jnp.asarray(i, jnp.int32), jnp.maximum(held, 1))
    return (count - held + idx) % cap


def _take_slot(samples: Any, slot: jax.Array) -> Any:
    """Slot ``slot`` of every leaf, still packed (codes and exponents indexed, not decoded)."""
    take = lambda a: jax.lax.dynamic_index_in_dim(a, slot, 0, keepdims=False)

    def take_leaf(leaf):
        if _is_packed(leaf):
            return jax.tree.map(take, leaf)
        return take(leaf)

    return jax.tree.map(take_leaf, samples, is_leaf=_is_packed)


def _unpack_leaves(sample: Any) -> Any:
    return jax.tree.map(lambda leaf: unpack(leaf) if _is_packed(leaf) else leaf, sample,
                        is_leaf=_is_packed)


@jax.jit
def _bank_get_packed(samples: Any, count: jax.Array, i: jax.Array) -> Any:
    return _take_slot(samples, _slot(samples, count, i))


@jax.jit
def _bank_get(samples: Any, count: jax.Array, i: jax.Array) -> Any:
    return _unpack_leaves(_take_slot(samples, _slot(samples, count, i)))


@jax.jit
def _bank_take(samples: Any, order: jax.Array) -> Any:
    def take_leaf(leaf):
        if _is_packed(leaf):
            return unpack(jax.tree.map(lambda a: jnp.take(a, order, axis=0), leaf))
        return jnp.take(leaf, order, axis=0)

    return jax.tree.map(take_leaf, samples, is_leaf=_is_packed)


def _check_index(bank: SampleBank, i: Any) -> Any:
    i = integer_index("i", i)
    count = bank.count
    if _is_concrete(count):
        held = min(int(count), bank.capacity)
        if held == 0:
            raise ValueError("the sample bank is empty")
        if isinstance(i, int) and not -held <= i < held:
            raise IndexError(f"sample index {i} out of range for a bank holding {held}")
    return i


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
    i = _check_index(bank, i)
    return _bank_get(bank.samples, bank.count, i)


def get_packed(bank: SampleBank, i: int | jax.Array) -> Any:
    """The ``i``-th retained sample as stored: a pytree of :class:`~lpsampling.storage.Packed`
    leaves (codes and block exponents of that one sample), nothing decoded.

    The same sample as :func:`get` (same indexing, same checks and errors):
    ``jax.tree.map(unpack, get_packed(bank, i), is_leaf=...)`` equals ``get(bank, i)``.
    Leaves of a ``FULL`` bank are the stored arrays. Hand the packed leaves to layers that
    multiply the integer codes directly (``lps.flax.QuantDense`` / ``QuantConv`` with
    ``compute="int8"``), or see :func:`predict`.
    """
    i = _check_index(bank, i)
    return _bank_get_packed(bank.samples, bank.count, i)


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
# Bayesian model averaging straight from the bank.


def _is_bank(x: Any) -> bool:
    return isinstance(x, SampleBank)


def _keep_packed(sample: Any, packed: bool | Callable[[Any, Packed], bool]) -> Any:
    """Unpack the leaves of ``sample`` that ``packed`` does not keep packed."""
    if packed is True:
        return sample
    if packed is False:
        return _unpack_leaves(sample)

    def leaf(path, x):
        if not _is_packed(x) or packed(path, x):
            return x
        return unpack(x)

    return jax.tree_util.tree_map_with_path(leaf, sample, is_leaf=_is_packed)


def _chunked(x: Any, batch_size: int | None) -> tuple[Any, int]:
    """``x`` (leading example axis ``n``) padded with zeros to whole chunks and reshaped to
    ``(num_chunks, batch_size, ...)``; ``(x, 1)`` when ``batch_size`` is None."""
    if batch_size is None:
        return x, 1
    n = jax.tree.leaves(x)[0].shape[0]
    num = -(-n // batch_size)
    pad = num * batch_size - n

    def chunk(a):
        if pad:
            a = jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)])
        return a.reshape((num, batch_size) + a.shape[1:])

    return jax.tree.map(chunk, x), num


@functools.partial(jax.jit, static_argnames=("apply_fn", "packed", "batch_size"))
def _predict(samples: Any, count: jax.Array, x: Any, key: jax.Array | None, *,
             apply_fn: Callable[..., Any], packed: bool | Callable[[Any, Packed], bool],
             batch_size: int | None) -> jax.Array:
    cap = jax.tree.leaves(samples)[0].shape[0]
    count = jnp.asarray(count, jnp.int32)
    held = jnp.minimum(count, cap)
    n = jax.tree.leaves(x)[0].shape[0]
    chunks, num_chunks = _chunked(x, batch_size)

    def probs_of(logits):
        # float32 softmax whatever the logits' dtype: the average is taken in float32
        return jax.nn.softmax(jnp.asarray(logits).astype(jnp.float32), axis=-1)

    def one_sample(i):
        sample = _keep_packed(_take_slot(samples, (count - held + i) % cap), packed)
        k_i = None if key is None else jax.random.fold_in(key, i)

        def run(xb, j):
            if key is None:
                return probs_of(apply_fn(sample, xb))
            return probs_of(apply_fn(sample, xb, jax.random.fold_in(k_i, j)))

        if batch_size is None:
            return run(chunks, 0)
        p = jax.lax.map(lambda a: run(a[0], a[1]), (chunks, jnp.arange(num_chunks)))
        return p.reshape((num_chunks * batch_size,) + p.shape[2:])[:n]

    shape = jax.eval_shape(one_sample, jnp.zeros((), jnp.int32))

    def body(acc, i):
        # slots not filled yet (a traced count under jit) are skipped, not computed
        p = jax.lax.cond(i < held, one_sample,
                         lambda _: jnp.zeros(shape.shape, shape.dtype), i)
        return acc + p, None

    acc, _ = jax.lax.scan(body, jnp.zeros(shape.shape, jnp.float32),
                          jnp.arange(cap, dtype=jnp.int32))
    return acc / held.astype(jnp.float32)


def predict(
    bank: SampleBank | Any,
    apply_fn: Callable[..., Any],
    x: Any,
    *,
    key: jax.Array | None = None,
    packed: bool | Callable[[Any, Packed], bool] = True,
    batch_size: int | None = None,
) -> jax.Array:
    """Bayesian model average of the retained samples, straight from the bank:
    ``p(y | x) = (1/S) Σ_s softmax(apply_fn(θ_s, x))``, ``S = size(bank)``.

    The samples are visited oldest first in one ``lax.scan`` over the bank's slots (the
    model is traced and compiled once; slots not yet filled are skipped), and the softmax
    probabilities are summed and averaged in float32. With ``packed=True`` each sample
    reaches ``apply_fn`` as stored: :class:`~lpsampling.storage.Packed` leaves whose int8
    codes are never decoded to float32, so a model whose layers multiply the codes
    (``lps.flax.QuantDense`` / ``QuantConv`` with ``compute="int8"``) predicts from the
    packed bank directly; leaves of a ``FULL`` bank (e.g. BatchNorm statistics) come as
    stored. Jit-able (``count`` may be traced); the compilation is cached per
    ``apply_fn`` (pass the same function object to reuse it).

    Args:
      bank: a :class:`SampleBank`, or a pytree (dict, tuple, ...) of banks filled
        together (same capacity, same count), e.g. ``{"params": bank, "batch_stats":
        stats_bank}``; a sample then has that structure, each bank replaced by its sample.
      apply_fn: ``apply_fn(sample, x) -> logits`` of shape ``(n, ..., C)``; with ``key``,
        ``apply_fn(sample, x, key)``.
      x: the inputs, an array (or a pytree of arrays) with a leading example axis ``n``.
      key: PRNG key for a model that draws random numbers at test time (stochastic
        activation rounding): sample ``i`` (oldest first), chunk ``j`` gets
        ``fold_in(fold_in(key, i), j)``.
      packed: ``True``: every packed leaf is passed packed; ``False``: every leaf is
        unpacked first (what :func:`get` returns; the float32 reference); a callable
        ``packed(path, leaf) -> bool`` keeps packed the leaves it accepts (``path``: the
        leaf's JAX key path in the sample) and unpacks the others.
      batch_size: run ``x`` in chunks of this many examples (``lax.map``; the last chunk
        padded with zeros); None: one chunk.

    Returns:
      float32 probabilities of the logits' shape ``(n, ..., C)``; each row sums to 1.

    Raises:
      ValueError: "the sample bank is empty" (concrete count zero; under ``jit`` an
        empty bank gives NaN), banks of different capacities or (concrete) counts, a
        non-positive ``batch_size``.
      TypeError: ``bank`` holds something other than banks, ``apply_fn`` or ``packed``
        of the wrong type, ``key`` not a PRNG key.
    """
    banks = jax.tree.leaves(bank, is_leaf=_is_bank)
    if not banks or not all(_is_bank(b) for b in banks):
        raise TypeError("predict: bank must be a SampleBank or a pytree of SampleBanks, "
                        f"got {type(bank).__name__}")
    if not callable(apply_fn):
        raise TypeError(f"predict: apply_fn must be callable, got {type(apply_fn).__name__}")
    if not (isinstance(packed, bool) or callable(packed)):
        raise TypeError("predict: packed must be True, False or a callable (path, leaf) -> "
                        f"bool, got {packed!r}")
    batch_size = positive_int("batch_size", batch_size, allow_none=True)
    if key is not None:
        key = prng_key("key", key)
    cap = banks[0].capacity
    if any(b.capacity != cap for b in banks):
        raise ValueError("predict: the banks have different capacities "
                         f"{[b.capacity for b in banks]}")
    count = banks[0].count
    concrete = [int(b.count) for b in banks if _is_concrete(b.count)]
    if len(set(concrete)) > 1:
        raise ValueError(f"predict: the banks hold different counts {concrete}: they must "
                         "be filled together")
    if concrete and concrete[0] == 0:
        raise ValueError("the sample bank is empty")
    if not jax.tree.leaves(x):
        raise ValueError("predict: x has no array leaves")
    samples = jax.tree.map(lambda b: b.samples, bank, is_leaf=_is_bank)
    return _predict(samples, count, x, key, apply_fn=apply_fn, packed=packed,
                    batch_size=batch_size)


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
