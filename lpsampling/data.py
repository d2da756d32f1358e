"""Real datasets for the lpsampling experiments, read from local files only (no network).

Loaders: ``digits`` (bundled with scikit-learn, the default), ``fashion_mnist`` (the IDX
files, from ``$LPSAMPLING_FASHION_MNIST`` or ``/usr/share/datasets/fashion-mnist``),
``cifar10`` / ``cifar100`` (the python-pickle batches), ``imdb`` (the extracted ``aclImdb/``).

A :class:`Dataset` holds float32 NHWC images ``(N, H, W, C)`` scaled to ``[0, 1]`` and then
normalised per channel where the dataset states a mean and std, or int32 token ids
``(N, max_len)`` (``0`` padding, ``1`` unknown word); labels are int32 in
``[0, num_classes)``. :func:`random_crop_flip` is the CIFAR augmentation in pure JAX,
:func:`batches` a deterministic shuffled minibatch iterator. No torch, no tensorflow.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATASETS",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "Dataset",
    "batches",
    "load_cifar",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_imdb",
    "random_crop_flip",
    "read_idx",
    "tokenize",
]

PathLike = str | os.PathLike[str]

#: Names accepted by :func:`load_dataset`.
DATASETS: tuple[str, ...] = ("digits", "fashion_mnist", "cifar10", "cifar100", "imdb")

#: Per-channel statistics of the [0, 1]-scaled training images.
FASHION_MNIST_MEAN: tuple[float, ...] = (0.2860,)
FASHION_MNIST_STD: tuple[float, ...] = (0.3530,)
CIFAR_MEAN: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
CIFAR_STD: tuple[float, ...] = (0.2023, 0.1994, 0.2010)

FASHION_MNIST_ENV = "LPSAMPLING_FASHION_MNIST"
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held in memory as numpy arrays.

    Attributes:
      x_train: ``(N_train, H, W, C)`` float32 images or ``(N_train, L)`` int32
        token ids.
      y_train: ``(N_train,)`` int32 labels in ``[0, num_classes)``.
      x_test: like ``x_train`` for the test split.
      y_test: like ``y_train`` for the test split.
      num_classes: number of classes.
      name: dataset name (one of :data:`DATASETS`).
      vocab_size: for text, the size of the token-id space (ids are in
        ``[0, vocab_size)``, including padding ``0`` and unknown ``1``);
        ``None`` for images.

    Equality and hashing are by identity (the fields are arrays).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    vocab_size: int | None = None

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(28, 28, 1)`` or ``(max_len,)``."""
        return tuple(int(d) for d in self.x_train.shape[1:])


def _to_float(images: np.ndarray, scale: float) -> np.ndarray:
    """uint8 images -> new float32 array divided by ``scale``."""
    x = images.astype(np.float32)
    x /= np.float32(scale)
    return x


