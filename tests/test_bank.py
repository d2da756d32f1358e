"""The posterior sample bank, ``lps.bank``: a ring buffer of packed samples under ``jit``,
its real bytes, and the first release's flat names as deprecated aliases."""

from __future__ import annotations

import functools
import warnings

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lpsampling as lps
import lpsampling.storage
from lpsampling.formats import FULL, BlockFloatingPoint, FixedPoint, FloatingPoint

nearest = helpers.nearest




@functools.partial(jax.jit, static_argnums=1)
def _params(seed: int, fmt):
    k1, k2 = jax.random.split(jax.random.key(seed))
    p = {"w": jax.random.normal(k1, (4, 3)), "b": jax.random.normal(k2, (3,))}
    return jax.tree.map(lambda a: nearest(a, fmt), p)


@pytest.mark.parametrize("fmt", [FixedPoint(8, 5), BlockFloatingPoint(4, axis=0),
                                 FloatingPoint(4, 3), FULL], ids=repr)
def test_sample_bank_add_get_wraps_under_jit(fmt):
    bank = lps.bank.init(_params(0, fmt), fmt, capacity=3)
    assert isinstance(bank, lps.bank.SampleBank) and bank.capacity == 3
    assert int(lps.bank.size(bank)) == 0
    add = jax.jit(lps.bank.add)
    get = jax.jit(lps.bank.get)
    samples = [_params(s, fmt) for s in range(5)]
    for n, s in enumerate(samples, start=1):
        bank = add(bank, s)
        assert int(bank.count) == n
        assert int(lps.bank.size(bank)) == min(n, 3)
        newest = get(bank, -1)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                     newest, s)
    # after 5 adds into 3 slots: samples 2, 3, 4 remain, oldest first
    for i, want in enumerate(samples[2:]):
        for got in (lps.bank.get(bank, i), get(bank, i)):
            jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a),
                                                                    np.asarray(b)), got, want)
            assert got["w"].dtype == jnp.float32 and got["w"].shape == (4, 3)
    stacked = lps.bank.stack(bank)
    assert stacked["w"].shape == (3, 4, 3) and stacked["b"].shape == (3, 3)
    np.testing.assert_array_equal(np.asarray(stacked["b"]),
                                  np.stack([np.asarray(s["b"]) for s in samples[2:]]))
    with pytest.raises(IndexError):
        lps.bank.get(bank, 3)
    expected = 3 * (12 + 3) * (4 if fmt is FULL else 1)
    if isinstance(fmt, BlockFloatingPoint):
        expected = 3 * (6 + 4 + 2 + 3)  # nibble bytes + int8 exponents per sample
    assert lps.bank.nbytes(bank) == expected


def test_sample_bank_empty_raises():
    bank = lps.bank.init({"w": jnp.zeros((2, 2))}, FixedPoint(8, 4), capacity=2)
    with pytest.raises(ValueError, match="the sample bank is empty"):
        lps.bank.get(bank, 0)
    with pytest.raises(ValueError, match="the sample bank is empty"):
        lps.bank.stack(bank)


def test_sample_bank_rejects_bad_input():
    with pytest.raises(ValueError, match="capacity"):
        lps.bank.init({"w": jnp.zeros(2)}, FixedPoint(8, 4), capacity=0)
    bank = lps.bank.init({"w": jnp.zeros(2)}, FixedPoint(8, 4), capacity=2)
    with pytest.raises(ValueError, match="shape"):
        lps.bank.add(bank, {"w": jnp.zeros(3)})


def test_sample_bank_50_samples_bytes():
    # a small CNN: conv (out, in, kh, kw) and dense (out, in) weights, one exponent per
    # output unit
    params = {"conv": jnp.zeros((32, 3, 3, 3)), "dense": jnp.zeros((10, 512)),
              "bias": jnp.zeros((10,))}
    lp = lps.bank.init(params, BlockFloatingPoint(8, axis=0), capacity=50)
    full = lps.bank.init(params, FULL, capacity=50)
    assert lps.bank.nbytes(full) == 50 * 4 * (32 * 27 + 5120 + 10)
    assert lps.bank.nbytes(lp) <= 0.26 * lps.bank.nbytes(full)
    assert lps.bank.nbytes(
        lps.bank.init(params, FixedPoint(8, 6), capacity=50)
    ) == lps.bank.nbytes(full) // 4


