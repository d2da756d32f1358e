"""Conformance: the peers' own test suites, run against lpsampling's faces in every mode.

For each suite of :data:`SUITES` (blackjax's SGLD and SGHMC tests; optax's optimizer-alias
tests with ``lps.sgd`` as ``optax.sgd``; optax's optimization problems with ``lps.sgld``),
the source distribution of the *installed* peer is fetched with
``pip download --no-deps --no-binary :all: <peer>==<version>`` into a cache directory
(``LPS_CONFORMANCE_CACHE``, default ``~/.cache/lpsampling-conformance``; reused when
present), its tests are extracted into a temporary directory, and the tests that exercise
the substituted API are run there by ``python -m pytest`` in a subprocess, one per suite and
precision mode (at most two at a time), with the plugin ``_lps_peer_plugin`` swapping
lpsampling's face in. Every test must pass and must have called lpsampling's face, except
those that :data:`NOT_APPLICABLE` excuses (run and reported, with the reason). Offline, a
suite skips and names the command.

Not collected by ``python -m pytest -q`` (``tests/conftest.py``): it is its own CI step,
``python -m pytest tests/conformance -q``. ``LPS_CONFORMANCE_WRITE=1`` writes the table to
``benchmarks/RESULTS_conformance.md``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from _lps_peer_plugin import CARRY_MODES, MODES, precision_of  # noqa: E402

CACHE = Path(os.environ.get("LPS_CONFORMANCE_CACHE",
                            Path.home() / ".cache" / "lpsampling-conformance"))
PARALLEL = 2
TIMEOUT_S = 600


#: The modes every suite runs: all of MODES but the carry ones, which only the suites
#: that name them in ``Suite.modes`` run (a mode costs a subprocess and its compilations).
BASE_MODES = tuple(m for m in MODES if m not in CARRY_MODES)


@dataclasses.dataclass(frozen=True)
class Suite:
    """Part of a peer's own test suite, run with one of lpsampling's faces swapped in."""

    peer: str  #: the distribution whose sdist holds the tests
    face: str  #: what ``_lps_peer_plugin`` substitutes (``LPS_CONFORMANCE_FACE``)
    tests: tuple[str, ...]  #: pytest node ids inside the extracted sdist
    note: str  #: how the tests were chosen, for the report
    modes: tuple[str, ...] = BASE_MODES  #: the precision modes it runs in (keys of MODES)


SUITES = {
    "blackjax": Suite("blackjax", "blackjax", (
        "tests/sgmcmc/test_kernels.py::SGLDKernelTest",
        "tests/mcmc/test_sampling.py::SGMCMCTest::test_linear_regression_sgld",
        "tests/mcmc/test_sampling.py::SGMCMCTest::test_linear_regression_sgld_cv",
        "tests/sgmcmc/test_kernels.py::SGHMCKernelTest",
        "tests/sgmcmc/test_diffusions.py::SGHMCDiffusionTest",
        "tests/mcmc/test_sampling.py::SGMCMCTest::test_linear_regression_sghmc",
        "tests/mcmc/test_sampling.py::SGMCMCTest::test_linear_regression_sghmc_cv",
    ), "blackjax's own SGLD and SGHMC tests (1.7.1 has no cyclical SGLD: its `csgld` is "
       "Contour SGLD, another algorithm)"),
    "optax": Suite("optax", "optax-sgd", (
        "optax/_src/alias_test.py::AliasTest",
        "optax/tree_utils/_state_utils_test.py::StateUtilsTest::test_tree_get",
        "optax/tree_utils/_state_utils_test.py::StateUtilsTest::test_tree_get_all_with_path",
    ), "optax's tests of an optimizer alias, with `optax.sgd` as the alias: the common "
       "`AliasTest` tests parameterized over optimizers (only their `sgd` cases are "
       "collected) and the `inject_hyperparams(optax.sgd)` tests of `optax.tree`"),
    "optax-sgld": Suite("optax", "optax-sgld", (
        "optax/_src/alias_test.py::AliasTest",
    ), "optax's optimization problems (parabola, Rosenbrock; real `sgd` cases of "
       "`AliasTest::test_optimization`) solved by `lps.sgld` with N = 10⁶, optax's "
       "tolerance; also in the `carry=True` block-format modes",
        modes=BASE_MODES + CARRY_MODES),
}

@dataclasses.dataclass(frozen=True)
class NotApplicable:
    """Tests that cannot hold for lpsampling's face, and why. They still run and their
    outcome is reported; they just do not fail the run. Keep the list short and justified."""

    suite: str
    test: str  #: regex, searched in ``Class::test (absl parameters)``
    reason: str
    modes: tuple[str, ...] = ()  #: empty: every mode
    subtests: tuple[str, ...] = ()  #: when set, only these failing subtests are excused

    def excuses(self, key: str, mode: str, test: str, stamp: dict | None) -> bool:
        if key != self.suite or (self.modes and mode not in self.modes):
            return False
        if not re.search(self.test, _describe(test, stamp)):
            return False
        if not self.subtests:
            return True
        failed = ((stamp or {}).get("tests", {}).get(test) or {}).get("subfailed", [])
        return bool(failed) and set(failed) <= set(self.subtests)


L_MODES = ("naive L fixed16", "VC L fixed16", "naive L bfp8", "VC L bfp8")

NOT_APPLICABLE = [
    NotApplicable(
        "blackjax", r"SGHMCDiffusionTest::test_position_update_uses_momentum", modes=L_MODES,
        reason="asserts θ + ε·p to 1e-6 for θ = 0, ε·p = 1e-3; SGHMCLP-L keeps θ on the "
        "weight grid, so θ is 1e-3 stochastically rounded (fixed16 Δ = 2^-12, bfp8 "
        "Δ = 2^-16 here): an exact-value assertion a grid cannot meet"),
    NotApplicable(
        "blackjax", r"SGHMCDiffusionTest::test_momentum_friction_reduces_magnitude",
        modes=("naive L bfp8", "VC L bfp8"),
        reason="asserts a strict decrease of |p| = 14.14 after 200 friction steps at "
        "temperature 0, an expected decrease of 2.8e-2 in all; on the 8-bit block grid of "
        "p (Δ = 0.125 at |p| = 10) stochastic rounding leaves p unchanged with "
        "probability ≈ 0.7 (unbiased, but a sure decrease needs Δ below the decrease)"),
    NotApplicable(
        "optax", r"test_explicit_dtype\d+ .*opt_name='sgd_mom'",
        "tests `optax.sgd`'s `accumulator_dtype` option and its state field `trace`: "
        "`lps.sgd` has no `accumulator_dtype` (a TypeError) and keeps its momentum in "
        "`state.momentum`, in float32 or wider (on `grad_format` in L modes), by design: "
        "the low-precision recipe accumulates in full precision"),
    NotApplicable(
        "optax", r"complex",
        "complex parameters: lpsampling's number formats and samplers are real, so "
        "`lps.sgd` refuses complex params with an ArgumentTypeError that names them "
        "(optax itself skips complex for 12 of its 33 optimizer configurations)"),
    NotApplicable(
        "optax", r"StateUtilsTest::test_tree_get$",
        "its subtest 'Test jitted tree_get' calls `update(grads, state)` without params; "
        "`lps.sgd`'s update is Q(θ − η·g) − θ on the grid and needs θ (a ValueError "
        "that says so); the test's other subtests must pass",
        subtests=("Test jitted tree_get",)),
    NotApplicable(
        "optax-sgld", r"test_optimization\d+ .*_setup_rosenbrock",
        modes=("naive L bfp8", "VC L bfp8"),
        reason="the block top of the default (QPyTorch's saturating) format: on a "
        "whole-tensor 8-bit block the largest code is 127·2^(e−6), one gap below 2^(e+1), "
        "and stochastic rounding saturates a value in that last gap onto it (naive "
        "SGLDLP-L rounds μ + noise so; VC at v ≤ Δ²/4 saturates μ likewise); Rosenbrock's "
        "x creeps up its valley in steps below one gap, so it cannot raise the block's "
        "exponent: naive L stops at x = 127·2^-9 = 0.248 (y ≈ 0.06), VC L at "
        "x = 127·2^-8 = 0.496 (y = 0.246: VC's ±Δ noise step, probability v/(2Δ²) ≈ 3e-4 "
        "per step at the top code, carried it past 0.248 after 2735 steps; past 0.496 "
        "it comes too late for the 10⁴ steps, with the face's key). "
        "With `BlockFloatingPoint(8, axis=None, carry=True)` (modes 'naive L bfp8 carry' "
        "and 'VC L bfp8 carry': stochastic rounding carries into the next exponent, mean "
        "exact) both reach (1, 1) and pass"),
]


def _excused(key: str, mode: str, test: str, stamp: dict | None) -> NotApplicable | None:
    return next((na for na in NOT_APPLICABLE if na.excuses(key, mode, test, stamp)), None)


def _download(peer: str, version: str) -> Path | str:
    """The cached sdist of ``peer==version``, downloaded on first use; offline, the reason."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for path in CACHE.glob(f"{peer}-{version}.tar.gz"):
        return path
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"{peer}=={version}", "-d", str(CACHE)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        done = None
    found = list(CACHE.glob(f"{peer}-{version}.tar.gz"))
    if done is None or done.returncode or not found:
        tail = "" if done is None else (done.stderr or done.stdout).strip()[-300:]
        return (f"conformance: cannot fetch the {peer} {version} source distribution "
                f"(offline?); `{' '.join(command[2:])}` failed: {tail or 'timed out'}")
    return found[0]


