"""Iso-budget optimum: the published sweep's optimum, honest intervals, planted-optimum recovery."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from elm_core.analysis import fit_iso, fit_iso_budgets, iso_budget_groups, load_reference_sweep


@pytest.fixture(scope="module")
def ref() -> pl.DataFrame:
    return load_reference_sweep()


@pytest.fixture(scope="module")
def ref_fit(ref):
    return fit_iso(ref, x="d_m", metric="test_metric")


def planted(seed: int, xs: np.ndarray, x_star: float = 25.0, noise: float = 0.003) -> pl.DataFrame:
    """L = 1.5 + A x^-1 + B x^2 with B chosen so that the minimum sits at x_star (an asymmetric valley)."""
    a_coef = 0.2
    b_coef = a_coef / (2 * x_star**3)
    rng = np.random.default_rng(seed)
    y = 1.5 + a_coef / xs + b_coef * xs**2 + noise * rng.standard_normal(xs.size)
    return pl.DataFrame({"d_m": xs, "test_metric": y, "params": np.full(xs.size, 1e6)})


def test_published_sweep_optimum_is_where_the_data_put_it(ref_fit):
    assert 20 <= ref_fit.optimum <= 35
    assert ref_fit.interior
    lo, hi = ref_fit.ci
    assert lo < ref_fit.optimum < hi
    assert 5 <= lo and hi <= 100  # inside the sampled range
    assert abs(ref_fit.budget - 3.51e6) < 1e4
    assert ref_fit.n_points == 14 and ref_fit.task == "enwik8"
    # the fitted metric at the optimum is close to the best runs (1.650 - 1.651)
    assert abs(ref_fit.optimum_metric - 1.650) < 0.003


def test_interval_widens_when_points_are_removed(ref, ref_fit):
    full = ref_fit.ci_width_log
    halves = [fit_iso(ref[0::2], metric="test_metric"), fit_iso(ref[1::2], metric="test_metric")]
    assert all(h.ci_width_log > full for h in halves)
    near_optimum = fit_iso(ref.filter(~pl.col("d_m").is_in([20, 25, 30, 35])), metric="test_metric")
    assert near_optimum.ci_width_log > full
    fewer = fit_iso(ref.filter(pl.col("d_m").is_in([5, 15, 25, 40, 60, 100])), metric="test_metric")
    assert fewer.ci_width_log > full


def test_fit_is_reproducible(ref, ref_fit):
    again = fit_iso(ref, x="d_m", metric="test_metric")
    assert again.ci == ref_fit.ci and again.optimum == ref_fit.optimum
    assert fit_iso(ref, seed=1).ci != ref_fit.ci


@pytest.mark.parametrize("seed", range(5))
def test_recovers_a_planted_optimum(seed):
    fit = fit_iso(planted(seed, np.geomspace(4, 120, 12)))
    assert abs(np.log(fit.optimum / 25.0)) < 0.3
    assert fit.ci[0] <= 25.0 <= fit.ci[1]


def test_interval_covers_the_planted_optimum_most_of_the_time():
    xs = np.geomspace(4, 120, 10)
    hits = [fit_iso(planted(s, xs, noise=0.004), n_boot=100).ci for s in range(20)]
    assert sum(lo <= 25.0 <= hi for lo, hi in hits) >= 17


def test_maximised_metric_gives_the_same_optimum():
    df = planted(0, np.geomspace(4, 120, 12))
    low = fit_iso(df)
    high = fit_iso(df.with_columns((3 - pl.col("test_metric")).alias("test_metric")), maximize=True)
    np.testing.assert_allclose(high.optimum, low.optimum, rtol=1e-9)
    np.testing.assert_allclose(high.ci, low.ci, rtol=1e-9)
    np.testing.assert_allclose(high.curve_y, 3 - low.curve_y, rtol=1e-12)
    assert np.all(high.curve_lo <= high.curve_hi)


def test_monotone_data_flag_an_edge_optimum():
    xs = np.geomspace(4, 120, 8)
    df = pl.DataFrame({"d_m": xs, "test_metric": 1.5 + 0.2 / xs})
    fit = fit_iso(df)
    assert not fit.interior and fit.extend_toward == "larger"
    assert fit.optimum == pytest.approx(120.0)
    assert "bracket" in fit.note


def test_an_optimum_at_d_m_1_says_no_sweep_can_extend_past_it():
    """d_m 1 is the smallest allocation there is: an optimum at that end is not bracketed, and the fit
    says so instead of asking for a sweep to smaller d_m; a sweep that starts above 1 is told to extend."""
    xs = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    rng = np.random.default_rng(3)
    df = pl.DataFrame({"d_m": np.repeat(xs, 2), "test_metric": 2.4 + 0.02 * np.log2(np.repeat(xs, 2))
                       + 0.004 * rng.standard_normal(10), "params": np.full(10, 4e4)})
    fit = fit_iso(df)
    assert fit.bracketed is False and not fit.interior
    assert fit.extend_toward == ""
    assert "d_m 1 is the smallest d_m there is" in fit.edge_advice and "smaller" not in fit.note
    assert fit.to_dict()["edge_advice"] == fit.edge_advice
    above_one = fit_iso(df.filter(pl.col("d_m") >= 2))
    assert above_one.extend_toward == "smaller" and above_one.edge_advice == "extend the sweep to smaller d_m"


def test_other_axes(ref):
    ke = fit_iso(ref, x="k_e")
    frac = fit_iso(ref, x="k_e_frac")
    n = fit_iso(ref, x="n_neurons")
    assert frac.transform == "logit" and ke.transform == "log"
    assert 0 < frac.ci[0] < frac.optimum < frac.ci[1] < 1
    # all three put the optimum among the configurations with d_m 15 to 40
    assert 2461 <= ke.optimum <= 10561
    assert 290 <= n.optimum <= 1024


def test_needs_three_distinct_allocations():
    with pytest.raises(ValueError, match="3 distinct"):
        fit_iso(pl.DataFrame({"d_m": [5, 5, 10], "test_metric": [1.0, 1.1, 1.2]}))


def test_budget_groups_by_five_percent_or_by_budget_column():
    df = pl.DataFrame({"params": [1.00e6, 1.04e6, 1.2e6, 1.21e6, 3e6], "task": ["a"] * 5})
    groups = iso_budget_groups(df)["iso_budget"].to_list()
    assert groups[0] == groups[1] and groups[2] == groups[3] and len(set(groups)) == 3
    with_budget = df.with_columns(pl.Series("budget", [1e6, 1e6, 1e6, None, 3e6]))
    groups = iso_budget_groups(with_budget)["iso_budget"].to_list()
    assert groups[:3] == [1e6] * 3 and groups[3] == 1.21e6 and groups[4] == 3e6


def test_fits_each_budget_and_skips_small_groups():
    xs = np.geomspace(4, 120, 9)
    a = planted(0, xs).with_columns(pl.lit(1e6).alias("params"))
    b = planted(1, xs, x_star=40).with_columns(pl.lit(4e6).alias("params"))
    c = planted(2, xs[:2]).with_columns(pl.lit(9e6).alias("params"))
    fits = fit_iso_budgets(pl.concat([a, b, c]))
    assert [f.budget for f in fits] == [1e6, 4e6]
    assert fits[0].optimum < fits[1].optimum
    d = fits[0].to_dict(curve=True)
    assert set(d) >= {"budget", "optimum", "ci", "n_points", "curve"} and len(d["curve"]["x"]) == len(fits[0].curve_x)


def test_noise_free_points_give_a_residual_noise_not_the_curvature():
    # exact points on the U: neighbouring differences read its curvature as noise (sigma ~0.009 on six)
    fit = fit_iso(planted(0, np.geomspace(4, 120, 7), noise=0.0))
    assert fit.sigma_source == "residual" and fit.sigma < 0.003
    assert fit.ci[0] <= 25.0 <= fit.ci[1]
    six = fit_iso(planted(0, np.geomspace(4, 120, 6), noise=0.0))  # under one residual dof: no noise level
    assert six.sigma_source == "none" and np.isnan(six.ci[0]) and "no interval" in six.note


def _collapsed(std: np.ndarray, xs: np.ndarray) -> pl.DataFrame:
    means = planted(0, xs, noise=0.0)["test_metric"]
    return pl.DataFrame(
        {"d_m": xs, "test_metric": means, "test_metric_std": std, "n_seeds": np.full(xs.size, 3), "params": 1e6}
    )


def test_seed_noise_is_per_configuration():
    xs = np.geomspace(4, 120, 10)
    unstable = np.full(xs.size, 0.002)
    unstable[-1] = 0.05  # one erratic arm, far from the optimum
    pooled = np.full(xs.size, float(np.sqrt(np.mean(unstable**2))))
    own, spread = fit_iso(_collapsed(unstable, xs)), fit_iso(_collapsed(pooled, xs))
    assert own.sigma_source == spread.sigma_source == "repeated seeds"
    assert own.sigma == pytest.approx(spread.sigma)  # the same pooled level ...
    assert own.ci_width_log < 0.5 * spread.ci_width_log  # ... but only the erratic arm is uncertain
    assert own.ci[0] <= 25.0 <= own.ci[1]


def test_an_interval_reaching_the_edge_is_not_bracketed():
    fit = fit_iso(planted(0, np.geomspace(4, 120, 8), x_star=5.0, noise=0.01))
    assert fit.ci[0] == pytest.approx(4.0)  # the interval runs into the smallest d_m sampled
    assert not fit.bracketed and not fit.interior and fit.extend_toward == "smaller"
    d = fit.to_dict()
    assert d["bracketed"] is False and d["extend_toward"] == "smaller"
    assert "extend the sweep to smaller d_m" in fit.note
    assert fit_iso(planted(0, np.geomspace(4, 120, 12))).to_dict()["bracketed"] is True


def test_an_optimum_without_an_interval_is_not_claimed_bracketed():
    xs = np.array([2.0, 4, 8, 16, 32])
    one_each = planted(0, xs, x_star=8.0, noise=0.0)  # a noise-free U, one run per allocation
    fit = fit_iso(one_each)
    assert 4 < fit.optimum < 16 and fit.interior  # inside the sampled range ...
    assert not fit.has_interval and fit.bracketed is None  # ... but with no interval it is not shown bracketed
    d = fit.to_dict()
    assert d["bracketed"] is None and d["ci"] == [None, None] and "not shown to be bracketed" in d["note"]
    seeds = pl.concat([planted(s, xs, x_star=8.0, noise=0.002).with_columns(seed=pl.lit(s)) for s in (1, 2)])
    fit = fit_iso(seeds)  # the same U with a seed replicate at every allocation: the noise is known
    assert fit.sigma_source == "repeated seeds" and fit.has_interval and fit.bracketed is True
    assert 2 < fit.ci[0] < fit.optimum < fit.ci[1] < 32 and fit.to_dict()["bracketed"] is True


def test_the_optimum_is_located_on_validation_and_the_test_metric_reported_there(ref, ref_fit):
    fit = fit_iso(ref)  # the published sweep has validation numbers: they choose the allocation
    assert fit.metric == "valid_metric"
    assert fit.to_dict()["test_metric_at_optimum"] == pytest.approx(fit.test_at_optimum)
    assert abs(fit.test_at_optimum - 1.650) < 0.005  # the test BPC of the best runs
    assert ref_fit.test_at_optimum == ref_fit.optimum_metric  # located on test: the same number
    planted_only_test = fit_iso(planted(0, np.geomspace(4, 120, 12)))
    assert planted_only_test.metric == "test_metric"  # no validation numbers: falls back to test
