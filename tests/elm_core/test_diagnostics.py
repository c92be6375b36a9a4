"""Convergence diagnostics and n-gram baselines: what says whether a run means anything."""

from __future__ import annotations

import math

import numpy as np
import pytest

from elm_core.data.ngram import ngram_baselines, ngram_bpc
from elm_core.diagnostics import budget_used, convergence


def test_curve_still_falling_is_not_converged():
    steps = np.arange(100, 1001, 100)
    bpc = 3.0 - 0.001 * steps  # falls 0.2 over the last 20%
    c = convergence(steps, bpc, 1000, "bpc")
    assert c.converged is False
    assert c.tail_improvement == pytest.approx(0.2)
    assert c.final_slope == pytest.approx(-1.0)  # -0.001 per step = -1 per 1,000 steps


def test_flat_tail_is_converged():
    steps = np.arange(100, 1001, 100)
    bpc = 2.0 + 1.0 / steps  # 1/800 - 1/1000 = 0.00025 over the tail
    assert convergence(steps, bpc, 1000, "bpc").converged is True


def test_accuracy_rising_is_not_converged_and_direction_matters():
    steps = np.arange(100, 1001, 100)
    acc = 0.1 + 0.0005 * steps
    c = convergence(steps, acc, 1000, "accuracy")
    assert c.converged is False and c.tail_improvement == pytest.approx(0.1)
    # The same numbers read as BPC are getting worse: "improvement" negative, so nothing left to gain.
    assert convergence(steps, acc, 1000, "bpc").converged is True


def test_too_few_points_is_unknown_not_yes():
    assert convergence([1000], [2.0], 1000, "bpc").converged is None
    assert convergence([900, 1000], [2.0, 2.0], 1000, "bpc").converged is None  # nothing before the tail
    assert convergence([], [], 1000, "bpc").converged is None


def test_budget_used():
    assert budget_used(95_000, 100_000) == pytest.approx(0.95)
    assert budget_used(95_000, None) is None


def test_ngram_orders_on_a_deterministic_text():
    # A period-3 text: order 0 is uniform over 3 symbols, order 1 the unigram (also log2 3), and one
    # character of context determines the next, so orders 2-4 approach 0 bits.
    train = np.tile([0, 1, 2], 2000)
    test = np.tile([0, 1, 2], 300)
    out = ngram_bpc(train, test, vocab=3)
    assert out[0] == pytest.approx(math.log2(3))
    assert out[1] == pytest.approx(math.log2(3), abs=1e-3)
    assert out[2] < 0.01 and out[4] < 0.01


def test_ngram_unseen_characters_keep_a_finite_cost():
    out = ngram_bpc(np.array([0, 0, 1, 0, 0, 1] * 50), np.array([2, 3, 2, 3]), vocab=4)
    assert all(math.isfinite(v) for v in out.values())


def test_ngram_matches_a_direct_witten_bell_computation():
    rng = np.random.default_rng(0)
    train, test, vocab = rng.integers(0, 4, 400), rng.integers(0, 4, 60), 4

    def p(order, hist, w):  # the recursion written out literally
        if order == 0:
            return 1 / vocab
        h = tuple(hist[len(hist) - order + 1:]) if order > 1 else ()
        if len(hist) < order - 1:
            return p(order - 1, hist, w)
        grams = [tuple(train[i:i + order]) for i in range(len(train) - order + 1)]
        follow = [g[-1] for g in grams if g[:-1] == h]
        if not follow:
            return p(order - 1, hist, w)
        t = len(set(follow))
        return (follow.count(w) + t * p(order - 1, hist, w)) / (len(follow) + t)

    for order in (1, 2, 3):
        direct = -np.mean([math.log2(p(order, list(test[:i]), test[i])) for i in range(len(test))])
        assert ngram_bpc(train, test, vocab, max_order=order)[order] == pytest.approx(direct, rel=1e-9)


def test_baselines_on_the_bundled_corpus_are_cached(tmp_path):
    from elm_core.data import get_task

    task = get_task("text")
    first = ngram_baselines(task, ("test",), data_dir=tmp_path)
    order = [first["test"][str(k)] for k in range(5)]
    assert order == sorted(order, reverse=True)  # more context, fewer bits
    assert 2.3 < order[4] < 2.6 and 2.7 < order[3] < 3.0  # the 4-gram and trigram levels runs must beat
    cached = list(tmp_path.rglob("ngram-*.json"))
    assert len(cached) == 1
    cached[0].write_text("{not json")  # a corrupt cache is recomputed, not an error
    assert ngram_baselines(task, ("test",), data_dir=tmp_path) == first
