"""Conformance: the peers' own test suites, run against lpsampling's faces in every mode.

For each peer (blackjax), the source distribution of the *installed* version is fetched with
``pip download --no-deps --no-binary :all: <peer>==<version>`` into a cache directory
(``LPS_CONFORMANCE_CACHE``, default ``~/.cache/lpsampling-conformance``; reused when
present), its ``tests/`` are extracted into a temporary directory, and the tests that
exercise the substituted API are run there by ``python -m pytest`` in a subprocess, one per
precision mode (at most two at a time), with the plugin ``_lps_peer_plugin`` swapping
lpsampling's face in. Every test must pass, except those listed in :data:`NOT_APPLICABLE`
(run and reported, with the reason). Offline, the tests skip and name the command.

``LPS_CONFORMANCE_WRITE=1`` writes the table to ``benchmarks/RESULTS_conformance.md``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from _lps_peer_plugin import MODES, precision_of  # noqa: E402

CACHE = Path(os.environ.get("LPS_CONFORMANCE_CACHE",
                            Path.home() / ".cache" / "lpsampling-conformance"))
PARALLEL = 2
TIMEOUT_S = 600

#: peer -> the peer's own tests that exercise the substituted API (pytest node ids).
PEER_TESTS = {
    "blackjax": [
        "tests/sgmcmc/test_kernels.py::SGLDKernelTest",
        "tests/mcmc/test_sampling.py::SGMCMCTest::test_linear_regression_sgld",
        "tests/mcmc/test_sampling.py::SGMCMCTest::test_linear_regression_sgld_cv",
    ],
}

#: (peer, mode, "Class::test") -> why the test cannot hold in that mode. The test still runs
#: and its outcome is reported; it just does not fail the run. Keep this short and justified.
NOT_APPLICABLE: dict[tuple[str, str, str], str] = {}


def _download(peer: str, version: str) -> Path:
    """The cached sdist of ``peer==version``, downloaded on first use (skip when offline)."""
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
        pytest.skip(f"conformance: cannot fetch the {peer} {version} source distribution "
                    f"(offline?); `{' '.join(command[2:])}` failed: {tail or 'timed out'}")
    return found[0]


def _extract(sdist: Path, dest: Path) -> Path:
    """The sdist's ``tests/`` and ``pytest.ini`` (not the package: the installed one runs)."""
    with tarfile.open(sdist) as tar:
        top = tar.getmembers()[0].name.split("/")[0]
        wanted = [m for m in tar.getmembers()
                  if m.name.startswith(f"{top}/tests/") or m.name == f"{top}/pytest.ini"]
        for member in wanted:
            member.name = member.name[len(top) + 1:]
        tar.extractall(dest, members=wanted, filter="data")
    return dest


def _run_mode(peer: str, suite: Path, mode: str, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    xml, stamp = out / "junit.xml", out / "stamp.json"
    env = {**os.environ, "LPS_CONFORMANCE_MODE": mode, "LPS_CONFORMANCE_ROOT": str(ROOT),
           "LPS_CONFORMANCE_STAMP": str(stamp),
           "PYTHONPATH": os.pathsep.join(
               [str(HERE), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "_lps_peer_plugin",
               "-p", "no:cacheprovider", "-c", str(suite / "pytest.ini"),
               "--rootdir", str(suite), "-o", "addopts=", f"--junitxml={xml}",
               *PEER_TESTS[peer]]
    done = subprocess.run(command, cwd=suite, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    result = {"mode": mode, "returncode": done.returncode,
              "log": (done.stdout + done.stderr)[-4000:], "tests": {}}
    result["stamp"] = json.loads(stamp.read_text()) if stamp.exists() else None
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome = {"failure": "failed", "error": "error",
                               "skipped": "skipped"}[child.tag]
                    result.setdefault("messages", {})[name] = (child.get("message") or "")[:300]
            result["tests"][name] = outcome
    return result


def _table(peer: str, version: str, results: dict) -> list[str]:
    rows = []
    for mode, result in results.items():
        tests = result["tests"]
        na = [t for t in tests if (peer, mode, t) in NOT_APPLICABLE]
        passed = sum(tests[t] == "passed" for t in tests if t not in na)
        failed = sum(tests[t] != "passed" for t in tests if t not in na)
        rows.append(f"| {peer} | {version} | {mode} | `{precision_of(mode)}` | {passed} "
                    f"| {failed} | {len(na)} |")
    return rows


def _write_report(peer: str, version: str, results: dict) -> None:
    lines = [
        "# Conformance: the peers' own tests against lpsampling",
        "",
        "Written by `LPS_CONFORMANCE_WRITE=1 python -m pytest tests/conformance -q`: each "
        "peer's own tests (from its source distribution, the installed version) run with "
        "lpsampling's face substituted (`tests/conformance/_lps_peer_plugin.py`).",
        "",
        f"{peer} tests: " + ", ".join(f"`{t}`" for t in PEER_TESTS[peer]) + ".",
        "",
        "| peer | version | mode | precision | passed | failed | not applicable |",
        "|---|---|---|---|---|---|---|",
        *_table(peer, version, results),
        "",
        "Not applicable: " + ("none." if not NOT_APPLICABLE else ""),
        *[f"- {p} {m} `{t}`: {why}" for (p, m, t), why in NOT_APPLICABLE.items()],
        "",
    ]
    (ROOT / "benchmarks" / "RESULTS_conformance.md").write_text("\n".join(lines))


@pytest.fixture(scope="module")
def blackjax_results(tmp_path_factory):
    peer = "blackjax"
    version = importlib.metadata.version(peer)
    suite = _extract(_download(peer, version), tmp_path_factory.mktemp(f"{peer}-suite"))
    work = tmp_path_factory.mktemp(f"{peer}-runs")
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {mode: pool.submit(_run_mode, peer, suite, mode, work / f"m{i}")
                   for i, mode in enumerate(MODES)}
        results = {mode: future.result() for mode, future in futures.items()}
    if os.environ.get("LPS_CONFORMANCE_WRITE"):
        _write_report(peer, version, results)
    print("\n" + "\n".join(_table(peer, version, results)))
    return results


@pytest.mark.parametrize("mode", list(MODES))
def test_blackjax_own_tests_pass(blackjax_results, mode):
    result = blackjax_results[mode]
    stamp = result["stamp"]
    assert stamp is not None, f"the plugin did not run:\n{result['log']}"
    assert stamp["mode"] == mode and Path(stamp["lpsampling"]).is_relative_to(ROOT), stamp
    assert stamp["substituted"], stamp
    tests = result["tests"]
    assert tests and result["returncode"] in (0, 1), result["log"]
    failed = {t: outcome for t, outcome in tests.items()
              if outcome != "passed" and ("blackjax", mode, t) not in NOT_APPLICABLE}
    assert not failed, (failed, result.get("messages"), result["log"])
