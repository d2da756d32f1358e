"""Fault injection into runs and the command line (issue 10): diverging runs fail with
strict JSON, output paths are checked before training, bad inputs give one-line errors,
SIGINT during a checkpoint save leaves no traceback and no temporary directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lpsampling.experiments import RunConfig, cli, evaluation, train
from lpsampling.experiments.checkpoint import Checkpointer

TINY = ["--model", "logreg", "--train-subset", "128", "--test-subset", "64",
        "--batch-size", "32", "--epochs", "2", "--samples", "2", "--no-progress"]
ROOT = Path(__file__).resolve().parents[2]


def _strict(text):
    def bad(c):
        raise ValueError(f"non-strict JSON constant {c}")
    return json.loads(text, parse_constant=bad)


def test_diverging_run_fails_with_strict_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = cli.main(["run", *TINY, "--lr", "1e30", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 3 and "the run failed" in err and "Traceback" not in err
    rec = _strict(out.read_text())
    assert rec["complete"] is False and "non-finite" in rec["failed"]
    assert rec["nonfinite_count"] > 0 and rec["nonfinite_fraction"] > 0.01
    for name in rec["nonfinite_metrics"]:
        assert rec["metrics"][name] is None


def test_compare_with_a_failed_run_exits_nonzero(tmp_path, capsys):
    rc = cli.main(["compare", "--dataset", "digits", "--model", "logreg", "--epochs", "1",
                   "--formats", "fp32", "--methods", "sgd", "--seeds", "1", "--lr", "1e30",
                   "--no-progress", "--out-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 3 and "FAILED" in err and "1 of 1 runs failed" in err


def test_nonfinite_numbers_written_as_null(tmp_path):
    from lpsampling.atomic import write_json_atomic

    write_json_atomic(tmp_path / "x.json", {"nll": float("nan"), "h": [float("inf"), 1.0]})
    assert _strict((tmp_path / "x.json").read_text()) == {"nll": None, "h": [None, 1.0]}


def test_good_run_records_zero_nonfinite(tmp_path):
    out = tmp_path / "r.json"
    assert cli.main(["run", *TINY, "--out", str(out)]) == 0
    rec = _strict(out.read_text())
    assert rec["complete"] is True and rec["failed"] is None
    assert rec["nonfinite_count"] == 0 and rec["nonfinite_metrics"] == []


def _no_training(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("training started")
    monkeypatch.setattr(evaluation, "run_experiment", boom)
    monkeypatch.setattr("lpsampling.experiments.grid.run_experiment", boom)


@pytest.mark.parametrize("case", ["under_file", "is_dir", "ckpt_under_file",
                                  "outdir_under_file"])
def test_unwritable_output_refused_before_training(case, tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch)
    f = tmp_path / "file"
    f.write_text("x")
    argv = {"under_file": ["run", *TINY, "--out", str(f / "r.json")],
            "is_dir": ["run", *TINY, "--out", str(tmp_path)],
            "ckpt_under_file": ["run", *TINY, "--out", str(tmp_path / "r.json"),
                                "--checkpoint-dir", str(f / "ck")],
            "outdir_under_file": ["compare", *TINY, "--out-dir", str(f / "d")]}[case]
    t0 = time.perf_counter()
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "error:" in err
    assert time.perf_counter() - t0 < 5  # nothing was trained


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_read_only_out_dir_refused(tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch)
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    assert cli.main(["run", *TINY, "--out", str(d / "r.json")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_oserror_is_one_line(tmp_path, monkeypatch, capsys):
    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "r.json"))
    monkeypatch.setattr(evaluation, "write_json_atomic", full)
    assert cli.main(["run", *TINY, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lpsampling run: error:") and "No space left" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["run", "--seed", "99999999999999999999"], ["run", "--seed", "-1"],
    ["demo", "--seed", "99999999999999999999"], ["gaussian", "--seed", "1e3"],
    ["demo", "--shape=-1,3"], ["demo", "--shape", "100000,100000"],
    ["demo", "--shape", "0,3"], ["demo", "--shape", "a,b"], ["demo", "--shape", ""],
])
def test_bad_inputs_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_compare_seed_range(tmp_path, capsys):
    rc = cli.main(["compare", *TINY, "--seed", str(2**62), "--seeds", "2",
                   "--out-dir", str(tmp_path / "c")])
    assert rc == 2 and "2**62" in capsys.readouterr().err


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_python_m_uses_this_tree_and_refuses_huge_seed():
    proc = subprocess.run([sys.executable, "-c", "import lpsampling; print(lpsampling.__file__)"],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert proc.stdout.strip().startswith(str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "lpsampling", "run", "--seed",
                           "99999999999999999999"], capture_output=True, text=True,
                          env=_env(), cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "out of range" in proc.stderr
    assert "Traceback" not in proc.stderr


def _sigint_in_save(monkeypatch):
    orig = Checkpointer._save

    def save(self, step, flat, meta):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while orbax writes the step
        return orig(self, step, flat, meta)
    monkeypatch.setattr(Checkpointer, "_save", save)


def test_sigint_during_save_completes_the_step(tmp_path, digits, tiny, monkeypatch):
    ck = tmp_path / "ck"
    cfg = RunConfig(model="logreg", checkpoint_dir=str(ck), checkpoint_every=2, **tiny)
    _sigint_in_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, dataset=digits, progress=False)
    assert sorted(p.name for p in ck.iterdir()) == ["2"]  # complete, no tmp directory
    monkeypatch.undo()
    out = train(cfg, dataset=digits, resume=True, progress=False)
    assert out.resumed_from == 2 and out.complete


def test_sigint_during_save_cli_subprocess(tmp_path):
    ck = tmp_path / "ck"
    script = (
        "import os, signal, sys\n"
        "from lpsampling.experiments import cli\n"
        "from lpsampling.experiments.checkpoint import Checkpointer\n"
        "orig = Checkpointer._save\n"
        "def save(self, *a):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return orig(self, *a)\n"
        "Checkpointer._save = save\n"
        f"sys.exit(cli.main(['run', *{TINY!r}, '--out', {str(tmp_path / 'r.json')!r}, "
        f"'--checkpoint-dir', {str(ck)!r}, '--checkpoint-every', '2']))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=_env(), cwd=ROOT, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "interrupted" in proc.stderr
    assert sorted(p.name for p in ck.iterdir()) == ["2"]
