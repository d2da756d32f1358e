"""The training example of docs/nnx.md runs as printed: nnx.Optimizer with
lps.cyclical_sgld, samples in the packed bank, prediction by Bayesian model averaging."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import lpsampling as lps

DOC = Path(__file__).resolve().parents[3] / "docs" / "nnx.md"
SECTION = "## Training with `nnx.Optimizer`"


def example_code() -> str:
    """The first Python block of the training section of docs/nnx.md."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_docs_training_example_runs_and_learns(capsys):
    namespace: dict = {}
    exec(compile(example_code(), str(DOC), "exec"), namespace)  # noqa: S102
    # 8 epochs of 11 steps, 2 cycles, noise in the second half of each: epochs 2, 3, 6, 7.
    assert int(lps.bank.size(namespace["bank"])) == 4
    probs = np.asarray(namespace["probs"])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # 359 test digits; this run gets about 9%. 15% leaves room for other keys and
    # platforms while catching a broken loop (chance is 90%).
    assert namespace["error"] < 0.15
    assert "BMA test error" in capsys.readouterr().out
