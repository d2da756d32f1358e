"""Posterior prediction of a Flax model straight from a packed sample bank.

:func:`bank_predict` is :func:`lpsampling.bank.predict` for a Linen model: the Bayesian
model average ``(1/S) Σ_s softmax(f(x; θ_s))`` over the bank's samples, where the kernels of
the layers that multiply in int8 (:class:`~lpsampling.flax.QuantDense` /
:class:`~lpsampling.flax.QuantConv` with ``compute="int8"``) receive the stored int8 codes
and block exponents as they are (:class:`~lpsampling.storage.Packed`), and every other
packed parameter (float32-computed layers such as the stem, biases, BatchNorm scales) is
decoded once per sample. :func:`int8_kernels` is the selection, usable on its own as the
``packed`` argument of :func:`lpsampling.bank.predict`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lpsampling import bank as _bank
from lpsampling.flax.layers import QUANTIZE_RNG, int8_products
from lpsampling.storage import Packed

__all__ = ["int8_kernels", "bank_predict"]


def _key_name(k: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return k


class _KernelSelection:
    """``(path, leaf) -> bool``: True for the ``kernel`` of one of ``paths`` (hashable, so
    that equal selections share :func:`lpsampling.bank.predict`'s compilation)."""

    def __init__(self, paths: frozenset[tuple[str, ...]], prefix: tuple[str, ...] = ()):
        self.paths, self.prefix = paths, prefix

    def __call__(self, path: Any, leaf: Any) -> bool:
        names = tuple(_key_name(k) for k in path)
        n = len(self.prefix)
        if names[:n] != self.prefix or not names or names[-1] != "kernel":
            return False
        return names[n:-1] in self.paths

    def __hash__(self) -> int:
        return hash((self.paths, self.prefix))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, _KernelSelection) and self.paths == other.paths
                and self.prefix == other.prefix)

    def __repr__(self) -> str:
        return f"int8_kernels({sorted('/'.join(p) for p in self.paths)})"


def int8_kernels(model: nn.Module, *args: Any, prefix: tuple[str, ...] = (),
                 **kwargs: Any) -> Callable[[Any, Packed], bool]:
    """The kernels that ``model`` multiplies in int8, as a ``packed`` selection for
    :func:`lpsampling.bank.predict`: ``sel(path, leaf)`` is True exactly for the ``kernel``
    leaf of each layer whose forward product runs in int8
    (:func:`~lpsampling.flax.int8_products` of ``model.init(rngs, *args, **kwargs)``,
    traced abstractly, e.g. ``int8_kernels(model, x, train=False)``).

    ``prefix``: the key path of the params inside the sample (``("params",)`` when the
    sample is ``{"params": ..., "batch_stats": ...}``).
    """
    paths = frozenset(tuple(p.path) for p in int8_products(model, *args, **kwargs)
                      if p.forward == "int8")
    return _KernelSelection(paths, tuple(prefix))


@functools.lru_cache(maxsize=64)
def _selection(model: nn.Module, x_spec: Any, method: Any, kwargs: tuple) -> _KernelSelection:
    # tracing the model (int8_products) once per model and input shape, not per call
    x0 = jax.tree.unflatten(x_spec[0], [jax.ShapeDtypeStruct(s, d) for s, d in x_spec[1]])
    return int8_kernels(model, x0, prefix=("params",), method=method, **dict(kwargs))


@functools.lru_cache(maxsize=64)
def _apply_fn(model: nn.Module, with_stats: bool, with_key: bool, method: Any,
              kwargs: tuple) -> Callable[..., Any]:
    # one function object per (model, signature): lps.bank.predict compiles once per apply_fn
    kw = dict(kwargs)

    def apply(sample, x, key=None):
        variables = ({"params": sample["params"], "batch_stats": sample["batch_stats"]}
                     if with_stats else {"params": sample["params"]})
        rngs = {QUANTIZE_RNG: key} if with_key else None
        return model.apply(variables, x, method=method, rngs=rngs, **kw)

    if with_key:
        return apply
    return lambda sample, x: apply(sample, x)


def bank_predict(
    model: nn.Module,
    bank: _bank.SampleBank,
    x: Any,
    *,
    stats_bank: _bank.SampleBank | None = None,
    key: jax.Array | None = None,
    batch_size: int | None = None,
    packed: bool | None = None,
    method: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """Bayesian model average of a Linen ``model`` over the params samples in ``bank``:
    ``(1/S) Σ_s softmax(model.apply(θ_s, x))``, float32, shape of the logits.

    The int8 layers of ``model`` (``compute="int8"``) multiply the bank's int8 codes
    directly (no float32 copy of their kernels is made); all other packed leaves are
    decoded per sample. Each sample is applied with ``train=False`` unless ``kwargs`` says
    otherwise (``kwargs`` go to ``model.apply``; they must be hashable).

    Args:
      model: a Linen model whose params have the structure of the bank's samples.
      bank: the params bank (:func:`lpsampling.bank.init` / ``add``).
      x: the inputs, leading example axis.
      stats_bank: the bank of BatchNorm statistics filled with ``bank`` (``FULL``), passed
        as the ``"batch_stats"`` collection.
      key: the ``"quantize"`` rng of stochastic activation rounding (sample ``i``, chunk
        ``j`` use ``fold_in(fold_in(key, i), j)``); None for a model that draws nothing.
      batch_size: examples per chunk (see :func:`lpsampling.bank.predict`).
      packed: None (default): int8 kernels packed, the rest decoded; False: everything
        decoded (the float32 reference with the same model); True: every leaf packed.
      method: the model method to apply (default ``__call__``).
    """
    kwargs.setdefault("train", False)
    if not isinstance(model, nn.Module):
        raise TypeError(f"bank_predict: model must be a flax.linen Module, got "
                        f"{type(model).__name__}")
    banks: dict[str, Any] = {"params": bank}
    if stats_bank is not None:
        banks["batch_stats"] = stats_bank
    frozen = tuple(sorted(kwargs.items()))
    if packed is None:
        leaves, treedef = jax.tree.flatten(x)
        spec = (treedef, tuple(((1,) + tuple(a.shape[1:]), jnp.dtype(a.dtype)) for a in leaves))
        packed = _selection(model, spec, method, frozen)
    elif not isinstance(packed, bool):
        raise TypeError(f"bank_predict: packed must be None, True or False, got {packed!r}")
    apply = _apply_fn(model, stats_bank is not None, key is not None, method, frozen)
    return _bank.predict(banks, apply, x, key=key, packed=packed, batch_size=batch_size)
