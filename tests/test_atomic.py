"""Tests for lpsampling.atomic: atomic writes."""

from __future__ import annotations

import json
import os

import pytest

from lpsampling.atomic import write_json_atomic


def test_write_json_atomic_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(TypeError):
        write_json_atomic(target, {"bad": object()})
    assert os.listdir(tmp_path) == []
    write_json_atomic(target, {"ok": 1})
    assert json.loads(target.read_text()) == {"ok": 1}
