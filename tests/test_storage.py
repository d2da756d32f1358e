"""Tests for lpsampling.storage: packed low-precision storage and the sample bank."""

from __future__ import annotations

import os

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpsampling.formats import FULL, BlockFloatingPoint, FixedPoint, FloatingPoint
from lpsampling.storage import (
    Packed,
    code_dtype,
    load_packed,
    pack,
    save_packed,
    unpack,
)

FIXED = [FixedPoint(8, 8), FixedPoint(8, 3), FixedPoint(4, 2), FixedPoint(16, 12),
         FixedPoint(6, 5)]
BFP = [BlockFloatingPoint(8, axis=0), BlockFloatingPoint(6, axis=0),
       BlockFloatingPoint(4, axis=0), BlockFloatingPoint(8, axis=None),
       BlockFloatingPoint(6, axis=None), BlockFloatingPoint(8, axis=1),
       BlockFloatingPoint(8, block_size=4), BlockFloatingPoint(4, block_size=2)]
FLOATS = [FloatingPoint(4, 3), FloatingPoint(5, 2), FloatingPoint(3, 2), FloatingPoint(5, 10),
          FloatingPoint(8, 7), FloatingPoint(2, 1)]


nearest = helpers.nearest


def _exponent_range(fmt) -> tuple[float, float]:
    """log2-magnitude range of test values: from below the finest gap to past saturation."""
    if isinstance(fmt, FixedPoint):
        return -fmt.fl - 3, fmt.wl - fmt.fl + 2
    if isinstance(fmt, FloatingPoint):
        return max(fmt.min_exp - fmt.man - 3, -140), min(fmt.max_exp + 2, 127)
    return -30, 30


def grid_values(fmt, shape, seed=0) -> np.ndarray:
    """Random values on the grid of ``fmt``: zeros, saturated extremes, a zero block,
    values across the whole magnitude range (subnormal range of floats included)."""
    rng = np.random.default_rng(seed)
    lo, hi = _exponent_range(fmt)
    mag = np.exp2(rng.uniform(lo, hi, shape)) * rng.uniform(1, 2, shape)
    x = (np.sign(rng.standard_normal(shape)) * mag).astype(np.float32)
    if isinstance(fmt, BlockFloatingPoint) and len(shape) > 1:
        # blocks of very different scales and one all-zero block
        x *= np.exp2(rng.integers(-20, 20, (shape[0],) + (1,) * (len(shape) - 1)))
        x[0] = 0.0
    flat = x.reshape(-1)
    flat[1] = 0.0
    flat[2] = 3e38
    flat[3] = -3e38
    q = np.asarray(nearest(x, fmt))
    assert np.isfinite(q).all() or isinstance(fmt, FloatingPoint) and fmt.exp == 8
    return q


def assert_bits_equal(out, q, allow_neg_zero: bool) -> None:
    out = np.asarray(out)
    q = np.asarray(q)
    assert out.dtype == q.dtype and out.shape == q.shape
    if allow_neg_zero:  # fixed / block floating point have no -0.0 code
        q = np.where(q == 0, np.zeros_like(q), q)
    ub = {2: np.uint16, 4: np.uint32}[q.dtype.itemsize]
    np.testing.assert_array_equal(out.view(ub), q.view(ub))


ROUND_TRIP_CASES = (
    [(f, (4, 3, 2, 4)) for f in FIXED + BFP + FLOATS]
    + [(f, (12, 8)) for f in BFP[:4] + BFP[-2:]]
    + [(f, (9,)) for f in (FIXED[2], BFP[0], FLOATS[0])]
)


@pytest.mark.parametrize("fmt, shape", ROUND_TRIP_CASES, ids=repr)
def test_round_trip_bit_exact(fmt, shape):
    q = grid_values(fmt, shape)
    p = pack(jnp.asarray(q), fmt)
    assert p.codes.dtype == code_dtype(fmt)
    assert p.shape == shape and p.dtype == "float32"
    assert_bits_equal(unpack(p), q, allow_neg_zero=not isinstance(fmt, FloatingPoint))
    # packing is idempotent on grid values
    p2 = pack(unpack(p), fmt)
    np.testing.assert_array_equal(np.asarray(p2.codes), np.asarray(p.codes))


