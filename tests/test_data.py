"""Tests for lpsampling.data: loaders on tiny generated files, the real bundled data,
augmentation and batching."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpsampling import data

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------


def test_digits_shapes_dtypes_ranges():
    ds = data.load_digits()
    assert ds.name == "digits" and ds.num_classes == 10 and ds.vocab_size is None
    assert ds.x_train.shape[1:] == (8, 8, 1) and ds.x_test.shape[1:] == (8, 8, 1)
    assert ds.num_train + ds.num_test == 1797
    assert ds.num_test == round(0.2 * 1797)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.x_test.dtype == np.float32 and ds.y_test.dtype == np.int32
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0 and ds.x_train.max() == 1.0
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert ds.input_shape == (8, 8, 1)


def test_digits_deterministic_split():
    a, b = data.load_digits(seed=3), data.load_digits(seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    c = data.load_digits(seed=4, test_fraction=0.5)
    assert c.num_test == round(0.5 * 1797)
    assert not np.array_equal(a.y_train[:50], c.y_train[:50])
    with pytest.raises(ValueError, match="test_fraction"):
        data.load_digits(test_fraction=1.0)


# ----------------------------------------------------------------------------
# IDX files
# ----------------------------------------------------------------------------


def _idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | arr.ndim
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write(path: Path, payload: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def _fake_fashion(root: Path, n_train: int = 6, n_test: int = 4, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, (n_train,), dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, (n_test,), dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        _write(root / name, _idx_bytes(arr), gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([3, 1], dtype=np.uint8)
    pi = _write(tmp_path / "img-idx3-ubyte", _idx_bytes(images), gz)
    pl = _write(tmp_path / "lab-idx1-ubyte", _idx_bytes(labels), gz)
    got = data.read_idx(pi, expected_magic=2051)
    assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(data.read_idx(pl, expected_magic=2049), labels)
    got[0, 0, 0] = 7  # a writable copy


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated(tmp_path, gz):
    payload = _idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8))
    p = _write(tmp_path / "train-images-idx3-ubyte", payload[:-10], gz)
    with pytest.raises(ValueError, match="truncated") as exc:
        data.read_idx(p, expected_magic=2051)
    assert str(p) in str(exc.value)


def test_read_idx_truncated_header_and_trailing(tmp_path):
    p = _write(tmp_path / "a", _idx_bytes(np.zeros((5, 3, 3)))[:9], gz=False)
    with pytest.raises(ValueError, match="truncated IDX header"):
        data.read_idx(p)
    p = _write(tmp_path / "b", b"\x00\x00", gz=False)
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(p)
    p = _write(tmp_path / "c", _idx_bytes(np.zeros((5,))) + b"xx", gz=False)
    with pytest.raises(ValueError, match="trailing"):
        data.read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_wrong_magic(tmp_path, gz):
    labels = np.zeros((4,), dtype=np.uint8)
    p = _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(labels), gz)
    with pytest.raises(ValueError, match="magic") as exc:
        data.read_idx(p, expected_magic=2051)  # a label file where images were expected
    assert str(p) in str(exc.value)
    p = _write(tmp_path / "junk", b"PK\x03\x04" + bytes(20), gz)
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(p)


def test_read_idx_corrupted_gzip(tmp_path):
    payload = gzip.compress(_idx_bytes(np.zeros((50, 28, 28), dtype=np.uint8)))
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match="gzip") as exc:
        data.read_idx(p)
    assert str(p) in str(exc.value)


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_fake_files(tmp_path, gz):
    arrays = _fake_fashion(tmp_path, gz=gz)
    ds = data.load_fashion_mnist(tmp_path)
    assert ds.name == "fashion_mnist" and ds.num_classes == 10
    assert ds.x_train.shape == (6, 28, 28, 1) and ds.x_test.shape == (4, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_test.dtype == np.int32
    expected = (arrays["train-images-idx3-ubyte"][..., None] / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(ds.x_train, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    raw = data.load_fashion_mnist(tmp_path, normalize=False)
    assert raw.x_train.min() >= 0.0 and raw.x_train.max() <= 1.0


def test_fashion_mnist_env_var_and_subdir(tmp_path, monkeypatch):
    _fake_fashion(tmp_path / "fashion-mnist", gz=False)
    monkeypatch.setenv("LPSAMPLING_FASHION_MNIST", str(tmp_path))
    assert data.load_fashion_mnist().num_train == 6
    assert data.load_dataset("fashion-mnist").num_test == 4


def test_fashion_mnist_inconsistent_counts(tmp_path):
    _fake_fashion(tmp_path, gz=False)
    labels = np.zeros((5,), dtype=np.uint8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
    with pytest.raises(ValueError, match="6 images"):
        data.load_fashion_mnist(tmp_path)


def test_fashion_mnist_truncated_file_named(tmp_path):
    _fake_fashion(tmp_path, gz=False)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*truncated"):
        data.load_fashion_mnist(tmp_path)


def test_fashion_mnist_missing(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as exc:
        data.load_fashion_mnist(missing)
    msg = str(exc.value)
    assert str(missing) in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "LPSAMPLING_FASHION_MNIST" in msg
    # a partial directory names the missing file
    _fake_fashion(tmp_path / "partial", gz=True)
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load_fashion_mnist(tmp_path / "partial")


@pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason=f"{FASHION_DIR} not present (install the Debian package dataset-fashion-mnist)",
)
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("LPSAMPLING_FASHION_MNIST", raising=False)
    ds = data.load_fashion_mnist()
    assert ds.num_train == 60000 and ds.num_test == 10000
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    # the stated statistics normalise the training set to about zero mean, unit std
    assert abs(float(ds.x_train.mean())) < 0.01
    assert abs(float(ds.x_train.std()) - 1.0) < 0.01


# ----------------------------------------------------------------------------
# CIFAR
# ----------------------------------------------------------------------------


def _cifar_images(rng, n):
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def _dump(path: Path, obj, protocol: int = 2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _fake_cifar10(root: Path, per_batch: int = 3):
    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    train = []
    for i in range(1, 6):
        x, y = _cifar_images(rng, per_batch), rng.integers(0, 10, per_batch).tolist()
        train.append((x, y))
        batch = {b"batch_label": b"training batch", b"labels": y, b"data": x, b"filenames": []}
        if i == 1:
            # as in the original files, written by numpy 1.x: numpy.core.multiarray globals
            raw = pickle.dumps(batch, protocol=2)
            assert b"numpy._core.multiarray\n_reconstruct" in raw
            raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
            (d / "data_batch_1").write_bytes(raw)
        else:
            _dump(d / f"data_batch_{i}", batch)
    xt, yt = _cifar_images(rng, 2), [9, 0]
    _dump(d / "test_batch", {b"batch_label": b"testing", b"labels": yt, b"data": xt})
    return d, train, (xt, yt)


def test_cifar10_tiny(tmp_path):
    d, train, (xt, yt) = _fake_cifar10(tmp_path)
    ds = data.load_cifar(tmp_path, num_classes=10)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.y_train, np.concatenate([y for _, y in train]))
    np.testing.assert_array_equal(ds.y_test, yt)
    # NHWC layout: pixel (r, c) channel k comes from row offset k*1024 + r*32 + c
    raw = data.load_cifar(d, num_classes=10, normalize=False)  # root itself also accepted
    x0 = train[0][0][0]
    for r, c, k in [(0, 0, 0), (5, 7, 1), (31, 2, 2)]:
        assert raw.x_train[0, r, c, k] == pytest.approx(x0[k * 1024 + r * 32 + c] / 255.0)
    mean = np.array([0.4914, 0.4822, 0.4465], np.float32)
    std = np.array([0.2023, 0.1994, 0.2010], np.float32)
    np.testing.assert_allclose(ds.x_test, (raw.x_test - mean) / std, rtol=1e-5, atol=1e-5)


def test_cifar100_tiny(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    x, fine = _cifar_images(rng, 4), [99, 0, 42, 7]
    _dump(d / "train", {b"data": x, b"fine_labels": fine, b"coarse_labels": [19, 0, 3, 1]}, 4)
    _dump(d / "test", {b"data": x[:2], b"fine_labels": fine[:2], b"coarse_labels": [1, 1]}, 5)
    ds = data.load_dataset("cifar100", root=tmp_path)
    assert ds.name == "cifar100" and ds.num_classes == 100
    assert ds.x_train.shape == (4, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(ds.y_train, fine)
    np.testing.assert_array_equal(ds.x_test, ds.x_train[:2])


def test_cifar_bad_files(tmp_path):
    d, _, _ = _fake_cifar10(tmp_path)
    _dump(d / "test_batch", {b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(ValueError, match="test_batch.*labels"):
        data.load_cifar(tmp_path)
    _dump(d / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(ValueError, match="3072"):
        data.load_cifar(tmp_path)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": Path("x"), b"labels": []}, f)  # a non-allowed global
    with pytest.raises(ValueError, match="refusing"):
        data.load_cifar(tmp_path)
    with pytest.raises(ValueError, match="10 or 100"):
        data.load_cifar(tmp_path, num_classes=20)


@pytest.mark.parametrize("key,value,match", [
    (b"data", np.full((2, 3072), np.nan), r"b'data' holds NaN or inf"),
    (b"data", np.full((2, 3072), np.inf, np.float32), r"b'data' holds NaN or inf"),
    (b"data", np.full((2, 3072), -1, np.int16), r"b'data' has pixel values outside \[0, 255\]"),
    (b"data", np.full((2, 3072), 256, np.int32), r"b'data' has pixel values outside"),
    (b"data", np.full((2, 3072), 1e12), r"b'data' has pixel values outside"),
    (b"data", np.full((2, 3072), 3.5), r"b'data' holds non-integer values"),
    (b"data", np.full((2, 3072), "7"), r"b'data' must hold integers"),
    (b"labels", [1.5, 0.0], r"b'labels' holds non-integer values"),
    (b"labels", [np.nan, 0.0], r"b'labels' holds NaN or inf"),
    (b"labels", [10, 0], r"b'labels' has labels outside \[0, 10\)"),
    (b"labels", [-1, 0], r"b'labels' has labels outside"),
    (b"labels", [1e30, 0], r"b'labels'"),
    (b"labels", ["a", "b"], r"b'labels' must hold integers"),
])
def test_cifar_bad_values_are_refused(tmp_path, key, value, match):
    """NaN/negative/huge pixels used to wrap when cast to uint8 and float labels were
    truncated: each is a ValueError naming the file and the field."""
    d, _, _ = _fake_cifar10(tmp_path)
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [9, 0]}
    batch[key] = value
    _dump(d / "test_batch", batch)
    with pytest.raises(ValueError, match="test_batch.*" + match):
        data.load_cifar(tmp_path)


def test_cifar_integral_non_uint8_values_are_accepted(tmp_path):
    d, _, _ = _fake_cifar10(tmp_path)
    x = np.arange(2 * 3072).reshape(2, 3072) % 256
    _dump(d / "test_batch", {b"data": x.astype(np.float64), b"labels": np.array([9.0, 0.0])})
    ds = data.load_cifar(tmp_path, normalize=False)
    np.testing.assert_array_equal(ds.y_test, [9, 0])
    assert ds.x_test[1, 0, 0, 0] == pytest.approx((3072 % 256) / 255.0)


def test_cifar_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        data.load_cifar(tmp_path / "nodata")
    msg = str(exc.value)
    assert str(tmp_path / "nodata") in msg and "cifar-10-batches-py" in msg
    assert "--data-dir" in msg and "cs.toronto.edu" in msg
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        data.load_dataset("cifar100", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        data.load_dataset("cifar10")


# ----------------------------------------------------------------------------
# IMDB
# ----------------------------------------------------------------------------


def _fake_imdb(root: Path):
    reviews = {
        "train/pos": ["Great great movie!<br />Great fun.", "fun, fun and zebra"],
        "train/neg": ["Bad movie. Bad bad bad.", "a boring movie"],
        "test/pos": ["great fun unseen"],
        "test/neg": ["bad"],
    }
    for sub, texts in reviews.items():
        (root / "aclImdb" / sub).mkdir(parents=True)
        for i, t in enumerate(texts):
            (root / "aclImdb" / sub / f"{i}_5.txt").write_text(t, encoding="utf-8")
    (root / "aclImdb" / "train" / "unsup").mkdir()
    (root / "aclImdb" / "train" / "unsup" / "0_0.txt").write_text("ignored ignored ignored")


def test_tokenize():
    assert data.tokenize("Don't PANIC!<br />It's 42.") == ["don't", "panic", "it's", "42"]


def test_imdb_tiny(tmp_path):
    _fake_imdb(tmp_path)
    ds = data.load_imdb(tmp_path, vocab_size=6, max_len=5)
    assert ds.name == "imdb" and ds.num_classes == 2 and ds.vocab_size == 6
    assert ds.x_train.shape == (4, 5) and ds.x_test.shape == (2, 5)
    assert ds.x_train.dtype == np.int32 and ds.y_train.dtype == np.int32
    # counts: bad 4, great 3, fun 3, movie 3, and 1, a 1, boring 1, zebra 1
    # ties broken alphabetically -> fun=3, great=4, movie=5 (0 pad, 1 unknown)
    bad, fun, great, movie = 2, 3, 4, 5
    expected_train = {
        (great, great, movie, great, fun): 1,  # 5 tokens: no padding
        (0, fun, fun, 1, 1): 1,  # "and", "zebra" unknown; left-padded
        (bad, movie, bad, bad, bad): 0,
        (0, 0, 1, 1, movie): 0,
    }
    got = {tuple(row.tolist()): int(lab) for row, lab in zip(ds.x_train, ds.y_train, strict=True)}
    assert got == expected_train
    got_test = {tuple(r.tolist()): int(lab) for r, lab in zip(ds.x_test, ds.y_test, strict=True)}
    assert got_test == {(0, 0, great, fun, 1): 1, (0, 0, 0, 0, bad): 0}
    assert ds.x_train.max() < ds.vocab_size


def test_imdb_truncation_keeps_last_tokens(tmp_path):
    _fake_imdb(tmp_path)
    ds = data.load_dataset("imdb", root=tmp_path / "aclImdb", vocab_size=100, max_len=2)
    assert ds.x_train.shape == (4, 2)
    # "Bad movie. Bad bad bad." -> last two tokens "bad bad"
    assert [2, 2] in ds.x_train.tolist()
    again = data.load_imdb(tmp_path, vocab_size=100, max_len=2)
    np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_imdb_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        data.load_imdb(tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "aclImdb") in msg and "aclImdb_v1" in msg


# ----------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------


def test_load_dataset_dispatch_and_unknown():
    assert data.DATASETS == ("digits", "fashion_mnist", "cifar10", "cifar100", "imdb")
    ds = data.load_dataset("digits", root="/ignored", seed=1)
    assert ds.name == "digits"
    with pytest.raises(ValueError) as exc:
        data.load_dataset("mnist")
    for name in data.DATASETS:
        assert name in str(exc.value)


# ----------------------------------------------------------------------------
# augmentation
# ----------------------------------------------------------------------------


def _images(n=6, h=5, w=4, c=3):
    return jnp.asarray(np.random.default_rng(0).normal(size=(n, h, w, c)), jnp.float32)


def test_random_crop_flip_shape_and_determinism():
    x = _images()
    key = jax.random.PRNGKey(0)
    a = data.random_crop_flip(key, x, padding=2)
    b = data.random_crop_flip(key, x, padding=2)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = data.random_crop_flip(jax.random.PRNGKey(1), x, padding=2)
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    typed = data.random_crop_flip(jax.random.key(0), x, padding=2)
    assert typed.shape == x.shape


def test_random_crop_flip_padding0_only_flips():
    x = _images(n=32)
    out = np.asarray(data.random_crop_flip(jax.random.PRNGKey(3), x, padding=0))
    xn = np.asarray(x)
    flipped = [bool(np.array_equal(o, i[:, ::-1])) for o, i in zip(out, xn, strict=True)]
    same = [bool(np.array_equal(o, i)) for o, i in zip(out, xn, strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert any(flipped) and any(same)


def test_random_crop_flip_crops_are_windows_of_padded_image():
    x = _images(n=8, h=4, w=4, c=1)
    p = 1
    out = np.asarray(data.random_crop_flip(jax.random.PRNGKey(5), x, padding=p))
    padded = np.pad(np.asarray(x), ((0, 0), (p, p), (p, p), (0, 0)))
    for o, img in zip(out, padded, strict=True):
        windows = [
            img[dy : dy + 4, dx : dx + 4] for dy in range(2 * p + 1) for dx in range(2 * p + 1)
        ]
        assert any(np.array_equal(o, win) or np.array_equal(o, win[:, ::-1]) for win in windows)


def test_random_crop_flip_under_jit():
    x = _images()
    key = jax.random.PRNGKey(7)
    f = jax.jit(data.random_crop_flip, static_argnames="padding")
    np.testing.assert_allclose(
        np.asarray(f(key, x, padding=4)), np.asarray(data.random_crop_flip(key, x, padding=4))
    )
    g = jax.jit(lambda k, im: data.random_crop_flip(k, im))  # default padding inside jit
    assert g(key, x).shape == x.shape


# ----------------------------------------------------------------------------
# batching
# ----------------------------------------------------------------------------


def test_batches_epoch():
    x = np.arange(10)[:, None] * np.ones((1, 3))
    y = np.arange(10, dtype=np.int32)
    got = list(data.batches(0, x, y, 3))
    assert len(got) == 3 and all(xb.shape == (3, 3) and yb.shape == (3,) for xb, yb in got)
    for xb, yb in got:
        np.testing.assert_array_equal(xb[:, 0], yb)
    seen = np.concatenate([yb for _, yb in got])
    assert len(set(seen.tolist())) == 9
    again = list(data.batches(0, x, y, 3))
    for (_, a), (_, b) in zip(got, again, strict=True):
        np.testing.assert_array_equal(a, b)
    full = list(data.batches(1, x, y, 3, drop_remainder=False))
    assert [len(b) for _, b in full] == [3, 3, 3, 1]
    assert sorted(np.concatenate([b for _, b in full]).tolist()) == list(range(10))


def test_batches_jax_key_and_errors():
    x, y = np.zeros((8, 2)), np.arange(8)
    a = [b for _, b in data.batches(jax.random.PRNGKey(2), x, y, 4)]
    b = [b for _, b in data.batches(jax.random.key(2), x, y, 4)]
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="different lengths"):
        data.batches(0, x, y[:7], 4)
    with pytest.raises(ValueError, match="exceeds"):
        data.batches(0, x, y, 9)
    with pytest.raises(ValueError, match="positive"):
        data.batches(0, x, y, 0)
