"""Smoke tests of the benchmark scripts: each quick mode runs and prints its table.

The scripts are loaded from ``benchmarks/`` and their ``main(argv)`` is called in this
process (the imports are already paid for). Nothing here needs PyTorch: the QPyTorch
comparison runs against its NumPy transcription of QPyTorch's kernels.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    # as when run as `python benchmarks/<name>.py`: the script's directory is importable
    # (the scripts share benchmarks/_machine.py)
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def test_bench_vs_qtorch_quick_numpy_reference(capsys):
    mod = load("bench_vs_qtorch")
    argv = ["--quick", "--backend", "numpy", "--repeats", "1", "--formats", "fixed,f87",
            "--sgld-modes", "full", "--no-nonpartitionable"]
    assert mod.main(argv) == 0
    out = capsys.readouterr().out
    assert "NumPy-QPyTorch ms" in out and "## Summary" in out
    for case in ("FixedPoint(8,3) stochastic", "FloatingPoint(8,7) nearest",
                 "random bits only", "SGLD step SGLDLP-F"):
        assert case in out


def test_numpy_reference_kernels_match_lpsampling_nearest():
    """The NumPy transcription of QPyTorch agrees with lps.quantize away from ties."""
    import jax.numpy as jnp
    import numpy as np

    import lpsampling as lps

    mod = load("bench_vs_qtorch")
    npq = mod.NumpyQ(0)
    x = (np.random.default_rng(3).standard_normal((64, 128)) * 3).astype(np.float32)
    pairs = [
        (npq.fixed_point_quantize(x, 8, 3, "nearest"), lps.FixedPoint(8, 3)),
        (npq.block_quantize(x, 8, 0, "nearest"), lps.BlockFloatingPoint(8, axis=0)),
        (npq.float_quantize(x, 4, 3, "nearest"), lps.FloatingPoint(4, 3)),
    ]
    for ref, fmt in pairs:
        got = np.asarray(lps.quantize(jnp.asarray(x), fmt, rounding="nearest"))
        assert np.mean(got == ref) > 0.999, fmt


def test_reproduce_gaussian_quick(tmp_path, capsys):
    mod = load("reproduce_gaussian")
    fig = tmp_path / "figs" / "gaussian.png"
    assert mod.main(["--quick", "--alphas", "0.01", "--figure", str(fig)]) == 0
    out = capsys.readouterr().out
    assert "| α |" in out and "naive SGLDLP-L" in out and "VC SGLDLP-L" in out
    assert fig.exists() and fig.stat().st_size > 1000
    assert not list(fig.parent.glob("*.tmp*"))  # the atomic write left nothing behind


def test_reproduce_gaussian_sghmc_quick(tmp_path, capsys):
    mod = load("reproduce_gaussian")
    fig = tmp_path / "sghmc.png"
    assert mod.main(["--quick", "--family", "sghmc", "--alphas", "0.03", "--figure",
                     str(fig)]) == 0
    out = capsys.readouterr().out
    assert "naive SGHMCLP-L" in out and "VC SGHMCLP-L" in out and "excess ratio" in out
    assert fig.exists() and fig.stat().st_size > 1000


def test_bench_step_only_sghmc_quick(capsys):
    mod = load("bench_step")
    assert mod.main(["--quick", "--only", "VC SGHMCLP-L|momentum", "--steps", "2",
                     "--repeats", "1", "--no-pin"]) == 0
    out = capsys.readouterr().out
    assert "| lps.sghmc VC SGHMCLP-L | fixed8 |" in out
    assert "vs blackjax.sghmc (L=10)" in out and "lps.sgd momentum 0.9" in out
    assert "| lps.sgld (SGLD) |" not in out


def test_bench_memory_quick(capsys):
    mod = load("bench_memory")
    assert mod.main(["--quick", "--no-rss", "--modes", "fp,lpf"]) == 0
    out = capsys.readouterr().out
    assert "SGLDLP-F (float32 accumulator)" in out and "XLA temp" in out
    assert "sample bank, 4 samples, packed (FixedPoint(wl=8, fl=8))" in out


def test_gpu_resnet_step_quick(capsys):
    mod = load("gpu_resnet_step")
    assert mod.main(["--quick", "--modes", "fp"]) == 0
    out = capsys.readouterr().out
    assert "| FP SGLD |" in out and "ratio to FP SGLD" in out


def test_bench_int8_quick(capsys, tmp_path):
    mod = load("bench_int8")
    out_md = tmp_path / "int8.md"
    assert mod.main(["--quick", "--out", str(out_md)]) == 0
    out = capsys.readouterr().out
    assert "| mlp | bfp8 | forward |" in out and "| mlp | bfp8 | SGLD step |" in out
    assert "BMA over a bank of 3 packed samples" in out
    text = out_md.read_text()
    assert "- machine:" in text and "- command: `python benchmarks/bench_int8.py --quick" in text


def test_bench_nnx_quick(capsys):
    mod = load("bench_nnx")
    assert mod.main(["--steps", "1", "--rounds", "1", "--models", "mlp"]) == 0
    out = capsys.readouterr().out
    assert "| mlp |" in out and "nnx.jit / linen" in out


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not found")
def test_gpu_check_script_parses():
    script = BENCH / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "set -euo pipefail" in text and "timeout" in text and "--cpu-smoke" in text
    assert "bench_int8.py" in text and "T_INT8" in text




def test_reproduce_logreg_quick(tmp_path, capsys):
    mod = load("reproduce_logreg")
    assert mod.main(["--quick", "--wls", "5", "--figure-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| full | — | 0 | SGLD (full precision) |" in out
    for label in ("SGLDLP-F", "naive SGLDLP-L", "VC SGLDLP-L", "SGDLP-L", "max_rhat"):
        assert label in out
    fig = tmp_path / "logreg_fixed_quick.png"
    assert fig.exists() and fig.stat().st_size > 1000


def test_logreg_slope_fit_recovers_a_power_law():
    mod = load("reproduce_logreg")
    d = [2.0 ** -k for k in range(1, 7)]
    v = [0.3 * x**2 for x in d]
    fit = mod.fit_slope(d, v, [0.01 * x for x in v], floor=None)
    assert fit["slope"] == pytest.approx(2.0, abs=1e-6) and fit["n"] == 6
    # points below twice the floor are left out; fewer than 3 left -> no slope
    assert mod.fit_slope(d, v, [0.01 * x for x in v], floor=v[3])["n"] == 3
    assert mod.fit_slope(d, v, [0.01 * x for x in v], floor=v[2])["slope"] is None


def test_reproduce_block_top_quick(capsys):
    mod = load("reproduce_block_top")
    assert mod.main(["--quick"]) == 0
    out = capsys.readouterr().out
    for row in ("| 4 |", "| naive L bfp8 |", "| VC L bfp8 carry |", "extra variance"):
        assert row in out


BITWIDTH_REDUCED = ["--word-lengths", "8", "--families", "fixed", "--no-cnn", "--seeds", "2",
                    "--tstudy-wls", "8", "--tstudy-temps", "0.1", "--train-subset", "512",
                    "--test-subset", "64", "--epochs", "2", "--samples", "2"]


def test_reproduce_bitwidth_two_jobs_on_a_reduced_grid(tmp_path):
    """The sweep's code path end to end on fake Fashion-MNIST files: two worker
    processes share the grid by compiled group, every run writes its record, and the
    report has the tables, the paired contrasts, the temperature study and the figures."""
    from test_data import _fake_fashion

    _fake_fashion(tmp_path / "data", n_train=512, n_test=64)
    mod = load("reproduce_bitwidth")
    out, figs, report = tmp_path / "out", tmp_path / "figs", tmp_path / "R.md"
    argv = [*BITWIDTH_REDUCED, "--data-dir", str(tmp_path / "data"), "--jobs", "2",
            "--out-dir", str(out), "--fig-dir", str(figs), "--write", str(report)]
    assert mod.main(argv) == 0
    # 5 methods + 3 controls + 3 at T = 1 on one format, and 2 methods at T = 0.1
    assert len(list((out / "runs").glob("*.json"))) == 13 * 2
    text = report.read_text()
    assert "13 of 13 configurations" in text and "missing cells" not in text
    assert "| VC SGLDLP-L vs naive SGLDLP-L | 0.001 | nll |" in text
    assert "| VC SGLDLP-L | 8 | 0.00390625 |" in text  # the temperature study's row
    assert sorted(p.name for p in figs.glob("*.png")) == [
        f"bitwidth_mlp_{m}.png" for m in ("ece", "error", "nll")]


def test_reproduce_bitwidth_refuses_bad_input_and_fails_loudly(tmp_path, capsys):
    mod = load("reproduce_bitwidth")
    with pytest.raises(SystemExit) as exc:
        mod.main(["--word-lengths", "7"])
    assert exc.value.code == 2 and "--word-lengths takes a comma-separated subset of " \
        "3,4,5,6,8, got '7'" in capsys.readouterr().err
    from test_data import _fake_fashion

    _fake_fashion(tmp_path / "data", n_train=512, n_test=64)
    # more samples than the sampling window has steps: every worker's first run fails
    argv = [*BITWIDTH_REDUCED[:-1], "500", "--data-dir", str(tmp_path / "data"), "--jobs",
            "2", "--out-dir", str(tmp_path / "out"), "--write", str(tmp_path / "R.md")]
    with pytest.raises(SystemExit, match="worker exit codes .*the sweep is incomplete"):
        mod.main(argv)
    assert not (tmp_path / "R.md").exists()


def test_bench_pool_quick(capsys, tmp_path):
    mod = load("bench_pool")
    out_md = tmp_path / "pool.md"
    # (fp32 only: the BFP8 network compiles for many seconds, twice)
    assert mod.main(["--rounds", "1", "--steps", "1", "--batch", "4", "--nets", "cnn-mini",
                     "--formats", "fp32", "--write", str(out_md)]) == 0
    text = out_md.read_text()
    assert "| cnn-mini | fp32 |" in text and "- command: `python benchmarks/bench_pool.py" in text
    with pytest.raises(SystemExit):
        mod.main(["--nets", "resnet"])
    assert "--nets: unknown ['resnet']; allowed: cnn-mini, SmallCNN" in capsys.readouterr().err