def _extract(sdist: Path, dest: Path) -> Path:
    """The sdist's tests (``tests/``, or the ``*_test.py`` modules inside the package, as
    optax ships them) and its ``pytest.ini``; not the package: the installed one runs."""
    with tarfile.open(sdist) as tar:
        top = tar.getmembers()[0].name.split("/")[0]
        wanted = [m for m in tar.getmembers() if m.isfile() and (
            m.name.startswith(f"{top}/tests/") or m.name == f"{top}/pytest.ini"
            or m.name.endswith("_test.py"))]
        for member in wanted:
            member.name = member.name[len(top) + 1:]
        tar.extractall(dest, members=wanted, filter="data")
    ini = dest / "pytest.ini"
    if not ini.exists():  # keep pytest from looking for a configuration above ``dest``
        ini.write_text("[pytest]\n")
    return dest


def _run_mode(suite: Suite, tree: Path, mode: str, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    xml, stamp = out / "junit.xml", out / "stamp.json"
    env = {**os.environ, "LPS_CONFORMANCE_MODE": mode, "LPS_CONFORMANCE_FACE": suite.face,
           "LPS_CONFORMANCE_ROOT": str(ROOT), "LPS_CONFORMANCE_STAMP": str(stamp),
           "PYTHONPATH": os.pathsep.join(
               [str(HERE), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "_lps_peer_plugin",
               "-p", "no:cacheprovider", "-c", str(tree / "pytest.ini"),
               "--rootdir", str(tree), "-o", "addopts=", f"--junitxml={xml}",
               *suite.tests]
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    result = {"mode": mode, "returncode": done.returncode,
              "log": (done.stdout + done.stderr)[-4000:], "tests": {}, "messages": {}}
    result["stamp"] = json.loads(stamp.read_text()) if stamp.exists() else None
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome = {"failure": "failed", "error": "error",
                               "skipped": "skipped"}[child.tag]
                    result["messages"][name] = (child.get("message") or "")[:300]
            result["tests"][name] = outcome
    return result


def _describe(name: str, stamp: dict | None) -> str:
    """``Class::test`` with its absl parameters, shortened (``<function f at ..>`` -> f)."""
    params = ((stamp or {}).get("tests", {}).get(name) or {}).get("params", "")
    params = re.sub(r"<function (\w+) at 0x[0-9a-f]+>", r"\1", params)
    params = re.sub(r"<class '(?:jax\.numpy\.)?(\w+)'>", r"\1", params)
    return f"{name}{' ' + params if params else ''}"


def _counts(key: str, mode: str, result: dict) -> tuple[int, int, list[str]]:
    tests, stamp = result["tests"], result["stamp"]
    na = [t for t in tests if tests[t] != "passed" and _excused(key, mode, t, stamp)]
    passed = sum(tests[t] == "passed" for t in tests)
    return passed, len(tests) - len(na) - passed, na


def _table(key: str, version: str, results: dict) -> list[str]:
    rows = []
    for mode, result in results.items():
        passed, failed, na = _counts(key, mode, result)
        rows.append(f"| {SUITES[key].peer} | {version} | `{SUITES[key].face}` | {mode} "
                    f"| `{precision_of(mode)}` | {passed} | {failed} | {len(na)} |")
    return rows


def _machine_line() -> str:
    sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))
    from _machine import machine_line

    return machine_line()


def _write_report(done: dict, elapsed: float) -> None:
    lines = [
        "# Conformance: the peers' own tests against lpsampling",
        "",
        "Written by `LPS_CONFORMANCE_WRITE=1 python -m pytest tests/conformance -q`: each "
        "peer's own tests (from its source distribution, the installed version) run with "
        "lpsampling's face substituted (`tests/conformance/_lps_peer_plugin.py`).",
        "",
        f"{_machine_line()}; {time.strftime('%Y-%m-%d', time.gmtime())}; {elapsed:.0f} s wall "
        "for all suites (two subprocesses at a time; the machine was shared with other "
        "jobs, so the time is an upper bound).",
        "",
    ]
    for key, (version, _) in done.items():
        suite = SUITES[key]
        lines.append(f"- {suite.peer} {version}, face `{suite.face}`: {suite.note}: "
                     + ", ".join(f"`{t}`" for t in suite.tests) + ".")
    lines += ["", "| peer | version | face | mode | precision | passed | failed "
              "| not applicable |", "|---|---|---|---|---|---|---|---|"]
    for key, (version, results) in done.items():
        lines += _table(key, version, results)
    lines += ["", "Not applicable (run, not counted; each rule, then the tests it excused "
              "in every mode where it did):", ""]
    for rule in NOT_APPLICABLE:
        hits: dict[str, list[str]] = {}
        for key, (_, results) in done.items():
            for mode, result in results.items():
                for test in _counts(key, mode, result)[2]:
                    if _excused(key, mode, test, result["stamp"]) is rule:
                        hits.setdefault(_describe(test, result["stamp"]), []).append(mode)
        lines.append(f"- {rule.suite}, `{rule.test}`"
                     f"{' (subtests ' + ', '.join(rule.subtests) + ')' if rule.subtests else ''}"
                     f": {rule.reason}. Excused {sum(map(len, hits.values()))} runs of "
                     f"{len(hits)} tests:")
        for test, modes in hits.items():
            suite_modes = SUITES[rule.suite].modes
            where = "every mode" if len(modes) == len(suite_modes) else ", ".join(modes)
            lines.append(f"  - `{test}` ({where})")
    (ROOT / "benchmarks" / "RESULTS_conformance.md").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def conformance(tmp_path_factory):
    """suite -> (version, {mode: result}), or the reason it was skipped."""
    jobs, done, start = {}, {}, time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        for key, suite in SUITES.items():
            version = importlib.metadata.version(suite.peer)
            sdist = _download(suite.peer, version)
            if isinstance(sdist, str):
                done[key] = sdist
                continue
            tree = _extract(sdist, tmp_path_factory.mktemp(f"{key}-suite"))
            work = tmp_path_factory.mktemp(f"{key}-runs")
            jobs[key] = version, {mode: pool.submit(_run_mode, suite, tree, mode,
                                                    work / f"m{i}")
                                  for i, mode in enumerate(suite.modes)}
        for key, (version, futures) in jobs.items():
            done[key] = version, {mode: f.result() for mode, f in futures.items()}
    ran = {k: v for k, v in done.items() if not isinstance(v, str)}
    if os.environ.get("LPS_CONFORMANCE_WRITE") and len(ran) == len(SUITES):
        _write_report(ran, time.monotonic() - start)
    for key, (version, results) in ran.items():
        print("\n" + "\n".join(_table(key, version, results)))
    return done


@pytest.mark.timeout(6 * TIMEOUT_S)  # the first test pays for the shared fixture (all suites)
@pytest.mark.parametrize("key,mode", [(key, mode) for key, suite in SUITES.items()
                                      for mode in suite.modes])
def test_peer_own_tests_pass(conformance, key, mode):
    if isinstance(conformance[key], str):
        pytest.skip(conformance[key])
    result = conformance[key][1][mode]
    stamp = result["stamp"]
    assert stamp is not None, f"the plugin did not run:\n{result['log']}"
    assert stamp["mode"] == mode and stamp["face"] == SUITES[key].face, stamp
    assert Path(stamp["lpsampling"]).is_relative_to(ROOT), stamp
    assert stamp["substituted"], stamp
    tests = result["tests"]
    assert tests and result["returncode"] in (0, 1), result["log"]
    failed = {t: outcome for t, outcome in tests.items()
              if outcome != "passed" and not _excused(key, mode, t, stamp)}
    assert not failed, (failed, result["messages"], result["log"])
    # A test passes for lpsampling only if it built lpsampling's face at least once.
    idle = [t for t, outcome in tests.items() if outcome == "passed"
            and not stamp["tests"].get(t, {}).get("calls")]
    assert not idle, f"passed without calling lpsampling's face: {idle}"
