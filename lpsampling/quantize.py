"""Quantization onto a number format: nearest and stochastic rounding.

One kernel for every grid format: scale ``x`` by the local gap ``2**-k`` (an exact power of
two), round to an integer, scale back, saturate. 8-exponent-bit floats are rounded on the
float32 bit pattern instead (XLA on CPU flushes subnormals to zero in arithmetic).

* ``"nearest"``: the nearest grid value; exact ties go to the even code, in every format.
* ``"stochastic"``: the upper neighbour with probability equal to the fractional position of
  ``x`` in its gap (resolution ``2**-24``; exact for 8-exponent-bit floats), 32 fresh random
  bits per element; unbiased except where saturation clips (for block floating point, by
  default, a block maximum above the top code; ``BlockFloatingPoint(carry=True)`` carries
  it into the next exponent instead).

NaN stays NaN; ±inf saturates. Arithmetic is float32, the result has the input's dtype; the
gradient of :func:`quantize` is the straight-through identity. Full rules and the
differences from QPyTorch: the formats page of the documentation (``docs/formats.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# uniform24 and round_scaled live with the formats (their grid kernel uses them) and are
# part of this module's surface as before.
from lpsampling.formats import Format, check_format, uniform24
from lpsampling.formats import round_scaled as round_scaled
from lpsampling.validation import prng_key

__all__ = ["quantize", "quantize_tree", "quantizer", "uniform24", "ROUNDINGS"]

ROUNDINGS = ("stochastic", "nearest")


def check_rounding(rounding: str) -> str:
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return rounding


def check_float_array(x: Any, name: str = "x") -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must be a floating-point array (float16, bfloat16, float32), "
            f"got dtype {x.dtype}"
        )
    return x


def quantize_f32(x: jax.Array, fmt: Format, rounding: str, key) -> jax.Array:
    """The quantization kernel on float32 ``x`` (no checks, no gradient rule).

    The format rounds (:meth:`~lpsampling.formats.Format.round_f32`): the shared grid kernel
    for fixed point, block floating point and floats with ``exp < 8``; the float32 bit
    pattern for 8-exponent-bit floats; the identity for ``FULL``.
    """
    return fmt.round_f32(x, rounding, key)


def round_unbiased_f32(x: jax.Array, fmt: Format, key) -> jax.Array:
    """Stochastic rounding onto ``fmt`` whose mean is ``x`` also at the top of a block.

    :func:`quantize_f32` follows QPyTorch by default: an element of a block-floating-point
    block that rounds up past the top code ``2**(wl-1) - 1`` is held at it, a bias toward
    zero (``BlockFloatingPoint(carry=True)`` makes :func:`quantize_f32`'s stochastic
    rounding this function). Here that element carries into the block's next exponent
    instead: ``x`` is first rounded on its own block grid without the top-code limit (at
    most ``2**(wl-1)`` in gap units, exactly ``2**(e+1)``), then, only if some element
    carried, stochastically onto the format, whose grid is then the block's next exponent
    wherever a carry happened and the identity elsewhere. Both roundings are unbiased, so
    ``E[q] = x`` up to the format's range ends. Other formats carry by themselves (a
    float's next binade holds ``2**(e+1)``) and use :func:`quantize_f32`. Where no carry
    happens the result equals the saturating ``quantize_f32(x, fmt, "stochastic", key)``
    bit for bit. Used by :func:`~lpsampling.vc.vc_quantize` to put draws that left their
    block back onto the format, in either setting of ``carry``.
    """
    return fmt.round_unbiased_f32(x, key)


_straight_through = jax.custom_jvp(
    lambda x, key, fmt, rounding: quantize_f32(
        x.astype(jnp.float32), fmt, rounding, key
    ).astype(x.dtype),
    nondiff_argnums=(2, 3),
)


@_straight_through.defjvp
def _straight_through_jvp(fmt, rounding, primals, tangents):
    x, key = primals
    return _straight_through(x, key, fmt, rounding), tangents[0]


def quantize(
    x: jax.Array,
    fmt: Format,
    *,
    key: jax.Array | None = None,
    rounding: str = "stochastic",
) -> jax.Array:
    """Quantize ``x`` onto the grid of ``fmt``.

    Args:
      x: floating-point array (float16, bfloat16, float32).
      fmt: a :class:`FixedPoint`, :class:`BlockFloatingPoint`, :class:`FloatingPoint` or
        ``FULL`` (identity).
      key: a JAX PRNG key (typed ``jax.random.key`` or raw ``PRNGKey``, any implementation);
        required for ``rounding="stochastic"``.
      rounding: ``"stochastic"`` (unbiased: ``E[q] = x`` inside the range; a block-floating-
        point block maximum above the top code saturates unless the format has
        ``carry=True``) or ``"nearest"``.

    Returns:
      An array of the dtype and shape of ``x`` whose values lie on the format's grid.
      Its gradient with respect to ``x`` is the identity (straight-through estimator).
    """
    check_format(fmt)
    check_rounding(rounding)
    x = check_float_array(x)
    if fmt.is_identity:
        return x
    if rounding == "stochastic" and key is None:
        raise ValueError(
            "quantize: stochastic rounding needs a PRNG key: pass key=jax.random.key(seed) "
            "or rounding='nearest'"
        )
    if rounding == "nearest":
        key = jnp.zeros((2,), jnp.uint32)  # unused; keeps one traced signature
    else:
        prng_key("key", key)
    return _straight_through(x, key, fmt, rounding)


def quantize_tree(
    tree: Any,
    fmt: Format,
    *,
    key: jax.Array | None = None,
    rounding: str = "stochastic",
) -> Any:
    """Quantize every leaf of a pytree with independent random draws per leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if not leaves:
        return tree
    if rounding == "stochastic" and key is not None and not fmt.is_identity:
        keys = list(jax.random.split(key, len(leaves)))
    else:
        keys = [key] * len(leaves)
    out = [quantize(x, fmt, key=k, rounding=rounding) for x, k in zip(leaves, keys, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, out)


def quantizer(
    forward_fmt: Format,
    backward_fmt: Format,
    rounding: str = "stochastic",
    *,
    backward_rounding: str | None = None,
) -> Callable[[jax.Array, jax.Array | None], jax.Array]:
    """A differentiable quantization op for low-precision training.

    Returns ``f(x, key)``: the forward pass quantizes the activation ``x`` onto
    ``forward_fmt`` with ``rounding``; the backward pass quantizes the incoming cotangent
    (the "error") onto ``backward_fmt`` with ``backward_rounding`` (default: the same as
    ``rounding``), as the paper's networks do between layers. The two roundings use
    independent keys derived from ``key`` by ``fold_in`` (``key`` may be None when no
    stochastic rounding is involved). Being a ``custom_vjp``, the op supports reverse-mode
    differentiation only (``jax.grad``, ``jax.vjp``), not ``jax.jvp``.
    """
    check_format(forward_fmt, "forward_fmt")
    check_format(backward_fmt, "backward_fmt")
    check_rounding(rounding)
    backward_rounding = rounding if backward_rounding is None else backward_rounding
    check_rounding(backward_rounding)
    needs_key = (rounding == "stochastic" and not forward_fmt.is_identity) or (
        backward_rounding == "stochastic" and not backward_fmt.is_identity
    )

    def _derive(key, stream):
        return None if key is None else jax.random.fold_in(key, stream)

    @jax.custom_vjp
    def op(x, key):
        return quantize(x, forward_fmt, key=_derive(key, 0), rounding=rounding)

    def op_fwd(x, key):
        return op(x, key), key

    def op_bwd(key, ct):
        q = quantize(ct, backward_fmt, key=_derive(key, 1), rounding=backward_rounding)
        return q, None

    op.defvjp(op_fwd, op_bwd)

    def apply(x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        check_float_array(x)
        if needs_key and key is None:
            raise ValueError("quantizer: stochastic rounding needs a PRNG key: call f(x, key)")
        if key is not None:
            prng_key("key", key)
        return op(x, key)

    return apply
