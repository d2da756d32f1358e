"""Image loaders: scikit-learn's digits, Fashion-MNIST (IDX files), CIFAR-10/100 (pickles).

Images are float32 NHWC ``(N, H, W, C)`` scaled to ``[0, 1]``, then normalised per channel
where the dataset states a mean and std; labels are int32.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from lpsampling.data.dataset import (
    CIFAR_MEAN,
    CIFAR_STD,
    CIFAR_URL,
    FASHION_MNIST_DEFAULT_DIR,
    FASHION_MNIST_ENV,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    Dataset,
    PathLike,
    _normalize,
    _to_float,
)
from lpsampling.validation import unit_interval

__all__ = ["load_digits", "read_idx", "load_fashion_mnist", "load_cifar"]

# ----------------------------------------------------------------------------
# digits (scikit-learn, bundled)
# ----------------------------------------------------------------------------


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes).

    Works offline: the data ships inside scikit-learn.  Pixel intensities
    (integers 0..16) are scaled to ``[0, 1]`` by dividing by 16; no further
    normalisation.  The split is a plain (not stratified) random permutation
    drawn with ``numpy.random.default_rng(seed)``, so it is deterministic.

    Args:
      test_fraction: fraction of the 1797 examples put in the test split,
        strictly between 0 and 1 (the count is rounded to the nearest integer).
      seed: seed of the numpy RNG that permutes the examples.

    Returns:
      A :class:`Dataset` with images ``(N, 8, 8, 1)`` float32 in ``[0, 1]`` and
      int32 labels.
    """
    unit_interval("test_fraction", test_fraction, open_left=True, open_right=True)
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0))[..., None]
    labels = np.asarray(bunch.target, dtype=np.int32)
    n = images.shape[0]
    n_test = int(round(test_fraction * n))
    n_test = min(max(n_test, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    return Dataset(
        x_train=np.ascontiguousarray(images[train_idx]),
        y_train=labels[train_idx],
        x_test=np.ascontiguousarray(images[test_idx]),
        y_test=labels[test_idx],
        num_classes=10,
        name="digits",
    )

# ----------------------------------------------------------------------------
# IDX files (Fashion-MNIST)
# ----------------------------------------------------------------------------

# IDX type code (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions


def _read_maybe_gzip(path: Path) -> bytes:
    """File contents, transparently gunzipped when the file is gzip data.

    Gzip is recognised by its magic bytes, not the file name.  A corrupted or
    truncated gzip stream raises ``ValueError`` naming the file.
    """
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupted or truncated gzip data ({exc})") from exc


def read_idx(path: PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Parse one IDX file (the MNIST / Fashion-MNIST container format).

    The file may be raw or gzipped (detected from its first bytes).  The header
    is checked: magic number (two zero bytes, a type code, the number of
    dimensions), the dimension sizes, and that the file length is exactly the
    header plus ``prod(dims) * itemsize`` bytes.

    Args:
      path: the file.
      expected_magic: if given, the required magic number, e.g. ``2049`` for
        1-D unsigned-byte labels or ``2051`` for 3-D unsigned-byte images.

    Returns:
      The array with shape ``dims`` in native byte order (``uint8`` for the
      MNIST-style files).

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: the file is truncated, has trailing bytes, a wrong magic
        number, an unknown type code, or corrupted gzip data; the message names
        the file and the problem.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes, header needs 4)")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: wrong IDX magic number {magic} (0x{magic:08x}), expected "
            f"{expected_magic} (0x{expected_magic:08x})"
        )
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number 0x{magic:08x})")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x} in magic number")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(
            f"{path}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need {header_len})"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected_len = header_len + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected_len:
        raise ValueError(
            f"{path}: truncated IDX file: header says dims {tuple(dims)} "
            f"({expected_len} bytes), file has {len(data)} bytes"
        )
    if len(data) > expected_len:
        raise ValueError(
            f"{path}: IDX file has {len(data) - expected_len} trailing bytes after "
            f"dims {tuple(dims)} ({expected_len} bytes expected)"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # native order, writable copy


_FASHION_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``stem.gz`` (also the ``images.idx3`` dot variant)."""
    variants = (stem, stem.replace("-idx", ".idx"))
    for name in variants:
        for suffix in ("", ".gz"):
            p = directory / (name + suffix)
            if p.is_file():
                return p
    return None


def _fashion_mnist_dir(root: PathLike | None) -> Path:
    if root is None:
        root = os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DEFAULT_DIR
    base = Path(root).expanduser()
    for cand in (
        base,
        base / "fashion-mnist",
        base / "fashion_mnist",
        base / "FashionMNIST" / "raw",
    ):
        if all(_find_idx(cand, stem) is not None for stem in _FASHION_FILES.values()):
            return cand
    missing = [s for s in _FASHION_FILES.values() if _find_idx(base, s) is None]
    what = (
        "directory does not exist"
        if not base.is_dir()
        else "missing " + ", ".join(f"{s}[.gz]" for s in missing)
    )
    raise FileNotFoundError(
        f"Fashion-MNIST not found in {base} ({what}). Expected the four IDX files "
        f"{', '.join(f + '[.gz]' for f in _FASHION_FILES.values())}. Install them with "
        f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu, puts them in "
        f"{FASHION_MNIST_DEFAULT_DIR}), or set {FASHION_MNIST_ENV} (or pass root / "
        f"--data-dir) to a directory holding them."
    )


def load_fashion_mnist(root: PathLike | None = None, normalize: bool = True) -> Dataset:
    """Fashion-MNIST (60000 train / 10000 test, 28x28 grey, 10 classes).

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each either raw
    or ``.gz``) from ``root``.

    Args:
      root: directory holding the files (its ``fashion-mnist/`` or
        ``FashionMNIST/raw/`` subdirectory is also tried).  Defaults to
        ``$LPSAMPLING_FASHION_MNIST`` or ``/usr/share/datasets/fashion-mnist``.
      normalize: if true (default), images scaled to ``[0, 1]`` are normalised
        with mean 0.2860, std 0.3530; if false they stay in ``[0, 1]``.

    Returns:
      A :class:`Dataset` with images ``(N, 28, 28, 1)`` float32, int32 labels.

    Raises:
      FileNotFoundError: the directory or one of the files is missing (the
        message says how to install the data).
      ValueError: a file is truncated, corrupted or inconsistent.
    """
    directory = _fashion_mnist_dir(root)
    arrays = {}
    for key, stem in _FASHION_FILES.items():
        path = _find_idx(directory, stem)
        assert path is not None
        magic = _IDX_IMAGES_MAGIC if key.endswith("images") else _IDX_LABELS_MAGIC
        arr = read_idx(path, expected_magic=magic)
        if key.endswith("images") and arr.shape[1:] != (28, 28):
            raise ValueError(f"{path}: expected 28x28 images, header says {arr.shape[1:]}")
        if key.endswith("labels") and arr.size and int(arr.max()) >= 10:
            raise ValueError(f"{path}: label {int(arr.max())} out of range [0, 10)")
        arrays[key] = (path, arr)
    out = {}
    for split in ("train", "test"):
        (ipath, images), (lpath, labels) = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{ipath} has {images.shape[0]} images but {lpath} has {labels.shape[0]} labels"
            )
        x = _to_float(images, 255.0)[..., None]
        if normalize:
            x = _normalize(x, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
        out[split] = (x, labels.astype(np.int32))
    return Dataset(
        x_train=out["train"][0],
        y_train=out["train"][1],
        x_test=out["test"][0],
        y_test=out["test"][1],
        num_classes=10,
        name="fashion_mnist",
    )

# ----------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickle version)
# ----------------------------------------------------------------------------

# Globals a genuine CIFAR pickle (or a re-pickled copy) may reference; anything
# else is refused so that a planted pickle cannot run code.
_PICKLE_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _load_pickle(path: Path) -> dict[bytes, Any]:
    """``pickle.load(f, encoding='bytes')`` restricted to plain data and arrays."""
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable CIFAR pickle ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def _integral_array(path: Path, key: bytes, value: Any) -> np.ndarray:
    """``value`` as an int64 array, refusing what a cast would mangle: non-numeric data,
    NaN/inf, and fractional values (``ValueError`` naming the file and the key)."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {key!r} is not a numeric array ({exc})") from exc
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer)
                                     or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{path}: {key!r} must hold integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{path}: {key!r} holds NaN or inf")
        if not (arr == np.round(arr)).all():
            raise ValueError(f"{path}: {key!r} holds non-integer values (e.g. "
                             f"{arr[arr != np.round(arr)].flat[0]!r}); a cast would "
                             "truncate them")
        if arr.size and (arr.min() < -2**62 or arr.max() > 2**62):
            raise ValueError(f"{path}: {key!r} holds values too large for int64")
    elif arr.dtype == np.uint64 and arr.size and arr.max() > 2**62:
        raise ValueError(f"{path}: {key!r} holds values too large for int64")
    return arr.astype(np.int64, copy=False)


