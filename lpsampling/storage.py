"""Real low-precision storage: packed integer codes and a posterior sample bank.

:func:`pack` turns a float tensor into the integer codes of a number format (plus one
shared exponent per block for block floating point); :func:`unpack` turns them back. This
is actual storage, not simulation: an 8-bit format takes one byte per element, a 4-bit
format half a byte.

Rounding
--------
``pack(x, fmt)`` first rounds ``x`` to the grid with ``quantize(x, fmt, rounding="nearest")``
(computed in float32, whatever the dtype of ``x``). For ``x`` already on the grid this is the
identity, so ``unpack(pack(x, fmt))`` equals ``x`` bit for bit for every ``x`` on the grid,
in its original dtype and shape — except that ``-0.0`` comes back as ``+0.0`` for fixed
point and block floating point (their integer codes have no negative zero; small floats
keep the sign of zero). Values that quantize flushes to zero (float32 subnormals under
block floating point) are stored as zero.

Layouts and bytes per element
-----------------------------
Code widths (``bits`` = ``wl`` for fixed and block floating point, ``1 + exp + man`` for
floats):

=============  =====================================  ==================================
bits           fixed point / block floating point     floating point
=============  =====================================  ==================================
``<= 4``       two codes per ``uint8`` byte (0.5 B)   two codes per ``uint8`` byte (0.5 B)
``<= 8``       ``int8`` (1 B)                         ``uint8`` (1 B)
``<= 16``      ``int16`` (2 B)                        ``uint16`` (2 B)
``<= 32``      ``int32`` (4 B)                        ``uint32`` (4 B)
=============  =====================================  ==================================

* **Nibbles** (bits <= 4): the tensor is flattened (C order), padded with one zero code to
  even length, and element ``2j`` goes into the low nibble of byte ``j``, element ``2j+1``
  into the high nibble; ``codes`` has shape ``(ceil(n / 2),)``. Signed codes are stored as
  4-bit two's complement. Wider codes keep the tensor's shape.
* **FixedPoint(wl, fl)**: code = the integer ``x * 2**fl``. No exponent (``exponents`` is
  None). With ``clamp=False`` out-of-range values saturate to the ``wl``-bit code range.
* **BlockFloatingPoint(wl, ...)**: code = the integer mantissa ``m`` with value
  ``m * 2**(e + 2 - wl)``, where ``e`` is the block's exponent
  (:func:`lpsampling.formats.block_exponent`), plus one ``int8`` exponent per block.
  ``exponents`` has the *block shape*, broadcastable against the tensor:

  - ``axis=k``: the tensor's shape with every axis but ``k`` set to 1 (``keepdims``);
    a 1-D tensor with ``axis=0`` has one exponent per element;
  - ``axis=None``: ``(1,) * ndim`` (one exponent);
  - ``block_size=b``: ``shape[:-1] + (shape[-1] // b, 1)``, broadcastable against the
    tensor reshaped to ``shape[:-1] + (shape[-1] // b, b)``;
  - a 0-d tensor: shape ``()``.

  An all-zero block stores the exponent ``-128`` (a sentinel) and zero codes. The
  exponents add ``1 / block_elements`` bytes per element.
* **FloatingPoint(exp, man)**: code = the ``(1 + exp + man)``-bit pattern
  ``sign | biased exponent | mantissa`` with bias ``2**(exp-1) - 1`` and subnormals at
  biased exponent 0. For ``exp < 8`` (QPyTorch convention) no code is reserved for
  inf/NaN: the top biased exponent ``2**exp - 1`` is the ordinary binade ``2**(exp-1)``.
  For ``exp == 8`` the codes are IEEE-style (float32's top ``9 + man`` bits): biased
  exponent 255 with zero mantissa is ±inf, with nonzero mantissa NaN. Encoding and
  decoding work on the float32 bit pattern with integer operations, because XLA on CPU
  flushes subnormals in float arithmetic.
* **FULL**: nothing is encoded: ``codes`` is ``x`` itself, in its own dtype (4 B per
  element for float32), and ``exponents`` is None.

Special values
--------------
NaN and ±inf have no code in fixed point, block floating point and floats with
``exp < 8`` (and NaN has none in ``FloatingPoint(8, 0)``). When ``x`` is concrete (not a
tracer), :func:`pack` raises ``ValueError`` if it holds such a value; under ``jax.jit`` it
cannot check, and ±inf is stored as the saturated extreme of the format while NaN is stored
as zero. Likewise fixed point with ``clamp=False`` raises for concrete out-of-range values
and saturates them under ``jit``. ``FULL`` and ``FloatingPoint(8, man >= 1)`` store NaN and
±inf as such.

Word lengths above 24 bits are supported to float32 precision only (float32 cannot hold
every such grid value; see :class:`lpsampling.formats.FixedPoint`); a 32-bit code that
float32 rounds up to ``2**31`` is stored as the largest float32 below it.

Files
-----
:func:`save_packed` writes a :class:`Packed` or a (nested) dict of them to one ``.npz``
archive (``leaf<i>.codes``, ``leaf<i>.exponents`` and a JSON metadata entry with each
leaf's format, shape and dtype and the dict structure), atomically; :func:`load_packed`
reads it back and raises ``ValueError`` naming the path for truncated or foreign files.
No pickles are written or read.

Sample bank
-----------
:class:`SampleBank` keeps the last ``capacity`` posterior samples of a params pytree in a
ring buffer, each leaf a stacked :class:`Packed` (``codes`` of shape ``(S,) + layout``), so
an ensemble of 50 samples of an 8-bit model takes about a quarter of its float32 memory.
All functions are pure; ``sample_bank_add`` and ``sample_bank_get`` run under ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling._io import atomic_open
from lpsampling.formats import FORMAT_TYPES, ZERO_BLOCK_EXPONENT, Format, Full, check_format
from lpsampling.quantize import check_float_array, quantize

__all__ = [
    "Packed",
    "pack",
    "unpack",
    "code_dtype",
    "save_packed",
    "load_packed",
    "SampleBank",
    "sample_bank_init",
    "sample_bank_add",
    "sample_bank_get",
    "sample_bank_size",
    "sample_bank_nbytes",
    "sample_bank_stack",
]

_FILE_MAGIC = "lpsampling.packed"
_FILE_VERSION = 1
_META_KEY = "__lpsampling_meta__"


# --------------------------------------------------------------------------------------
# The Packed container.


@jax.tree_util.register_pytree_node_class
class Packed:
    """A tensor stored as low-precision codes.

    Pytree children (arrays): ``codes`` and ``exponents`` (None unless the format is block
    floating point). Static auxiliary data: ``fmt`` (the format), ``shape`` (the tensor's
    shape, a tuple) and ``dtype`` (the original dtype's name, e.g. ``"float32"``). Packed
    values can be passed into and out of ``jax.jit``, mapped with ``jax.tree.map`` and
    saved with :func:`save_packed`.

    The children may carry extra *leading* axes (a stack of tensors, as in
    :class:`SampleBank`); :func:`unpack` then returns those axes in front of ``shape``.
    See the module docstring for the code layouts.
    """

    __slots__ = ("codes", "exponents", "fmt", "shape", "dtype")

    def __init__(self, codes: Any, exponents: Any, fmt: Format, shape: tuple[int, ...],
                 dtype: str):
        self.codes = codes
        self.exponents = exponents
        self.fmt = fmt
        self.shape = tuple(int(d) for d in shape)
        self.dtype = str(dtype)

    def tree_flatten(self):
        return (self.codes, self.exponents), (self.fmt, self.shape, self.dtype)

    @classmethod
    def tree_unflatten(cls, aux, children):
        codes, exponents = children
        fmt, shape, dtype = aux
        return cls(codes, exponents, fmt, shape, dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of storage actually held: codes plus block exponents."""
        return _array_nbytes(self.codes) + _array_nbytes(self.exponents)

    @property
    def size(self) -> int:
        """Number of elements of the (unpacked) tensor."""
        return int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self) -> str:
        codes = getattr(self.codes, "dtype", None)
        return (f"Packed(fmt={self.fmt!r}, shape={self.shape}, dtype={self.dtype}, "
                f"codes={codes}, nbytes={self.nbytes})")


