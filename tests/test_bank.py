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


NEW_NAMES = ("init", "add", "get", "stack", "size", "nbytes")  # with deprecated aliases


def test_bank_namespace():
    assert set(lps.bank.__all__) == {"SampleBank", *NEW_NAMES, "get_packed", "predict"}
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


# --------------------------------------------------------------------------------------
# get_packed and predict: the samples as stored, and the BMA straight from the bank.


def _filled_bank(fmt, adds: int, capacity: int = 3):
    bank = lps.bank.init(_params(0, fmt), fmt, capacity)
    for s in range(adds):
        bank = lps.bank.add(bank, _params(s, fmt))
    return bank


def _unpacked(sample):
    return jax.tree.map(lambda a: lps.unpack(a) if isinstance(a, lps.Packed) else a, sample,
                        is_leaf=lambda a: isinstance(a, lps.Packed))


@pytest.mark.parametrize("fmt", [FixedPoint(8, 5), BlockFloatingPoint(8, axis=-1),
                                 BlockFloatingPoint(4, axis=0), FULL], ids=repr)
def test_get_packed_is_get_without_decoding(fmt):
    bank = _filled_bank(fmt, adds=5)
    get_packed = jax.jit(lps.bank.get_packed)
    for i in (0, 1, 2, -1, -3, np.int32(1), jnp.asarray(2)):
        got = lps.bank.get_packed(bank, i)
        for leaf in jax.tree.leaves(got, is_leaf=lambda a: isinstance(a, lps.Packed)):
            if fmt is FULL:
                assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32
            else:
                assert isinstance(leaf, lps.Packed) and leaf.codes.dtype in (jnp.int8,
                                                                              jnp.uint8)
        want = lps.bank.get(bank, i)
        for g in (got, get_packed(bank, i)):
            jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a),
                                                                    np.asarray(b)),
                         _unpacked(g), want)
    with pytest.raises(IndexError, match="out of range"):
        lps.bank.get_packed(bank, 3)
    with pytest.raises(TypeError, match=r"\bi must be an integer"):
        lps.bank.get_packed(bank, 1.0)
    with pytest.raises(ValueError, match="the sample bank is empty"):
        lps.bank.get_packed(lps.bank.init(_params(0, fmt), fmt, 2), 0)


def _linear(sample, x):
    s = _unpacked(sample)
    return x @ s["w"] + s["b"]


def _reference_bma(bank, apply_fn, x, keys=None):
    # the definition, sample by sample through get (oldest first), summed in float32
    held = int(lps.bank.size(bank))
    acc = 0.0
    for i in range(held):
        args = () if keys is None else (keys[i],)
        acc = acc + jax.nn.softmax(apply_fn(lps.bank.get(bank, i), x, *args), axis=-1)
    return np.asarray(acc / np.float32(held))


_X = jax.random.normal(jax.random.key(7), (10, 4))


@pytest.mark.parametrize("fmt", [BlockFloatingPoint(8, axis=-1), FixedPoint(8, 5), FULL],
                         ids=repr)
@pytest.mark.parametrize("adds", [2, 5])  # part-filled, and wrapped past the capacity
def test_predict_is_the_average_of_the_retained_samples(fmt, adds):
    bank = _filled_bank(fmt, adds)
    want = _reference_bma(bank, _linear, _X)
    # float32 sums of up to 3 probabilities in [0, 1], in the same order: the only
    # difference allowed is XLA's fusion of the softmax (a few ulps of 1)
    for packed in (True, False):
        for bs in (None, 3, 10, 16):  # 10 rows in chunks of 3 pad the last one
            got = lps.bank.predict(bank, _linear, _X, packed=packed, batch_size=bs)
            assert got.dtype == jnp.float32 and got.shape == (10, 3)
            np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=3e-7)
    jitted = jax.jit(lambda b, x: lps.bank.predict(b, _linear, x, batch_size=4))
    np.testing.assert_allclose(np.asarray(jitted(bank, _X)), want, rtol=0, atol=3e-7)


def test_predict_keys_per_sample_and_chunk():
    bank = _filled_bank(BlockFloatingPoint(8, axis=-1), adds=4)
    key = jax.random.key(3)

    def noisy(sample, x, k):
        return _linear(sample, x) + jax.random.normal(k, (x.shape[0], 3))

    # sample i (oldest first), chunk j: fold_in(fold_in(key, i), j)
    got = lps.bank.predict(bank, noisy, _X, key=key)
    keys = [jax.random.fold_in(jax.random.fold_in(key, i), 0) for i in range(3)]
    np.testing.assert_allclose(np.asarray(got), _reference_bma(bank, noisy, _X, keys),
                               rtol=0, atol=3e-7)
    chunked = lps.bank.predict(bank, noisy, _X, key=key, batch_size=5)
    want = 0.0
    for i in range(3):
        k_i = jax.random.fold_in(key, i)
        sample = lps.bank.get(bank, i)
        want = want + jnp.concatenate([
            jax.nn.softmax(noisy(sample, _X[5 * j:5 * j + 5], jax.random.fold_in(k_i, j)))
            for j in range(2)])
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(want / 3), rtol=0, atol=3e-7)
    assert not np.allclose(np.asarray(chunked), np.asarray(got))