NEW_NAMES = ("init", "add", "get", "stack", "size", "nbytes")


def test_bank_namespace():
    assert set(lps.bank.__all__) == {"SampleBank", *NEW_NAMES}
    for name in lps.bank.__all__:
        assert getattr(lps.bank, name).__module__ == "lpsampling.bank"
    assert lpsampling.storage.SampleBank is lps.bank.SampleBank is lps.SampleBank


@pytest.mark.parametrize("new", NEW_NAMES)
def test_old_flat_names_are_deprecated_aliases(new):
    old = f"sample_bank_{new}"
    alias = getattr(lps, old)
    assert getattr(lpsampling.storage, old) is alias
    from lpsampling.storage import sample_bank_init  # noqa: F401  (still importable)

    params = {"w": nearest(jnp.linspace(-1, 1, 6).reshape(2, 3), FixedPoint(8, 4))}
    new_bank = lps.bank.add(lps.bank.init(params, FixedPoint(8, 4), 2), params)
    args = {"init": (params, FixedPoint(8, 4), 2), "add": (new_bank, params),
            "get": (new_bank, 0), "stack": (new_bank,), "size": (new_bank,),
            "nbytes": (new_bank,)}[new]
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated.*lpsampling\.bank\.{new}"):
        got = alias(*args)
    want = getattr(lps.bank, new)(*args)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 got, want)
    # Under jit the warning fires while tracing, pointing at the caller.
    if new in ("add", "get"):
        with pytest.warns(DeprecationWarning, match=old):
            jax.jit(alias)(*args)


def test_new_names_emit_no_deprecation_warning():
    params = {"w": jnp.zeros((2, 3))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bank = lps.bank.init(params, FixedPoint(8, 4), 2)
        bank = jax.jit(lps.bank.add)(bank, params)
        lps.bank.get(bank, 0), lps.bank.stack(bank), lps.bank.size(bank), lps.bank.nbytes(bank)


@pytest.mark.parametrize("index", [1.5, 1.0, np.float32(0.0), jnp.asarray(1.0), True,
                                   "1", jnp.arange(2), None])
def test_sample_bank_get_refuses_non_integer_index(index):
    bank = lps.bank.init({"w": jnp.zeros(3)}, FULL, 4)
    for k in range(3):
        bank = lps.bank.add(bank, {"w": jnp.full(3, float(k))})
    with pytest.raises(TypeError, match=r"\bi must be an integer"):
        lps.bank.get(bank, index)


def test_sample_bank_get_integer_indices_keep_working():
    bank = lps.bank.init({"w": jnp.zeros(3)}, FixedPoint(8, 4), 4)
    for k in range(3):
        bank = lps.bank.add(bank, {"w": jnp.full(3, float(k))})
    for index, want in [(1, 1.0), (np.int32(2), 2.0), (np.int64(-1), 2.0),
                        (jnp.asarray(0), 0.0), (jnp.asarray(1, jnp.int16), 1.0)]:
        np.testing.assert_array_equal(lps.bank.get(bank, index)["w"], np.full(3, want))
    got = jax.jit(lps.bank.get)(bank, jnp.asarray(2))
    np.testing.assert_array_equal(got["w"], np.full(3, 2.0))
    got = jax.jit(lambda i: lps.bank.get(bank, i))(jnp.asarray(1))
    np.testing.assert_array_equal(got["w"], np.full(3, 1.0))
    for index in (3, -4, np.int32(7), jnp.asarray(3)):
        with pytest.raises(IndexError, match="out of range for a bank holding 3"):
            lps.bank.get(bank, index)
