"""Argument checks shared by every public entry point.

Each check names the argument and what is allowed. A value of the wrong type raises
:class:`ArgumentTypeError` (a ``TypeError`` that is also a ``ValueError``, so code that
caught ``ValueError`` before keeps working); a value of the right type out of range raises
``ValueError``. Traced values and schedules (callables) are left to the caller.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ArgumentTypeError",
    "positive_int",
    "finite_float",
    "unit_interval",
    "prng_key",
    "float_pytree",
    "finite_pytree",
    "integer_index",
    "normalize_name",
]

# Integers above this are refused: no count, size or seed in lpsampling needs more, and
# larger ones overflow int64 (or float32 in the noise scale) at the first step.
MAX_INT = 2**62


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (also a ``ValueError``, as these errors were before)."""


def _is_tracer(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def positive_int(name: str, value: Any, *, minimum: int = 1, allow_none: bool = False):
    """``value`` as a Python ``int`` ``>= minimum`` (``None`` passes when ``allow_none``).

    Accepts Python and NumPy integers (and 0-d integer arrays); refuses ``bool``, floats,
    strings and integers above ``2**62``.
    """
    if value is None and allow_none:
        return None
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if isinstance(value, (np.ndarray, jax.Array)) and value.ndim == 0 \
            and not _is_tracer(value) and jnp.issubdtype(value.dtype, jnp.integer):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        none = " or None" if allow_none else ""
        raise ArgumentTypeError(f"{name} must be {what}{none}, got {value!r} "
                                f"({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if value > MAX_INT:
        raise ValueError(f"{name} must be {what} no larger than 2**62, got {value!r}")
    return int(value)


def finite_float(name: str, value: Any, *, positive: bool = False,
                 allow_zero: bool = True, nonnegative: bool = True):
    """``value`` as a finite Python ``float``, or ``None`` for a traced value or a schedule.

    ``positive``: must be ``> 0``; otherwise ``>= 0`` when ``nonnegative`` (the default);
    ``allow_zero=False`` refuses 0. Accepts Python, NumPy and concrete 0-d JAX real
    numbers; refuses ``bool``, strings, complex numbers, NaN and ±inf.
    """
    if callable(value) or _is_tracer(value):
        return None
    if isinstance(value, (np.ndarray, jax.Array)):
        if value.ndim != 0:
            raise ArgumentTypeError(f"{name} must be a number, got an array of shape "
                                    f"{value.shape}")
        if not (jnp.issubdtype(value.dtype, jnp.floating)
                or jnp.issubdtype(value.dtype, jnp.integer)):
            raise ArgumentTypeError(f"{name} must be a real number, got an array of "
                                    f"dtype {value.dtype}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a real number, got {value!r} "
                                f"({type(value).__name__})")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf if value > 0 else -math.inf
    if v != v:
        raise ValueError(f"{name} must not be NaN")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if not allow_zero and v == 0:
        raise ValueError(f"{name} must be nonzero, got {value!r}")
    if nonnegative and v < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def unit_interval(name: str, value: Any, *, open_left: bool = False,
                  open_right: bool = True) -> float:
    """``value`` as a float in ``[0, 1)`` (the default), ``[0, 1]``, ``(0, 1)`` or ``(0, 1]``."""
    interval = f"{'(' if open_left else '['}0, 1{')' if open_right else ']'}"
    if callable(value) or _is_tracer(value):
        raise ArgumentTypeError(f"{name} must be a number in {interval}, got "
                                f"{type(value).__name__}")
    v = finite_float(name, value, nonnegative=False)
    low_ok = v > 0 if open_left else v >= 0
    high_ok = v < 1 if open_right else v <= 1
    if not (low_ok and high_ok):
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


def prng_key(name: str, key: Any) -> Any:
    """``key`` if it is a JAX PRNG key: a typed ``jax.random.key`` or a raw uint32
    ``jax.random.PRNGKey`` (traced ones included). ``None`` is a ``ValueError`` (the key is
    required); any other type or dtype an :class:`ArgumentTypeError`."""
    if key is None:
        raise ValueError(
            f"{name} is required: the sampler draws its noise and roundings from it "
            f"(pass {name}=jax.random.key(seed))")
    if not isinstance(key, (jax.Array, jax.core.Tracer)):
        raise ArgumentTypeError(
            f"{name} must be a JAX PRNG key array (jax.random.key(seed)), got "
            f"{type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype == jnp.uint32 and key.ndim >= 1:
        return key
    raise ArgumentTypeError(
        f"{name} must be a JAX PRNG key (jax.random.key(seed) or a raw uint32 "
        f"jax.random.PRNGKey), got an array of dtype {key.dtype} and shape {key.shape}")


def float_pytree(name: str, tree: Any) -> Any:
    """``tree`` if every leaf is a real floating-point array (or Python float); otherwise an
    :class:`ArgumentTypeError` naming the first offending leaf by its path."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            kind = "complex" if jnp.issubdtype(dtype, jnp.complexfloating) else str(dtype)
            raise ArgumentTypeError(
                f"{name}{jax.tree_util.keystr(path)} must be a real floating-point array, "
                f"got dtype {dtype} ({kind}); cast it, e.g. with .astype(jnp.float32)")
    return tree


def finite_pytree(name: str, tree: Any) -> Any:
    """``tree`` if no concrete leaf holds NaN or ±inf; otherwise a ``ValueError`` naming the
    first offending leaf by its path. Traced leaves (under ``jit``) and non-float leaves are
    skipped (dtype checks are :func:`float_pytree`'s)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if _is_tracer(leaf):
            continue
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            continue
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)
        if not (jnp.issubdtype(dtype, jnp.floating)
                or jnp.issubdtype(dtype, jnp.complexfloating)):
            continue
        finite = np.isfinite(np.asarray(leaf))
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} holds {bad} non-finite value(s) (NaN "
                f"or inf); the sampler would carry them through every step")
    return tree


def integer_index(name: str, value: Any) -> Any:
    """``value`` as a Python ``int`` when it is a concrete integer (Python, NumPy or 0-d
    integer array), or unchanged when it is a traced 0-d integer. Floats (even integral
    ones such as ``1.0``), ``bool``, strings and non-scalar arrays are an
    :class:`ArgumentTypeError` naming ``name``."""
    if isinstance(value, (np.ndarray, jax.Array, jax.core.Tracer)) or hasattr(value, "dtype"):
        dtype = value.dtype
        if np.ndim(value) != 0 or not jnp.issubdtype(dtype, jnp.integer):
            raise ArgumentTypeError(
                f"{name} must be an integer scalar, got an array of dtype {dtype} and "
                f"shape {np.shape(value)}")
        return value if _is_tracer(value) else int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an integer, got {value!r} "
                                f"({type(value).__name__})")
    return int(value)


def normalize_name(name: Any, what: str, *, sep: str = "-") -> str:
    """``name`` stripped, in lower case, with ``sep`` for both ``-`` and ``_``.

    Raises:
      ValueError: ``name`` is not a string (``what`` names it in the message).
    """
    if not isinstance(name, str):
        raise ArgumentTypeError(f"{what} must be a string, got {name!r}")
    key = name.strip().lower().replace("_", "-")
    return key.replace("-", sep) if sep != "-" else key
