"""pytest plugin for a peer's own test suite: swaps lpsampling's faces in for the peer's.

Loaded with ``-p _lps_peer_plugin`` by the conformance runner (``test_conformance.py``) in a
subprocess that runs the peer's tests; never loaded by lpsampling's own test run (the name is
not ``conftest.py``, and nothing happens at import). ``LPS_CONFORMANCE_MODE`` picks the
precision (a key of :data:`MODES`); ``LPS_CONFORMANCE_ROOT``, when set, is the checkout that
``lpsampling`` must be imported from.

``LPS_CONFORMANCE_FACE`` picks what is substituted:

- ``blackjax``: ``blackjax.sgld`` and the module ``blackjax.sgmcmc.sgld`` (``init``,
  ``build_kernel``, ``as_top_level_api``: its whole ``__all__``) become
  ``lpsampling.blackjax.sgmcmc.sgld``'s, with the mode's precision bound.
- ``optax-sgd``: ``optax.sgd`` (``optax._src.alias.sgd``) becomes :func:`sgd_face`, i.e.
  ``lps.sgd`` with the mode's precision and a fixed key bound. Of optax's tests
  parameterized over optimizers (``opt_name=...``) only the ``sgd`` ones are collected.

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
# point: 8-bit mantissas, one exponent per leaf, weights and gradients alike.
FIXED_W = ("FixedPoint", 16, 12)
FIXED_G = ("FixedPoint", 16, 2)
BFP8 = ("BlockFloatingPoint", 8)

#: mode -> (weight format, gradient format, accumulator); ``None`` is ``FULL``.
MODES = {
    "FULL": (None, None, "full"),
    "F fixed16": (FIXED_W, FIXED_G, "full"),
    "naive L fixed16": (FIXED_W, FIXED_G, "low"),
    "VC L fixed16": (FIXED_W, FIXED_G, "vc"),
    "F bfp8": (BFP8, BFP8, "full"),
    "naive L bfp8": (BFP8, BFP8, "low"),
    "VC L bfp8": (BFP8, BFP8, "vc"),
}


def _format(spec):
    import lpsampling as lps

    if spec is None:
        return lps.FULL
    if spec[0] == "FixedPoint":
        return lps.FixedPoint(spec[1], spec[2])
    return lps.BlockFloatingPoint(spec[1], axis=None)


def precision_of(mode: str):
    """The :class:`lpsampling.Precision` of a mode."""
    from lpsampling.update import Precision

    weight, grad, accumulator = MODES[mode]
    return Precision(_format(weight), _format(grad), accumulator)


#: face -> the peer it substitutes in (the runner fetches that peer's sdist).
FACES = {"blackjax": "blackjax", "optax-sgd": "optax"}

# Calls of lpsampling's faces during the current test (see _counted / pytest_runtest_call).
_CALLS = {"now": 0}


def _counted(fn):
    """``fn``, counting its calls, so that a test that never reaches lpsampling is caught."""

    @functools.wraps(fn)
    def counted(*args, **kwargs):
        _CALLS["now"] += 1
        return fn(*args, **kwargs)

    return counted


def _substitute_blackjax(precision) -> bool:
    import blackjax
    import blackjax.sgmcmc.sgld as peer

    from lpsampling.blackjax.sgmcmc import sgld as ours

    missing = sorted(set(peer.__all__) - set(ours.__all__))
    if missing:
        raise pytest.UsageError(f"lpsampling.blackjax.sgmcmc.sgld lacks {missing}")
    peer.init = _counted(ours.init)
    peer.build_kernel = functools.partial(_counted(ours.build_kernel), precision)
    peer.as_top_level_api = functools.partial(ours.as_top_level_api, precision=precision)
    blackjax.sgld = blackjax.generate_top_level_api_from(peer)
    import blackjax.sgmcmc.sgld as check

    return (check.build_kernel.func.__wrapped__ is ours.build_kernel
            and check.init.__wrapped__ is ours.init
            and blackjax.sgld.build_kernel.func.__wrapped__ is ours.build_kernel)


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


def _substitute_optax_sgd(precision) -> bool:
    import optax
    import optax._src.alias as alias

    face = _counted(sgd_face(precision))
    alias.sgd = optax.sgd = face
    return optax._src.alias.sgd is face


_SUBSTITUTE = {"blackjax": _substitute_blackjax, "optax-sgd": _substitute_optax_sgd}


def _params_repr(item) -> str:
    """The parameters of an absl-parameterized test (``''`` for a plain test)."""
    reprs = getattr(getattr(item, "cls", None), "_test_params_reprs", None) or {}
    return reprs.get(item.name, "")


def pytest_collection_modifyitems(config, items):
    """optax: of the tests parameterized over optimizers, keep the ``sgd`` ones only."""
    if config._lps_face != "optax-sgd":
        return
    keep, drop = [], []
    for item in items:
        params = _params_repr(item)
        other = "opt_name=" in params and not re.search(r"opt_name='sgd(_mom)?'", params)
        (drop if other else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    before = _CALLS["now"]
    try:
        return (yield)
    finally:
        name = f"{item.cls.__name__}::{item.name}" if item.cls else item.name
        item.config._lps_tests[name] = {"calls": _CALLS["now"] - before,
                                        "params": _params_repr(item)}


def _write_stamp(config) -> None:
    stamp = os.environ.get("LPS_CONFORMANCE_STAMP")
    if stamp:
        Path(stamp).write_text(json.dumps({**config._lps_stamp, "tests": config._lps_tests}))


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
    config._lps_face, config._lps_tests = face, {}
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
