r"""The update rule: one pure function for SGD and SGLD in every precision mode.

Units: ``η`` is the learning rate on the *mean* minibatch loss, whose gradient is ``g``;
the Langevin noise variance per step is ``v = 2ηT/N`` (dataset size ``N``, temperature
``T``); ``Q_W`` and ``Q_G`` are stochastic rounding onto the weight and gradient formats.
With ``μ = θ − η·(Q_G(g) + wd·θ)`` (weight decay in full precision, as in the paper's code):

* ``accumulator="full"`` (SGLDLP-F): ``θ ← μ + sqrt(v)·ξ``; the model runs on ``Q_W(θ)``;
* ``accumulator="low"`` (naive SGLDLP-L): ``θ ← Q_W(μ + sqrt(v)·ξ)``;
* ``accumulator="vc"`` (VC SGLDLP-L): ``θ ← Q_vc(μ, v)``;
* no noise (``v = None``): the same rules without noise (SGD, SGDLP-F, SGDLP-L).

Every face (optax, blackjax, parallel) calls :func:`update_position` and
:func:`model_weights`; none re-implements any part of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from lpsampling.formats import Format, check_format
from lpsampling.quantize import quantize_f32
from lpsampling.vc import vc_quantize_f32

__all__ = ["ACCUMULATORS", "Precision", "update_position", "model_weights", "all_finite",
           "hyperparameters_valid"]

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
    dtype = (jnp.promote_types(theta.dtype, jnp.float32) if precision.accumulator == "full"
             else jnp.float32)
    theta_w = theta.astype(dtype)
    if precision.grad_format.is_identity:
        g_w = g.astype(dtype)
    else:
        g_w = quantize_f32(g.astype(jnp.float32), precision.grad_format, "stochastic",
                           k_grad).astype(dtype)
    if weight_decay is not None:
        g_w = g_w + weight_decay * theta_w
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