def _normalize(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(x - mean) / std`` per channel (last axis), in place on a float32 array."""
    x -= np.asarray(mean, dtype=np.float32)
    x /= np.asarray(std, dtype=np.float32)
    return x


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
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
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


def _cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file -> ``uint8 (N, 32, 32, 3)`` images, ``int32 (N,)`` labels."""
    d = _load_pickle(path)
    for key in (b"data", label_key):
        if key not in d:
            raise ValueError(f"{path}: missing key {key!r} (has {sorted(d)})")
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' has shape {data.shape}, expected (N, 3072)")
    if data.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels outside [0, {num_classes})")
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


# ----------------------------------------------------------------------------
# IMDB reviews (aclImdb)
# ----------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[a-z0-9']+")
PAD_ID = 0
UNK_ID = 1


def tokenize(text: str) -> list[str]:
    """Lowercase, drop ``<br />`` tags, and return the ``[a-z0-9']+`` runs."""
    return _TOKEN_RE.findall(text.lower().replace("<br />", " "))


def _imdb_dir(root: PathLike | None) -> Path:
    howto = (
        f"Download aclImdb_v1.tar.gz from {IMDB_URL} on a machine with network and extract "
        f"it under the data directory (tar xzf aclImdb_v1.tar.gz creates aclImdb/), then pass "
        f"that directory with --data-dir (or as root)."
    )
    if root is None:
        raise FileNotFoundError(f"IMDB: no data directory given. {howto}")
    base = Path(root).expanduser()
    needed = ("train/pos", "train/neg", "test/pos", "test/neg")
    for cand in (base / "aclImdb", base):
        if all((cand / sub).is_dir() for sub in needed):
            return cand
    hint = ""
    if (base / "aclImdb_v1.tar.gz").is_file():
        hint = f" Found {base / 'aclImdb_v1.tar.gz'} but it is not extracted."
    raise FileNotFoundError(
        f"IMDB not found: expected {', '.join(needed)} under {base / 'aclImdb'} or {base}."
        f"{hint} {howto}"
    )


def _read_reviews(directory: Path, split: str) -> tuple[list[list[str]], np.ndarray]:
    """Tokenised reviews of ``split`` (neg first, then pos; files sorted by name)."""
    docs: list[list[str]] = []
    labels: list[int] = []
    for label, sub in ((0, "neg"), (1, "pos")):
        for path in sorted((directory / split / sub).glob("*.txt")):
            docs.append(tokenize(path.read_text(encoding="utf-8", errors="replace")))
            labels.append(label)
    if not docs:
        raise FileNotFoundError(f"IMDB: no *.txt reviews in {directory / split}/pos or /neg")
    return docs, np.asarray(labels, dtype=np.int32)


def _encode(docs: list[list[str]], index: dict[str, int], max_len: int) -> np.ndarray:
    """Token ids, keeping the last ``max_len`` tokens, left-padded with 0."""
    out = np.zeros((len(docs), max_len), dtype=np.int32)
    for i, doc in enumerate(docs):
        ids = [index.get(tok, UNK_ID) for tok in doc[-max_len:]] if max_len else []
        if ids:
            out[i, max_len - len(ids) :] = ids
    return out


def load_imdb(
    root: PathLike | None, vocab_size: int = 10000, max_len: int = 200, seed: int = 0
) -> Dataset:
    """IMDB movie-review sentiment (25000 train / 25000 test, 2 classes).

    Reads ``aclImdb/{train,test}/{pos,neg}/*.txt`` (``train/unsup`` is ignored).
    Text is tokenised by :func:`tokenize`.  The vocabulary is built from the
    training reviews only: words sorted by decreasing count, ties broken
    alphabetically; the ``vocab_size - 2`` most frequent get ids ``2, 3, ...``,
    id ``0`` is padding and id ``1`` every other word.  Each review keeps its
    *last* ``max_len`` tokens (like Keras ``pad_sequences`` defaults) and
    shorter ones are left-padded with ``0``.

    Examples are read neg-then-pos in file-name order and then shuffled with
    ``numpy.random.default_rng(seed)`` (one permutation per split) so that
    slices of the arrays contain both classes.

    Args:
      root: directory containing ``aclImdb/`` (or ``aclImdb`` itself).
      vocab_size: size of the token-id space, including the two reserved ids
        (must be at least 2).
      max_len: sequence length in tokens.
      seed: seed of the permutation of the examples.

    Returns:
      A :class:`Dataset` with ``x`` of shape ``(N, max_len)`` int32, labels
      int32 (pos = 1, neg = 0), ``num_classes=2`` and ``vocab_size``.

    Raises:
      FileNotFoundError: the directory layout is missing.
      ValueError: invalid ``vocab_size`` or ``max_len``.
    """
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2 (pad and unknown ids), got {vocab_size}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    directory = _imdb_dir(root)
    train_docs, y_train = _read_reviews(directory, "train")
    test_docs, y_test = _read_reviews(directory, "test")
    counts = Counter(tok for doc in train_docs for tok in doc)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: vocab_size - 2]
    index = {tok: i + 2 for i, (tok, _) in enumerate(ranked)}
    x_train = _encode(train_docs, index, max_len)
    x_test = _encode(test_docs, index, max_len)
    rng = np.random.default_rng(seed)
    p_train = rng.permutation(len(y_train))
    p_test = rng.permutation(len(y_test))
    return Dataset(
        x_train=x_train[p_train],
        y_train=y_train[p_train],
        x_test=x_test[p_test],
        y_test=y_test[p_test],
        num_classes=2,
        name="imdb",
        vocab_size=vocab_size,
    )


# ----------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------


