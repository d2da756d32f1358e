"""Tests for lpsampling.formats: frozen/hashable format objects, static use under jit, and
the grid facts (gap, range, largest value) they expose."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lpsampling as lps

ALL = [
    lps.FixedPoint(8, 3),
    lps.FixedPoint(8, 3, symmetric=True),
    lps.BlockFloatingPoint(8),
    lps.BlockFloatingPoint(8, axis=None),
    lps.BlockFloatingPoint(6, block_size=16),
    lps.BlockFloatingPoint(8, axis=None, carry=True),
    lps.FloatingPoint(4, 3),
    lps.FloatingPoint(8, 7),
    lps.FULL,
]


@pytest.mark.parametrize("fmt", ALL, ids=repr)
def test_frozen_and_hashable(fmt):
    field = next(iter(f.name for f in dataclasses.fields(fmt)), None)
    if field is not None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(fmt, field, 5)
    copy = dataclasses.replace(fmt)
    assert copy == fmt and copy is not fmt and hash(copy) == hash(fmt)
    assert {fmt: 1}[copy] == 1


def test_equality():
    assert lps.FixedPoint(8, 3) == lps.FixedPoint(wl=8, fl=3)
    assert lps.FixedPoint(8, 3) != lps.FixedPoint(8, 4)
    assert lps.FixedPoint(8, 3) != lps.FixedPoint(8, 3, symmetric=True)
    assert lps.BlockFloatingPoint(8) == lps.BlockFloatingPoint(8, axis=0)
    assert lps.BlockFloatingPoint(8) != lps.BlockFloatingPoint(8, axis=None)
    assert lps.BlockFloatingPoint(8, block_size=4) != lps.BlockFloatingPoint(8, block_size=8)
    assert lps.BlockFloatingPoint(8) == lps.BlockFloatingPoint(8, carry=False)
    assert lps.BlockFloatingPoint(8) != lps.BlockFloatingPoint(8, carry=True)
    assert lps.FloatingPoint(4, 3) == lps.FloatingPoint(exp=4, man=3)
    assert lps.FloatingPoint(4, 3) != lps.FloatingPoint(5, 2)
    assert lps.FULL == lps.Full() and lps.FULL != lps.FixedPoint(8, 3)
    assert len(set(ALL)) == len(ALL)


def test_repr():
    assert repr(lps.FixedPoint(8, 3)) == "FixedPoint(wl=8, fl=3)"
    assert "symmetric=True" in repr(lps.FixedPoint(8, 3, symmetric=True))
    assert repr(lps.BlockFloatingPoint(8)) == "BlockFloatingPoint(wl=8, axis=0)"
    assert repr(lps.BlockFloatingPoint(8, axis=None)) == "BlockFloatingPoint(wl=8, axis=None)"
    assert (repr(lps.BlockFloatingPoint(8, block_size=16))
            == "BlockFloatingPoint(wl=8, block_size=16)")
    # carry shows only when set (every existing repr is unchanged)
    assert (repr(lps.BlockFloatingPoint(8, axis=None, carry=True))
            == "BlockFloatingPoint(wl=8, axis=None, carry=True)")
    assert (repr(lps.BlockFloatingPoint(4, block_size=2, carry=True))
            == "BlockFloatingPoint(wl=4, block_size=2, carry=True)")
    assert repr(lps.FloatingPoint(4, 3)) == "FloatingPoint(exp=4, man=3)"
    assert repr(lps.FULL) == "FULL"


def test_static_argument_of_jit():
    traces = []

    def f(x, fmt):
        traces.append(fmt)
        return lps.quantize(x, fmt, rounding="nearest")

    jf = jax.jit(f, static_argnums=1)
    x = jnp.array([0.3, -1.7, 2.2])
    a = jf(x, lps.FixedPoint(8, 3))
    b = jf(x, lps.FixedPoint(8, 3))  # an equal (not identical) format: cache hit
    c = jf(x, lps.FloatingPoint(4, 3))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, [0.25, -1.75, 2.25])
    np.testing.assert_array_equal(c, [0.3125, -1.75, 2.25])
    assert traces == [lps.FixedPoint(8, 3), lps.FloatingPoint(4, 3)]
    # also by name, and as a closure constant of a jitted function
    jg = jax.jit(lps.quantize, static_argnames=("fmt", "rounding"))
    np.testing.assert_array_equal(jg(x, fmt=lps.FixedPoint(8, 3), rounding="nearest"), a)


@pytest.mark.parametrize(
    "fmt, gap, lo, hi",
    [
        (lps.FixedPoint(8, 8), 2.0**-8, -0.5, 0.49609375),
        (lps.FixedPoint(8, 3), 0.125, -16.0, 15.875),
        (lps.FixedPoint(8, 6), 2.0**-6, -2.0, 1.984375),
        (lps.FixedPoint(4, 2), 0.25, -2.0, 1.75),
        (lps.FixedPoint(16, 12), 2.0**-12, -8.0, 8.0 - 2.0**-12),
        (lps.FixedPoint(8, 3, symmetric=True), 0.125, -15.875, 15.875),
        (lps.FixedPoint(8, -2), 4.0, -512.0, 508.0),
    ],
    ids=repr,
)
def test_fixed_point_grid(fmt, gap, lo, hi):
    assert fmt.gap == gap and fmt.min_value == lo and fmt.max_value == hi
    assert float(lps.grid_gap(jnp.ones(3), fmt)) == gap
    assert fmt.bits == fmt.wl
    # the range is exactly what quantize saturates to
    out = lps.quantize(jnp.array([-1e9, 1e9]), fmt, rounding="nearest")
    np.testing.assert_array_equal(out, [lo, hi])


@pytest.mark.parametrize(
    "exp, man, max_value, min_exp, max_exp",
    [(4, 3, 480.0, -6, 8), (5, 10, 131008.0, -14, 16), (3, 2, 28.0, -2, 4),
     (5, 2, 114688.0, -14, 16), (8, 7, 2.0**127 * (2 - 2.0**-7), -126, 128),
     (8, 23, float(np.finfo(np.float32).max), -126, 128)],
)
def test_floating_point_range(exp, man, max_value, min_exp, max_exp):
    fmt = lps.FloatingPoint(exp, man)
    assert fmt.max_value == max_value
    assert (fmt.min_exp, fmt.max_exp) == (min_exp, max_exp)
    assert fmt.bits == 1 + exp + man
    assert fmt.min_subnormal == 2.0 ** (min_exp - man)
    # the largest value is on the grid; beyond it, exp < 8 saturates and exp = 8 overflows
    beyond = 1e38 if exp < 8 else np.inf
    out = lps.quantize(jnp.array([max_value, -max_value, beyond, -np.inf]), fmt, rounding="nearest")
    big = max_value if exp < 8 else np.inf
    np.testing.assert_array_equal(out, [max_value, -max_value, big, -big])


def test_grid_gap_values():
    x = jnp.array([0.0, 1.0, 1.5, -3.0, 0.01, 2.0**-8, 300.0])
    # FloatingPoint(4, 3): the gap of x's binade, 2^(e - 3), at least the subnormal gap 2^-9
    np.testing.assert_array_equal(
        lps.grid_gap(x, lps.FloatingPoint(4, 3)),
        [2.0**-9, 2.0**-3, 2.0**-3, 2.0**-2, 2.0**-9, 2.0**-9, 2.0**5],
    )
    # BFP(8) on a 1-D tensor: one block per element, Δ = 2^(e + 2 - 8); zero blocks have no gap
    np.testing.assert_array_equal(
        lps.grid_gap(x, lps.BlockFloatingPoint(8)),
        [0.0, 2.0**-6, 2.0**-6, 2.0**-5, 2.0**-13, 2.0**-14, 2.0**2],
    )
    # axis=None: one exponent for the tensor (max 300, e = 8)
    np.testing.assert_array_equal(
        jnp.broadcast_to(lps.grid_gap(x, lps.BlockFloatingPoint(8, axis=None)), x.shape), 2.0**2
    )
    assert float(lps.grid_gap(x, lps.FULL)) == 0.0


def test_describe_and_storage_bits():
    from lpsampling.formats import describe, storage_bits

    for fmt in ALL:
        assert repr(fmt).split("(")[0] in describe(fmt)
        assert storage_bits(fmt) == fmt.bits
    assert "480" in describe(lps.FloatingPoint(4, 3))


# --------------------------------------------------------------------------------------
# Formats carry their behaviour: methods agree with the module functions; name parsing.


@pytest.mark.parametrize("fmt", ALL, ids=repr)
def test_methods_match_module_functions(fmt):
    from lpsampling.formats import Format, check_format, describe, grid_bounds, grid_exponent

    assert isinstance(fmt, Format) and check_format(fmt) is fmt
    assert fmt.describe() == describe(fmt)
    assert fmt.is_identity == (fmt == lps.FULL)
    x = jnp.tile(jnp.array([[0.0, 1.0, -3.5, 0.01], [2.0**-8, 300.0, -0.25, 7.0]]), (1, 4))
    np.testing.assert_array_equal(fmt.grid_gap(x), lps.grid_gap(x, fmt))
    if fmt.is_identity:
        for f in (lambda: grid_exponent(x, fmt), lambda: grid_bounds(0, fmt)):
            with pytest.raises(TypeError, match="no grid"):
                f()
        with pytest.raises(ValueError, match="FULL has no code dtype"):
            fmt.code_dtype()
        return
    k = fmt.grid_exponent(x)
    np.testing.assert_array_equal(k, grid_exponent(x, fmt))
    for a, b in zip(fmt.grid_bounds(k), grid_bounds(k, fmt), strict=True):
        np.testing.assert_array_equal(a, b)


def test_module_grid_functions_reject_non_formats():
    from lpsampling.formats import grid_exponent

    with pytest.raises(TypeError, match="no grid"):
        grid_exponent(jnp.ones(3), "fixed8")


def test_format_types_registry():
    from lpsampling.formats import FORMAT_TYPES

    assert FORMAT_TYPES == {"FixedPoint": lps.FixedPoint,
                            "BlockFloatingPoint": lps.BlockFloatingPoint,
                            "FloatingPoint": lps.FloatingPoint, "Full": lps.Full}


FULL4 = (lps.FULL,) * 4


@pytest.mark.parametrize("name,canon,label,roles", [
    ("fp32", "fp32", "FP32", FULL4),
    ("FULL", "fp32", "FP32", FULL4),
    (" float32 ", "fp32", "FP32", FULL4),
    ("fixed8", "fixed8", "8-bit fixed", (lps.FixedPoint(8, 8),) * 2 + (lps.FULL,) * 2),
    ("fixed8-8", "fixed8", "8-bit fixed", (lps.FixedPoint(8, 8),) * 2 + (lps.FULL,) * 2),
    ("Fixed8_4", "fixed8-4", "8-bit fixed (fl=4)",
     (lps.FixedPoint(8, 4),) * 2 + (lps.FULL,) * 2),
    ("fixed4", "fixed4-4", "4-bit fixed", (lps.FixedPoint(4, 4),) * 2 + (lps.FULL,) * 2),
    ("bfp8", "bfp8", "8-bit BFP",
     (lps.BlockFloatingPoint(8, axis=-1),) * 2 + (lps.BlockFloatingPoint(8, axis=0),) * 2),
    ("BFP4", "bfp4", "4-bit BFP",
     (lps.BlockFloatingPoint(4, axis=-1),) * 2 + (lps.BlockFloatingPoint(4, axis=0),) * 2),
    ("bfp8c", "bfp8c", "8-bit BFP (carry)",
     (lps.BlockFloatingPoint(8, axis=-1, carry=True),) * 2
     + (lps.BlockFloatingPoint(8, axis=0, carry=True),) * 2),
])
def test_parse_format(name, canon, label, roles):
    from lpsampling.formats import ROLES

    got = tuple(lps.formats.parse_format(name, role) for role in ROLES)
    assert got == roles
    assert lps.formats.parse_format(name) == roles[0]  # role defaults to "weight"
    assert (roles[0].name, roles[0].label) == (canon, label)
    for fmt in roles:
        if not fmt.is_identity:
            assert lps.formats.parse_format(fmt.name, "activation") in roles


def test_parse_format_errors():
    from lpsampling.formats import parse_format

    valid = "valid formats: fp32, fixed8, bfp8, fixed<wl>-<fl>, bfp<wl>, bfp<wl>c"
    with pytest.raises(ValueError, match=r"^unknown format 'fp8'; " + re.escape(valid)):
        parse_format("fp8")
    with pytest.raises(ValueError, match=r"^unknown format 'fixed'; "):
        parse_format("fixed")
    with pytest.raises(ValueError, match=r"^invalid format 'fixed1': wl must be in \[2, 32\]"):
        parse_format("fixed1")
    with pytest.raises(ValueError, match=r"^invalid format 'bfp64': wl must be in"):
        parse_format("bfp64", "activation")
    with pytest.raises(ValueError, match=r"^invalid format 'bfp1c': wl must be in"):
        parse_format("bfp1c")
    with pytest.raises(ValueError, match=r"^unknown format 'bfp8cc'; "):
        parse_format("bfp8cc")
    with pytest.raises(ValueError, match="format must be a string"):
        parse_format(8)
    with pytest.raises(ValueError, match="role must be one of"):
        parse_format("fixed8", "bias")


def test_names_of_unnamed_formats():
    assert lps.FloatingPoint(4, 3).name is None
    assert lps.FixedPoint(8, 3, clamp=False).name is None
    assert lps.BlockFloatingPoint(8, axis=None).name is None
    assert lps.BlockFloatingPoint(8, block_size=4).name is None
    assert lps.BlockFloatingPoint(8, axis=None, carry=True).name is None


def test_fixed_point_flags_must_be_bool():
    """Issue 10: FixedPoint(clamp="no") used to be accepted (and clamp, since "no" is truthy)."""
    with pytest.raises(TypeError, match="clamp must be True or False"):
        lps.FixedPoint(8, 4, clamp="no")
    with pytest.raises(TypeError, match="symmetric must be True or False"):
        lps.FixedPoint(8, 4, symmetric=1)
    assert lps.FixedPoint(8, 4, clamp=False).clamp is False


def test_block_carry_must_be_bool():
    for bad in ("yes", 1, None, 0.0):
        with pytest.raises(TypeError, match="carry must be True or False"):
            lps.BlockFloatingPoint(8, carry=bad)
    # a NumPy bool is stored as a Python bool (the format is written to JSON by storage)
    fmt = lps.BlockFloatingPoint(8, carry=np.bool_(True))
    assert fmt.carry is True and fmt == lps.BlockFloatingPoint(8, carry=True)
    assert "carries past the top code" in fmt.describe()
    assert "carries" not in lps.BlockFloatingPoint(8).describe()
