"""The in-memory :class:`Dataset`, the dataset names and their per-channel statistics."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CIFAR_MEAN", "CIFAR_STD", "DATASETS", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD",
    "Dataset", "PathLike",
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