def _array_nbytes(a: Any) -> int:
    if a is None:
        return 0
    return int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize


def _is_packed(x: Any) -> bool:
    return isinstance(x, Packed)


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


# --------------------------------------------------------------------------------------
# Code widths and layouts.


def code_dtype(fmt: Format) -> np.dtype:
    """The dtype of ``Packed.codes`` for ``fmt`` (``uint8`` holding two nibbles if bits <= 4)."""
    return check_format(fmt).code_dtype()


def _nibbles(fmt: Format) -> bool:
    return not fmt.is_identity and fmt.bits <= 4


def _code_shape(fmt: Format, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of ``codes`` (without leading stack axes) for a tensor of ``shape``."""
    if _nibbles(fmt):
        n = int(np.prod(shape, dtype=np.int64))
        return ((n + 1) // 2,)
    return tuple(shape)


def _exponent_shape(fmt: Format, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Shape of ``exponents`` (block shape) or None when the format has no exponents."""
    return fmt.exponent_shape(shape)


def _pack_nibbles(c: jax.Array) -> jax.Array:
    """Integer codes (any shape, values fit in 4 bits) -> uint8, two per byte."""
    flat = (c.reshape(-1).astype(jnp.int32) & 0xF).astype(jnp.uint8)
    if flat.shape[0] % 2:
        flat = jnp.concatenate([flat, jnp.zeros((1,), jnp.uint8)])
    return flat[0::2] | (flat[1::2] << 4)


def _unpack_nibbles(b: jax.Array, n: int, signed: bool) -> jax.Array:
    """uint8 bytes (..., m) -> int32 codes (..., n), sign-extended when ``signed``."""
    lo = (b & 0xF).astype(jnp.int32)
    hi = (b >> 4).astype(jnp.int32)
    c = jnp.stack([lo, hi], axis=-1).reshape(b.shape[:-1] + (2 * b.shape[-1],))[..., :n]
    if signed:
        c = (c ^ 8) - 8
    return c


def _store_ints(c: jax.Array, fmt: Format) -> jax.Array:
    if _nibbles(fmt):
        return _pack_nibbles(c)
    return c.astype(code_dtype(fmt))


def _load_ints(codes: jax.Array, fmt: Format, shape: tuple[int, ...], signed: bool):
    """Codes with possible leading stack axes -> int32/uint32 of shape batch + shape."""
    if _nibbles(fmt):
        n = int(np.prod(shape, dtype=np.int64))
        c = _unpack_nibbles(codes, n, signed)
        c = c.reshape(codes.shape[:-1] + tuple(shape))
        return c if signed else c.astype(jnp.uint32)
    return codes.astype(jnp.int32 if signed else jnp.uint32)


def _batch_shape(codes: Any, fmt: Format, shape: tuple[int, ...]) -> tuple[int, ...]:
    cs = _code_shape(fmt, shape)
    nb = codes.ndim - len(cs)
    if nb < 0 or tuple(codes.shape[nb:]) != cs:
        raise ValueError(
            f"codes of shape {codes.shape} do not match the layout {cs} of a {fmt!r} "
            f"tensor of shape {shape}"
        )
    return tuple(codes.shape[:nb])


# --------------------------------------------------------------------------------------
# pack / unpack.


def _check_concrete(x: jax.Array, fmt: Format) -> None:
    """Raise for values of concrete ``x`` that ``fmt`` cannot store (checked on the host)."""
    if fmt.is_identity:
        return
    fmt.check_storable(x)


@functools.partial(jax.jit, static_argnums=(1,))
def _encode(x: jax.Array, fmt: Format) -> tuple[jax.Array, jax.Array | None]:
    """Round ``x`` to the grid of ``fmt`` and encode it: (codes, exponents or None)."""
    q = quantize(x.astype(jnp.float32), fmt, rounding="nearest")
    c, exps = fmt.encode(q)
    return _store_ints(c, fmt), exps


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _decode(codes: jax.Array, exps: jax.Array | None, fmt: Format, shape: tuple[int, ...],
            dtype: str) -> jax.Array:
    c = _load_ints(codes, fmt, shape, signed=fmt.signed_codes)
    return fmt.decode(c, exps, shape).astype(dtype)


def pack(x: jax.Array, fmt: Format) -> Packed:
    """Store ``x`` as the low-precision codes of ``fmt``.

    ``x`` is first rounded onto the grid with ``quantize(x, fmt, rounding="nearest")`` in
    float32 (the identity for ``x`` already on the grid), then encoded as described in the
    module docstring. ``unpack(pack(x, fmt))`` returns ``x`` bit for bit for ``x`` on the grid
    (``-0.0`` may come back as ``+0.0``).

    Args:
      x: a floating-point array (float16, bfloat16, float32) of any shape.
      fmt: the number format. ``FULL`` stores ``x`` unchanged in its own dtype.

    Returns:
      A :class:`Packed` whose ``nbytes`` is the real storage in bytes.

    Raises:
      ValueError: for concrete ``x`` with NaN/inf that ``fmt`` cannot represent (see the
        module docstring for what happens under ``jit``), or a block size / axis that does
        not fit ``x``.
    """
    check_format(fmt)
    x = check_float_array(x)
    shape, dtype = tuple(x.shape), x.dtype.name
    if fmt.is_identity:
        return Packed(x, None, fmt, shape, dtype)
    _exponent_shape(fmt, shape)  # validates axis / block_size early
    if _is_concrete(x):
        _check_concrete(x, fmt)
    codes, exps = _encode(x, fmt)
    return Packed(codes, exps, fmt, shape, dtype)


def unpack(packed: Packed) -> jax.Array:
    """The tensor stored in ``packed``, in its original dtype and shape.

    If the children carry extra leading axes (a stack, as in :class:`SampleBank`), they are
    kept in front: the result has shape ``leading + packed.shape``.
    """
    if not _is_packed(packed):
        raise TypeError(f"unpack expects a Packed, got {type(packed).__name__}")
    fmt, shape = packed.fmt, packed.shape
    codes = jnp.asarray(packed.codes)
    if fmt.is_identity:
        return codes.astype(packed.dtype)
    batch = _batch_shape(codes, fmt, shape)
    exps = None
    es = _exponent_shape(fmt, shape)
    if es is not None:
        exps = jnp.asarray(packed.exponents)
        want = batch + es
        if tuple(exps.shape) != want:
            raise ValueError(
                f"exponents of shape {exps.shape} do not match the block shape {want}"
            )
    return _decode(codes, exps, fmt, shape, packed.dtype)


# --------------------------------------------------------------------------------------
# Files.


def _format_to_json(fmt: Format) -> dict[str, Any]:
    return {"type": type(fmt).__name__, **dataclasses.asdict(fmt)}


def _format_from_json(d: Mapping[str, Any]) -> Format:
    d = dict(d)
    cls = FORMAT_TYPES[d.pop("type")]
    return cls(**d)


def _flatten_for_save(tree: Any, prefix: str, leaves: list[Packed]) -> Any:
    if _is_packed(tree):
        leaves.append(tree)
        return {"leaf": len(leaves) - 1}
    if isinstance(tree, Mapping):
        out = {}
        for name, sub in tree.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"save_packed: dict keys must be str, got {name!r} at {prefix or 'the root'}"
                )
            out[name] = _flatten_for_save(sub, f"{prefix}/{name}", leaves)
        return {"dict": out}
    raise TypeError(
        f"save_packed: expected a Packed or a dict of Packed, got {type(tree).__name__} "
        f"at {prefix or 'the root'}"
    )


