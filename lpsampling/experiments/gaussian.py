r"""The paper's Figure 1: low-precision SGLD on ``N(0, 1)`` (``U(θ) = θ²/2``, stochastic
gradient ``θ + 0.1·ξ``, ``θ₀ = 0``), weights and gradients on ``FixedPoint(8, 3)``
(``Δ = 1/8``), through the optax face ``lps.sgld(α, num_data=1)`` (noise variance ``2α``).

Methods: ``"low"`` (naive SGLDLP-L), ``"vc"`` (VC SGLDLP-L), ``"full"`` (SGLDLP-F), and
the SGHMC family ``"hmc-low"``, ``"hmc-vc"``, ``"hmc-full"`` (:func:`lpsampling.sghmc` with
time step ``η = α``, friction ``γ`` and inverse mass ``u``; the follow-up paper's Gaussian
runs use ``u = 2``, ``γ = 3`` and compare both families at the same step value).
Theorem 2: for ``sqrt(2α) ≪ Δ`` the naive chain's stationary variance is about
``Δ/sqrt(π·α)`` (2.23 at ``α = 1e-3``, 7.05 at ``1e-4``); VC and F stay at 1.
The manual (samples reported, burn-in, standard errors) is ``docs/experiments.md``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lpsampling.atomic import atomic_open
from lpsampling.formats import FixedPoint, Format, grid_gap
from lpsampling.optax import sghmc, sgld
from lpsampling.validation import finite_float, positive_int, unit_interval

__all__ = [
    "GAUSSIAN_METHODS",
    "PAPER_FORMAT",
    "GaussianRun",
    "GaussianResults",
    "default_num_steps",
    "naive_variance_law",
    "gaussian_experiment",
    "plot_gaussian",
]

PAPER_FORMAT: Format = FixedPoint(8, 3)
"""The paper's weight and gradient format for Figure 1 (``Δ = 1/8``)."""

GAUSSIAN_METHODS: dict[str, str] = {
    "low": "naive SGLDLP-L",
    "vc": "VC SGLDLP-L",
    "full": "SGLDLP-F",
    "hmc-low": "naive SGHMCLP-L",
    "hmc-vc": "VC SGHMCLP-L",
    "hmc-full": "SGHMCLP-F",
}
"""Method (accumulator, ``hmc-`` for SGHMC) → the paper's label."""

#: The follow-up paper's SGHMC settings for its Gaussian runs (Wang et al. 2024).
PAPER_FRICTION = 3.0
PAPER_INVERSE_MASS = 2.0


def default_num_steps(alpha: float) -> int:
    """``max(20000, 10/α)`` steps: 20000 at 1e-3, 100000 at 1e-4 (≥ 5 relaxation times
    ``1/α`` kept after the burn-in)."""
    return int(max(20000, math.ceil(10.0 / alpha)))


def naive_variance_law(alpha: float, fmt: Format = PAPER_FORMAT) -> float | None:
    """The paper's law ``Δ/sqrt(π·α)`` for the naive chain (fixed point only, else None)."""
    if not isinstance(fmt, FixedPoint):
        return None
    gap = 2.0 ** (-fmt.fl)
    return gap / math.sqrt(math.pi * alpha)


@dataclasses.dataclass(frozen=True)
class GaussianRun:
    """One (method, α) configuration.

    Attributes:
      method: ``"low"``, ``"vc"`` or ``"full"``.
      alpha: the step size ``α``.
      mean, variance: over all kept steps of all chains (variance about the pooled mean).
      mean_se, variance_se: standard errors from the per-chain estimates.
      chain_variances: per-chain second moment about the pooled mean, shape ``(chains,)``.
      samples: thinned kept samples, shape ``(chains, n)``.
      num_steps: steps per chain; ``kept_steps``: steps used for the moments; ``thin``:
        thinning of ``samples``.
    """

    method: str
    alpha: float
    mean: float
    variance: float
    mean_se: float
    variance_se: float
    chain_variances: np.ndarray = dataclasses.field(repr=False)
    samples: np.ndarray = dataclasses.field(repr=False)
    num_steps: int
    kept_steps: int
    thin: int

    @property
    def label(self) -> str:
        return GAUSSIAN_METHODS[self.method]


