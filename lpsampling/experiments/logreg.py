r"""Bayesian logistic regression with a ground truth: low-precision SGLD against NUTS.

The problem: scikit-learn's bundled ``breast_cancer`` data (569 examples, 30 features,
standardized to zero mean and unit variance, plus an intercept column: ``P = 31``), labels
``y ∈ {0, 1}``, prior ``θ ~ N(0, σ₀²·I)`` (``σ₀ = 1`` by default, intercept included). The
potential is

    ``U(θ) = Σ_i [log(1 + e^{x_i·θ}) − y_i·x_i·θ] + |θ|²/(2σ₀²)``.

In the library's units the samplers see the gradient of the *mean* negative log likelihood
``g = ∇ (1/N) Σ_i ℓ_i`` and the prior as weight decay ``wd = 1/(N·σ₀²)`` (added in full
precision after the gradient is rounded, as everywhere in lpsampling); with learning rate
``η`` the step in ``U`` units is ``α = η/N`` and the Langevin noise variance ``2η/N = 2α``.

What is here, each usable on its own:

* :func:`breast_cancer_problem` — the data and prior; :func:`map_estimate` — the exact MAP
  (Newton's method in float64);
* :func:`nuts_reference` — the gold-standard posterior from ``blackjax.nuts`` in float64
  (window adaptation, dense mass matrix, several chains, split-R̂ and bulk ESS); float64 is
  switched on only inside the call (``jax.enable_x64`` as a context manager), so nothing
  else in the process changes dtype;
* :func:`run_chains` — many independent chains of one method (SGLD, SGLDLP-F, naive and VC
  SGLDLP-L, SGD, SGDLP-F, SGDLP-L) through the public optax face (``lps.sgld`` /
  ``lps.sgd``), ``jax.vmap`` over chains inside one ``jit`` and ``lax.scan``;
* :func:`sliced_wasserstein` and :func:`mmd_squared` — sample-based distances between two
  point clouds, and :func:`posterior_errors` — error of the posterior mean, of the marginal
  standard deviations and the two distances, each with a standard error over groups of
  chains.

The reproduction script is ``benchmarks/reproduce_logreg.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lpsampling.formats import FULL, Format
from lpsampling.optax import init_weights, sgd, sgld
from lpsampling.validation import finite_float, positive_int, prng_key

__all__ = [
    "LOGREG_METHODS",
    "LogRegProblem",
    "NutsReference",
    "breast_cancer_problem",
    "map_estimate",
    "nuts_reference",
    "run_chains",
    "sliced_wasserstein",
    "mmd_squared",
    "median_bandwidth",
    "jackknife_se",
    "posterior_errors",
    "point_error",
]

LOGREG_METHODS: dict[str, tuple[str, bool, str | None]] = {
    "sgld": ("SGLD (full precision)", True, None),
    "sgld_f": ("SGLDLP-F", True, "full"),
    "sgld_naive": ("naive SGLDLP-L", True, "low"),
    "sgld_vc": ("VC SGLDLP-L", True, "vc"),
    "sgd": ("SGD (full precision)", False, None),
    "sgd_f": ("SGDLP-F", False, "full"),
    "sgd_l": ("SGDLP-L", False, "low"),
}
"""For each method name: its display name, whether it adds Langevin noise, and its
accumulator (None for full precision)."""


@dataclasses.dataclass(frozen=True)
class LogRegProblem:
    """A Bayesian logistic regression problem.

    Attributes:
      x: design matrix ``(N, P)`` (float64), intercept column included.
      y: labels ``(N,)`` in ``{0, 1}`` (float64).
      prior_std: ``σ₀`` of the isotropic Gaussian prior ``N(0, σ₀²·I)``.
      name: a label for reports.
    """

    x: np.ndarray = dataclasses.field(repr=False)
    y: np.ndarray = dataclasses.field(repr=False)
    prior_std: float = 1.0
    name: str = "logreg"

    def __post_init__(self):
        x = np.asarray(self.x, np.float64)
        y = np.asarray(self.y, np.float64)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError(f"x must be (N, P) and y (N,); got x {x.shape}, y {y.shape}")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("y must hold labels 0 or 1")
        finite_float("prior_std", self.prior_std, positive=True)
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)

    @property
    def num_data(self) -> int:
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    @property
    def weight_decay(self) -> float:
        """``wd = 1/(N·σ₀²)``: the prior per datum, in the samplers' mean-loss units."""
        return 1.0 / (self.num_data * self.prior_std**2)

    def potential(self, theta: jax.Array) -> jax.Array:
        """``U(θ)``: negative log posterior up to a constant (any float dtype)."""
        x = jnp.asarray(self.x, theta.dtype)
        y = jnp.asarray(self.y, theta.dtype)
        z = x @ theta
        nll = jnp.sum(jnp.logaddexp(0.0, z) - y * z)
        return nll + 0.5 * jnp.sum(theta**2) / self.prior_std**2

    def mean_nll(self, theta: jax.Array) -> jax.Array:
        """``(1/N) Σ ℓ_i(θ)``, the loss whose gradient the samplers take (float32)."""
        x = jnp.asarray(self.x, jnp.float32)
        y = jnp.asarray(self.y, jnp.float32)
        z = x @ theta
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z)


