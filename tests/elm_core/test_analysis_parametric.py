"""The parametric-fit skeleton shared by the scaling law and the capacity model."""

from __future__ import annotations

import numpy as np

from elm_core.analysis.parametric import bootstrap, degenerate, interval, logsumexp, nnls_start, refine

X = np.geomspace(1, 1000, 30)


def power_law(theta: np.ndarray, jac: bool = False):
    """log L = log(E + A x^-alpha), theta = logs of (E, A, alpha)."""
    e, a, alpha = np.exp(theta)
    excess = a * X**-alpha
    loss = e + excess
    if not jac:
        return np.log(loss)
    return np.log(loss), np.stack([e / loss, excess / loss, -alpha * np.log(X) * excess / loss], axis=1)


def test_start_and_refine_recover_planted_parameters():
    planted = np.log([0.5, 3.0, 0.4])
    y = np.exp(power_law(planted)) * np.exp(0.01 * np.random.default_rng(0).standard_normal(X.size))
    w = np.ones_like(y)
    coef, (alpha,) = nnls_start([(a,) for a in (0.1, 0.2, 0.4, 0.8)], lambda p: [np.ones_like(X), X ** -p[0]], y, w)
    assert alpha == 0.4 and abs(coef[0] - 0.5) < 0.05
    theta = refine(power_law, np.log([*coef, alpha]), np.log(y), np.sqrt(w))
    np.testing.assert_allclose(np.exp(theta), [0.5, 3.0, 0.4], rtol=0.1)


def test_ridge_pins_a_parameter_the_data_leave_free():
    # E alone explains a flat loss; A and alpha are then free and the ridge holds alpha at its reference
    y = np.full(X.size, 2.0)
    ridge = (np.array([2]), np.log([0.3]), 1e-3)
    theta = refine(power_law, np.log([1.0, 1e-3, 0.5]), np.log(y), np.ones(X.size), ridge=ridge)
    assert abs(np.exp(theta[0]) - 2.0) < 1e-3
    assert abs(np.exp(theta[2]) - 0.3) < 0.05


def test_bootstrap_skips_thin_resamples_drops_diverged_and_is_reproducible():
    calls = []

    def refit(idx: np.ndarray) -> np.ndarray:
        calls.append(np.unique(idx).size)
        return np.array([1.0, 60.0]) if len(calls) % 2 else np.array([1.0, 2.0])  # every other diverges

    boot = bootstrap(refit, n_rows=4, n_params=2, n_boot=50, seed=3, min_distinct=3)
    assert min(calls) >= 3 and len(calls) < 50  # resamples with < 3 distinct rows never reach refit
    assert boot.shape == (len(calls) // 2, 2) and np.all(boot[:, 1] == 2.0)
    calls.clear()
    assert np.array_equal(bootstrap(refit, 4, 2, 50, 3, min_distinct=3), boot)


def test_interval_and_logsumexp():
    lo, hi = interval(np.arange(101.0)[:, None], 0.9)
    np.testing.assert_allclose([lo[0], hi[0]], [5.0, 95.0])
    lo, hi = interval(np.empty((0, 3)), 0.95)
    assert lo.shape == (3,) and np.all(np.isnan(lo) & np.isnan(hi))
    t = np.array([[1000.0, -5.0], [1000.0, -7.0]])
    np.testing.assert_allclose(logsumexp(t), [1000.0 + np.log(2.0), np.log(np.exp(-5.0) + np.exp(-7.0))])


def test_degenerate_names_each_failure():
    names = ("E", "A", "alpha")
    theta = np.log([0.5, 3.0, 0.4])
    _, jac = power_law(theta, jac=True)
    assert degenerate(names, theta, jac, n_boot=100, n_survived=90) is None
    assert "A = " in degenerate(names, np.array([0.0, -60.0, 0.0]), jac, 100, 90)
    collinear = np.column_stack([jac[:, 0], jac[:, 0], jac[:, 2]])  # E and A move log L alike
    assert "singular" in degenerate(names, theta, collinear, 100, 90)
    assert "only 10 of 100 bootstrap replicates" in degenerate(names, theta, jac, 100, 10)
    assert degenerate(names, theta, jac, n_boot=0, n_survived=0) is None  # no bootstrap asked for