@dataclasses.dataclass(frozen=True)
class GaussianResults:
    """All runs of :func:`gaussian_experiment`."""

    runs: tuple[GaussianRun, ...]
    fmt: Format
    num_chains: int
    alphas: tuple[float, ...]
    methods: tuple[str, ...]

    def get(self, method: str, alpha: float) -> GaussianRun:
        for r in self.runs:
            if r.method == method and r.alpha == alpha:
                return r
        raise KeyError((method, alpha))

    def law(self, alpha: float) -> float | None:
        """The naive chain's predicted variance ``Δ/sqrt(πα)`` (fixed point only)."""
        return naive_variance_law(alpha, self.fmt)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the samples)."""
        return {
            "format": repr(self.fmt),
            "num_chains": self.num_chains,
            "target": "N(0, 1)",
            "runs": [
                {"method": r.method, "label": r.label, "alpha": r.alpha, "mean": r.mean,
                 "mean_se": r.mean_se, "variance": r.variance, "variance_se": r.variance_se,
                 "law_naive_variance": self.law(r.alpha), "num_steps": r.num_steps,
                 "kept_steps": r.kept_steps}
                for r in self.runs
            ],
        }

    def table(self) -> str:
        """A plain-text table: method, α, variance ± se, mean, the law."""
        lines = [f"{'method':<16} {'alpha':>7} {'variance':>16} {'mean':>14} "
                 f"{'law Δ/√(πα)':>12}"]
        for r in self.runs:
            law = self.law(r.alpha)
            law_s = f"{law:.2f}" if (law is not None and r.method == "low") else "1 (target)"
            law_s = "—" if r.method == "hmc-low" else law_s
            lines.append(
                f"{r.label:<16} {r.alpha:>7.0e} {r.variance:>8.3f} ± {r.variance_se:<5.3f} "
                f"{r.mean:>+7.3f} ± {r.mean_se:<5.3f} {law_s:>12}")
        return "\n".join(lines)


def _chain_fn(alpha: float, method: str, fmt: Format, num_burn: int, num_out: int,
              thin: int, grad_noise: float, friction: float = PAPER_FRICTION,
              inverse_mass: float = PAPER_INVERSE_MASS):
    """One chain: key -> (sum θ, sum θ², thinned samples)."""
    hmc = method.startswith("hmc-")
    accumulator = method.removeprefix("hmc-")

    def chain(key):
        k_opt, k_grad = jax.random.split(key)
        common = dict(num_data=1, temperature=1.0, weight_format=fmt, grad_format=fmt,
                      accumulator=accumulator, key=k_opt)
        opt = (sghmc(alpha, friction=friction, inverse_mass=inverse_mass, **common) if hmc
               else sgld(alpha, **common))
        theta = jnp.zeros((), jnp.float32)
        state = opt.init(theta)

        def one(carry, _):
            theta, state, k = carry
            k, kg = jax.random.split(k)
            g = theta + grad_noise * jax.random.normal(kg, (), jnp.float32)
            updates, state = opt.update(g, state, theta)
            return (optax.apply_updates(theta, updates), state, k), None

        carry = (theta, state, k_grad)
        if num_burn:
            carry, _ = jax.lax.scan(one, carry, None, length=num_burn)

        def block(c, _):
            inner, s1, s2 = c
            def acc(cc, _):
                (inner_c, s1c, s2c) = cc
                inner_c, _ = one(inner_c, None)
                th = inner_c[0]
                return (inner_c, s1c + th, s2c + th * th), None
            (inner, s1, s2), _ = jax.lax.scan(acc, (inner, s1, s2), None, length=thin)
            return (inner, s1, s2), inner[0]

        zero = jnp.zeros((), jnp.float32)
        (_, s1, s2), samples = jax.lax.scan(block, (carry, zero, zero), None, length=num_out)
        return s1, s2, samples

    return chain


def gaussian_experiment(
    alphas: Sequence[float] = (1e-3, 1e-4),
    methods: Sequence[str] = ("low", "vc", "full"),
    fmt: Format = PAPER_FORMAT,
    num_chains: int = 256,
    num_steps: int | Sequence[int] | None = None,
    *,
    key: jax.Array | None = None,
    burn_in: float = 0.5,
    grad_noise: float = 0.1,
    max_samples_per_chain: int = 2000,
    friction: float = PAPER_FRICTION,
    inverse_mass: float = PAPER_INVERSE_MASS,
) -> GaussianResults:
    """Run low-precision SGLD chains on ``N(0, 1)`` (the paper's Figure 1).

    Args:
      alphas: step sizes ``α`` (noise variance ``2α``).
      methods: accumulators among ``"low"`` (naive SGLDLP-L), ``"vc"`` (VC SGLDLP-L),
        ``"full"`` (SGLDLP-F); ``"hmc-low"``, ``"hmc-vc"``, ``"hmc-full"`` for SGHMC
        with time step ``η = α``.
      fmt: weight and gradient format (the paper: ``FixedPoint(8, 3)``).
      num_chains: independent chains per configuration.
      num_steps: steps per chain: one int for every α, one per α, or None for
        :func:`default_num_steps`.
      key: PRNG key (default ``jax.random.key(0)``).
      burn_in: fraction of the steps discarded (the rest is kept).
      grad_noise: standard deviation of the gradient noise (``θ + 0.1·ξ``).
      max_samples_per_chain: the kept steps are thinned to at most this many samples per
        chain for ``samples`` (moments use every kept step).
      friction, inverse_mass: SGHMC's ``γ`` and ``u`` (default the follow-up paper's 3, 2).

    Returns:
      :class:`GaussianResults`, with runs ordered by α then method.
    """
    alphas = tuple(finite_float("alphas", a, positive=True) for a in alphas)
    methods = tuple(methods)
    if not alphas:
        raise ValueError("alphas must hold at least one positive step size, got none")
    for m in methods:
        if m not in GAUSSIAN_METHODS:
            raise ValueError(f"unknown method {m!r}; valid methods: "
                             f"{', '.join(GAUSSIAN_METHODS)}")
    num_chains = positive_int("num_chains", num_chains, minimum=2)
    friction = finite_float("friction", friction, positive=True)
    inverse_mass = finite_float("inverse_mass", inverse_mass, positive=True)
    burn_in = unit_interval("burn_in", burn_in)
    if num_steps is None:
        steps = [default_num_steps(a) for a in alphas]
    elif isinstance(num_steps, (int, np.integer)):
        steps = [positive_int("num_steps", num_steps)] * len(alphas)
    else:
        steps = [positive_int("num_steps", n) for n in num_steps]
        if len(steps) != len(alphas):
            raise ValueError("num_steps must give one count per alpha")
    if key is None:
        key = jax.random.key(0)
    runs = []
    for ia, (alpha, n) in enumerate(zip(alphas, steps, strict=True)):
        num_burn = int(burn_in * n)
        kept_total = n - num_burn
        if kept_total < 1:
            raise ValueError(f"num_steps={n} keeps no step after the burn-in")
        thin = max(1, -(-kept_total // max_samples_per_chain))
        num_out = kept_total // thin
        kept = num_out * thin
        for im, method in enumerate(methods):
            chain = _chain_fn(alpha, method, fmt, num_burn, num_out, thin, grad_noise,
                              friction, inverse_mass)
            keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, ia), im),
                                    num_chains)
            s1, s2, samples = jax.jit(jax.vmap(chain))(keys)
            s1 = np.asarray(s1, np.float64)
            s2 = np.asarray(s2, np.float64)
            chain_mean = s1 / kept
            chain_m2 = s2 / kept
            mean = float(chain_mean.mean())
            chain_var = chain_m2 - mean**2
            runs.append(GaussianRun(
                method=method, alpha=alpha, mean=mean,
                variance=float(chain_var.mean()),
                mean_se=float(chain_mean.std(ddof=1) / math.sqrt(num_chains)),
                variance_se=float(chain_var.std(ddof=1) / math.sqrt(num_chains)),
                chain_variances=chain_var, samples=np.asarray(samples),
                num_steps=n, kept_steps=kept, thin=thin,
            ))
    return GaussianResults(runs=tuple(runs), fmt=fmt, num_chains=num_chains,
                           alphas=alphas, methods=methods)


def plot_gaussian(results: GaussianResults, path: str | os.PathLike) -> Path:
    """Histograms of each method's samples against the ``N(0, 1)`` density, one row per
    α and one column per method; written as PNG atomically (temporary file +
    ``os.replace``). Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"parent directory of {path} does not exist")
    alphas, methods = results.alphas, results.methods
    fig = Figure(figsize=(3.6 * len(methods), 2.9 * len(alphas)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(alphas), len(methods), squeeze=False)
    # one shared x-range; bins centred on the grid when the grid gap is constant
    spread = max(math.sqrt(max(r.variance, 1.0)) for r in results.runs)
    half = max(4.0, 3.5 * spread)
    gap = float(grid_gap(jnp.zeros(()), results.fmt)) if isinstance(results.fmt,
                                                                      FixedPoint) else 0.0
    if gap > 0:
        width = gap * max(1, math.ceil(2 * half / gap / 120))
        nb = int(math.ceil(half / width))
        edges = (np.arange(-nb, nb + 1) * width) - width / 2
    else:
        edges = np.linspace(-half, half, 121)
    xs = np.linspace(-half, half, 400)
    pdf = np.exp(-xs**2 / 2) / math.sqrt(2 * math.pi)
    for i, alpha in enumerate(alphas):
        for j, method in enumerate(methods):
            ax = axes[i][j]
            r = results.get(method, alpha)
            ax.hist(r.samples.ravel(), bins=edges, density=True, color="C0", alpha=0.75)
            ax.plot(xs, pdf, color="C3", linewidth=1.5, label="N(0, 1)")
            law = results.law(alpha)
            extra = f" (law {law:.2f})" if (method == "low" and law is not None) else ""
            ax.set_title(f"{r.label}, α={alpha:g}\nvar {r.variance:.2f}{extra}", fontsize=9)
            ax.set_xlim(-half, half)
            ax.tick_params(labelsize=8)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    family = ("SGLD / SGHMC" if any(m.startswith("hmc-") for m in methods) else "SGLD")
    fig.suptitle(f"Low-precision {family} on N(0, 1), {results.fmt!r}, "
                 f"{results.num_chains} chains", fontsize=10)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    return path
