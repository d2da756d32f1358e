"""The package's public surface: ``lps.__all__`` lists exactly what ``lps`` offers (lazy
submodules included), and every listed name is reachable with ``getattr``."""

from __future__ import annotations

import types

import lpsampling as lps


def test_all_has_no_duplicates():
    assert len(lps.__all__) == len(set(lps.__all__))


def test_every_name_in_all_is_importable():
    for name in lps.__all__:
        assert getattr(lps, name) is not None, name
    for name in lps._LAZY_SUBMODULES:
        assert isinstance(getattr(lps, name), types.ModuleType), name


def test_every_public_attribute_is_listed():
    for name in lps.__all__:  # import the lazy submodules (and what they import) first
        getattr(lps, name)
    public = {name for name in dir(lps) if not name.startswith("_")}
    assert public - set(lps.__all__) == set()


def test_faces_are_namespaces():
    assert callable(lps.bank.init) and callable(lps.blackjax.sgld)
    assert lps.bank.SampleBank is lps.SampleBank