def _cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file -> ``uint8 (N, 32, 32, 3)`` images, ``int32 (N,)`` labels."""
    d = _load_pickle(path)
    for key in (b"data", label_key):
        if key not in d:
            raise ValueError(f"{path}: missing key {key!r} (has {sorted(d)})")
    data = np.asarray(d[b"data"])
    labels = _integral_array(path, label_key, d[label_key]).reshape(-1)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' has shape {data.shape}, expected (N, 3072)")
    if data.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: {label_key!r} has labels outside [0, {num_classes}) "
                         f"(min {labels.min()}, max {labels.max()})")
    if data.dtype != np.uint8:
        data = _integral_array(path, b"data", data)
        if data.size and (data.min() < 0 or data.max() > 255):
            raise ValueError(f"{path}: b'data' has pixel values outside [0, 255] "
                             f"(min {data.min()}, max {data.max()})")
    # Rows are channel-major: 1024 red, 1024 green, 1024 blue, each row-major 32x32.
    images = data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int32)


def _cifar_dir(root: PathLike | None, num_classes: int) -> tuple[Path, list[str], str]:
    subdir, archive = (
        ("cifar-10-batches-py", "cifar-10-python.tar.gz")
        if num_classes == 10
        else ("cifar-100-python", "cifar-100-python.tar.gz")
    )
    train = [f"data_batch_{i}" for i in range(1, 6)] if num_classes == 10 else ["train"]
    test = "test_batch" if num_classes == 10 else "test"
    howto = (
        f"Download the CIFAR-{num_classes} python version ({archive}) from {CIFAR_URL} on a "
        f"machine with network, extract it (tar xzf {archive}) and pass the directory "
        f"containing {subdir}/ with --data-dir (or as root)."
    )
    if root is None:
        raise FileNotFoundError(f"CIFAR-{num_classes}: no data directory given. {howto}")
    base = Path(root).expanduser()
    for cand in (base, base / subdir):
        if all((cand / name).is_file() for name in [*train, test]):
            return cand, train, test
    hint = ""
    if (base / archive).is_file():
        hint = f" Found {base / archive} but it is not extracted."
    raise FileNotFoundError(
        f"CIFAR-{num_classes} not found: expected {', '.join([*train, test])} in {base} or "
        f"{base / subdir}.{hint} {howto}"
    )


def load_cifar(root: PathLike | None, num_classes: int = 10, normalize: bool = True) -> Dataset:
    """CIFAR-10 or CIFAR-100 (50000 train / 10000 test, 32x32 RGB).

    Reads the standard python-pickle version: ``cifar-10-batches-py/``
    (``data_batch_1`` .. ``data_batch_5``, ``test_batch``; keys ``b'data'``,
    ``b'labels'``) or ``cifar-100-python/`` (``train``, ``test``; keys
    ``b'data'``, ``b'fine_labels'``).  The pickles are read with
    ``encoding='bytes'`` by an unpickler that only admits numpy arrays and
    plain containers.

    Args:
      root: the extracted directory itself, or its parent.
      num_classes: 10 for CIFAR-10, 100 for CIFAR-100 (fine labels).
      normalize: if true (default), images scaled to ``[0, 1]`` are normalised
        per channel with mean (0.4914, 0.4822, 0.4465) and std
        (0.2023, 0.1994, 0.2010) (the CIFAR-10 statistics, used for both);
        if false they stay in ``[0, 1]``.

    Returns:
      A :class:`Dataset` with images ``(N, 32, 32, 3)`` float32 (NHWC) and int32
      labels.

    Raises:
      FileNotFoundError: the files are missing (the message says where to get
        them).
      ValueError: ``num_classes`` not 10/100, or a malformed batch file.
    """
    if num_classes not in (10, 100):
        raise ValueError(f"num_classes must be 10 or 100, got {num_classes!r}")
    directory, train_names, test_name = _cifar_dir(root, num_classes)
    label_key = b"labels" if num_classes == 10 else b"fine_labels"

    def load(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_cifar_batch(directory / n, label_key, num_classes) for n in names]
        images = np.concatenate([p[0] for p in parts])
        x = _to_float(images, 255.0)
        if normalize:
            x = _normalize(x, CIFAR_MEAN, CIFAR_STD)
        return np.ascontiguousarray(x), np.concatenate([p[1] for p in parts])

    x_train, y_train = load(train_names)
    x_test, y_test = load([test_name])
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        name=f"cifar{num_classes}",
    )
