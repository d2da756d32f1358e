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

from typing import Any

# The constants other than the statistics (URLs, directories, token ids) are importable
# from here as they were from the former single-file module.
from lpsampling.data.batching import batches, random_crop_flip
from lpsampling.data.dataset import (
    CIFAR_MEAN,
    CIFAR_STD,
    CIFAR_URL,  # noqa: F401
    DATASETS,
    FASHION_MNIST_DEFAULT_DIR,  # noqa: F401
    FASHION_MNIST_ENV,  # noqa: F401
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMDB_URL,  # noqa: F401
    Dataset,
    PathLike,
)
from lpsampling.data.images import load_cifar, load_digits, load_fashion_mnist, read_idx
from lpsampling.data.text import PAD_ID, UNK_ID, load_imdb, tokenize  # noqa: F401
from lpsampling.validation import normalize_name

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
    key = normalize_name(name, "dataset", sep="_")
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
