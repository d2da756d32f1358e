"""The old module paths (lpsampling.train, .cli, .gaussian) re-export lpsampling.experiments."""

from __future__ import annotations

import importlib
import subprocess
import sys

import lpsampling
import lpsampling.experiments as E


def test_train_alias_reexports_the_same_objects():
    import lpsampling.train as T

    assert T.__doc__.count("\n") <= 15
    for name in T.__all__:
        obj = getattr(T, name)
        if name in E.__all__:
            assert getattr(E, name) is obj, name
    from lpsampling.atomic import write_json_atomic

    assert T.write_json_atomic is write_json_atomic


def test_cli_and_gaussian_aliases():
    import lpsampling.cli
    import lpsampling.gaussian

    assert lpsampling.cli.main is E.cli.main
    for name in E.gaussian.__all__:
        assert getattr(lpsampling.gaussian, name) is getattr(E.gaussian, name)


def test_experiments_all_is_importable_and_lazy():
    assert lpsampling.experiments is E and "experiments" in lpsampling.__all__
    for name in E.__all__:
        assert getattr(E, name) is not None, name
    # the Gaussian study and the CLI parser need neither orbax nor the training engine
    code = ("import sys, lpsampling.experiments.gaussian, lpsampling.experiments.cli as c; "
            "c.build_parser(); "
            "print(sorted(m for m in ('orbax.checkpoint', 'lpsampling.experiments.engine') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_alias_modules_import_silently():
    code = "import warnings; warnings.simplefilter('error'); import lpsampling.train"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == "", out.stderr
    assert importlib.import_module("lpsampling.train").RunConfig is E.RunConfig