def breast_cancer_problem(prior_std: float = 1.0) -> LogRegProblem:
    """scikit-learn's bundled Wisconsin breast cancer data (no download): 569 × 30 features
    standardized (population std), an intercept column first, labels 1 = benign."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = np.asarray(data.data, np.float64)
    x = (x - x.mean(0)) / x.std(0)
    x = np.hstack([np.ones((x.shape[0], 1)), x])
    return LogRegProblem(x, np.asarray(data.target, np.float64), prior_std,
                         name="breast_cancer")


def map_estimate(problem: LogRegProblem, *, tol: float = 1e-12, max_iter: int = 100
                 ) -> np.ndarray:
    """The MAP ``argmin U`` by Newton's method in float64 NumPy (``U`` is strongly convex)."""
    x, y = problem.x, problem.y
    theta = np.zeros(problem.dim)
    prec = 1.0 / problem.prior_std**2
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (p - y) + prec * theta
        hess = x.T @ (x * (p * (1 - p))[:, None]) + prec * np.eye(problem.dim)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.max(np.abs(step)) < tol:
            break
    return theta


@dataclasses.dataclass(frozen=True)
class NutsReference:
    """NUTS samples of the posterior and their diagnostics.

    Attributes:
      samples: ``(chains, draws, P)`` float64.
      rhat: rank-normalized split-R̂ per coordinate (Vehtari et al. 2021).
      ess_bulk: bulk effective sample size per coordinate (all chains together).
      step_sizes: the adapted step size of each chain.
      num_divergent: divergent transitions per chain (after warm-up).
      mean_tree_depth: mean number of leapfrog steps per draw, per chain.
    """

    samples: np.ndarray = dataclasses.field(repr=False)
    rhat: np.ndarray = dataclasses.field(repr=False)
    ess_bulk: np.ndarray = dataclasses.field(repr=False)
    step_sizes: np.ndarray
    num_divergent: np.ndarray
    mean_tree_depth: np.ndarray

    @property
    def flat(self) -> np.ndarray:
        return self.samples.reshape(-1, self.samples.shape[-1])

    @property
    def mean(self) -> np.ndarray:
        return self.flat.mean(0)

    @property
    def std(self) -> np.ndarray:
        return self.flat.std(0, ddof=1)

    def summary(self) -> dict:
        return {"chains": int(self.samples.shape[0]), "draws": int(self.samples.shape[1]),
                "max_rhat": float(self.rhat.max()), "min_ess_bulk": float(self.ess_bulk.min()),
                "step_sizes": [float(s) for s in self.step_sizes],
                "divergent": [int(d) for d in self.num_divergent],
                "mean_leapfrog_steps": [float(d) for d in self.mean_tree_depth]}


