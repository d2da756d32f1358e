"""Statistics of comparisons between methods over seeds: mean ± standard error and a
verdict with three outcomes from a stated two-sided test.

Runs of two methods that share seeds (same initialisation and data order) are compared
*paired by seed*: the test is on the per-seed differences ``d_k = a_k − b_k``
(:func:`paired_t`, or the exact :func:`sign_flip` permutation test). Runs that do not
share seeds are compared with Welch's unequal-variance t test (:func:`welch_t`).
:func:`bootstrap` resamples seeds instead (paired or not). A verdict is

* ``"better"``: ``p < alpha`` and the mean of ``a`` is lower (``lower_is_better``) or
  higher than that of ``b``;
* ``"worse"``: ``p < alpha`` the other way;
* ``"no detectable difference"``: ``p ≥ alpha`` (or a single seed).

``alpha = 0.05`` by default, per comparison, with no correction for multiplicity: with
many comparisons in a table, about one in twenty true nulls reads "better" or "worse" by
chance. Note that an exact sign-flip test over ``n`` seeds cannot give ``p`` below
``2 / 2**n`` (0.0625 for 5 seeds), so with fewer than 6 paired seeds it never rejects at
0.05; :func:`compare_samples` therefore uses the paired t test by default.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from lpsampling.metrics import summarize
from lpsampling.validation import positive_int

__all__ = [
    "ALPHA",
    "OUTCOMES",
    "TESTS",
    "Comparison",
    "mean_se",
    "paired_t",
    "welch_t",
    "sign_flip",
    "bootstrap",
    "verdict",
    "compare_samples",
]

#: Default two-sided significance level of a verdict (per comparison).
ALPHA = 0.05
#: The three outcomes of a verdict.
OUTCOMES = ("better", "worse", "no detectable difference")
#: Test names accepted by :func:`compare_samples`.
TESTS = ("paired t", "Welch t", "sign-flip", "bootstrap")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on one metric.

    Attributes:
      metric: the metric's name.
      mean_a, se_a, mean_b, se_b: mean and standard error of each side over seeds.
      diff: ``mean(a) − mean(b)`` (paired: the mean of the per-seed differences, the same
        number when every seed is present on both sides).
      se_diff: standard error of ``diff`` (paired: of the per-seed differences; Welch:
        ``sqrt(se_a² + se_b²)``).
      test: the test that gave ``p_value`` (one of :data:`TESTS`, or ``"none"`` for a
        single seed).
      p_value: two-sided p-value (NaN when no test is possible).
      n_a, n_b: seeds on each side.
      alpha: significance level.
      lower_is_better: the metric's direction (error, NLL, ECE: lower is better).
      outcome: one of :data:`OUTCOMES`.
    """

    metric: str
    mean_a: float
    se_a: float
    mean_b: float
    se_b: float
    diff: float
    se_diff: float
    test: str
    p_value: float
    n_a: int
    n_b: int
    alpha: float
    lower_is_better: bool
    outcome: str

    def describe(self, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
        """e.g. ``"-1.20 ± 0.31 pp (paired t, n=5, p=0.018): better"``."""
        p = "p n/a" if math.isnan(self.p_value) else _fmt_p(self.p_value)
        n = f"n={self.n_a}" if self.test in ("paired t", "sign-flip") else \
            f"n={self.n_a}/{self.n_b}"
        return (f"{self.diff * scale:+.{digits}f} ± {self.se_diff * scale:.{digits}f}{unit} "
                f"({self.test}, {n}, {p}): {self.outcome}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _fmt_p(p: float) -> str:
    return f"p={p:.2g}" if p >= 1e-3 else "p<0.001"


def _vector(name: str, values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence of numbers; got shape "
                         f"{v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"`{name}` holds non-finite values: {v.tolist()}")
    return v


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean, ``s / sqrt(n)`` with ``ddof = 1`` (0 for one
    value); see :func:`lpsampling.metrics.summarize`."""
    return summarize(_vector("values", values))


def _t_two_sided(t: float, df: float) -> float:
    from scipy import stats

    return float(2.0 * stats.t.sf(abs(t), df))


def _zero_se(diff: float) -> float:
    # every difference identical: a deterministic gap (p = 0) or none (p = 1)
    return 1.0 if diff == 0.0 else 0.0


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Paired t test on ``d_k = a_k − b_k``: ``t = mean(d) / (sd(d) / sqrt(n))`` with
    ``n − 1`` degrees of freedom.

    Returns:
      ``(mean(d), se(d), p)``, ``p`` two-sided (NaN for ``n = 1``; 0 or 1 when every
      ``d_k`` is equal: a deterministic gap or none).
    """
    a, b = _vector("a", a), _vector("b", b)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    d = a - b
    mean, se = summarize(d)
    if d.size < 2:
        return mean, se, math.nan
    if se == 0.0:
        return mean, se, _zero_se(mean)
    return mean, se, _t_two_sided(mean / se, d.size - 1)


def welch_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Welch's t test: ``t = (mean(a) − mean(b)) / sqrt(se_a² + se_b²)`` with the
    Welch–Satterthwaite degrees of freedom
    ``(se_a² + se_b²)² / (se_a⁴/(n_a − 1) + se_b⁴/(n_b − 1))``.

    Returns:
      ``(mean(a) − mean(b), se, p)``, ``p`` two-sided (NaN when a side has one value).
    """
    a, b = _vector("a", a), _vector("b", b)
    (ma, sa), (mb, sb) = summarize(a), summarize(b)
    diff, se = ma - mb, math.hypot(sa, sb)
    if a.size < 2 or b.size < 2:
        return diff, se, math.nan
    if se == 0.0:
        return diff, se, _zero_se(diff)
    df = (sa**2 + sb**2) ** 2 / (sa**4 / (a.size - 1) + sb**4 / (b.size - 1))
    return diff, se, _t_two_sided(diff / se, df)


def sign_flip(a: Sequence[float], b: Sequence[float], *, max_exact: int = 16,
              num_resamples: int = 20000, seed: int = 0) -> tuple[float, float, float]:
    """Paired sign-flip permutation test on ``d_k = a_k − b_k``: under the null each
    ``d_k`` is as likely ``−d_k``; ``p`` is the fraction of the ``2**n`` sign patterns
    (all of them for ``n ≤ max_exact``, else ``num_resamples`` random ones from ``seed``,
    the observed one counted) whose ``|mean|`` reaches the observed one.

    Returns:
      ``(mean(d), se(d), p)``; ``p ≥ 2 / 2**n``.
    """
    a, b = _vector("a", a), _vector("b", b)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    positive_int("num_resamples", num_resamples)
    d = a - b
    mean, se = summarize(d)
    obs = abs(d.mean())
    # relative slack so that ties with the observed pattern count despite rounding
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if d.size <= max_exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        p = float(np.mean(np.abs(signs @ d) / d.size >= obs - tol))
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((1.0, -1.0), size=(num_resamples, d.size))
        hits = int(np.sum(np.abs(signs @ d) / d.size >= obs - tol))
        p = (hits + 1) / (num_resamples + 1)
    return mean, se, p


def bootstrap(a: Sequence[float], b: Sequence[float], *, paired: bool,
              num_resamples: int = 20000, seed: int = 0) -> tuple[float, float, float]:
    """Percentile bootstrap of ``mean(a) − mean(b)`` over seeds (paired: resampling the
    per-seed differences; else each side on its own), ``num_resamples`` draws from
    ``seed``.

    Returns:
      ``(diff, se, p)``: ``se`` the bootstrap standard deviation; ``p`` two-sided,
      ``2 · min(P*(diff* ≤ 0), P*(diff* ≥ 0))`` capped at 1 (with few seeds the bootstrap
      is anti-conservative; prefer the t tests below about 10 seeds).
    """
    a, b = _vector("a", a), _vector("b", b)
    positive_int("num_resamples", num_resamples)
    rng = np.random.default_rng(seed)
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
        d = a - b
        diff = float(d.mean())
        draws = d[rng.integers(0, d.size, (num_resamples, d.size))].mean(axis=1)
    else:
        diff = float(a.mean() - b.mean())
        draws = (a[rng.integers(0, a.size, (num_resamples, a.size))].mean(axis=1)
                 - b[rng.integers(0, b.size, (num_resamples, b.size))].mean(axis=1))
    se = float(draws.std(ddof=1))
    p = min(1.0, 2.0 * min(float(np.mean(draws <= 0.0)), float(np.mean(draws >= 0.0))))
    return diff, se, p


def verdict(diff: float, p_value: float, *, alpha: float = ALPHA,
            lower_is_better: bool = True) -> str:
    """One of :data:`OUTCOMES` for ``a − b = diff`` with two-sided ``p_value``."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if math.isnan(p_value) or p_value >= alpha or diff == 0.0:
        return OUTCOMES[2]
    return OUTCOMES[0] if (diff < 0) == lower_is_better else OUTCOMES[1]


def compare_samples(
    a: Sequence[float],
    b: Sequence[float],
    *,
    paired: bool,
    test: str | None = None,
    metric: str = "",
    lower_is_better: bool = True,
    alpha: float = ALPHA,
) -> Comparison:
    """Compare the per-seed values ``a`` of one method with ``b`` of another.

    Args:
      a, b: one value per seed; with ``paired``, ``a[k]`` and ``b[k]`` share seed ``k``.
      paired: whether the runs share seeds.
      test: one of :data:`TESTS`; None: ``"paired t"`` when paired, else ``"Welch t"``.
      metric: the metric's name (recorded).
      lower_is_better: the metric's direction.
      alpha: two-sided significance level of the verdict.

    Raises:
      ValueError: empty or non-finite values, unequal lengths for a paired test, an
        unknown test or a paired test on unpaired runs.
    """
    if test is None:
        test = "paired t" if paired else "Welch t"
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    if test in ("paired t", "sign-flip") and not paired:
        raise ValueError(f"test {test!r} needs paired runs (paired=True)")
    av, bv = _vector("a", a), _vector("b", b)
    (ma, sa), (mb, sb) = summarize(av), summarize(bv)
    if test == "paired t":
        diff, se, p = paired_t(av, bv)
    elif test == "sign-flip":
        diff, se, p = sign_flip(av, bv)
    elif test == "Welch t":
        diff, se, p = welch_t(av, bv)
    else:
        diff, se, p = bootstrap(av, bv, paired=paired)
    name = test if not (math.isnan(p) and min(av.size, bv.size) < 2) else "none"
    return Comparison(
        metric=metric, mean_a=ma, se_a=sa, mean_b=mb, se_b=sb, diff=diff, se_diff=se,
        test=name, p_value=p, n_a=int(av.size), n_b=int(bv.size), alpha=float(alpha),
        lower_is_better=bool(lower_is_better),
        outcome=verdict(diff, p, alpha=alpha, lower_is_better=lower_is_better))
