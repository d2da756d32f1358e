r"""The variance-corrected quantizer Q_vc of Zhang, Wilson & De Sa (ICML 2022).

:func:`vc_quantize` returns per element a value on the format's grid with ``E[q] = μ`` and
``Var[q] = v`` (exactly wherever ``v ≥ v_s`` and the output stays in ``μ``'s block or
binade, and ``μ`` inside its grid's range), so a low-precision accumulator carries the
Langevin noise *as* quantization noise.
With gap ``Δ`` (fixed by ``μ``'s block or binade) and ``v₀ = Δ²/4``:

* ``v > v₀``: ``x = μ + sqrt(v − v₀)·ξ``, ``q = nearest(x)``, then add ``c ∈ {+Δ, −Δ, 0}``
  with ``E[c | r] = r = x − q`` and ``Var[c | r] = v₀``;
* ``v ≤ v₀``: stochastic rounding (variance ``v_s = a(Δ − a)``, ``a = μ − Δ⌊μ/Δ⌋``) plus
  ``±Δ`` with probability ``(v − v_s)/(2Δ²)`` each: variance ``max(v, v_s)``. The mean is
  first saturated onto the range of its own grid, as :func:`~lpsampling.quantize.quantize`
  saturates it (for block floating point with the default ``carry=False``: a block
  maximum in the last gap, above the top code ``(2**(wl-1) − 1)·Δ`` and below
  ``2**(e+1)``, becomes the top code; with ``carry=True`` it is kept and may carry into
  the next exponent, mean exact), so ``Q_vc(μ, 0)`` *is* the format's stochastic rounding
  of ``μ`` in distribution, as naive SGLDLP-L's.

Where ``√v > 2**12·Δ`` the draw runs on a working gap ``2**(⌊log2 √v⌋ − 12)``. Outputs that
leave ``μ``'s block or binade are stochastically re-rounded onto the format (mean exact), so
``max(v, v_s) ≤ Var[q] ≤ max(v, Δ²/4) + Δ_out²/2`` (``Δ_out``: the output block's gap).
Derivation and range ends: the formats page of the documentation (``docs/formats.md``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lpsampling.formats import (
    NO_GRID,
    BlockFloatingPoint,
    Format,
    check_format,
    float_exponent,
    scale_pow2,
)
from lpsampling.quantize import check_float_array, quantize_f32, round_unbiased_f32, uniform24
from lpsampling.validation import prng_key

__all__ = ["vc_quantize"]


def _vc_units(m: jax.Array, vu: jax.Array, xi: jax.Array, u: jax.Array,
              m_small: jax.Array | None = None) -> jax.Array:
    """Q_vc in units of the gap: mean ``m``, variance ``vu`` (both in Δ units, Δ² units).

    ``m_small``: the mean the small-variance branch rounds (default ``m``); the caller
    passes ``m`` saturated onto the range of its own grid (see :func:`_vc_draw`).
    """
    m_small = m if m_small is None else m_small
    # v > v0 (= 1/4 in units of Δ²)
    s = m + jnp.sqrt(jnp.maximum(vu - 0.25, 0.0)) * xi
    q = jnp.round(s)
    r = s - q
    ar = jnp.abs(r)
    base = 0.125 + 0.5 * r * r
    p_toward = base + 0.5 * ar
    p_away = base - 0.5 * ar
    direction = jnp.where(r >= 0, 1.0, -1.0)
    c = jnp.where(u < p_toward, 1.0, jnp.where(u < p_toward + p_away, -1.0, 0.0))
    large = q + direction * c

    # v <= v0: stochastic rounding of m, plus ±1 with probability p each.
    lo = jnp.floor(m_small)
    f = m_small - lo
    p = 0.5 * jnp.maximum(vu - f * (1.0 - f), 0.0)
    c0 = (1.0 - f) * p
    c1 = c0 + (1.0 - f) * (1.0 - 2.0 * p) + f * p
    c2 = c1 + f * (1.0 - 2.0 * p) + (1.0 - f) * p
    step = jnp.where(u < c0, -1.0, jnp.where(u < c1, 0.0, jnp.where(u < c2, 1.0, 2.0)))
    small = lo + step
    return jnp.where(vu > 0.25, large, small)


# The VC arithmetic runs in units of a working gap. Where the noise is within 2**12 gaps of
# the mean's grid that is the mean's own gap; beyond, the variance in units would leave
# float32 (v / Δ² overflows for a tiny block or binade) and the output lands outside the
# mean's block anyway, so the working gap follows the noise instead: 2**(⌊log2 σ⌋ − 12).
SIGMA_GAP_BITS = 12


def working_gap_exponent(mean: jax.Array, variance: jax.Array, fmt: Format) -> jax.Array:
    """The exponent ``k`` of the grid ``2**k`` on which Q_vc draws, per element.

    ``max(k_μ, ⌊log2 √v⌋ − 12)``, with ``k_μ`` the format's gap exponent at ``mean``
    (:data:`NO_GRID` for an all-zero block or a sub-normal float gap) and the second term
    present only where ``v > 0``. Always a multiple of the mean's own gap, so on the format
    wherever the output stays inside the mean's block range or binade. :data:`NO_GRID`
    only where the mean has no grid and ``v = 0``.
    """
    k = fmt.grid_exponent(mean)
    sigma_k = float_exponent(jnp.sqrt(variance)) - SIGMA_GAP_BITS
    return jnp.maximum(k, jnp.where(variance > 0, sigma_k, NO_GRID))


def _bits(x: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(x, jnp.int32)


def vc_quantize_f32(mean: jax.Array, variance: jax.Array, fmt: Format, key) -> jax.Array:
    """The VC kernel on float32 ``mean`` and broadcastable float32 ``variance``."""
    shape = mean.shape
    k_gauss, k_choice, k_final = jax.random.split(key, 3)
    xi = jax.random.normal(k_gauss, shape, jnp.float32)
    # NaN, ±inf or (traced) negative variance has no valid draw: NaN out, never a biased value
    invalid = ~((variance >= 0) & jnp.isfinite(variance))
    return jnp.where(invalid, jnp.nan, _vc_draw(mean, variance, fmt, xi, k_choice, k_final))


def _vc_draw(mean, variance, fmt: Format, xi, k_choice, k_final) -> jax.Array:
    shape = mean.shape
    if fmt.is_identity:
        return mean + jnp.sqrt(variance) * xi
    k = working_gap_exponent(mean, variance, fmt)
    has_grid = k != NO_GRID
    kk = jnp.where(has_grid, k, 0)
    m = scale_pow2(mean, -kk)
    vu = scale_pow2(scale_pow2(variance, -kk), -kk)
    # The small-variance branch is stochastic rounding of μ (plus a rare ±Δ step), so it
    # rounds μ as quantize does on this format. For block floating point the range of μ's
    # own grid ends at the top code 2**(wl-1) - 1, one gap below the top of the block's
    # binade, and a block maximum in that last gap may round up to 2**(e+1) with
    # probability equal to its fractional position: a carry into the next exponent, which
    # re-rounds every element of the block onto a grid twice as coarse (variance up to Δ²
    # each). By default (carry=False, QPyTorch's semantics) the mean is saturated there,
    # as plain stochastic rounding (and so the naive low-precision accumulator) saturates
    # it: that one element loses up to one gap of its mean, and Q_vc(μ, 0) is stochastic
    # rounding of μ in distribution. With carry=True the mean is kept (clipped only at
    # 2**(e+1), which bounds ±inf), the carry happens, and the final re-rounding below puts
    # the block on its next exponent's grid: mean exact, and Q_vc(μ, 0) is again the
    # format's stochastic rounding in distribution. In that branch √v ≤ Δ/2, so the working
    # gap is μ's own gap wherever μ has a grid. Only the ±Δ step may still cross the range;
    # it is re-rounded below.
    if isinstance(fmt, BlockFloatingPoint) and fmt.carry:
        m_small = jnp.clip(m, -(2.0 ** (fmt.wl - 1)), 2.0 ** (fmt.wl - 1))
    else:
        m_small = scale_pow2(fmt.saturate(mean, kk), -kk)
    units = _vc_units(m, vu, xi, uniform24(k_choice, shape), m_small)
    # no grid (all-zero block or sub-normal float gap) and v = 0: the mean itself
    out = jnp.where(has_grid, scale_pow2(units, kk), mean)
    if fmt.uniform_grid:
        # one gap everywhere (fixed point): every multiple of it is on the grid, so the
        # output only needs saturating to the range
        return fmt.saturate(out, k)
    # The final stochastic rounding is the identity wherever ``out`` is already a value of
    # the format (the common case: no block-range or binade edge crossed, no zero block), so
    # it only runs when a cheap nearest-rounding check finds an element off the grid; the
    # result is the same as rounding unconditionally, without its random bits in general.
    # (Under vmap the cond becomes a select and both sides run.)
    # Compared as bit patterns: a float32 subnormal (kept from the mean where there is no
    # grid) compares equal to its flushed zero in XLA's arithmetic, but is not on the grid.
    off_grid = jnp.any(_bits(quantize_f32(out, fmt, "nearest", None)) != _bits(out))
    return jax.lax.cond(
        off_grid, lambda o: round_unbiased_f32(o, fmt, k_final), lambda o: o, out)


def vc_quantize(
    mean: jax.Array,
    variance: jax.Array | float,
    fmt: Format,
    *,
    key: jax.Array | None = None,
) -> jax.Array:
    """Variance-corrected quantization: a grid value with mean ``mean`` and variance ``variance``.

    Args:
      mean: floating-point array ``μ``.
      variance: target variance ``v ≥ 0`` (scalar or broadcastable to ``mean``), in the
        squared units of ``mean``; for SGLD it is the Langevin noise variance ``2ηT/N``.
        Float32-subnormal means and variances (below ``2**-126``) read as zero, as XLA on
        CPU flushes them. A negative variance raises ValueError (NaN where it is traced);
        NaN or ±inf variance gives NaN outputs, never a biased value.
      fmt: the number format of the output.
      key: a JAX PRNG key (typed or raw); required (omitting it raises ValueError).

    Returns:
      An array like ``mean`` on the format's grid with ``E = μ`` and ``Var = max(v, v_s)``
      (see the module docstring for ``v_s``, ``docs/formats.md`` for the rules at range
      and binade edges). With ``v ≤ Δ²/4``, ``μ`` is first saturated onto its grid's range
      as stochastic rounding saturates it (a block-floating-point block maximum above the
      top code, unless the format has ``carry=True``: then it carries, mean exact); with
      ``v = 0`` the output is distributed as ``quantize(mean, fmt, rounding="stochastic")``
      in either setting.
    """
    check_format(fmt)
    mean = check_float_array(mean, "mean")
    if key is None:
        raise ValueError("vc_quantize needs a PRNG key: pass key=jax.random.key(seed)")
    prng_key("key", key)
    if not isinstance(variance, jax.core.Tracer) and np.any(np.asarray(variance) < 0):
        raise ValueError(
            f"variance must be >= 0, got a minimum of {np.min(np.asarray(variance))} "
            "(NaN is accepted and gives NaN outputs)")
    variance = jnp.asarray(variance, jnp.float32)
    try:
        ok = jnp.broadcast_shapes(variance.shape, mean.shape) == mean.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"variance of shape {variance.shape} does not broadcast to mean's shape {mean.shape}"
        )
    out = vc_quantize_f32(mean.astype(jnp.float32), variance, fmt, key)
    return out.astype(mean.dtype)