def nuts_reference(problem: LogRegProblem, *, key: jax.Array, num_chains: int = 4,
                   num_warmup: int = 1000, num_samples: int = 2000,
                   init_spread: float = 1.0) -> NutsReference:
    """The gold-standard posterior: ``blackjax.nuts`` in float64 with Stan-style window
    adaptation of the step size and a dense inverse mass matrix, one adaptation per chain.

    Chains start at the MAP plus ``N(0, init_spread²)`` per coordinate (overdispersed with
    respect to the posterior, whose marginal standard deviations are below σ₀), so that
    split-R̂ can detect chains that have not mixed. Float64 is on only inside this call.
    """
    import blackjax
    import blackjax.diagnostics as diag

    prng_key("key", key)
    num_chains = positive_int("num_chains", num_chains, minimum=2)
    num_warmup = positive_int("num_warmup", num_warmup)
    num_samples = positive_int("num_samples", num_samples, minimum=4)
    theta_map = map_estimate(problem)
    with jax.enable_x64(True):
        def logdensity(theta):
            return -problem.potential(theta)

        @jax.jit
        def one_chain(k):
            k_init, k_warm, k_run = jax.random.split(k, 3)
            init = jnp.asarray(theta_map) + init_spread * jax.random.normal(
                k_init, (problem.dim,), jnp.float64)
            warmup = blackjax.window_adaptation(blackjax.nuts, logdensity,
                                                is_mass_matrix_diagonal=False)
            (state, params), _ = warmup.run(k_warm, init, num_steps=num_warmup)
            kernel = blackjax.nuts(logdensity, **params).step

            def body(s, kk):
                s, info = kernel(kk, s)
                return s, (s.position, info.is_divergent, info.num_integration_steps)

            _, (pos, div, steps) = jax.lax.scan(body, state,
                                                jax.random.split(k_run, num_samples))
            return pos, jnp.sum(div), jnp.mean(steps.astype(jnp.float64)), params["step_size"]

        outs = [one_chain(k) for k in jax.random.split(key, num_chains)]
        samples = np.stack([np.asarray(o[0]) for o in outs])
        rhat = np.asarray(diag.rhat(jnp.asarray(samples)))
        ess = np.asarray(diag.ess_bulk(jnp.asarray(samples)))
    return NutsReference(
        samples=samples, rhat=rhat, ess_bulk=ess,
        step_sizes=np.array([float(o[3]) for o in outs]),
        num_divergent=np.array([int(o[1]) for o in outs]),
        mean_tree_depth=np.array([float(o[2]) for o in outs]))


