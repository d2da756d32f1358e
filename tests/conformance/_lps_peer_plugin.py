"""pytest plugin for a peer's own test suite: swaps lpsampling's faces in for the peer's.

Loaded with ``-p _lps_peer_plugin`` by the conformance runner (``test_conformance.py``) in a
subprocess that runs the peer's tests; never loaded by lpsampling's own test run (the name is
not ``conftest.py``, and nothing happens at import). ``LPS_CONFORMANCE_MODE`` picks the
precision (a key of :data:`MODES`); ``LPS_CONFORMANCE_ROOT``, when set, is the checkout that
``lpsampling`` must be imported from.

``LPS_CONFORMANCE_FACE`` picks what is substituted:

- ``blackjax``: ``blackjax.sgld`` and ``blackjax.sghmc``, and the modules
  ``blackjax.sgmcmc.sgld`` and ``blackjax.sgmcmc.sghmc`` (``init``, ``build_kernel``,
  ``as_top_level_api``: each one's whole ``__all__``) become
  ``lpsampling.blackjax.sgmcmc.sgld``'s and ``.sghmc``'s, with the mode's precision bound;
  ``blackjax.sgmcmc.diffusions.sghmc`` becomes :func:`sghmc_diffusion_face`.
- ``optax-sgd``: ``optax.sgd`` (``optax._src.alias.sgd``) becomes :func:`sgd_face`, i.e.
  ``lps.sgd`` with the mode's precision and a fixed key bound. Of optax's tests
  parameterized over optimizers (``opt_name=...``) only the ``sgd`` ones are collected.
- ``optax-sgld``: ``optax.sgd`` becomes :func:`sgld_face`, ``lps.sgld`` with
  ``num_data=SGLD_NUM_DATA``; only optax's optimization problems run
  (``AliasTest::test_optimization``, real ``sgd`` cases).

Every face counts its calls per test; the stamp records them, so that the runner can check
that each test it counts really built lpsampling's optimizer.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

import pytest

# Fixed point: 16-bit weights with 12 fractional bits (range ±8, step 2^-12, enough for the
# tests' positions, |θ| ≤ 3, and step sizes of 1e-3); 16-bit gradients with 2 fractional
# bits (range ±8192: SGMCMCTest's full-data gradients are about 5·10^3). Block floating
# point: 8-bit mantissas, one exponent per leaf, weights and gradients alike; QPyTorch's
# saturating stochastic rounding, or (``carry=True``) the mean-exact carry at a block's top.
FIXED_W = ("FixedPoint", 16, 12)
FIXED_G = ("FixedPoint", 16, 2)
BFP8 = ("BlockFloatingPoint", 8, False)
BFP8_CARRY = ("BlockFloatingPoint", 8, True)

#: mode -> (weight format, gradient format, accumulator); ``None`` is ``FULL``.
MODES = {
    "FULL": (None, None, "full"),
    "F fixed16": (FIXED_W, FIXED_G, "full"),
    "naive L fixed16": (FIXED_W, FIXED_G, "low"),
    "VC L fixed16": (FIXED_W, FIXED_G, "vc"),
    "F bfp8": (BFP8, BFP8, "full"),
    "naive L bfp8": (BFP8, BFP8, "low"),
    "VC L bfp8": (BFP8, BFP8, "vc"),
    "naive L bfp8 carry": (BFP8_CARRY, BFP8_CARRY, "low"),
    "VC L bfp8 carry": (BFP8_CARRY, BFP8_CARRY, "vc"),
}

#: Modes that only the suites naming them run (``Suite.modes`` in the runner): the
#: ``carry=True`` block format matters where an iterate creeps toward a block's top in
#: steps below one gap (optax's Rosenbrock problem), not in the other suites.
CARRY_MODES = ("naive L bfp8 carry", "VC L bfp8 carry")


def _format(spec):
    import lpsampling as lps

    if spec is None:
        return lps.FULL
    if spec[0] == "FixedPoint":
        return lps.FixedPoint(spec[1], spec[2])
    return lps.BlockFloatingPoint(spec[1], axis=None, carry=spec[2])


def precision_of(mode: str):
    """The :class:`lpsampling.Precision` of a mode."""
    from lpsampling.update import Precision

    weight, grad, accumulator = MODES[mode]
    return Precision(_format(weight), _format(grad), accumulator)


#: face -> the peer it substitutes in (the runner fetches that peer's sdist).
FACES = {"blackjax": "blackjax", "optax-sgd": "optax", "optax-sgld": "optax"}

# Calls of lpsampling's faces during the current test (see _counted / pytest_runtest_call).
_CALLS = {"now": 0}
_SUBFAILED: dict[str, list[str]] = {}


def _counted(fn):
    """``fn``, counting its calls, so that a test that never reaches lpsampling is caught."""

    @functools.wraps(fn)
    def counted(*args, **kwargs):
        _CALLS["now"] += 1
        return fn(*args, **kwargs)

    return counted


def _substitute_blackjax(precision) -> bool:
    """``blackjax.sgld`` / ``blackjax.sghmc`` and their modules ``blackjax.sgmcmc.sgld`` /
    ``.sghmc`` (each module's whole ``__all__``) become lpsampling's, precision bound."""
    import blackjax
    import blackjax.sgmcmc.sghmc as peer_sghmc
    import blackjax.sgmcmc.sgld as peer_sgld

    from lpsampling.blackjax.sgmcmc import sghmc as ours_sghmc
    from lpsampling.blackjax.sgmcmc import sgld as ours_sgld

    ok = True
    for name, peer, ours in (("sgld", peer_sgld, ours_sgld), ("sghmc", peer_sghmc, ours_sghmc)):
        missing = sorted(set(peer.__all__) - set(ours.__all__))
        if missing:
            raise pytest.UsageError(f"lpsampling.blackjax.sgmcmc.{name} lacks {missing}")
        peer.init = _counted(ours.init)
        peer.build_kernel = functools.partial(_counted(ours.build_kernel), precision=precision)
        peer.as_top_level_api = functools.partial(_counted(ours.as_top_level_api),
                                                  precision=precision)
        setattr(blackjax, name, blackjax.generate_top_level_api_from(peer))
        top = getattr(blackjax, name)
        ok = ok and (peer.build_kernel.func.__wrapped__ is ours.build_kernel
                     and peer.init.__wrapped__ is ours.init
                     and top.build_kernel.func.__wrapped__ is ours.build_kernel)
    import blackjax.sgmcmc.diffusions as diffusions

    diffusions.sghmc = _counted(sghmc_diffusion_face(precision))
    return ok


def sghmc_diffusion_face(precision):
    """``blackjax.sgmcmc.diffusions.sghmc(alpha, beta)``'s one Euler step on lpsampling's
    core: lpsampling offers this layer only inside its kernel
    (:func:`lpsampling.blackjax.sgmcmc.sghmc.build_kernel`), so this adapter repeats that
    kernel's one call of :func:`lpsampling.update.update_momentum` with blackjax's
    coefficients (:func:`~lpsampling.blackjax.sgmcmc.sghmc.euler_coefficients`)."""
    import jax

    from lpsampling.blackjax._util import gaussian_noise
    from lpsampling.blackjax.sgmcmc.sghmc import euler_coefficients
    from lpsampling.blackjax.sgmcmc.sgld import UPDATE_STREAM
    from lpsampling.update import update_momentum

    def sghmc(alpha=0.01, beta=0):
        def one_step(rng_key, position, momentum, logdensity_grad, step_size,
                     temperature=1.0):
            position, momentum, _ = update_momentum(
                jax.random.fold_in(rng_key, UPDATE_STREAM), position, momentum,
                logdensity_grad,
                coefficients=euler_coefficients(step_size, temperature, alpha, beta),
                precision=precision,
                noise=None if precision.accumulator == "vc"
                else gaussian_noise(rng_key, position))
            return position, momentum

        return one_step

    return sghmc


def sgd_face(precision, key=None):
    """``optax.sgd``'s signature on ``lps.sgd``: the minimal adapter a user writes.

    ``lps.sgd`` takes its PRNG key (stochastic rounding) as a required keyword, where
    ``optax.sgd`` has none; the face binds one fixed key, as ``optax.noisy_sgd`` does
    with its default ``key=0``.
    """
    import jax

    import lpsampling as lps

    key = jax.random.key(0) if key is None else key

    def sgd(learning_rate, momentum=None, nesterov=False, accumulator_dtype=None):
        # Only what the caller set is passed on: an option lps.sgd lacks is a TypeError.
        given = {"momentum": momentum, "nesterov": nesterov,
                 "accumulator_dtype": accumulator_dtype}
        extra = {k: v for k, v in given.items() if v is not None and v is not False}
        return lps.sgd(learning_rate, precision=precision, key=key, **extra)

    return sgd


#: ``N`` of the SGLD face: its stationary law ∝ exp(−N·f/T) (T = 1) concentrates at optax's
#: minima: posterior std ≤ sqrt(T/(N·λ_min)) = 1.6e-3 for Rosenbrock's flattest curvature
#: at (1, 1), λ_min ≈ 0.4 (the parabola: λ = 2), far inside optax's tolerance (6e-2).
SGLD_NUM_DATA = 10**6


def sgld_face(precision, key=None):
    """``optax.sgd``'s signature on ``lps.sgld``: the same problem, step size and number of
    steps, solved by a sampler. SGLD has no momentum, so ``momentum`` is not passed on (its
    step ``η`` alone solves optax's problems: plain GD at η = 1e-3 reaches Rosenbrock's
    minimum to 1.1e-2 in optax's 10⁴ steps); other optax options are a TypeError."""
    import jax

    import lpsampling as lps

    key = jax.random.key(0) if key is None else key

    def sgd(learning_rate, momentum=None, nesterov=False, accumulator_dtype=None):
        del momentum
        if nesterov or accumulator_dtype is not None:
            raise TypeError("the SGLD face takes learning_rate and momentum only")
        return lps.sgld(learning_rate, num_data=SGLD_NUM_DATA, precision=precision, key=key)

    return sgd


def _substitute_optax(make, precision) -> bool:
    import optax
    import optax._src.alias as alias

    face = _counted(make(precision))
    alias.sgd = optax.sgd = face
    return optax._src.alias.sgd is face


_SUBSTITUTE = {"blackjax": _substitute_blackjax,
               "optax-sgd": functools.partial(_substitute_optax, sgd_face),
               "optax-sgld": functools.partial(_substitute_optax, sgld_face)}


def _params_repr(item) -> str:
    """The parameters of an absl-parameterized test (``''`` for a plain test)."""
    reprs = getattr(getattr(item, "cls", None), "_test_params_reprs", None) or {}
    return reprs.get(item.name, "")


def _wanted(face: str, item) -> bool:
    params = _params_repr(item)
    sgd = re.search(r"opt_name='sgd(_mom)?'", params) is not None
    if face == "optax-sgld":  # the optimization problems, real parameters
        return item.name.startswith("test_optimization") and sgd and "complex" not in params
    return sgd or "opt_name=" not in params


def pytest_collection_modifyitems(config, items):
    """optax: of the tests parameterized over optimizers, keep the ``sgd`` ones only."""
    if not config._lps_face.startswith("optax"):
        return
    keep, drop = [], []
    for item in items:
        (keep if _wanted(config._lps_face, item) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


#: Low-precision modes: optax's optimization problems are solved to optax's tolerance plus
#: this many grid gaps Δ of the weight format at the optimum (|θ*| = 1: fixed16 Δ = 2^-12,
#: bfp8 Δ = 2^-6). The weights the model runs on are grid points: the nearest is up to Δ/2
#: from θ*, stochastic rounding puts the iterate on either neighbour (Δ), and in SGDLP-F the
#: gradient is taken at Q_W(θ), whose rounding error (≤ Δ per coordinate) is amplified by
#: Rosenbrock's curvature ratio (1001.6/0.4) into a spread along its valley of a few Δ.
GRID_GAPS = 4


def _widened(assert_close, weight_format, record):
    """optax's ``assert_trees_all_close`` with ``atol`` raised by GRID_GAPS·Δ(θ*)."""
    from lpsampling.formats import grid_gap

    def assert_trees_all_close(actual, desired, rtol=1e-6, atol=0.0, err_msg=None):
        import jax
        import jax.numpy as jnp

        gap = max(float(jnp.max(grid_gap(jnp.asarray(d), weight_format)))
                  for d in jax.tree.leaves(desired))
        record["atol"] = atol + GRID_GAPS * gap
        record["rtol"] = rtol
        return assert_close(actual, desired, rtol=rtol, atol=record["atol"], err_msg=err_msg)

    return assert_trees_all_close


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    before = _CALLS["now"]
    record: dict = {}
    config = item.config
    widen = (config._lps_face.startswith("optax") and item.name.startswith("test_optimization")
             and config._lps_precision.weight_format != _format(None))
    if widen:
        import optax._src.test_utils as test_utils

        original = test_utils.assert_trees_all_close
        test_utils.assert_trees_all_close = _widened(
            original, config._lps_precision.weight_format, record)
    try:
        return (yield)
    finally:
        if widen:
            test_utils.assert_trees_all_close = original
        if record:
            config._lps_tests.setdefault(
                f"{item.cls.__name__}::{item.name}", {"subfailed": []})["tolerance"] = record
        name = f"{item.cls.__name__}::{item.name}" if item.cls else item.name
        item.config._lps_tests.setdefault(name, {"subfailed": []}).update(
            calls=_CALLS["now"] - before, params=_params_repr(item))


def pytest_runtest_logreport(report):
    """Failed subtests (``self.subTest(msg)``), by message: a not-applicable entry may
    excuse some subtests of a test only."""
    context = getattr(report, "context", None)
    if context is not None and report.failed and report.when == "call":
        name = "::".join(report.nodeid.split("::")[-2:])
        _SUBFAILED.setdefault(name, []).append(str(getattr(context, "msg", "")))


def _write_stamp(config) -> None:
    stamp = os.environ.get("LPS_CONFORMANCE_STAMP")
    if stamp:
        tests = {name: {**info, "subfailed": _SUBFAILED.get(name, [])}
                 for name, info in config._lps_tests.items()}
        Path(stamp).write_text(json.dumps({**config._lps_stamp, "tests": tests}))


def pytest_configure(config):
    mode = os.environ.get("LPS_CONFORMANCE_MODE", "FULL")
    face = os.environ.get("LPS_CONFORMANCE_FACE", "blackjax")
    if mode not in MODES:
        raise pytest.UsageError(f"LPS_CONFORMANCE_MODE={mode!r}: one of {sorted(MODES)}")
    if face not in FACES:
        raise pytest.UsageError(f"LPS_CONFORMANCE_FACE={face!r}: one of {sorted(FACES)}")
    import lpsampling

    where = Path(lpsampling.__file__).resolve()
    root = os.environ.get("LPS_CONFORMANCE_ROOT")
    if root and Path(root).resolve() not in where.parents:
        raise pytest.UsageError(f"lpsampling imported from {where}, not from {root}")
    precision = precision_of(mode)
    config._lps_face, config._lps_tests, config._lps_precision = face, {}, precision
    config._lps_stamp = {"mode": mode, "face": face, "precision": repr(precision),
                         "lpsampling": str(where),
                         "substituted": _SUBSTITUTE[face](precision)}
    _write_stamp(config)
    config._lps_header = (f"lpsampling face {face} substituted: mode={mode}, {precision}, "
                          f"lpsampling from {where}")


def pytest_sessionfinish(session):
    if hasattr(session.config, "_lps_stamp"):
        _write_stamp(session.config)


def pytest_report_header(config):
    return getattr(config, "_lps_header", None)
