"""Real low-precision storage: a float tensor as the integer codes of a number format.

:func:`pack` rounds ``x`` to the grid of ``fmt`` (nearest, in float32) and encodes it; it is
actual storage, not simulation: ``wl <= 4`` bits take half a byte per element (two codes per
``uint8``), ``<= 8`` one byte, ``<= 16`` two, ``<= 32`` four, plus one ``int8`` exponent per
block for block floating point; ``FULL`` keeps ``x`` itself. :func:`unpack` returns ``x``
bit for bit for ``x`` on the grid (``-0.0`` becomes ``+0.0`` for fixed and block floating
point). :func:`save_packed` / :func:`load_packed` write and read one ``.npz`` archive
atomically, no pickles. The posterior sample bank is :mod:`lpsampling.bank`. Code layouts,
special values and the file format: ``docs/storage.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling.atomic import atomic_open
from lpsampling.formats import FORMAT_TYPES, ZERO_BLOCK_EXPONENT, Format, check_format
from lpsampling.quantize import check_float_array, quantize

__all__ = [
    "Packed",
    "pack",
    "unpack",
    "code_dtype",
    "save_packed",
    "load_packed",
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
    :class:`lpsampling.bank.SampleBank`); :func:`unpack` then returns those axes in front of
    ``shape``. The code layouts are described in ``docs/storage.md``.
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
    float32 (the identity for ``x`` already on the grid), then encoded as described in
    ``docs/storage.md``. ``unpack(pack(x, fmt))`` returns ``x`` bit for bit for ``x`` on the grid
    (``-0.0`` may come back as ``+0.0``).

    Args:
      x: a floating-point array (float16, bfloat16, float32) of any shape.
      fmt: the number format. ``FULL`` stores ``x`` unchanged in its own dtype.

    Returns:
      A :class:`Packed` whose ``nbytes`` is the real storage in bytes.

    Raises:
      ValueError: for concrete ``x`` with NaN/inf that ``fmt`` cannot represent (see
        ``docs/storage.md`` for what happens under ``jit``), or a block size / axis that does
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

    If the children carry extra leading axes (a stack, as in
    :class:`lpsampling.bank.SampleBank`), they are kept in front: the result has shape
    ``leading + packed.shape``.
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
        if packed.exponents is None:
            raise ValueError(f"unpack: {fmt!r} stores one exponent per block, but "
                             "packed.exponents is None")
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
    """Refuse a loaded leaf that :func:`save_packed` could not have written, naming the
    field: a tampered file must fail here, not unpack to inf, zeros or integers."""
    fmt = p.fmt
    if not jnp.issubdtype(jnp.dtype(p.dtype), jnp.floating):
        raise ValueError(f"metadata dtype {p.dtype!r} is not a floating-point dtype")
    if fmt.is_identity:
        if tuple(p.codes.shape) != p.shape:
            raise ValueError(f"FULL leaf has shape {p.codes.shape}, expected {p.shape}")
        if p.codes.dtype != jnp.dtype(p.dtype):
            raise ValueError(f"FULL leaf values have dtype {p.codes.dtype}, the metadata "
                             f"says {p.dtype}")
        return
    if p.codes.dtype != code_dtype(fmt):
        raise ValueError(f"codes dtype {p.codes.dtype}, expected {code_dtype(fmt)}")
    batch = _batch_shape(p.codes, fmt, p.shape)
    es = _exponent_shape(fmt, p.shape)
    if es is None:
        if p.exponents is not None:
            raise ValueError(f"unexpected exponents for {fmt!r}")
        return
    if p.exponents is None or tuple(p.exponents.shape) != batch + es:
        raise ValueError(f"exponents missing or of the wrong shape for {fmt!r}")
    if p.exponents.dtype != jnp.int8:
        raise ValueError(f"exponents dtype {p.exponents.dtype}, expected int8")
    e = np.asarray(p.exponents, np.int32)
    bad = (e != ZERO_BLOCK_EXPONENT) & ((e < -126) | (e > 127))
    if bad.any():
        raise ValueError(
            f"exponents out of range: {int(bad.sum())} block exponent(s) outside [-126, 127] "
            f"(and not the zero-block marker {ZERO_BLOCK_EXPONENT}), e.g. {int(e[bad][0])}")


# --------------------------------------------------------------------------------------
# The sample bank moved to lpsampling.bank; its first release's names stay reachable here.


def __getattr__(name: str):
    from lpsampling import bank

    if name == "SampleBank":
        return bank.SampleBank
    if name in bank.DEPRECATED_ALIASES:  # warn when called, naming the new function
        return bank.DEPRECATED_ALIASES[name]
    raise AttributeError(f"module 'lpsampling.storage' has no attribute {name!r}")