def run_chains(problem: LogRegProblem, method: str, *, key: jax.Array,
               weight_format: Format = FULL, grad_format: Format | None = None,
               learning_rate: float, num_chains: int, num_burn: int, num_kept: int,
               thin: int = 1, init: np.ndarray | None = None,
               temperature: float = 1.0) -> np.ndarray:
    """Run ``num_chains`` independent chains of ``method`` (a key of
    :data:`LOGREG_METHODS`) with full-batch gradients; return the weights the model runs
    on (``params``, on the weight grid) at every ``thin``-th step after ``num_burn``
    steps, shape ``(num_chains, num_kept, P)`` float32.

    ``init``: ``(P,)`` (every chain) or ``(num_chains, P)`` (e.g. posterior draws from
    :func:`nuts_reference`, so that the chains start independent); default the MAP.

    Chain ``c`` uses ``jax.random.fold_in(key, c)``: the same ``key`` gives every method
    the same Langevin noise draws (the update rule draws ``ξ`` from the same split of the
    step key in every precision mode except VC, whose quantizer draws its own), so
    differences between full-precision and SGLDLP-F / naive runs are not Monte-Carlo noise
    alone. ``init`` is rounded onto the weight grid by
    :func:`lpsampling.init_weights`. ``learning_rate`` is ``η`` on the mean loss
    (``α = η/N`` in ``U`` units). ``grad_format`` defaults to ``weight_format``.
    """
    if method not in LOGREG_METHODS:
        raise ValueError(f"method must be one of {sorted(LOGREG_METHODS)}, got {method!r}")
    prng_key("key", key)
    learning_rate = finite_float("learning_rate", learning_rate, positive=True)
    num_chains = positive_int("num_chains", num_chains)
    num_burn = positive_int("num_burn", num_burn, minimum=0)
    num_kept = positive_int("num_kept", num_kept)
    thin = positive_int("thin", thin)
    _, noisy, accumulator = LOGREG_METHODS[method]
    if accumulator is None:
        wfmt = gfmt = FULL
        accumulator = "full"
    else:
        wfmt = weight_format
        gfmt = weight_format if grad_format is None else grad_format
        if wfmt.is_identity:
            raise ValueError(f"method {method!r} needs a low-precision weight_format")
    theta0 = jnp.asarray(map_estimate(problem) if init is None else init, jnp.float32)
    if theta0.shape == (problem.dim,):
        theta0 = jnp.broadcast_to(theta0, (num_chains, problem.dim))
    if theta0.shape != (num_chains, problem.dim):
        raise ValueError(f"init must be ({problem.dim},) or ({num_chains}, {problem.dim}), "
                         f"got {theta0.shape}")
    grad_fn = jax.grad(problem.mean_nll)

    def chain(k, start):
        k_init, k_opt = jax.random.split(k)
        common = dict(weight_decay=problem.weight_decay, weight_format=wfmt,
                      grad_format=gfmt, accumulator=accumulator, key=k_opt)
        opt = (sgld(learning_rate, num_data=problem.num_data, temperature=temperature,
                    **common) if noisy else sgd(learning_rate, **common))
        params = init_weights(start, wfmt, key=k_init)
        carry = (params, opt.init(params))

        def step(c, _):
            p, s = c
            updates, s = opt.update(grad_fn(p), s, p)
            return (optax.apply_updates(p, updates), s), None

        def kept(c, _):
            c, _ = jax.lax.scan(step, c, None, length=thin)
            return c, c[0]

        carry, _ = jax.lax.scan(step, carry, None, length=num_burn)
        _, out = jax.lax.scan(kept, carry, None, length=num_kept)
        return out

    keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(num_chains))
    return np.asarray(jax.jit(jax.vmap(chain))(keys, theta0))


# -- distances between samples ---------------------------------------------------------


def sliced_wasserstein(x: jax.Array, y: jax.Array, *, key: jax.Array,
                       num_projections: int = 256, p: int = 2) -> jax.Array:
    r"""Sliced ``p``-Wasserstein distance ``(E_u W_p^p(u·X, u·Y))^{1/p}`` between the
    empirical laws of ``x (n, d)`` and ``y (m, d)``, over ``num_projections`` directions
    ``u`` uniform on the unit sphere (drawn from ``key``).

    Each 1-D ``W_p`` is ``∫₀¹ |F⁻¹(t) − G⁻¹(t)|^p dt`` between the empirical quantile
    functions, evaluated at ``max(n, m)`` midpoints ``t = (k + ½)/K`` (exact when
    ``n = m``). Closed form to check against: for ``N(μ₁, σ²I)`` and ``N(μ₂, σ²I)``,
    ``SW₂² = |μ₁ − μ₂|²/d``.
    """
    prng_key("key", key)
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) and (m, d); got {x.shape} and {y.shape}")
    num_projections = positive_int("num_projections", num_projections)
    p = positive_int("p", p)
    u = jax.random.normal(key, (x.shape[1], num_projections), x.dtype)
    u = u / jnp.linalg.norm(u, axis=0, keepdims=True)
    xp, yp = jnp.sort(x @ u, axis=0), jnp.sort(y @ u, axis=0)
    n, m = x.shape[0], y.shape[0]
    if n != m:
        levels = (jnp.arange(max(n, m)) + 0.5) / max(n, m)
        # inverse empirical CDF: the order statistic ⌊t·n⌋ (a step function, no interpolation)
        xp = xp[jnp.floor(levels * n).astype(jnp.int32)]
        yp = yp[jnp.floor(levels * m).astype(jnp.int32)]
    return jnp.mean(jnp.abs(xp - yp) ** p) ** (1.0 / p)


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    d = (jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2.0 * a @ b.T)
    return jnp.maximum(d, 0.0)