def save_packed(path: str | os.PathLike, tree: Packed | Mapping[str, Any]) -> None:
    """Write a :class:`Packed`, or a (nested) dict ``{name: Packed}``, to ``path``.

    The file is an ``.npz`` archive (written to ``path`` exactly; no suffix is added) holding
    each leaf's ``codes`` and ``exponents`` and a JSON metadata entry with each leaf's
    format, shape and dtype and the dict structure. It is written atomically: to a
    temporary file in the same directory, then ``os.replace``-d onto ``path``.
    """
    path = os.fspath(path)
    leaves: list[Packed] = []
    structure = _flatten_for_save(tree, "", leaves)
    arrays: dict[str, np.ndarray] = {}
    meta_leaves = []
    for i, p in enumerate(leaves):
        arrays[f"leaf{i}.codes"] = np.asarray(p.codes)
        if p.exponents is not None:
            arrays[f"leaf{i}.exponents"] = np.asarray(p.exponents)
        meta_leaves.append({
            "format": _format_to_json(p.fmt),
            "shape": list(p.shape),
            "dtype": p.dtype,
            "exponents": p.exponents is not None,
        })
    meta = {"magic": _FILE_MAGIC, "version": _FILE_VERSION, "structure": structure,
            "leaves": meta_leaves}
    arrays[_META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with atomic_open(os.path.abspath(path), "wb") as f:
        np.savez(f, **arrays)


def _rebuild(structure: Any, leaves: list[Packed]) -> Any:
    if "leaf" in structure:
        return leaves[int(structure["leaf"])]
    return {name: _rebuild(sub, leaves) for name, sub in structure["dict"].items()}


def load_packed(path: str | os.PathLike) -> Packed | dict[str, Any]:
    """Read what :func:`save_packed` wrote: a :class:`Packed` or a dict of them.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: naming ``path`` if the file is truncated, corrupt or not an lpsampling
        packed file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_packed: no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if _META_KEY not in z.files:
                raise ValueError("no lpsampling metadata entry")
            meta = json.loads(bytes(z[_META_KEY]).decode("utf-8"))
            if meta.get("magic") != _FILE_MAGIC:
                raise ValueError("wrong magic")
            if meta.get("version") != _FILE_VERSION:
                raise ValueError(f"unsupported version {meta.get('version')!r}")
            leaves = []
            for i, lm in enumerate(meta["leaves"]):
                fmt = _format_from_json(lm["format"])
                shape = tuple(int(d) for d in lm["shape"])
                dtype = jnp.dtype(lm["dtype"]).name
                codes = z[f"leaf{i}.codes"]
                exps = z[f"leaf{i}.exponents"] if lm["exponents"] else None
                p = Packed(jnp.asarray(codes), None if exps is None else jnp.asarray(exps),
                           fmt, shape, dtype)
                _validate_loaded(p)
                leaves.append(p)
            return _rebuild(meta["structure"], leaves)
    except FileNotFoundError:
        raise
    except Exception as err:  # zipfile.BadZipFile, EOFError, KeyError, JSON errors, ...
        raise ValueError(
            f"load_packed: {path} is not a valid lpsampling packed file "
            f"(truncated, corrupt or foreign): {type(err).__name__}: {err}"
        ) from err


def _validate_loaded(p: Packed) -> None:
    fmt = p.fmt
    if fmt.is_identity:
        if tuple(p.codes.shape) != p.shape:
            raise ValueError(f"FULL leaf has shape {p.codes.shape}, expected {p.shape}")
        return
    if p.codes.dtype != code_dtype(fmt):
        raise ValueError(f"codes dtype {p.codes.dtype}, expected {code_dtype(fmt)}")
    batch = _batch_shape(p.codes, fmt, p.shape)
    es = _exponent_shape(fmt, p.shape)
    if es is None:
        if p.exponents is not None:
            raise ValueError(f"unexpected exponents for {fmt!r}")
    elif p.exponents is None or tuple(p.exponents.shape) != batch + es:
        raise ValueError(f"exponents missing or of the wrong shape for {fmt!r}")


# --------------------------------------------------------------------------------------
# Posterior sample bank.


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


def sample_bank_init(params: Any, fmt: Format, capacity: int) -> SampleBank:
    """An empty bank for ``capacity`` samples of ``params`` stored in format ``fmt``.

    Args:
      params: a pytree of floating-point arrays (only shapes and dtypes are used).
      fmt: the storage format (normally the weight format of the sampler); ``FULL`` stores
        the samples unpacked.
      capacity: the number of slots (>= 1).
    """
    check_format(fmt)
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) \
            or capacity < 1:
        raise ValueError(f"capacity must be a positive int, got {capacity!r}")
    capacity = int(capacity)
    if not jax.tree.leaves(params):
        raise ValueError("sample_bank_init: params has no array leaves")
    jax.tree.map(lambda p: check_float_array(p, "params leaf"), params)
    return SampleBank(samples=_bank_init(params, fmt, capacity),
                      count=jnp.zeros((), jnp.int32))


def _bank_init(params: Any, fmt: Format, capacity: int) -> Any:
    # Built from the packed layout's shapes (jax.eval_shape), not by packing zeros inside
    # jit: XLA would constant-fold the whole encoding, which takes seconds on ResNet-18.
    def init_leaf(p):
        if isinstance(fmt, Full):
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


def sample_bank_add(bank: SampleBank, params: Any) -> SampleBank:
    """Store ``params`` in slot ``count % capacity`` and increment ``count`` (pure, jit-able).

    The params are rounded to the bank's format with nearest rounding (the identity for
    params already on the weight grid) and cast to the dtype the bank was built for. When
    the bank is full the oldest sample is overwritten.

    Raises:
      ValueError: if a leaf's shape differs from the bank's, or (for concrete params) a
        leaf holds NaN/inf that the format cannot store (under ``jit`` those are stored as
        zero / the saturated value, as for :func:`pack`).
    """

    def check(p, s):
        _check_leaf_shape(p, s.shape if _is_packed(s) else s.shape[1:])
        if _is_packed(s) and _is_concrete(p):
            _check_concrete(p, s.fmt)

    jax.tree.map(check, params, bank.samples)
    samples, count = _bank_add(bank.samples, bank.count, params)
    return SampleBank(samples=samples, count=count)


def sample_bank_size(bank: SampleBank) -> jax.Array:
    """The number of samples held: ``min(count, capacity)`` (int32 scalar array)."""
    return jnp.minimum(bank.count, bank.capacity)


def sample_bank_nbytes(bank: SampleBank) -> int:
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
    size = jnp.minimum(count, cap)
    idx = jnp.remainder(jnp.asarray(i, jnp.int32), jnp.maximum(size, 1))
    slot = (count - size + idx) % cap
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


def sample_bank_get(bank: SampleBank, i: int | jax.Array) -> Any:
    """The ``i``-th retained sample, oldest first, as an (unpacked) params pytree.

    ``i`` counts among the retained samples in the order they were added: 0 is the oldest
    still held, ``size - 1`` (or ``-1``) the newest. Negative ``i`` counts from the newest.

    Raises:
      ValueError: "the sample bank is empty", when ``count`` is concrete and zero.
      IndexError: when ``i`` and ``count`` are concrete and ``i`` is out of range.
    Under ``jit`` nothing can be checked: ``i`` is taken modulo the size, and an empty bank
    returns zeros.
    """
    cap = bank.capacity
    count = bank.count
    if _is_concrete(count):
        size = min(int(count), cap)
        if size == 0:
            raise ValueError("the sample bank is empty")
        if _is_concrete(i) and not -size <= int(i) < size:
            raise IndexError(f"sample index {int(i)} out of range for a bank holding {size}")
    return _bank_get(bank.samples, count, i)


def sample_bank_stack(bank: SampleBank) -> Any:
    """All retained samples, oldest first, unpacked, with a leading sample axis (eager).

    Returns the params pytree whose leaves have shape ``(size,) + leaf.shape``.

    Raises:
      ValueError: "the sample bank is empty" when no sample has been added.
    """
    cap = bank.capacity
    count = int(bank.count)
    size = min(count, cap)
    if size == 0:
        raise ValueError("the sample bank is empty")
    order = jnp.asarray((np.arange(size) + count - size) % cap, jnp.int32)
    return _bank_take(bank.samples, order)
