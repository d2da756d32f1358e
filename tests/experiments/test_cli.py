"""End-to-end tests of the command line (in-process, tiny data) and of ``python -m``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lpsampling.experiments import cli

# the tiny setting of tests/experiments/conftest.py (compiled functions are shared)
TINY = ["--train-subset", "128", "--test-subset", "64", "--batch-size", "32",
        "--epochs", "2", "--no-progress"]


def test_run_writes_json(tmp_path, capsys):
    out = tmp_path / "run.json"
    rc = cli.main(["run", "--method", "SGLDLP-L", "--format", "fixed8", *TINY,
                   "--samples", "2", "--out", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["label"] == "naive SGLDLP-L" and rec["complete"] is True
    assert rec["config"]["epochs"] == 2 and rec["config"]["model"] == "mlp"
    assert set(rec["metrics"]) >= {"error", "nll", "ece", "paper_ece"}
    assert rec["metrics"]["num_samples"] == 2
    assert "naive SGLDLP-L" in capsys.readouterr().out


def test_resume_needs_checkpoint_dir(capsys):
    assert cli.main(["run", *TINY, "--resume"]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_run_unknown_names_list_choices(tmp_path, capsys):
    assert cli.main(["run", "--method", "langevin", *TINY]) == 2
    err = capsys.readouterr().err
    assert "valid methods: sgld, sgd, csgld" in err
    assert cli.main(["run", "--format", "int8", *TINY]) == 2
    assert "valid formats: fp32, fixed8, bfp8" in capsys.readouterr().err
    assert cli.main(["run", "--dataset", "mnist", *TINY]) == 2
    assert "valid datasets" in capsys.readouterr().err
    assert cli.main(["run", "--model", "vgg", *TINY]) == 2
    assert "valid models" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_compare_writes_table_verdicts_json_png(tmp_path, capsys):
    rc = cli.main(["compare", "--seeds", "2", *TINY, "--num-cycles", "1", "--samples", "2",
                   "--formats", "bfp8", "--methods", "sgld,sgd,csgld,vc-sgldlp-l",
                   "--out-dir", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert ("| format | method | error % | ECE % (15 bins) | NLL | samples | disagreement % "
            "| seeds | verdict (error / NLL / ECE) |") in out
    # every sampler row is followed by its noise-free control
    labels = ["SGLDFP", "SGLDFP (T=0)", "SGDFP", "cSGLDFP", "cSGLDFP (T=0)", "VC SGLDLP-L",
              "VC SGLDLP-L (T=0)"]
    res = json.loads((tmp_path / "results.json").read_text())
    assert [r["label"] for r in res["summary"]] == labels
    assert [r["control"] for r in res["summary"]] == [False, True, False, False, True,
                                                      False, True]
    assert len(res["runs"]) == 2 * len(labels)
    assert all(r["config"]["temperature"] == 0.0 for r in res["runs"]
               if r["label"].endswith("(T=0)"))
    # the verdict column and the test behind it
    by = {r["label"]: r for r in res["summary"]}
    assert by["SGDFP"]["verdict"] is None and "(reference)" in out
    v = by["SGLDFP"]["verdict"]
    assert v["vs"] == "SGDFP" and v["error"]["test"] == "paired t"
    assert v["nll"]["outcome"] in ("better", "worse", "no detectable difference")
    assert by["VC SGLDLP-L (T=0)"]["verdict"]["vs"] == "VC SGLDLP-L"
    assert by["VC SGLDLP-L"]["verdict"] is None  # no naive / SGDLP-L row in its format
    assert "paired t test over seeds (two-sided, α = 0.05" in out
    assert by["SGLDFP"]["num_samples"] == 2 and by["SGDFP"]["num_samples"] == 1
    # header + 7 rows; the differences behind the 5 verdicts: header + 5 rows
    assert (tmp_path / "table.md").read_text().count("\n| ") == (1 + 7) + (1 + 5)
    for name in ("summary.png", "reliability.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2 * len(labels)


def test_gaussian_writes_png(tmp_path, capsys):
    png, js = tmp_path / "fig1.png", tmp_path / "fig1.json"
    rc = cli.main(["gaussian", "--out", str(png), "--json", str(js), "--chains", "4",
                   "--steps", "400", "--alphas", "1e-2,1e-3"])
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(js.read_text())
    assert len(data["runs"]) == 6
    out = capsys.readouterr().out
    assert "naive SGLDLP-L" in out and "VC SGLDLP-L" in out and "SGLDLP-F" in out


def test_demo(capsys):
    assert cli.main(["demo", "--shape", "4,8"]) == 0
    out = capsys.readouterr().out
    assert "FixedPoint(wl=8, fl=8)" in out and "BlockFloatingPoint" in out
    assert "FULL" in out


def test_python_m_help():
    proc = subprocess.run([sys.executable, "-m", "lpsampling", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for word in ("run", "compare", "gaussian", "demo", "paper-cifar10", "fashion_mnist"):
        assert word in proc.stdout


@pytest.mark.parametrize("argv", [["run", "--help"], ["compare", "--help"]])
def test_subcommand_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert "--preset" in capsys.readouterr().out


def test_run_and_compare_sghmc_methods(tmp_path, capsys):
    out = tmp_path / "run.json"
    rc = cli.main(["run", "--method", "vc-sghmclp-l", "--format", "fixed8", *TINY,
                   "--samples", "1", "--friction", "3", "--inverse-mass", "1.5",
                   "--out", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["label"] == "VC SGHMCLP-L" and rec["complete"] is True
    assert rec["config"]["friction"] == 3.0 and rec["config"]["inverse_mass"] == 1.5
    assert 0.0 <= rec["metrics"]["error"] <= 1.0
    rc = cli.main(["compare", "--seeds", "1", *TINY, "--samples", "1", "--formats", "fixed8",
                   "--methods", "sghmc,sghmclp-l", "--out-dir", str(tmp_path / "c")])
    assert rc == 0
    res = json.loads((tmp_path / "c" / "results.json").read_text())
    # every sampler row is followed by its noise-free control (compare's default)
    assert [r["label"] for r in res["summary"]] == [
        "SGHMCFP", "SGHMCFP (T=0)", "naive SGHMCLP-L", "naive SGHMCLP-L (T=0)"]
    assert cli.main(["run", "--method", "sghmc", "--friction", "0", *TINY]) == 2
    assert "friction" in capsys.readouterr().err


def test_run_compute_int8_matches_the_simulated_run(tmp_path):
    """digits, MLP, VC SGLDLP-L in bfp8: ``--compute int8`` (the classifier multiplies int8
    codes) against the simulated float32 path, same seed. The two differ by float32
    rounding of the products only, which flips some stochastic roundings: at most seed
    noise. Tolerance: Z = 5 binomial standard deviations of the difference of two test
    error rates over n test examples, Z·sqrt(2·p(1-p)/n) + 3/n (the bound of
    helpers.binom_tol for a difference of two independent frequencies)."""
    import numpy as np
    from helpers import Z

    recs = {}
    for compute in ("float32", "int8"):
        out = tmp_path / f"{compute}.json"
        rc = cli.main(["run", "--method", "vc-sgldlp-l", "--format", "bfp8", "--epochs", "6",
                       "--samples", "3", "--compute", compute, "--no-progress",
                       "--out", str(out)])
        assert rc == 0
        recs[compute] = json.loads(out.read_text())
    assert recs["int8"]["compute"] == recs["int8"]["config"]["compute"] == "int8"
    assert recs["float32"]["compute"] == "float32"
    # the int8 run's BMA ran its int8 layers on the bank's codes (lps.flax.bank_predict)
    assert recs["int8"]["metrics"]["bma_from"] == "int8 codes"
    assert recs["float32"]["metrics"]["bma_from"] == "unpacked"
    e32, e8 = (recs[c]["metrics"]["error"] for c in ("float32", "int8"))
    n = recs["int8"]["metrics"]["num_test"]
    p = (e32 + e8) / 2
    assert abs(e8 - e32) <= Z * np.sqrt(2 * p * (1 - p) / n) + 3 / n, (e32, e8, n)
    assert e8 < 0.2  # and the int8 run learned


def test_compute_int8_refused_for_fixed8(tmp_path, capsys):
    rc = cli.main(["run", "--format", "fixed8", "--method", "vc-sgldlp-l", "--compute", "int8",
                   *TINY, "--out", str(tmp_path / "x.json")])
    assert rc == 2
    assert "keeps its activations in float32" in capsys.readouterr().err
    rc = cli.main(["compare", "--compute", "int8", *TINY, "--seeds", "1",
                   "--out-dir", str(tmp_path / "cmp")])
    assert rc == 2  # compare's default format is 4-bit fixed point, float32 activations
    assert "'fixed4-4' keeps its activations in float32" in capsys.readouterr().err
