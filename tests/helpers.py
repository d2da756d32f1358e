"""Helpers shared by the tests (imported as ``import helpers``: ``tests/`` is on the path).

* jaxpr walking: :func:`count_primitives`;
* format grids: :func:`nearest`, :func:`on_grid`;
* statistical tolerances: :data:`Z`, :func:`binom_tol`, :func:`assert_stochastic_rounding`;
* fake CPU devices for subprocesses: :func:`fake_devices_env`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping

import format_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

import lpsampling as lps

Z = 5.0  # standard deviations allowed in every statistical check


def count_primitives(closed_jaxpr, names: Iterable[str]) -> dict[str, int]:
    """How often each primitive of ``names`` occurs in ``closed_jaxpr``, sub-jaxprs (scan,
    cond, pjit, custom_jvp, ...) included."""
    counts = dict.fromkeys(names, 0)

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in counts:
                counts[eqn.primitive.name] += 1
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(closed_jaxpr.jaxpr)
    return counts


@functools.partial(jax.jit, static_argnums=1)
def nearest(x, fmt):
    """``quantize(x, fmt, rounding="nearest")``, compiled once per format and shape."""
    return lps.quantize(x, fmt, rounding="nearest")


@functools.partial(jax.jit, static_argnums=1)
def _on_grid(x: jax.Array, fmt) -> jax.Array:
    return jnp.array_equal(lps.quantize(x, fmt, rounding="nearest"), x)


def on_grid(x: jax.Array, fmt) -> bool:
    """True when every element of ``x`` is a value of ``fmt``."""
    return bool(_on_grid(x, fmt))


def assert_stochastic_rounding(out: np.ndarray, x: np.ndarray, fmt) -> None:
    """``out`` (draws along axis 0) is distributed as stochastic rounding of ``x``.

    Every draw is one of x's two neighbours a < b on its own grid (clipped to the range,
    a block's top code for block floating point, as quantize clips), and the count of b
    lies in the central 1 - 1e-7 interval of Binomial(n, p): an exact test of a two-point
    distribution, so of its mean and variance. (The kernels draw p on a 2**-24 lattice,
    which moves n·p by less than 1e-3 here.)
    """
    a, b, p = ref.stochastic_rounding_neighbours(np.asarray(x, np.float64), fmt)
    support = (out == a) | (out == b)
    assert support.all(), (fmt, x[~support.all(0)], out[:, ~support.all(0)][:5])
    k = np.sum((out == b) & (a != b), axis=0)
    lo, hi = scipy.stats.binom.interval(1 - 1e-7, out.shape[0], p)
    bad = (a != b) & ((k < lo) | (k > hi))
    assert not bad.any(), (fmt, x[bad], k[bad], p[bad] * out.shape[0])


def binom_tol(p, n):
    """:data:`Z` binomial sd of a frequency over n draws, plus 3/n for the small-n·p
    Poisson tail."""
    p = np.asarray(p, np.float64)
    return Z * np.sqrt(p * (1.0 - p) / n) + 3.0 / n


def fake_devices_env(count: int, *, base: Mapping[str, str] | None = None,
                     keep_xla_flags: bool = False, **extra: str) -> dict[str, str]:
    """The environment of a subprocess whose JAX sees ``count`` fake CPU devices
    (``--xla_force_host_platform_device_count``, which must be set before JAX starts).

    ``keep_xla_flags`` appends to the ``XLA_FLAGS`` already in ``base`` (default: this
    process's environment) instead of replacing them; ``extra`` adds variables.
    """
    env = dict(os.environ if base is None else base)
    flag = f"--xla_force_host_platform_device_count={count}"
    env["XLA_FLAGS"] = (f"{env.get('XLA_FLAGS', '')} {flag}".strip() if keep_xla_flags
                        else flag)
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


class Crash(RuntimeError):
    """A simulated crash raised from a training-loop hook."""


def crash_at(k):
    """A per-step hook that raises :class:`Crash` at step ``k`` (resume tests)."""
    def hook(step):
        if step == k:
            raise Crash(f"simulated crash at step {k}")
    return hook
