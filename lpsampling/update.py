r"""The update rule: one pure function for SGD and SGLD in every precision mode.

Units: ``η`` is the learning rate on the *mean* minibatch loss, whose gradient is ``g``;
the Langevin noise variance per step is ``v = 2ηT/N`` (dataset size ``N``, temperature
``T``); ``Q_W`` and ``Q_G`` are stochastic rounding onto the weight and gradient formats.
With ``μ = θ − η·(Q_G(g) + wd·θ)`` (weight decay in full precision, as in the paper's code):

* ``accumulator="full"`` (SGLDLP-F): ``θ ← μ + sqrt(v)·ξ``; the model runs on ``Q_W(θ)``;
* ``accumulator="low"`` (naive SGLDLP-L): ``θ ← Q_W(μ + sqrt(v)·ξ)``;
* ``accumulator="vc"`` (VC SGLDLP-L): ``θ ← Q_vc(μ, v)``;
* no noise (``v = None``): the same rules without noise (SGD, SGDLP-F, SGDLP-L).

The momentum variant, :func:`update_momentum` (SGHMC, SGD with momentum), advances a chain
``(θ, v)`` by one *linear* step ``v ← a·v + b·g + ξᵛ``, ``θ ← θ + c·v + d·g + ξˣ`` (the old
``v`` in the ``θ`` update) whose coefficients :class:`MomentumCoefficients` carries; the
same three accumulator modes round both ``v`` and ``θ`` (``"low"``: ``Q_W`` of each whole
right-hand side; ``"vc"``: ``Q_vc`` of each mean with the variance of its noise, which
replaces the noise, so the ``ξˣ``/``ξᵛ`` correlation is dropped, as in Wang et al. 2024).
:func:`sghmc_coefficients` gives the exact integration of underdamped Langevin dynamics
that low-precision SGHMC uses; :func:`heavy_ball_coefficients` gives ``optax.sgd``'s
momentum.

Every face (optax, blackjax, parallel) calls :func:`update_position` /
:func:`update_momentum` and :func:`model_weights`; none re-implements any part of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lpsampling.formats import Format, check_format
from lpsampling.quantize import quantize_f32
from lpsampling.vc import vc_quantize_f32

__all__ = ["ACCUMULATORS", "Precision", "update_position", "model_weights", "all_finite",
           "hyperparameters_valid", "MomentumCoefficients", "sghmc_coefficients",
           "heavy_ball_coefficients", "update_momentum"]

ACCUMULATORS = ("full", "low", "vc")


@dataclasses.dataclass(frozen=True)
class Precision:
    """Where the numbers of a sampler live: weight grid, gradient grid, accumulator kind."""

    weight_format: Format
    grad_format: Format
    accumulator: str = "full"

    def __post_init__(self):
        check_format(self.weight_format, "weight_format")
        check_format(self.grad_format, "grad_format")
        if self.accumulator not in ACCUMULATORS:
            raise ValueError(
                f"accumulator must be one of {ACCUMULATORS}, got {self.accumulator!r}"
            )
        if self.accumulator in ("low", "vc") and self.weight_format.is_identity:
            raise ValueError(
                f"accumulator={self.accumulator!r} keeps the weights on the weight grid, so it "
                "needs a low-precision weight_format (got FULL); use accumulator='full'"
            )

    @property
    def has_accumulator(self) -> bool:
        """Whether a separate full-precision accumulator exists (SGLDLP-F with a grid)."""
        return self.accumulator == "full" and not self.weight_format.is_identity

    @property
    def name(self) -> str:
        if self.weight_format.is_identity and self.grad_format.is_identity:
            return "FP"
        return {"full": "LP-F", "low": "LP-L", "vc": "VC LP-L"}[self.accumulator]


def _finite(x: jax.Array) -> jax.Array:
    """True when every element of ``x`` is finite, as one float sum: ``x·0`` is 0 for finite
    elements and NaN for ±inf/NaN, and NaN always propagates through ``+`` (the sum cannot
    overflow). XLA on CPU runs this as a fused vector reduction, several times faster than
    ``all(isfinite(x))``, a reduction over booleans."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.asarray(True)
    return jnp.isfinite(jnp.sum(x * jnp.zeros((), x.dtype)))


