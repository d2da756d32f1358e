"""Tests for lpsampling.experiments.registry: method, format and other names."""

from __future__ import annotations

import pytest

from lpsampling.experiments import METHODS, RunConfig, get_format, get_method, method_label
from lpsampling.formats import FULL, BlockFloatingPoint, FixedPoint


@pytest.mark.parametrize(
    "field, value, listed",
    [
        ("method", "sgldx", "valid methods: sgld, sgd, csgld"),
        ("format", "fp16", "valid formats: fp32, fixed8, bfp8"),
        ("dataset", "mnist", "valid datasets: digits, fashion_mnist, cifar10"),
        ("model", "vgg16", "valid models: logreg, mlp, cnn, resnet18"),
        ("schedule", "cosine", "valid schedules: constant, decay, cyclical"),
    ],
)
def test_unknown_names_list_the_choices(field, value, listed):
    with pytest.raises(ValueError, match=listed):
        RunConfig(**{field: value})


def test_method_mapping_and_labels():
    assert get_method("VC_SGLDLP-L") == METHODS["vc-sgldlp-l"]
    table = {
        "sgld": ("sgld", "full"), "sgd": ("sgd", "full"), "csgld": ("cyclical", "full"),
        "sgldlp-l": ("sgld", "low"), "vc-sgldlp-l": ("sgld", "vc"),
        "sgdlp-l": ("sgd", "low"), "sgldlp-f": ("sgld", "full"), "sgdlp-f": ("sgd", "full"),
        "vc-csgldlp-l": ("cyclical", "vc"), "csgld-f": ("cyclical", "full"),
    }
    for name, (kind, acc) in table.items():
        spec = get_method(name)
        assert (spec.kind, spec.accumulator) == (kind, acc), name
    assert method_label("sgld", "fp32") == "SGLDFP"
    assert method_label("sgld", "fixed8") == "SGLDLP-F"
    assert method_label("csgld", "bfp8") == "cSGLD-F"
    assert method_label("sgldlp-l", "bfp8") == "naive SGLDLP-L"
    assert RunConfig(method="VC-cSGLDLP-L", format="BFP8").label == "VC cSGLDLP-L"
    with pytest.raises(ValueError, match="needs a low-precision format"):
        RunConfig(method="vc-sgldlp-l", format="fp32")


def test_formats():
    f = get_format("fixed8")
    assert f.weight == FixedPoint(8, 8) and f.grad == FixedPoint(8, 8)
    assert f.activation == FULL and f.error == FULL
    assert get_format("fixed8-6").weight == FixedPoint(8, 6)
    b = get_format("bfp8")
    # per output unit/filter in Flax's (..., in, out) layout; per example for activations
    assert b.weight == BlockFloatingPoint(8, axis=-1)
    assert b.activation == BlockFloatingPoint(8, axis=0) == b.error
    # bfp<wl>c: the same blocks with the mean-exact carry at a block's top
    c = get_format("BFP4C")
    assert c.name == "bfp4c" and c.weight == BlockFloatingPoint(4, axis=-1, carry=True)
    assert c.activation == BlockFloatingPoint(4, axis=0, carry=True) == c.error
    run = RunConfig(method="vc-sgldlp-l", format="bfp4c")
    assert run.format == "bfp4c" and run.format_spec.grad.carry is True
    assert get_format("fp32").is_full
    with pytest.raises(ValueError, match="valid formats"):
        get_format("fixed1")