def load_dataset(name: str, root: PathLike | None = None, **kw: Any) -> Dataset:
    """Load a dataset by name.

    Args:
      name: one of :data:`DATASETS` (case-insensitive, ``-`` accepted for
        ``_``).
      root: data directory; ignored for ``digits``; optional for
        ``fashion_mnist`` (see :func:`load_fashion_mnist`); required for the
        CIFAR and IMDB datasets.
      **kw: passed to the loader (e.g. ``vocab_size``, ``max_len`` for imdb,
        ``test_fraction``, ``seed`` for digits, ``normalize`` for images).

    Raises:
      ValueError: unknown name (the message lists the valid names).
    """
    key = name.strip().lower().replace("-", "_")
    if key == "digits":
        return load_digits(**kw)
    if key == "fashion_mnist":
        return load_fashion_mnist(root, **kw)
    if key == "cifar10":
        return load_cifar(root, num_classes=10, **kw)
    if key == "cifar100":
        return load_cifar(root, num_classes=100, **kw)
    if key == "imdb":
        return load_imdb(root, **kw)
    raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")


# ----------------------------------------------------------------------------
# Augmentation and batching
# ----------------------------------------------------------------------------


def random_crop_flip(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """Per-example random crop and horizontal flip (standard CIFAR augmentation).

    Each image is zero-padded by ``padding`` pixels on every side, a window of
    the original ``H x W`` size is cut at an offset drawn uniformly from
    ``{0, ..., 2 * padding}`` in each direction, and the result is mirrored
    left-right with probability 1/2.  Pure JAX (``jax.vmap`` over examples with
    ``jax.lax.dynamic_slice``), so it works under ``jax.jit``; ``padding`` must
    be static there.

    Note that the padding value is 0 in the array's own units: for normalised
    images that is the dataset mean colour, not black.

    Args:
      key: PRNG key (raw ``uint32[2]`` or typed); the only source of randomness.
      images: ``(N, H, W, C)`` batch.
      padding: pixels of zero padding per side (``>= 0``).

    Returns:
      Array with the same shape and dtype as ``images``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

    def one(k: jax.Array, img: jax.Array) -> jax.Array:
        k_crop, k_flip = jax.random.split(k)
        dy, dx = jax.random.randint(k_crop, (2,), 0, 2 * padding + 1)
        crop = jax.lax.dynamic_slice(img, (dy, dx, 0), (h, w, c))
        return jnp.where(jax.random.bernoulli(k_flip), crop[:, ::-1, :], crop)

    return jax.vmap(one)(jax.random.split(key, n), padded)


def _numpy_rng(key_or_seed: Any) -> np.random.Generator:
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed
    if isinstance(key_or_seed, int | np.integer):
        return np.random.default_rng(int(key_or_seed))
    key = key_or_seed
    if jnp.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    words = np.asarray(key)
    if words.dtype.kind not in "ui":
        raise TypeError(
            f"key_or_seed must be an int seed, a numpy Generator or a JAX PRNG key, "
            f"got {type(key_or_seed).__name__}"
        )
    return np.random.default_rng(words.astype(np.uint64).ravel().tolist())


def batches(
    key_or_seed: int | jax.Array | np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    drop_remainder: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One shuffled pass (epoch) over ``(x, y)`` in minibatches.

    The permutation comes from a numpy RNG seeded by ``key_or_seed`` (an int, a
    JAX PRNG key, or a ``numpy.random.Generator`` used as is), so the same seed
    or key gives the same batches.  Use a different seed/key per epoch.

    Args:
      key_or_seed: int seed, JAX PRNG key, or numpy ``Generator``.
      x: ``(N, ...)`` inputs.
      y: ``(N, ...)`` targets.
      batch_size: examples per batch.
      drop_remainder: if true, the last ``N % batch_size`` examples of the
        permutation are skipped so every batch has exactly ``batch_size``
        examples; if false, the last batch may be smaller.

    Yields:
      ``(x_batch, y_batch)`` numpy arrays with leading dimension
      ``batch_size`` (or less for the final batch when ``drop_remainder`` is
      false).

    Raises:
      ValueError: mismatched lengths, non-positive ``batch_size``, or
        ``drop_remainder`` with fewer than ``batch_size`` examples (which would
        yield nothing).
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y have different lengths ({n} vs {len(y)})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if drop_remainder and n < batch_size:
        raise ValueError(
            f"batch_size {batch_size} exceeds the {n} examples with drop_remainder=True"
        )
    rng = _numpy_rng(key_or_seed)  # validated before the first next()
    x_np, y_np = np.asarray(x), np.asarray(y)
    return _batch_gen(rng.permutation(n), x_np, y_np, batch_size, drop_remainder)


def _batch_gen(
    perm: np.ndarray, x: np.ndarray, y: np.ndarray, batch_size: int, drop_remainder: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    n = len(perm)
    stop = n - n % batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
        idx = perm[start : start + batch_size]
        yield x[idx], y[idx]