def all_finite(tree: Any) -> jax.Array:
    """True when every element of every leaf is finite."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([_finite(x) for x in leaves]))


def _leaf_keys(key, n: int, per_leaf: int = 1) -> list:
    """``per_leaf`` independent keys for each of ``n`` leaves, from one ``split`` call (each
    split is a threefry evaluation, a loop of its own on CPU: one call, not ``n + 1``)."""
    if not n:
        return []
    keys = jax.random.split(key, n * per_leaf)
    if per_leaf == 1:
        return list(keys)
    return [tuple(keys[i * per_leaf + j] for j in range(per_leaf)) for i in range(n)]


def _check_same_structure(position, grads) -> None:
    ps = jax.tree_util.tree_structure(position)
    gs = jax.tree_util.tree_structure(grads)
    if ps != gs:
        raise ValueError(
            f"grads must have the same pytree structure as params; params: {ps}, grads: {gs}"
        )
    for p, g in zip(jax.tree_util.tree_leaves(position), jax.tree_util.tree_leaves(grads),
                    strict=True):
        if jnp.shape(p) != jnp.shape(g):
            raise ValueError(
                f"grads must have the shapes of params; got a leaf of shape {jnp.shape(g)} "
                f"for a param of shape {jnp.shape(p)}"
            )


def _work_dtype(theta: jax.Array, precision: Precision):
    """float32, except that full-precision accumulators keep a wider dtype (float64
    params under ``jax_enable_x64`` stay float64; the grids are float32)."""
    return (jnp.promote_types(theta.dtype, jnp.float32) if precision.accumulator == "full"
            else jnp.float32)


def _step_gradient(k_grad, theta_w, g, weight_decay, precision: Precision, dtype):
    """``Q_G(g) + wd·θ`` in ``dtype`` (weight decay in full precision, as the paper's code)."""
    if precision.grad_format.is_identity:
        g_w = g.astype(dtype)
    else:
        g_w = quantize_f32(g.astype(jnp.float32), precision.grad_format, "stochastic",
                           k_grad).astype(dtype)
    if weight_decay is not None:
        g_w = g_w + weight_decay * theta_w
    return g_w


def _update_leaf(keys, theta, g, noise, *, learning_rate, noise_variance, weight_decay,
                 precision: Precision):
    """One leaf of the update rule.

    Arithmetic is float32, except that full-precision accumulators keep a wider dtype
    (float64 params under ``jax_enable_x64`` stay float64; the grids are float32).
    Returns ``(new chain value, whether the unrounded target μ is finite)``: a
    step whose target overflows must be skipped, not saturated onto the grid.
    ``keys``: independent keys for the gradient rounding, the noise and the weight rounding.
    """
    k_grad, k_noise, k_weight = keys
    dtype = _work_dtype(theta, precision)
    theta_w = theta.astype(dtype)
    g_w = _step_gradient(k_grad, theta_w, g, weight_decay, precision, dtype)
    mu = theta_w - learning_rate * g_w
    if not precision.grad_format.is_identity:
        # materialized once: the finiteness check and the update below both read it, and a
        # fused recomputation would redraw the gradient rounding's random bits
        mu = jax.lax.optimization_barrier(mu)
    if precision.accumulator == "vc":
        finite = _finite(mu)
        if noise_variance is None:
            return quantize_f32(mu, precision.weight_format, "stochastic", k_weight), finite
        return vc_quantize_f32(mu, noise_variance, precision.weight_format, k_noise), finite
    if noise_variance is not None:
        if noise is None:
            noise = jax.random.normal(k_noise, mu.shape, jnp.float32)
        finite = _finite(mu)  # before the noise: checking after it would redraw the noise
        mu = mu + jnp.sqrt(noise_variance).astype(dtype) * noise.astype(dtype)
    else:
        finite = _finite(mu)
    if precision.accumulator == "low":
        return quantize_f32(mu, precision.weight_format, "stochastic", k_weight), finite
    return mu, finite


def hyperparameters_valid(learning_rate, noise_variance=None, weight_decay=None) -> jax.Array:
    """True when ``η ≥ 0``, ``v ≥ 0`` (if given) and ``wd`` (if given) are all finite.

    Checked inside every step, so values from a schedule (traced) get the same rule that
    the factories apply to constants: a step with a non-finite or negative step size,
    noise variance (temperature) or weight decay is skipped and counted like a non-finite
    gradient.
    """
    ok = jnp.all(jnp.isfinite(learning_rate) & (jnp.asarray(learning_rate) >= 0))
    if noise_variance is not None:
        ok &= jnp.all(jnp.isfinite(noise_variance) & (jnp.asarray(noise_variance) >= 0))
    if weight_decay is not None:
        ok &= jnp.all(jnp.isfinite(weight_decay))
    return ok


def update_position(
    key: jax.Array,
    position: Any,
    grads: Any,
    *,
    learning_rate: jax.Array | float,
    noise_variance: jax.Array | float | None,
    precision: Precision,
    weight_decay: jax.Array | float | None = None,
    noise: Any = None,
) -> tuple[Any, jax.Array]:
    """Advance the chain ``θ`` by one step of the update rule (see the module docstring).

    Args:
      key: PRNG key for this step (split once into a key per leaf and per use; only the
        random numbers the mode needs are drawn).
      position: the chain ``θ``: the full-precision accumulator for ``accumulator="full"``
        (the weights themselves when the weight format is FULL), the low-precision weights
        for ``"low"`` and ``"vc"``.
      grads: gradient of the mean loss at the weights the model ran on (same structure).
      learning_rate: ``η`` (scalar, may be traced).
      noise_variance: ``v`` per step, ``2ηT/N`` for SGLD (may be traced, and 0);
        ``None`` for SGD (no noise is drawn).
      precision: formats and accumulator kind.
      weight_decay: ``wd`` (Gaussian prior precision per datum); ``None`` for none.
      noise: optional standard-normal pytree to use instead of per-leaf draws (the
        blackjax face passes blackjax's own draw so both give the same trajectory).

    Returns:
      ``(new_position, finite)``: leaves keep the dtype of ``position``. When any
      gradient is not finite, the step size, noise variance or weight decay is not finite
      or is negative (see :func:`hyperparameters_valid`), or the step's target ``μ``
      overflows, the step is skipped (``new_position = position``) and ``finite``
      is False, so NaN/inf never enter the accumulator and an overflow is never saturated
      silently.
    """
    _check_same_structure(position, grads)
    leaves, treedef = jax.tree_util.tree_flatten(position)
    gleaves = jax.tree_util.tree_leaves(grads)
    nleaves = [None] * len(leaves) if noise is None else jax.tree_util.tree_leaves(noise)
    finite = all_finite(grads) & hyperparameters_valid(learning_rate, noise_variance,
                                                       weight_decay)
    news = []
    for ks, theta, g, n in zip(_leaf_keys(key, len(leaves), 3), leaves, gleaves, nleaves,
                               strict=True):
        new, leaf_finite = _update_leaf(
            ks, theta, g, n,
            learning_rate=learning_rate, noise_variance=noise_variance,
            weight_decay=weight_decay, precision=precision,
        )
        news.append(new)
        finite = jnp.logical_and(finite, leaf_finite)
    out = [jnp.where(finite, new.astype(theta.dtype), theta)
           for new, theta in zip(news, leaves, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, out), finite


def model_weights(key: jax.Array, position: Any, precision: Precision, like: Any = None) -> Any:
    """The weights the model runs on: ``Q_W(θ)`` for SGLDLP-F, ``θ`` itself otherwise.

    ``like`` (optional) is a pytree whose leaf dtypes the weights take (the user's params).
    """
    if not precision.has_accumulator:
        return position if like is None else jax.tree.map(
            lambda p, q: p.astype(q.dtype), position, like)
    leaves, treedef = jax.tree_util.tree_flatten(position)
    likes = leaves if like is None else jax.tree_util.tree_leaves(like)
    out = [
        quantize_f32(theta.astype(jnp.float32), precision.weight_format, "stochastic", k)
        .astype(ref.dtype)
        for k, theta, ref in zip(_leaf_keys(key, len(leaves)), leaves, likes, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


# --------------------------------------------------------------------------------------
# The momentum variant: SGHMC and SGD with momentum.


class MomentumCoefficients(NamedTuple):
    r"""One linear step of a chain ``(θ, v)``:

    ``v ← decay·v + v_grad·g + ξᵛ`` and ``θ ← θ + x_velocity·v + x_grad·g + ξˣ`` (the old
    ``v``), ``g = Q_G(grad) + wd·θ``; ``(ξᵛ, ξˣ)`` is a centred Gaussian with variances
    ``var_v``, ``var_x`` and covariance ``cov`` (``None``: that noise is absent). The
    coefficients are scalars in the units of the caller (``v`` may be a velocity, in the
    units of ``θ``, or a trace of gradients); ``valid`` is False when the hyperparameters
    they came from are out of range, and the step is then skipped.
    """

    decay: Any
    v_grad: Any
    x_velocity: Any
    x_grad: Any = None
    var_v: Any = None
    var_x: Any = None
    cov: Any = None
    valid: Any = True


# Below this γη the closed forms of γη + e^{−γη} − 1 and 2γη + 4e^{−γη} − e^{−2γη} − 3
# cancel to noise in float32 (their values are O((γη)²) and O((γη)³)); the Taylor series,
# summed to 12th order, is exact to float32 there (its first omitted term at γη = 0.5 is
# 3e-8 relative).
_SERIES_BELOW = 0.5
_SERIES_ORDER = 12


def _ou_moments(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(z + e^{−z} − 1, 2z + 4e^{−z} − e^{−2z} − 3)`` without cancellation, for z ≥ 0."""
    zs = jnp.minimum(z, _SERIES_BELOW)
    drift = jnp.zeros_like(zs)
    var = jnp.zeros_like(zs)
    term = jnp.ones_like(zs)
    for k in range(1, _SERIES_ORDER + 1):
        term = term * (-zs) / k  # (−z)^k / k!
        if k >= 2:  # (the k = 1 terms cancel against z and 2z exactly)
            drift = drift + term
            var = var + term * (4.0 - 2.0 ** k)
    e = jnp.exp(-z)
    direct_drift = z + jnp.expm1(-z)
    direct_var = 2.0 * z + 4.0 * e - e * e - 3.0
    small = z < _SERIES_BELOW
    return jnp.where(small, drift, direct_drift), jnp.where(small, var, direct_var)


def sghmc_coefficients(
    learning_rate: jax.Array | float,
    *,
    friction: jax.Array | float,
    inverse_mass: jax.Array | float = 1.0,
    noise_scale: jax.Array | float | None,
) -> MomentumCoefficients:
    r"""Low-precision SGHMC's step (Wang, Chen, Song & Zhang, TMLR 2024): the exact
    integration over a time ``η`` of ``dv = −γv dt − u·g dt + sqrt(2γu·T/N) dB``,
    ``dθ = v dt``, holding the gradient ``g`` of the **mean** loss fixed.

    With ``E = e^{−γη}`` and ``s = T/N`` (``noise_scale``):
    ``v ← E·v − uγ⁻¹(1−E)·g + ξᵛ``, ``θ ← θ + γ⁻¹(1−E)·v − uγ⁻²(γη + E − 1)·g + ξˣ``,
    ``Var ξᵛ = u·s·(1−E²)``, ``Var ξˣ = u·s·γ⁻²(2γη + 4E − E² − 3)``,
    ``Cov = u·s·γ⁻¹(1−E)²``. The stationary law is ``θ ∝ exp(−N·L(θ)/T)``,
    ``v ~ N(0, u·T/N)``: with ``N = T = 1`` these are the paper's equations on ``U = L``.
    The ``θ`` drift has the sign of the exact solution (**minus**); the paper's eq. and its
    code print **plus**. ``noise_scale=None`` drops the noise (deterministic dynamics).

    Out-of-range values (``η < 0``, ``γ ≤ 0``, ``u ≤ 0``, ``s < 0``, any non-finite) make
    ``valid`` False: the step is skipped, as for SGLD.
    """
    eta = jnp.asarray(learning_rate, jnp.float32)
    gamma = jnp.asarray(friction, jnp.float32)
    u = jnp.asarray(inverse_mass, jnp.float32)
    valid = hyperparameters_valid(eta, noise_scale) & jnp.isfinite(gamma) & (gamma > 0)
    valid &= jnp.isfinite(u) & (u > 0)
    gamma_safe = jnp.where(valid, gamma, 1.0)
    z = jnp.maximum(gamma_safe * eta, 0.0)
    one_minus_e = -jnp.expm1(-z)
    drift, var = _ou_moments(z)
    coeffs = dict(
        decay=jnp.exp(-z),
        v_grad=-u * one_minus_e / gamma_safe,
        x_velocity=one_minus_e / gamma_safe,
        x_grad=-u * drift / gamma_safe ** 2,
    )
    if noise_scale is not None:
        us = u * jnp.asarray(noise_scale, jnp.float32)
        coeffs.update(
            var_v=us * -jnp.expm1(-2.0 * z),
            var_x=us * var / gamma_safe ** 2,
            cov=us * one_minus_e ** 2 / gamma_safe,
        )
    return MomentumCoefficients(**coeffs, valid=valid)


def heavy_ball_coefficients(learning_rate: jax.Array | float,
                            momentum: jax.Array | float) -> MomentumCoefficients:
    r"""``optax.sgd(learning_rate, momentum)``'s step with ``v`` its trace of gradients:
    ``v ← β·v + g``, ``θ ← θ − η·v`` (the new ``v``), i.e. ``θ ← θ − ηβ·v_old − η·g``.
    ``valid`` is False for a non-finite or negative ``η`` or a non-finite ``β``."""
    valid = hyperparameters_valid(learning_rate) & jnp.all(jnp.isfinite(momentum))
    return MomentumCoefficients(decay=momentum, v_grad=1.0,
                                x_velocity=-learning_rate * momentum,
                                x_grad=-learning_rate, valid=valid)


def _coefficients_finite(c: MomentumCoefficients) -> jax.Array:
    ok = jnp.asarray(c.valid)
    for value in (c.decay, c.v_grad, c.x_velocity, c.x_grad):
        if value is not None:
            ok &= jnp.all(jnp.isfinite(value))
    for value in (c.var_v, c.var_x):
        if value is not None:
            ok &= jnp.all(jnp.isfinite(value) & (jnp.asarray(value) >= 0))
    if c.cov is not None:
        ok &= jnp.all(jnp.isfinite(c.cov))
    return ok


def _momentum_leaf(keys, theta, v, g, noise, *, c: MomentumCoefficients, weight_decay,
                   precision: Precision, momentum_format: Format):
    """One leaf of :func:`update_momentum`: ``(new θ, new v, whether both means are
    finite)``. ``keys``: gradient rounding, ``v`` noise/rounding, ``θ`` noise/rounding."""
    k_grad, k_v, k_x, k_wv, k_wx = keys
    dtype = _work_dtype(theta, precision)
    theta_w, v_w = theta.astype(dtype), v.astype(dtype)
    g_w = _step_gradient(k_grad, theta_w, g, weight_decay, precision, dtype)
    mu_v = c.decay * v_w + c.v_grad * g_w
    mu_x = theta_w + c.x_velocity * v_w
    if c.x_grad is not None:
        mu_x = mu_x + c.x_grad * g_w
    mu_v, mu_x = mu_v.astype(dtype), mu_x.astype(dtype)
    if not precision.grad_format.is_identity:
        # materialized once: the finiteness check and the update both read them, and a
        # fused recomputation would redraw the gradient rounding's random bits
        mu_v, mu_x = jax.lax.optimization_barrier((mu_v, mu_x))
    finite = _finite(mu_v) & _finite(mu_x)
    if precision.accumulator == "vc":
        # Q_vc replaces the noise of each coordinate (no noise: plain stochastic rounding)
        def vc(mu, var, fmt, key_noise, key_round):
            if var is None:
                return quantize_f32(mu, fmt, "stochastic", key_round)
            return vc_quantize_f32(mu, jnp.asarray(var, jnp.float32), fmt, key_noise)
        return (vc(mu_x, c.var_x, precision.weight_format, k_x, k_wx),
                vc(mu_v, c.var_v, momentum_format, k_v, k_wv), finite)
    if c.var_v is not None:
        n_v = jax.random.normal(k_v, mu_v.shape, jnp.float32) if noise is None else noise
        sd_v = jnp.sqrt(c.var_v)
        mu_v = mu_v + sd_v.astype(dtype) * n_v.astype(dtype)
        if c.var_x is not None:
            # ξˣ = (Cov/Var_v)·ξᵛ + sqrt(Var_x − Cov²/Var_v)·ξ' (ξ' independent)
            cov = 0.0 if c.cov is None else c.cov
            has_v = sd_v > 0
            sd_v_safe = jnp.where(has_v, sd_v, 1.0)
            along = jnp.where(has_v, cov / sd_v_safe, 0.0)
            rest = jnp.sqrt(jnp.maximum(c.var_x - along * along, 0.0))
            n_x = jax.random.normal(k_x, mu_x.shape, jnp.float32)
            mu_x = mu_x + along.astype(dtype) * n_v.astype(dtype) + rest.astype(dtype) * n_x
    elif c.var_x is not None:
        mu_x = mu_x + jnp.sqrt(c.var_x).astype(dtype) * jax.random.normal(
            k_x, mu_x.shape, jnp.float32).astype(dtype)
    if precision.accumulator == "low":
        return (quantize_f32(mu_x, precision.weight_format, "stochastic", k_wx),
                quantize_f32(mu_v, momentum_format, "stochastic", k_wv), finite)
    return mu_x, mu_v, finite


def update_momentum(
    key: jax.Array,
    position: Any,
    momentum: Any,
    grads: Any,
    *,
    coefficients: MomentumCoefficients,
    precision: Precision,
    weight_decay: jax.Array | float | None = None,
    momentum_format: Format | None = None,
    noise: Any = None,
) -> tuple[Any, Any, jax.Array]:
    """Advance ``(θ, v)`` by one step of the momentum update rule (module docstring).

    Args:
      key: PRNG key for this step (split once into five keys per leaf).
      position: the chain ``θ``, as for :func:`update_position`.
      momentum: ``v`` (same structure): full precision for ``accumulator="full"``, on
        ``momentum_format`` for ``"low"`` / ``"vc"``.
      grads: gradient of the mean loss at the weights the model ran on.
      coefficients: the step (:func:`sghmc_coefficients`, :func:`heavy_ball_coefficients`,
        or the blackjax face's Euler step).
      precision: formats and accumulator kind (the same kind for ``θ`` and ``v``).
      weight_decay: ``wd`` added to the (rounded) gradient, ``None`` for none.
      momentum_format: the grid of ``v`` for ``"low"`` / ``"vc"`` (default: the weight
        format, as in the paper's Gaussian experiments; ``FULL`` keeps ``v`` unrounded).
      noise: optional standard-normal pytree used for ``ξᵛ`` instead of per-leaf draws.

    Returns:
      ``(new_position, new_momentum, finite)``; leaves keep their dtypes. A step with a
      non-finite gradient, invalid coefficients or a mean that overflows is skipped (both
      ``θ`` and ``v`` unchanged) and ``finite`` is False.
    """
    _check_same_structure(position, grads)
    _check_same_structure(position, momentum)
    fmt = precision.weight_format if momentum_format is None else momentum_format
    check_format(fmt, "momentum_format")
    leaves, treedef = jax.tree_util.tree_flatten(position)
    vleaves = jax.tree_util.tree_leaves(momentum)
    gleaves = jax.tree_util.tree_leaves(grads)
    nleaves = [None] * len(leaves) if noise is None else jax.tree_util.tree_leaves(noise)
    finite = all_finite(grads) & _coefficients_finite(coefficients)
    if weight_decay is not None:
        finite &= jnp.all(jnp.isfinite(weight_decay))
    xs, vs = [], []
    for ks, theta, v, g, n in zip(_leaf_keys(key, len(leaves), 5), leaves, vleaves, gleaves,
                                  nleaves, strict=True):
        new_x, new_v, leaf_finite = _momentum_leaf(
            ks, theta, v, g, n, c=coefficients, weight_decay=weight_decay,
            precision=precision, momentum_format=fmt)
        xs.append(new_x)
        vs.append(new_v)
        finite = jnp.logical_and(finite, leaf_finite)
    out_x = [jnp.where(finite, new.astype(old.dtype), old) for new, old in zip(xs, leaves,
                                                                                strict=True)]
    out_v = [jnp.where(finite, new.astype(old.dtype), old) for new, old in zip(vs, vleaves,
                                                                                strict=True)]
    return (jax.tree_util.tree_unflatten(treedef, out_x),
            jax.tree_util.tree_unflatten(treedef, out_v), finite)
