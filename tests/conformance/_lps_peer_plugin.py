"""pytest plugin for a peer's own test suite: swaps lpsampling's faces in for the peer's.

Loaded with ``-p _lps_peer_plugin`` by the conformance runner (``test_conformance.py``) in a
subprocess that runs the peer's tests; never loaded by lpsampling's own test run (the name is
not ``conftest.py``, and nothing happens at import). ``LPS_CONFORMANCE_MODE`` picks the
precision (a key of :data:`MODES`); ``LPS_CONFORMANCE_ROOT``, when set, is the checkout that
``lpsampling`` must be imported from.

blackjax: ``blackjax.sgld`` and the module ``blackjax.sgmcmc.sgld`` (``init``,
``build_kernel``, ``as_top_level_api``: its whole ``__all__``) become
``lpsampling.blackjax.sgmcmc.sgld``'s, with the mode's precision bound.
"""

from __future__ import annotations

import functools
import json
import os
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


def _substitute_blackjax(precision) -> bool:
    import blackjax
    import blackjax.sgmcmc.sgld as peer

    from lpsampling.blackjax.sgmcmc import sgld as ours

    missing = sorted(set(peer.__all__) - set(ours.__all__))
    if missing:
        raise pytest.UsageError(f"lpsampling.blackjax.sgmcmc.sgld lacks {missing}")
    peer.init = ours.init
    peer.build_kernel = functools.partial(ours.build_kernel, precision)
    peer.as_top_level_api = functools.partial(ours.as_top_level_api, precision=precision)
    blackjax.sgld = blackjax.generate_top_level_api_from(peer)
    import blackjax.sgmcmc.sgld as check

    return (check.build_kernel.func is ours.build_kernel and check.init is ours.init
            and blackjax.sgld.build_kernel.func is ours.build_kernel)


def pytest_configure(config):
    mode = os.environ.get("LPS_CONFORMANCE_MODE", "FULL")
    if mode not in MODES:
        raise pytest.UsageError(f"LPS_CONFORMANCE_MODE={mode!r}: one of {sorted(MODES)}")
    import lpsampling

    where = Path(lpsampling.__file__).resolve()
    root = os.environ.get("LPS_CONFORMANCE_ROOT")
    if root and Path(root).resolve() not in where.parents:
        raise pytest.UsageError(f"lpsampling imported from {where}, not from {root}")
    precision = precision_of(mode)
    substituted = _substitute_blackjax(precision)
    stamp = os.environ.get("LPS_CONFORMANCE_STAMP")
    if stamp:
        Path(stamp).write_text(json.dumps({"mode": mode, "precision": repr(precision),
                                           "lpsampling": str(where),
                                           "substituted": substituted}))
    config._lps_header = (f"lpsampling face substituted: mode={mode}, {precision}, "
                          f"lpsampling from {where}")


def pytest_report_header(config):
    return getattr(config, "_lps_header", None)
