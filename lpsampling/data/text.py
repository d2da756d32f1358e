"""The IMDB review loader (``aclImdb/``): int32 token ids ``(N, max_len)``, ``0`` padding,
``1`` unknown word."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from lpsampling.data.dataset import IMDB_URL, Dataset, PathLike
from lpsampling.validation import positive_int

__all__ = ["tokenize", "load_imdb"]

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
    vocab_size = positive_int("vocab_size (pad and unknown ids included)", vocab_size,
                              minimum=2)
    max_len = positive_int("max_len", max_len)
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