@pytest.mark.parametrize("fmt", [FixedPoint(8, 3), BlockFloatingPoint(8), FloatingPoint(4, 3),
                                 FloatingPoint(5, 10)], ids=repr)
def test_pack_rounds_to_nearest_first(fmt):
    x = jnp.asarray(np.random.default_rng(1).standard_normal((4, 3, 2, 4)).astype(np.float32))
    np.testing.assert_array_equal(
        np.asarray(unpack(pack(x, fmt))), np.asarray(nearest(x, fmt))
    )


def test_fixed_point_codes_are_the_integers():
    fmt = FixedPoint(8, 3)
    q = grid_values(fmt, (50,))
    p = pack(jnp.asarray(q), fmt)
    assert p.codes.dtype == np.int8 and p.exponents is None
    np.testing.assert_array_equal(np.asarray(p.codes), (q * 8).astype(np.int8))
    assert np.asarray(p.codes).min() == -128 and np.asarray(p.codes).max() == 127


def test_nibbles_odd_length_and_signs():
    fmt = FixedPoint(4, 0)
    x = jnp.arange(-8, 7, dtype=jnp.float32)  # 15 values: every code but 7, odd length
    p = pack(x, fmt)
    assert p.codes.dtype == np.uint8 and p.codes.shape == (8,)
    assert p.nbytes == 8
    np.testing.assert_array_equal(np.asarray(unpack(p)), np.asarray(x))
    # element 2j in the low nibble, 2j+1 in the high one (two's complement)
    assert int(p.codes[0]) == ((-8) & 0xF) | (((-7) & 0xF) << 4)


def test_bfp_exponents_and_zero_blocks():
    fmt = BlockFloatingPoint(8, axis=0)
    x = np.zeros((3, 2, 2), np.float32)
    x[1] = [[0.75, -0.1], [0.2, 0.3]]
    x[2] = [[5.0, 0.0], [0.0, -2.0]]
    q = np.asarray(nearest(jnp.asarray(x), fmt))
    p = pack(jnp.asarray(q), fmt)
    assert p.exponents.dtype == np.int8 and p.exponents.shape == (3, 1, 1)
    np.testing.assert_array_equal(np.asarray(p.exponents).ravel(), [-128, -1, 2])
    np.testing.assert_array_equal(np.asarray(p.codes)[0], 0)
    # value = m * 2**(e + 2 - wl): 0.75 = 96 * 2**-7
    assert int(p.codes[1, 0, 0]) == 96
    np.testing.assert_array_equal(np.asarray(unpack(p)), q)


def test_bfp_block_size_layout():
    fmt = BlockFloatingPoint(6, block_size=3)
    q = grid_values(fmt, (2, 4, 6))
    p = pack(jnp.asarray(q), fmt)
    assert p.exponents.shape == (2, 4, 2, 1)
    assert_bits_equal(unpack(p), q, allow_neg_zero=True)


def test_bfp_bad_block_size_raises():
    with pytest.raises(ValueError, match="block_size"):
        pack(jnp.ones((3, 5)), BlockFloatingPoint(8, block_size=2))


@pytest.mark.parametrize("fmt", [FloatingPoint(4, 3), FloatingPoint(5, 2), FloatingPoint(2, 1),
                                 FloatingPoint(1, 0), FloatingPoint(5, 10)], ids=repr)
