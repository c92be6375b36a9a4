"""Parametric scaling law: planted-parameter recovery, optimal allocation, prediction at a new budget."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from elm_core.analysis import fit_scaling_law, load_reference_sweep

TRUE = {"E": 1.2, "A": 8.0, "alpha": 0.4, "B": 5.0, "beta": 0.3}


def surface(n, k_e, p=TRUE, k_c=None):
    out = p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * k_e ** -p["beta"]
    if k_c is not None:
        out = out + p["C"] * k_c ** -p["gamma"]
    return out


def planted_runs(seed=0, noise=0.003, k_cs=(750.0,), params=TRUE) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for budget in (1e5, 3e5, 1e6, 3e6, 1e7):
        for k_c in k_cs:
            for k_e in np.geomspace(100, 1e5, 8):
                n = budget / (k_e + k_c)
                if n < 4:
                    continue
                loss = surface(n, k_e, params, k_c if "C" in params else None)
                rows.append(
                    {
                        "n_neurons": n,
                        "k_e": k_e,
                        "k_c": k_c,
                        "params": budget,
                        "test_metric": loss * np.exp(noise * rng.standard_normal()),
                    }
                )
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def planted_fit():
    return fit_scaling_law(planted_runs(), n_boot=100)


def test_recovers_planted_parameters(planted_fit):
    p, ci = planted_fit.params, planted_fit.param_ci
    assert planted_fit.k_c == 750.0 and "C" not in p
    for name in ("alpha", "beta"):
        assert p[name] == pytest.approx(TRUE[name], rel=0.1)
        assert ci[name][0] <= TRUE[name] <= ci[name][1]
    assert p["E"] == pytest.approx(TRUE["E"], rel=0.03)
    assert planted_fit.sigma_log == pytest.approx(0.003, rel=0.4)


def test_optimal_allocation_matches_the_planted_surface(planted_fit):
    truth = dataclasses.replace(planted_fit, theta=np.log([TRUE[k] for k in planted_fit.names]))
    budgets = [3e5, 3e6, 3e7]
    fitted, exact = planted_fit.optimal_allocation(budgets), truth.optimal_allocation(budgets)
    np.testing.assert_allclose(fitted["k_e"], exact["k_e"], rtol=0.35)
    np.testing.assert_allclose(fitted["n_neurons"], exact["n_neurons"], rtol=0.35)
    assert (fitted["n_neurons_lo"] <= fitted["n_neurons"]).all()
    assert (fitted["n_neurons"] <= fitted["n_neurons_hi"]).all()
    # N* grows with the budget, and so does k_e*
    assert fitted["n_neurons"].is_sorted() and fitted["k_e"].is_sorted()


def test_power_laws_recover_the_planted_exponents(planted_fit):
    truth = dataclasses.replace(planted_fit, theta=np.log([TRUE[k] for k in planted_fit.names]))
    fitted, exact = planted_fit.power_laws(), truth.power_laws()
    np.testing.assert_allclose(fitted["exponent"], exact["exponent"], atol=0.05)
    assert (fitted["exponent_lo"] <= fitted["exponent"]).all()
    assert (fitted["exponent"] <= fitted["exponent_hi"]).all()
    asym = planted_fit.asymptotic_exponents()
    assert asym["n_neurons"] == pytest.approx(TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), abs=0.05)
    assert asym["n_neurons"] + asym["k_e"] == pytest.approx(1.0)


def test_predicts_a_budget_not_run_within_its_interval(planted_fit):
    truth = dataclasses.replace(planted_fit, theta=np.log([TRUE[k] for k in planted_fit.names]))
    pred = planted_fit.predict_budget(3e7)  # 3x beyond the largest budget fitted
    true_best = truth.optimal_allocation(3e7)["metric"][0]
    assert pred["pi_lo"][0] <= true_best <= pred["pi_hi"][0]
    assert pred["ci_lo"][0] <= pred["metric"][0] <= pred["ci_hi"][0]
    point = planted_fit.predict_interval(1000, 2000)
    assert point["metric"][0] == pytest.approx(surface(1000, 2000), rel=0.01)
    assert point["pi_lo"][0] < point["ci_lo"][0] <= point["ci_hi"][0] < point["pi_hi"][0]


def test_recovers_the_connectivity_term_when_k_c_varies():
    params = {**TRUE, "C": 3.0, "gamma": 0.5}
    fit = fit_scaling_law(planted_runs(k_cs=(200.0, 750.0, 3000.0), noise=0.002, params=params), n_boot=20)
    assert fit.k_c is None and set(fit.names) >= {"C", "gamma"}
    assert fit.params["gamma"] == pytest.approx(0.5, rel=0.2)
    assert fit.params["alpha"] == pytest.approx(TRUE["alpha"], rel=0.15)
    alloc = fit.optimal_allocation(1e6)
    assert 200.0 <= alloc["k_c"][0] <= 3000.0
    with pytest.raises(ValueError, match="pass k_c"):
        fit.predict(100, 100)


def test_accuracy_is_fitted_as_an_error():
    runs = planted_runs().with_columns((1.0 - pl.col("test_metric") / 10).alias("test_metric"))
    runs = runs.with_columns(pl.lit("accuracy").alias("metric_name"))
    fit = fit_scaling_law(runs, n_boot=0)
    assert fit.maximize
    assert fit.params["alpha"] == pytest.approx(TRUE["alpha"], rel=0.1)
    alloc = fit.optimal_allocation(1e6)
    assert 0 < alloc["metric"][0] < 1


def test_published_sweep_fit_and_its_optimum():
    fit = fit_scaling_law(load_reference_sweep())
    assert fit.rmse < 0.01
    alloc = fit.optimal_allocation(3.51e6)
    # the optimum lies among the configurations with d_m between 15 and 40
    assert 2461 <= alloc["k_e"][0] <= 10561
    assert alloc["k_e_lo"][0] < alloc["k_e"][0] < alloc["k_e_hi"][0]
    assert fit.to_dict()["params"]["alpha"]["value"] == pytest.approx(fit.params["alpha"])


def test_too_few_runs():
    with pytest.raises(ValueError, match="at least"):
        fit_scaling_law(planted_runs().head(4))


def test_planted_fit_reports_ok(planted_fit):
    assert planted_fit.ok and planted_fit.reason is None and planted_fit.to_dict()["status"] == "ok"


def test_runs_at_one_n_cannot_pin_the_n_term_and_the_fit_says_so():
    # every run has N = 200: E and A N^-alpha are one constant, so A and alpha run off to a bound
    k_e = np.geomspace(50, 5000, 12)
    loss = surface(200.0, k_e) * np.exp(0.002 * np.random.default_rng(0).standard_normal(k_e.size))
    df = pl.DataFrame({"n_neurons": np.full(12, 200.0), "k_e": k_e, "k_c": np.full(12, 100.0), "test_metric": loss})
    fit = fit_scaling_law(df, n_boot=20)
    assert fit.status == "failed" and not fit.ok
    assert "bound" in fit.reason and "alpha" in fit.reason
    assert fit.to_dict()["status"] == "failed" and fit.to_dict()["reason"] == fit.reason


def test_default_prediction_budgets_leave_a_hidden_layer(planted_fit):
    # the readout costs 50,000 parameters: the default range starts above it, not at a third of the smallest run
    fit = dataclasses.replace(planted_fit, overhead=50_000.0)
    laws = fit.power_laws()
    smallest = fit.smallest_neuron
    assert smallest == pytest.approx(float((planted_runs()["k_e"] + 750.0).min()))
    assert laws["budget_min"][0] == pytest.approx(50_000.0 + 8 * smallest)
    assert planted_fit.power_laws()["budget_min"][0] == pytest.approx(1e5 / 3)  # no readout: as before