def mmd_squared(x: jax.Array, y: jax.Array, *, bandwidth: float,
                unbiased: bool = True) -> jax.Array:
    r"""Squared maximum mean discrepancy with the Gaussian kernel
    ``k(a, b) = exp(−|a − b|²/(2h²))``, ``h = bandwidth``.

    ``unbiased=True``: the U-statistic (diagonal terms left out; its expectation is the
    population MMD², it can be negative); ``False``: the V-statistic (always ≥ 0, biased
    up by ``(1 − E k(X, X'))/n + (1 − E k(Y, Y'))/m``). Closed form to check against: for
    ``N(μ₁, s²I)`` and ``N(μ₂, s²I)`` in ``d`` dimensions,
    ``MMD² = 2c·(1 − exp(−|μ₁ − μ₂|²/(2(h² + 2s²))))`` with ``c = (h²/(h² + 2s²))^{d/2}``.
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) and (m, d); got {x.shape} and {y.shape}")
    h2 = 2.0 * finite_float("bandwidth", bandwidth, positive=True) ** 2
    kxx = jnp.exp(-_sq_dists(x, x) / h2)
    kyy = jnp.exp(-_sq_dists(y, y) / h2)
    kxy = jnp.exp(-_sq_dists(x, y) / h2)
    n, m = x.shape[0], y.shape[0]
    if unbiased:
        if min(n, m) < 2:
            raise ValueError("the unbiased MMD² needs at least two samples on each side")
        exx = (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1))
        eyy = (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    else:
        exx, eyy = jnp.mean(kxx), jnp.mean(kyy)
    return exx + eyy - 2.0 * jnp.mean(kxy)


def median_bandwidth(x: np.ndarray, *, max_points: int = 2000) -> float:
    """The median heuristic: the median Euclidean distance between distinct points of
    ``x`` (the first ``max_points`` of them)."""
    x = jnp.asarray(np.asarray(x)[:max_points])
    d = np.sqrt(np.asarray(_sq_dists(x, x)))
    return float(np.median(d[np.triu_indices(d.shape[0], 1)]))


# -- errors with standard errors --------------------------------------------------------


def jackknife_se(stat: Callable[[np.ndarray], float], groups: list[np.ndarray]
                 ) -> tuple[float, float]:
    """``(stat(all groups pooled), its delete-one-group jackknife standard error)``:
    ``SE² = (G−1)/G · Σ_g (θ₋g − θ̄)²`` over the ``G`` leave-one-group-out estimates."""
    g = len(groups)
    if g < 2:
        raise ValueError(f"the jackknife needs at least two groups, got {g}")
    full = float(stat(np.concatenate(groups)))
    loo = np.array([stat(np.concatenate(groups[:i] + groups[i + 1:])) for i in range(g)])
    return full, float(math.sqrt((g - 1) / g * np.sum((loo - loo.mean()) ** 2)))


def posterior_errors(samples: np.ndarray, reference: NutsReference, *, key: jax.Array,
                     num_groups: int = 8, num_points: int = 1000,
                     num_reference_points: int = 2000, num_projections: int = 256,
                     bandwidth: float | None = None, paired: np.ndarray | None = None
                     ) -> dict[str, tuple[float, float]]:
    r"""Errors of chains ``samples (chains, draws, P)`` against the NUTS reference, in
    coordinates standardized by the NUTS marginals (``z = (θ − m)/s``), each as
    ``(value, standard error)``:

    * ``mean``: ``sqrt(mean_i ((m̂_i − m_i)/s_i)²)``, the RMS error of the posterior mean
      in posterior standard deviations;
    * ``std``: ``sqrt(mean_i (ŝ_i/s_i − 1)²)``, the RMS relative error of the marginal
      standard deviations;
    * ``sw``: sliced 2-Wasserstein distance (``num_projections`` directions);
    * ``mmd``: ``sqrt`` of the V-statistic MMD² with a Gaussian kernel, bandwidth the
      median heuristic on the standardized NUTS draws unless given;
    * ``mean_vs_paired``, ``std_vs_paired`` (when ``paired``, chains of another method
      run with the same keys, is given): the RMS standardized difference of the two
      posterior means, and of the two sets of marginal standard deviations (in units of
      the NUTS ones): the quantization error alone, without the shared discretization
      bias and with much of the Monte-Carlo noise cancelled by the shared noise draws.

    The chains are split into ``num_groups`` groups. ``mean``, ``std`` and
    ``*_vs_paired`` are computed on all draws, with a delete-one-group jackknife SE.
    ``sw`` and ``mmd`` are computed per group (``num_points`` draws of the group, evenly
    spaced, against the same ``num_reference_points`` NUTS draws, evenly spaced among the
    even-indexed ones of ``reference.flat``) and reported as the mean
    over groups and its SE ``std/√G``; both have a finite-sample floor (about
    ``sqrt(1/num_points + 1/num_reference_points)`` in standardized units), the same for
    every method with these sizes.
    """
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 3 or samples.shape[2] != reference.samples.shape[2]:
        raise ValueError(f"samples must be (chains, draws, {reference.samples.shape[2]}), "
                         f"got {samples.shape}")
    num_groups = positive_int("num_groups", num_groups, minimum=2)
    if samples.shape[0] < num_groups:
        raise ValueError(f"need at least num_groups={num_groups} chains, "
                         f"got {samples.shape[0]}")
    m, s = reference.mean, reference.std
    z = (samples - m) / s
    chunks = np.array_split(np.arange(samples.shape[0]), num_groups)
    groups = [z[c].reshape(-1, z.shape[2]) for c in chunks]
    out = {
        "mean": jackknife_se(lambda a: np.sqrt(np.mean(a.mean(0) ** 2)), groups),
        "std": jackknife_se(lambda a: np.sqrt(np.mean((a.std(0, ddof=1) - 1.0) ** 2)),
                            groups),
    }
    if paired is not None:
        zp = (np.asarray(paired, np.float64) - m) / s
        if zp.shape != z.shape:
            raise ValueError(f"paired must have the shape of samples {z.shape}, got {zp.shape}")
        diff = [np.concatenate([z[c].reshape(-1, z.shape[2]),
                                zp[c].reshape(-1, z.shape[2])], axis=1) for c in chunks]
        d = z.shape[2]
        out["mean_vs_paired"] = jackknife_se(
            lambda a: np.sqrt(np.mean((a[:, :d].mean(0) - a[:, d:].mean(0)) ** 2)), diff)
        out["std_vs_paired"] = jackknife_se(
            lambda a: np.sqrt(np.mean((a[:, :d].std(0, ddof=1) - a[:, d:].std(0, ddof=1))
                                      ** 2)), diff)
    # the even-indexed draws only: callers that start chains at NUTS draws take odd ones,
    # so that no chain is scored against its own starting point
    ref = ((reference.flat - m) / s)[0::2]
    ref = ref[np.linspace(0, len(ref) - 1, min(num_reference_points, len(ref))).astype(int)]
    h = median_bandwidth(ref) if bandwidth is None else bandwidth
    sws, mmds = [], []
    for grp in groups:
        pts = grp[np.linspace(0, len(grp) - 1, min(num_points, len(grp))).astype(int)]
        sws.append(float(sliced_wasserstein(pts, ref, key=key,
                                            num_projections=num_projections)))
        mmds.append(math.sqrt(max(float(mmd_squared(pts, ref, bandwidth=h,
                                                    unbiased=False)), 0.0)))
    g = len(groups)
    out["sw"] = (float(np.mean(sws)), float(np.std(sws, ddof=1) / math.sqrt(g)))
    out["mmd"] = (float(np.mean(mmds)), float(np.std(mmds, ddof=1) / math.sqrt(g)))
    return out


def point_error(points: np.ndarray, target: np.ndarray, scale: np.ndarray
                ) -> tuple[float, float]:
    """RMS standardized distance ``sqrt(mean_i ((θ_i − t_i)/s_i)²)`` of each point estimate
    ``points (chains, P)`` to ``target`` (e.g. the MAP), as (mean over chains, SE)."""
    points = np.asarray(points, np.float64)
    d = np.sqrt(np.mean(((points - target) / scale) ** 2, axis=-1))
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