def test_every_small_float_code_round_trips(fmt):
    """Decode every code, re-encode the value: the same code (subnormals and top binade
    included; no code is NaN or inf)."""
    n = 2**fmt.bits
    codes = np.arange(n, dtype=np.uint32)
    dt = code_dtype(fmt)
    if fmt.bits <= 4:
        stored = (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8)
    else:
        stored = codes.astype(dt)
    v = np.asarray(unpack(Packed(jnp.asarray(stored), None, fmt, (n,), "float32")))
    assert np.isfinite(v).all()
    half = n // 2
    pos = v[:half]
    assert pos[0] == 0 and np.signbit(v[half])  # +0 and -0
    np.testing.assert_array_equal(v[half:], -pos)
    assert (np.diff(pos) > 0).all()  # codes are ordered by magnitude
    assert pos[-1] == fmt.max_value
    assert pos[1] == fmt.min_subnormal
    # the values are exactly the format's grid
    np.testing.assert_array_equal(np.asarray(nearest(jnp.asarray(v), fmt)), v)
    p = pack(jnp.asarray(v), fmt)
    np.testing.assert_array_equal(np.asarray(p.codes), stored)


def test_float16_format_matches_ieee_half():
    fmt = FloatingPoint(5, 10)
    finite = np.arange(2**16, dtype=np.uint16)
    finite = finite[(finite & 0x7C00) != 0x7C00]  # IEEE inf/NaN codes are ordinary here
    h = finite.view(np.float16)
    p = pack(jnp.asarray(h), fmt)  # float16 input, subnormals included
    np.testing.assert_array_equal(np.asarray(p.codes), finite)
    out = np.asarray(unpack(p))
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out.view(np.uint16), finite)


def test_bfloat16_format_subnormals_and_specials():
    """FloatingPoint(8, 7) is bfloat16: its codes are the bfloat16 bit patterns, float32
    subnormals included (encoded with integer operations, never flushed)."""
    fmt = FloatingPoint(8, 7)
    pats = np.arange(2**16, dtype=np.uint32)
    f32 = (pats << 16).view(np.float32)
    finite = np.isfinite(f32)
    p = pack(jnp.asarray(f32[finite]), fmt)
    assert p.codes.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(p.codes), pats[finite])
    out = np.asarray(unpack(p))
    np.testing.assert_array_equal(out.view(np.uint32), (pats[finite] << 16))
    sub = out[(np.abs(out) < np.finfo(np.float32).tiny) & (out != 0)]
    assert sub.size == 2 * 127  # every nonzero subnormal, both signs
    # inf and NaN have IEEE codes with exp == 8
    sp = pack(jnp.asarray(np.array([np.inf, -np.inf, np.nan], np.float32)), fmt)
    np.testing.assert_array_equal(np.asarray(sp.codes)[:2], [0x7F80, 0xFF80])
    back = np.asarray(unpack(sp))
    assert back[0] == np.inf and back[1] == -np.inf and np.isnan(back[2])


def test_bfloat16_rounds_float32_subnormals():
    fmt = FloatingPoint(8, 7)
    pats = np.array([1, 0x3FFF, 0x12345, 0x7FFFFF, 0x80000001, 0x80400000], np.uint32)
    x = jnp.asarray(pats.view(np.float32))
    q = np.asarray(nearest(x, fmt))
    assert (np.asarray(q).view(np.uint32) & 0xFFFF == 0).all()
    assert_bits_equal(unpack(pack(jnp.asarray(q), fmt)), q, allow_neg_zero=False)


@pytest.mark.parametrize("fmt", [FloatingPoint(5, 2), FloatingPoint(4, 3)], ids=repr)
def test_tiny_values_of_small_floats(fmt):
    k = np.arange(-40, 41, dtype=np.float32)
    x = k * np.float32(fmt.min_subnormal) / 4  # between and on the subnormal grid
    q = np.asarray(nearest(jnp.asarray(x), fmt))
    assert np.any((q != 0) & (np.abs(q) < 2.0**fmt.min_exp))  # subnormals are present
    assert_bits_equal(unpack(pack(jnp.asarray(q), fmt)), q, allow_neg_zero=False)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=str)
