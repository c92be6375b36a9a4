"""Character n-gram baselines: what a run has to beat before its memory means anything.

An order-k model predicts a character from the k - 1 characters before it; order 0 is the uniform
distribution over the vocabulary (log2 V bits). Counts come from the train split; probabilities are
Witten-Bell interpolated down to the uniform distribution, so no character ever has probability 0:

    P_k(w | h) = (c(h, w) + T(h) P_{k-1}(w | h')) / (c(h) + T(h))

with h the k - 1 preceding characters, h' the k - 2 nearest of them, c the train counts and T(h) the
number of distinct characters seen after h (a context never seen falls through to P_{k-1}). The metric
is bits per character over every target of a split, the same quantity a run's BPC measures.

    baselines = ngram_baselines(task)          # {"valid": {"0": 6.38, ..., "4": 2.46}, "test": {...}}

Results are cached per data set (content hash) in the data cache folder: computed once per split.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ._files import cache_dir

MAX_ORDER = 4
VERSION = 1  # part of the cache key: bump when the estimator changes


def _ids(tokens: np.ndarray, k: int, vocab: int) -> np.ndarray:
    """Integer id of every length-k window (k >= 1), aligned so that entry i ends at tokens[i + k - 1]."""
    ids = np.zeros(len(tokens) - k + 1, dtype=np.int64)
    for j in range(k):
        ids = ids * vocab + tokens[j : len(tokens) - k + 1 + j]
    return ids


def _lookup(keys: np.ndarray, counts: np.ndarray, query: np.ndarray) -> np.ndarray:
    """counts[key == query], 0 where the query was never seen (keys sorted)."""
    pos = np.searchsorted(keys, query)
    pos = np.minimum(pos, len(keys) - 1)
    return np.where(keys[pos] == query, counts[pos], 0)


def ngram_bpc(train: np.ndarray, evaluate: np.ndarray, vocab: int, max_order: int = MAX_ORDER) -> dict[int, float]:
    """BPC of the Witten-Bell n-gram models of orders 0..max_order over every target of `evaluate`.

    `train` and `evaluate` are token ids in [0, vocab). The first k - 1 targets of the evaluated split
    have a shorter context than order k asks for; they use the longest context available.
    """
    train = np.asarray(train, dtype=np.int64)
    evaluate = np.asarray(evaluate, dtype=np.int64)
    n = len(evaluate)
    prob = np.full(n, 1.0 / vocab)
    out = {0: math.log2(vocab)}
    for k in range(1, max_order + 1):
        gram_keys, gram_counts = np.unique(_ids(train, k, vocab), return_counts=True)
        if k == 1:
            ctx_keys = np.zeros(1, dtype=np.int64)
            ctx_counts, ctx_types = np.array([len(train)]), np.array([len(gram_keys)])
        else:
            ctx_of_gram = gram_keys // vocab
            ctx_keys, first = np.unique(ctx_of_gram, return_index=True)
            ctx_types = np.diff(np.append(first, len(gram_keys)))
            ctx_counts = np.add.reduceat(gram_counts, first)
        # Targets with at least k - 1 characters of context; the others keep the lower order's value.
        if n >= k:
            grams = _ids(evaluate, k, vocab)
            ctx = grams // vocab if k > 1 else np.zeros_like(grams)
            c_hw = _lookup(gram_keys, gram_counts, grams)
            c_h = _lookup(ctx_keys, ctx_counts, ctx)
            t_h = _lookup(ctx_keys, ctx_types, ctx)
            lower = prob[k - 1 :]
            seen = c_h > 0
            prob[k - 1 :] = np.where(seen, (c_hw + t_h * lower) / np.maximum(c_h + t_h, 1), lower)
        out[k] = float(-np.log2(prob).mean())
    return out


def ngram_baselines(task, splits: tuple[str, ...] = ("valid", "test"), data_dir: Path | None = None) -> dict:
    """{split: {order: BPC}} for a character task (orders 0-4 as strings, JSON-ready), cached on disk."""
    folder = cache_dir(Path(data_dir) if data_dir is not None else Path(task.path).parent)
    path = folder / f"ngram-v{VERSION}-{task.dataset_hash}.json"
    cached: dict = {}
    if path.exists():
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            cached = {}  # a corrupt cache file is recomputed and replaced
    missing = [s for s in splits if s not in cached]
    if missing:
        train = task.tokens("train").numpy()
        for split in missing:
            cached[split] = {
                str(k): round(v, 4) for k, v in ngram_bpc(train, task.tokens(split).numpy(), task.n_out).items()
            }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, sort_keys=True))
        os.replace(tmp, path)
    return {s: cached[s] for s in splits}
