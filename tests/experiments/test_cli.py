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