@pytest.mark.parametrize("fmt", [FixedPoint(8, 5), BlockFloatingPoint(8),
                                 FloatingPoint(4, 3)], ids=repr)
def test_round_trip_low_precision_dtypes(fmt, dtype):
    x = np.random.default_rng(2).standard_normal((6, 4)) * np.exp2(np.arange(-6, 6, 3))
    x[0] = 0.0
    q = nearest(jnp.asarray(x, dtype), fmt)
    p = pack(q, fmt)
    assert p.dtype == jnp.dtype(dtype).name
    out = unpack(p)
    assert out.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(q, np.float32))


@pytest.mark.parametrize("fmt", [FixedPoint(4, 2), BlockFloatingPoint(6), FloatingPoint(5, 2)],
                         ids=repr)
def test_scalars_and_stacked_codes(fmt):
    p = pack(jnp.float32(0.75), fmt)
    assert p.shape == () and float(unpack(p)) == 0.75
    # a vmapped pack carries a leading stack axis, which unpack keeps
    q = grid_values(fmt, (3, 5, 4))
    stacked = jax.vmap(lambda v: pack(v, fmt))(jnp.asarray(q))
    assert stacked.shape == (5, 4) and stacked.codes.shape[0] == 3
    assert_bits_equal(unpack(stacked), np.stack([np.asarray(unpack(pack(r, fmt))) for r in q]),
                      allow_neg_zero=False)


def test_full_stores_as_is():
    x = jnp.asarray([1.0, np.nan, -np.inf, 1e-40], jnp.float32)
    p = pack(x, FULL)
    assert p.codes.dtype == np.float32 and p.exponents is None and p.nbytes == 16
    np.testing.assert_array_equal(np.asarray(unpack(p)).view(np.uint32),
                                  np.asarray(x).view(np.uint32))


@pytest.mark.parametrize(
    "fmt, bad",
    [(FixedPoint(8, 3), np.nan), (FixedPoint(8, 3), np.inf), (BlockFloatingPoint(8), np.nan),
     (BlockFloatingPoint(8), -np.inf), (FloatingPoint(4, 3), np.nan),
     (FloatingPoint(4, 3), np.inf), (FloatingPoint(8, 0), np.nan)],
    ids=repr,
)
def test_nan_inf_rejected(fmt, bad):
    x = jnp.asarray([1.0, bad, 2.0], jnp.float32)
    with pytest.raises(ValueError, match=r"\bx\b.*(NaN|inf)"):
        pack(x, fmt)


def test_nan_inf_under_jit_documented_behaviour():
    x = jnp.asarray([1.0, np.nan, np.inf, -np.inf], jnp.float32)
    fmt = FixedPoint(8, 3)
    out = np.asarray(jax.jit(lambda v: unpack(pack(v, fmt)))(x))
    np.testing.assert_array_equal(out, [1.0, 0.0, fmt.max_value, fmt.min_value])
    fmt = FloatingPoint(4, 3)
    out = np.asarray(jax.jit(lambda v: unpack(pack(v, fmt)))(x))
    np.testing.assert_array_equal(out, [1.0, 0.0, 480.0, -480.0])


def test_clamp_false_out_of_range_rejected():
    with pytest.raises(ValueError, match="range"):
        pack(jnp.asarray([100.0]), FixedPoint(8, 3, clamp=False))
    p = pack(jnp.asarray([1.5]), FixedPoint(8, 3, clamp=False))
    assert float(unpack(p)[0]) == 1.5


def test_non_float_input_rejected():
    with pytest.raises(TypeError):
        pack(jnp.arange(3), FixedPoint(8, 3))