def test_predict_packed_selects_what_stays_packed():
    fmt = BlockFloatingPoint(8, axis=-1)
    bank = _filled_bank(fmt, adds=3)
    seen = {}

    def record(sample, x):
        seen.update({k: type(v).__name__ for k, v in sample.items()})
        return _linear(sample, x)

    lps.bank.predict(bank, record, _X)
    assert seen == {"w": "Packed", "b": "Packed"}
    lps.bank.predict(bank, record, _X, packed=False)
    assert "Packed" not in seen.values()
    kernel_only = lambda path, leaf: path[-1].key == "w"
    lps.bank.predict(bank, record, _X, packed=kernel_only)
    assert seen["w"] == "Packed" and seen["b"] != "Packed"


def test_predict_pytree_of_banks():
    fmt = BlockFloatingPoint(8, axis=-1)
    params_bank = lps.bank.init(_params(0, fmt), fmt, 3)
    stats_bank = lps.bank.init({"shift": jnp.zeros(3)}, FULL, 3)
    for s in range(4):
        params_bank = lps.bank.add(params_bank, _params(s, fmt))
        stats_bank = lps.bank.add(stats_bank, {"shift": jnp.full(3, float(s))})

    def apply(sample, x):
        assert isinstance(sample["stats"]["shift"], jax.Array)  # FULL: as stored
        return _linear(sample["params"], x) * sample["stats"]["shift"]

    got = lps.bank.predict({"params": params_bank, "stats": stats_bank}, apply, _X)
    want = 0.0
    for i in range(3):
        logits = _linear(lps.bank.get(params_bank, i), _X) * float(i + 1)
        want = want + jax.nn.softmax(logits)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want / 3), rtol=0, atol=3e-7)
    with pytest.raises(ValueError, match="different counts"):
        lps.bank.predict({"params": params_bank, "stats": lps.bank.add(stats_bank, {
            "shift": jnp.zeros(3)})}, apply, _X)
    with pytest.raises(ValueError, match="different capacities"):
        lps.bank.predict({"params": params_bank, "stats": lps.bank.init(
            {"shift": jnp.zeros(3)}, FULL, 2)}, apply, _X)


def test_predict_traced_count_skips_empty_slots():
    fmt = FixedPoint(8, 5)
    bank = _filled_bank(fmt, adds=2, capacity=4)
    calls = []

    def apply(sample, x):
        calls.append(1)  # traced once per compilation, whatever the count
        return _linear(sample, x)

    f = jax.jit(lambda b: lps.bank.predict(b, apply, _X))
    np.testing.assert_allclose(np.asarray(f(bank)), _reference_bma(bank, _linear, _X),
                               rtol=0, atol=3e-7)
    bank3 = lps.bank.add(bank, _params(9, fmt))
    np.testing.assert_allclose(np.asarray(f(bank3)), _reference_bma(bank3, _linear, _X),
                               rtol=0, atol=3e-7)
    assert len(calls) <= 2  # one trace (eval_shape may add one), not one per sample
    empty = lps.bank.init(_params(0, fmt), fmt, 2)
    assert np.isnan(np.asarray(f(empty))).all()  # under jit: NaN, as bma_probs


def test_predict_refuses_bad_arguments():
    bank = _filled_bank(FixedPoint(8, 5), adds=2)
    with pytest.raises(ValueError, match="the sample bank is empty"):
        lps.bank.predict(lps.bank.init(_params(0, FULL), FULL, 2), _linear, _X)
    with pytest.raises(TypeError, match="pytree of SampleBanks"):
        lps.bank.predict({"w": jnp.zeros(3)}, _linear, _X)
    with pytest.raises(TypeError, match="apply_fn must be callable"):
        lps.bank.predict(bank, "model", _X)
    with pytest.raises(TypeError, match="packed must be"):
        lps.bank.predict(bank, _linear, _X, packed="kernels")
    with pytest.raises(ValueError, match="batch_size"):
        lps.bank.predict(bank, _linear, _X, batch_size=0)
    with pytest.raises(TypeError, match="key"):
        lps.bank.predict(bank, _linear, _X, key=3)
