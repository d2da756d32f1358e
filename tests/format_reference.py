"""An independent float64 NumPy model of the number formats, for property tests.

Written from the format definitions (DESIGN.md, ``lpsampling.formats`` docstrings), not from
the JAX kernels: block maxima and exponents come from ``np.frexp``, grid membership from
exact float64 arithmetic (every float32 value and every power of two in range is exact).

XLA on CPU reads float32 subnormals as zero in arithmetic; :func:`daz` applies the same rule,
except for 8-exponent-bit floats, which are rounded on the bit pattern and keep subnormals.
"""

from __future__ import annotations

import numpy as np

from lpsampling.formats import BlockFloatingPoint, FixedPoint, FloatingPoint

F32_MIN_NORMAL = 2.0**-126
F32_MAX = float(np.finfo(np.float32).max)


def keeps_subnormals(fmt) -> bool:
    return isinstance(fmt, FloatingPoint) and fmt.exp >= 8


def daz(x: np.ndarray, fmt) -> np.ndarray:
    """The value the kernels compute with: float32 subnormals read as zero (CPU)."""
    x = np.asarray(x, np.float64)
    if keeps_subnormals(fmt):
        return x
    return np.where(np.abs(x) < F32_MIN_NORMAL, 0.0, x)


def floor_log2(a: np.ndarray) -> np.ndarray:
    """floor(log2 a) for a > 0 (exact, from frexp); -10**6 for a == 0."""
    m, e = np.frexp(np.asarray(a, np.float64))
    return np.where(a > 0, e - 1, -(10**6))


def block_max(a: np.ndarray, fmt: BlockFloatingPoint) -> np.ndarray:
    """max |a| per block, broadcast back to a's shape."""
    a = np.abs(np.asarray(a, np.float64))
    if a.ndim == 0:
        return a
    if fmt.block_size is not None:
        b = fmt.block_size
        v = a.reshape(a.shape[:-1] + (a.shape[-1] // b, b))
        return np.broadcast_to(v.max(axis=-1, keepdims=True), v.shape).reshape(a.shape)
    if fmt.axis is None:
        return np.full(a.shape, a.max() if a.size else 0.0)
    axis = fmt.axis % a.ndim
    other = tuple(i for i in range(a.ndim) if i != axis)
    return np.broadcast_to(a.max(axis=other, keepdims=True), a.shape) if a.size else a


def gap_exponent(x: np.ndarray, fmt) -> np.ndarray:
    """Per element: k with local grid multiples of 2**k; None-like -10**6 where no grid."""
    x = daz(x, fmt)
    if isinstance(fmt, FixedPoint):
        return np.full(x.shape, -fmt.fl)
    if isinstance(fmt, BlockFloatingPoint):
        m = np.minimum(block_max(x, fmt), F32_MAX)
        e = floor_log2(m)
        return np.where(m >= F32_MIN_NORMAL, e + 2 - fmt.wl, -(10**6))
    e = np.clip(floor_log2(np.minimum(np.abs(x), F32_MAX)), fmt.min_exp,
                min(fmt.max_exp, 127))
    k = e - fmt.man
    floor = -149 if fmt.exp >= 8 else -126  # 8 exponent bits: float32's own subnormal grid
    return np.where(k >= floor, k, -(10**6))


def bounds(x: np.ndarray, fmt) -> tuple[np.ndarray, np.ndarray]:
    """Saturation bounds per element (block floating point: of x's block)."""
    x = np.asarray(x, np.float64)
    if isinstance(fmt, FixedPoint):
        lo = fmt.min_value if fmt.clamp else -np.inf
        hi = fmt.max_value if fmt.clamp else np.inf
        return np.full(x.shape, lo), np.full(x.shape, hi)
    if isinstance(fmt, BlockFloatingPoint):
        k = gap_exponent(x, fmt)
        hi = np.where(k > -(10**6), fmt.max_code * np.exp2(k.astype(np.float64)), 0.0)
        return -hi, hi
    m = fmt.max_value if fmt.exp < 8 else np.inf
    return np.full(x.shape, -m), np.full(x.shape, m)


def on_format(q: np.ndarray, fmt) -> np.ndarray:
    """Per element: whether the float32 array ``q`` holds values of ``fmt``."""
    q32 = np.asarray(q, np.float32)
    q = q32.astype(np.float64)
    if isinstance(fmt, FloatingPoint) and fmt.exp >= 8:
        bits = q32.view(np.uint32)
        low = np.uint32((1 << (23 - fmt.man)) - 1)
        return np.isfinite(q) & ((bits & low) == 0)
    ok = np.isfinite(q)
    q = np.where(ok, q, 0.0)
    k = gap_exponent(q, fmt).astype(np.float64)
    if isinstance(fmt, BlockFloatingPoint):
        # a block whose exponent is e holds integer codes |c| <= 2**(wl-1) - 1 at gap 2**k
        has = k > -(10**6)
        c = np.where(has, q / np.exp2(np.where(has, k, 0.0)), 0.0)
        return ok & (c == np.round(c)) & (np.abs(c) <= fmt.max_code) & (has | (q == 0))
    c = q / np.exp2(k)
    ok &= c == np.round(c)
    lo, hi = bounds(q, fmt)
    return ok & (q >= lo) & (q <= hi)


def gap(x: np.ndarray, fmt) -> np.ndarray:
    k = gap_exponent(x, fmt)
    return np.where(k > -(10**6), np.exp2(k.astype(np.float64)), 0.0)


def stochastic_rounding_neighbours(x: np.ndarray, fmt):
    """(a, b, p): x's lower and upper neighbours on its own grid, each clipped to the
    saturation bounds, and the exact probability of b. The kernels compare the fraction
    with a uniform on a 2**-24 lattice, so p = ceil(f·2**24)/2**24 for a fraction f; the
    8-exponent-bit floats compare raw mantissa bits, so there p = f exactly."""
    x = daz(x, fmt)
    d = gap(x, fmt)
    safe = np.where(d > 0, d, 1.0)
    lo = np.floor(x / safe) * safe
    f = np.where(d > 0, (x - lo) / safe, 0.0)
    p = f if keeps_subnormals(fmt) else np.ceil(f * 2.0**24) / 2.0**24
    blo, bhi = bounds(x, fmt)
    a = np.where(d > 0, np.clip(lo, blo, bhi), 0.0)  # no grid: the block quantizes to zero
    b = np.where(d > 0, np.clip(lo + safe, blo, bhi), 0.0)
    return a, b, p


def stochastic_rounding_moments(x: np.ndarray, fmt) -> tuple[np.ndarray, ...]:
    """Exact mean, variance and fourth central moment of QPyTorch-style stochastic
    rounding of ``x`` (neighbours on x's own grid, each clipped to the saturation bounds)."""
    x = daz(x, fmt)
    d = gap(x, fmt)
    safe = np.where(d > 0, d, 1.0)
    lo = np.floor(x / safe) * safe
    p = np.where(d > 0, (x - lo) / safe, 0.0)
    blo, bhi = bounds(x, fmt)
    a = np.clip(lo, blo, bhi)
    b = np.clip(lo + safe, blo, bhi)
    a = np.where(d > 0, a, 0.0)  # no grid: the block quantizes to zero
    b = np.where(d > 0, b, 0.0)
    mean = (1 - p) * a + p * b
    w = b - a
    var = p * (1 - p) * w**2
    m4 = p * (1 - p) * (1 - 3 * p + 3 * p**2) * w**4
    return mean, var, m4