@pytest.mark.parametrize(
    "fmt, ratio",
    [(FixedPoint(8, 6), 0.26), (BlockFloatingPoint(8, axis=0), 0.26),
     (FloatingPoint(4, 3), 0.26), (FixedPoint(4, 2), 0.14),
     (BlockFloatingPoint(4, axis=0), 0.14), (FloatingPoint(2, 1), 0.14)],
    ids=repr,
)
def test_nbytes_is_real_storage(fmt, ratio):
    x = jax.random.normal(jax.random.key(0), (1000, 1000), jnp.float32)
    p = pack(x, fmt)
    assert p.nbytes <= ratio * x.nbytes
    assert p.nbytes == p.codes.nbytes + (0 if p.exponents is None else p.exponents.nbytes)


@pytest.mark.parametrize("fmt", [FixedPoint(4, 2), BlockFloatingPoint(8, axis=0),
                                 FloatingPoint(5, 2), FULL], ids=repr)
def test_packed_through_jit_and_tree_map(fmt):
    q = jnp.asarray(grid_values(fmt if fmt is not FULL else FixedPoint(8, 3), (8, 6)))
    p = pack(q, fmt)
    p_jit = jax.jit(lambda v: pack(v, fmt))(q)
    assert isinstance(p_jit, Packed) and p_jit.fmt == fmt and p_jit.shape == (8, 6)
    np.testing.assert_array_equal(np.asarray(p_jit.codes), np.asarray(p.codes))
    identity = jax.jit(lambda pp: pp)(p)
    assert isinstance(identity, Packed) and identity.nbytes == p.nbytes
    out = jax.jit(unpack)(p)
    assert_bits_equal(out, unpack(p), allow_neg_zero=False)
    copied = jax.tree.map(jnp.copy, p)
    assert isinstance(copied, Packed) and copied.fmt == fmt and copied.dtype == "float32"
    assert_bits_equal(unpack(copied), unpack(p), allow_neg_zero=False)
    assert len(jax.tree.leaves(p)) == (2 if isinstance(fmt, BlockFloatingPoint) else 1)


def test_save_load_round_trip(tmp_path):
    tree = {
        "w": pack(jnp.asarray(grid_values(BlockFloatingPoint(4), (5, 3))),
                  BlockFloatingPoint(4)),
        "b": pack(jnp.asarray(grid_values(FloatingPoint(8, 7), (7,))), FloatingPoint(8, 7)),
        "c": pack(jnp.asarray([0.5, -1.25], jnp.bfloat16), FixedPoint(8, 4)),
        "f": pack(jnp.asarray([0.1, 0.2]), FULL),
        "nested": {"x": pack(jnp.asarray(grid_values(FixedPoint(6, 5), (3, 3))),
                             FixedPoint(6, 5, symmetric=True))},
    }
    path = tmp_path / "params.npz"
    save_packed(path, tree)
    assert [f for f in os.listdir(tmp_path)] == ["params.npz"]  # no temp file left
    loaded = load_packed(path)
    assert set(loaded) == set(tree) and set(loaded["nested"]) == {"x"}
    pairs = [(loaded[k], tree[k]) for k in "wbcf"] + [(loaded["nested"]["x"],
                                                       tree["nested"]["x"])]
    for a, b in pairs:
        assert a.fmt == b.fmt and a.shape == b.shape and a.dtype == b.dtype
        assert_bits_equal(unpack(a), unpack(b), allow_neg_zero=False)
    # a single Packed
    save_packed(str(path), tree["w"])
    single = load_packed(str(path))
    assert isinstance(single, Packed)
    np.testing.assert_array_equal(np.asarray(single.exponents), np.asarray(tree["w"].exponents))


