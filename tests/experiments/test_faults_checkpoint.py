"""Fault injection into orbax checkpoints (issue 10): every damaged latest step is
reported with its path and the run falls back to the newest good step (final metrics equal
to an uninterrupted run); when no step is good, a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import Crash, crash_at

from lpsampling.experiments import RunConfig, run_experiment
from lpsampling.experiments.checkpoint import Checkpointer, CheckpointError, _meta_digest


def _cfg(ck, tiny):
    return RunConfig(model="logreg", method="vc-sgldlp-l", format="fixed8",
                     checkpoint_dir=str(ck), checkpoint_every=2, **tiny)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory, digits):
    """A reference run, and a checkpoint directory of the same run crashed at step 7
    (steps 4 and 6 kept)."""
    tiny = dict(train_subset=128, test_subset=64, batch_size=32, epochs=2, samples=2)
    base = tmp_path_factory.mktemp("ckpt")
    ref = run_experiment(_cfg(base / "ref", tiny), dataset=digits, progress=False)
    with pytest.raises(Crash):
        run_experiment(_cfg(base / "ck", tiny), dataset=digits, progress=False,
                       on_step=crash_at(7))
    assert sorted(p.name for p in (base / "ck").iterdir()) == ["4", "6"]
    _SILENT_FLIP["at"] = _find_silent_flip(base / "ck", 6, base / "scratch")
    return base / "ck", ref, tiny


def _copy(crashed, tmp_path):
    src, ref, tiny = crashed
    ck = tmp_path / "ck"
    shutil.copytree(src, ck)
    return ck, ref, _cfg(ck, tiny)


def _largest(d: Path) -> Path:
    return max((p for p in d.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _raw_arrays(ck_dir: Path, step: int):
    """The arrays of a step as orbax restores them (no verification), or None if it
    cannot read them."""
    ck = Checkpointer(ck_dir)
    try:
        meta = ck.restore_meta(step)
        target = {k: np.zeros(v["shape"], np.dtype(v["dtype"]))
                  for k, v in meta["arrays"].items()}
        return ck.restore_arrays(step, target)
    except Exception:  # noqa: BLE001
        return None
    finally:
        ck.close()


def _find_silent_flip(ck_dir: Path, step: int, scratch: Path) -> tuple[str, int]:
    """A (file, byte) of the step's array data whose one-bit flip changes what orbax
    restores *without any error* - the silent corruption of issue 10 - or else one that
    makes orbax fail (orbax's files also hold bytes it never reads: those flips are
    harmless, and skipped). Each probe uses a fresh copy (tensorstore caches by path)."""
    before = _raw_arrays(ck_dir, step)
    files = sorted((p for p in (ck_dir / str(step) / "state").rglob("*")
                    if p.is_file() and p.name not in ("_METADATA", "commit_success.txt")
                    and "manifest" not in p.name), key=lambda p: -p.stat().st_size)
    n_probe, failing = 0, None
    for f in files:
        rel = f.relative_to(ck_dir)
        size = f.stat().st_size
        for i in range(size // 3, size, max(1, size // 8)):
            n_probe += 1
            probe = scratch / f"probe{n_probe}"
            shutil.copytree(ck_dir, probe)
            data = bytearray((probe / rel).read_bytes())
            data[i] ^= 0x01
            (probe / rel).write_bytes(bytes(data))
            after = _raw_arrays(probe, step)
            if after is None:
                failing = failing or (str(rel), i)
            elif any(not np.array_equal(before[k], after[k]) for k in before):
                return str(rel), i
    # small arrays are stored inline in zstd-compressed (checksummed) b-tree nodes: there
    # every flip that is read makes orbax fail - then that is the fault injected
    assert failing is not None, "no byte flip changed what orbax restores"
    return failing


_SILENT_FLIP: dict[str, tuple[str, int]] = {}


def _flip_byte(step_dir: Path):
    rel, i = _SILENT_FLIP["at"]
    f = step_dir.parent / rel
    data = bytearray(f.read_bytes())
    data[i] ^= 0x01
    f.write_bytes(bytes(data))


def _truncate(step_dir: Path):
    f = step_dir.parent / _SILENT_FLIP["at"][0]  # an array file orbax reads
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _no_state(step_dir: Path):
    shutil.rmtree(step_dir / "state")


def _empty(step_dir: Path):
    shutil.rmtree(step_dir)
    step_dir.mkdir()


def _garbage_meta(step_dir: Path):
    (step_dir / "meta" / "metadata").write_text("{this is not json")


def _edited_step(step_dir: Path):
    f = step_dir / "meta" / "metadata"
    meta = json.loads(f.read_text())
    meta["step"] = 5
    f.write_text(json.dumps(meta))


def _edited_step_rehashed(step_dir: Path):
    # the checksum recomputed too: the step no longer matches the data position
    f = step_dir / "meta" / "metadata"
    meta = json.loads(f.read_text())
    meta["step"] = 4
    meta["meta_sha256"] = _meta_digest(meta)
    f.write_text(json.dumps(meta))


FAULTS = [_flip_byte, _truncate, _no_state, _empty, _garbage_meta, _edited_step,
          _edited_step_rehashed]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__.strip("_"))
def test_damaged_latest_step_falls_back(fault, crashed, tmp_path, digits, capsys):
    ck, ref, cfg = _copy(crashed, tmp_path)
    fault(ck / "6")
    res = run_experiment(cfg, dataset=digits, resume=True, progress=False)
    err = capsys.readouterr().err
    assert str(ck / "6") in err and "corrupt" in err
    assert "newest good checkpoint, step 4" in err
    assert "Traceback" not in err
    assert res.output.resumed_from == 4
    assert res.record["metrics"] == ref.record["metrics"]
    assert res.record["history"] == ref.record["history"]
    assert (ck / "6.corrupt").exists()  # kept for inspection, never listed as a step


def test_all_steps_bad_is_a_clear_error(crashed, tmp_path, digits, capsys):
    from lpsampling.experiments import cli

    ck, _, cfg = _copy(crashed, tmp_path)
    _flip_byte(ck / "6")
    _garbage_meta(ck / "4")
    with pytest.raises(CheckpointError, match="no usable checkpoint") as info:
        run_experiment(cfg, dataset=digits, resume=True, progress=False)
    assert str(ck / "6") in str(info.value) and str(ck / "4") in str(info.value)

    ck2, _, _ = _copy(crashed, tmp_path / "cli")
    _truncate(ck2 / "6")
    _no_state(ck2 / "4")
    capsys.readouterr()
    rc = cli.main(["run", "--model", "logreg", "--method", "vc-sgldlp-l", "--format",
                   "fixed8", "--train-subset", "128", "--test-subset", "64",
                   "--batch-size", "32", "--epochs", "2", "--samples", "2", "--no-progress",
                   "--checkpoint-dir", str(ck2), "--checkpoint-every", "2", "--resume",
                   "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("lpsampling run: error: no usable checkpoint")
    assert "Traceback" not in err
    assert not (tmp_path / "r.json").exists()