def test_carry_format_round_trips_and_old_files_load(tmp_path):
    """BlockFloatingPoint's carry flag is written with the format and read back; a file
    written before the flag existed (no "carry" key) loads as carry=False."""
    fmt = BlockFloatingPoint(8, axis=None, carry=True)
    x = jnp.asarray(grid_values(fmt, (5, 3)))
    path = tmp_path / "carry.npz"
    save_packed(path, {"w": pack(x, fmt), "b": pack(x, BlockFloatingPoint(8, axis=None))})
    loaded = load_packed(path)
    assert loaded["w"].fmt == fmt and loaded["w"].fmt.carry is True
    assert loaded["b"].fmt.carry is False
    want = unpack(pack(x, fmt))
    assert_bits_equal(unpack(loaded["w"]), want, allow_neg_zero=False)
    old = tmp_path / "old.npz"
    _tamper(path, old, lambda a, m: [leaf["format"].pop("carry") for leaf in m["leaves"]])
    for leaf in load_packed(old).values():
        assert leaf.fmt == BlockFloatingPoint(8, axis=None)
        assert_bits_equal(unpack(leaf), want, allow_neg_zero=False)


def test_load_truncated_or_foreign_file_raises(tmp_path):
    path = tmp_path / "p.npz"
    save_packed(path, {"w": pack(jnp.ones((100, 100)), FixedPoint(8, 3))})
    data = path.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.npz"):
        load_packed(bad)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.ones(3))
    with pytest.raises(ValueError, match="foreign.npz"):
        load_packed(foreign)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="text.npz"):
        load_packed(text)
    with pytest.raises(FileNotFoundError):
        load_packed(tmp_path / "missing.npz")
    with pytest.raises(TypeError):
        save_packed(tmp_path / "x.npz", [pack(jnp.ones(2), FixedPoint(8, 3))])


# ---------------------------------------------------------------------------------------
# Issue 10: a tampered file is refused, naming the field (it used to unpack to inf, zeros
# or integers).


def _tamper(src, dst, edit):
    """Copy the npz at ``src`` to ``dst`` after ``edit(arrays, meta)`` (both mutable)."""
    import json

    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["__lpsampling_meta__"]).decode())
    edit(arrays, meta)
    arrays["__lpsampling_meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("edit,field", [
    (lambda a, m: a.__setitem__("leaf0.exponents", a["leaf0.exponents"].astype(np.float64)),
     "exponents dtype"),
    (lambda a, m: a.__setitem__("leaf0.exponents", a["leaf0.exponents"].astype(np.int64)),
     "exponents dtype"),
    (lambda a, m: a.__setitem__("leaf0.exponents",
                                np.full_like(a["leaf0.exponents"], -127)), "out of range"),
    (lambda a, m: m["leaves"][0].__setitem__("dtype", "int32"), "metadata dtype"),
    (lambda a, m: a.__setitem__("leaf0.codes", a["leaf0.codes"].astype(np.int32)),
     "codes dtype"),
    (lambda a, m: m["leaves"][0]["format"].__setitem__("clamp", "no"), "clamp"),
    (lambda a, m: m["leaves"][0]["format"].__setitem__("carry", "no"), "carry"),
])
def test_tampered_file_is_refused(tmp_path, edit, field):
    x = jnp.linspace(-1.0, 1.0, 24).reshape(4, 6)
    for fmt in [BlockFloatingPoint(8, axis=0), FixedPoint(8, 4)]:
        path = tmp_path / "ok.npz"
        save_packed(path, pack(x, fmt))
        with np.load(path) as z:
            has_exponents = "leaf0.exponents" in z.files
        if (not has_exponents and field in ("exponents dtype", "out of range", "carry")) or (
                has_exponents and field == "clamp"):
            continue  # the edit does not apply to this format
        bad = tmp_path / "bad.npz"
        _tamper(path, bad, edit)
        with pytest.raises(ValueError, match=field):
            load_packed(bad)
        load_packed(path)  # the untouched file still loads


def test_full_leaf_dtype_must_match_metadata(tmp_path):
    path = tmp_path / "ok.npz"
    save_packed(path, pack(jnp.ones((3,)), FULL))
    bad = tmp_path / "bad.npz"
    _tamper(path, bad, lambda a, m: a.__setitem__("leaf0.codes",
                                                  a["leaf0.codes"].astype(np.int32)))
    with pytest.raises(ValueError, match="FULL leaf values have dtype"):
        load_packed(bad)
