"""The capacity model (ours): planted-parameter recovery, the U-shape, the optimum's shift with budget."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from elm_core.analysis import CapacityModel, fit_capacity_model, load_reference_sweep

TRUE = CapacityModel(E=1.0, A=4.0, gamma=0.5, k_0=300.0, N_0=200.0)


def planted_runs(seed=0, noise=0.002, model=TRUE) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for budget in (1e5, 3e5, 1e6, 3e6, 1e7):
        for k_c in (300.0, 750.0, 2000.0):
            for k_e in np.geomspace(100, 1e5, 7):
                n = budget / (k_e + k_c)
                if n >= 4:
                    loss = float(model.loss(n, k_e, k_c)) * np.exp(noise * rng.standard_normal())
                    rows.append({"n_neurons": n, "k_e": k_e, "k_c": k_c, "test_metric": loss})
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def planted_fit():
    return fit_capacity_model(planted_runs(), n_boot=50)


def test_recovers_planted_parameters(planted_fit):
    for name, value in planted_fit.params.items():
        assert value == pytest.approx(getattr(TRUE, name), rel=0.08), name
        lo, hi = planted_fit.param_ci[name]
        assert lo <= getattr(TRUE, name) <= hi, name


def test_model_formulas():
    m = TRUE
    assert m.snr(300.0, 300.0) == pytest.approx(0.5)
    assert m.bits_per_neuron(1e12, 300.0) == pytest.approx(0.5, rel=1e-6)  # SNR saturates at k_c / k_0 = 1
    assert m.effective_neurons(1.0) == pytest.approx(1.0, rel=0.01)
    assert m.effective_neurons(1e6) < 1e6 / 100  # redundancy: far fewer effective neurons
    assert m.capacity(10, 300, 300) == pytest.approx(m.effective_neurons(10) * 0.5 * np.log2(1.5))


def test_predicts_a_u_shape_and_an_optimum_that_grows_on_both_axes():
    n, k_e, _ = TRUE.optimum([1e5, 1e6, 1e7, 1e8], 750.0)
    assert np.all(np.diff(n) > 0) and np.all(np.diff(k_e) > 0)
    for h, ke_star in zip([1e6, 1e8], k_e[[1, 3]], strict=True):
        grid = np.geomspace(10, h / 2, 400)
        loss = TRUE.loss(h / (grid + 750.0), grid, 750.0)
        i = np.argmin(loss)
        assert 0 < i < grid.size - 1  # interior: the U
        assert grid[i] == pytest.approx(ke_star, rel=0.05)


def test_published_sweep(planted_fit):
    fit = fit_capacity_model(load_reference_sweep())
    assert fit.rmse < 0.01
    assert fit.k_c == 750.0
    curve = fit.iso_curve(3.51e6)
    i = int(np.argmin(curve["metric"].to_numpy()))
    assert 0 < i < curve.height - 1
    alloc = fit.optimal_allocation([1e6, 3.51e6, 3.5e7])
    # the model's optimum at the published budget lies among d_m 10 to 40 (k_e 1441 to 10561)
    assert 1441 <= alloc["k_e"][1] <= 10561
    # and it moves toward more neurons as the budget grows
    assert alloc["n_neurons"].is_sorted() and alloc["n_neurons"][2] > 3 * alloc["n_neurons"][1]
    assert alloc["k_e"][2] >= alloc["k_e"][1]
    assert fit.points["fitted"].len() == 14


def test_accuracy_is_fitted_as_an_error():
    runs = planted_runs().with_columns((1.0 - pl.col("test_metric") / 4).alias("test_metric"))
    fit = fit_capacity_model(runs, maximize=True, n_boot=0)
    assert fit.maximize
    assert fit.params["gamma"] == pytest.approx(TRUE.gamma, rel=0.1)
    assert 0 < fit.predict(1000, 1000)[()] < 1


def shd_adding_77k() -> pl.DataFrame:
    """Ten runs at one budget of 77k, SHD-Adding geometry (d_tree 30, d_brch 10, 19 classes): accuracy
    0.75-0.82 except the d_m 2 run at 0.15."""
    from elm_core.budget import allocate, count_params

    accuracy = {2: 0.15, 3: 0.75, 4: 0.77, 6: 0.79, 8: 0.81, 12: 0.82, 16: 0.80, 24: 0.79, 32: 0.77, 48: 0.76}
    rows = []
    for d_m, acc in accuracy.items():
        cfg = allocate(77_000, n_in=700, n_out=19, d_m=d_m, d_tree=30, d_brch=10)
        rows.append({"task": "shd-adding", "metric_name": "accuracy", "n_neurons": cfg.n_neurons, "d_m": d_m,
                     "l_mlp": 1, "d_mlp": 2 * d_m, "d_tree": 30, "d_brch": 10, "n_out": 19, "readout_d_m": 3,
                     "params": count_params(cfg), "test_metric": acc})
    return pl.DataFrame(rows)


def test_planted_fit_reports_ok(planted_fit):
    assert planted_fit.ok and planted_fit.to_dict()["status"] == "ok"


def test_a_degenerate_fit_is_reported_failed_with_its_reason(tmp_path, capsys):
    from elm_core.analysis import normalize_frame
    from elmlab.cli import main

    df = normalize_frame(shd_adding_77k())
    fit = fit_capacity_model(df, n_boot=50)
    assert fit.status == "failed" and "bound" in fit.reason
    path = tmp_path / "shd.csv"
    df.write_csv(path)
    assert main(["fit", "capacity", "--input", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    out = __import__("json").loads(captured.out)
    # the CLI selects its runs itself (done, on the iso-budget curve, its default metric), so the values it
    # reaches can differ from the direct fit's; the verdict and its kind do not
    assert out["status"] == "failed" and out["reason"].startswith("parameters ran to their bounds")
    assert out["optimal_allocation"] == []
    assert captured.err == ""  # no numpy warning reaches the terminal
    assert main(["fit", "capacity", "--input", str(path)]) == 0
    text = capsys.readouterr().out
    assert "fit FAILED: parameters ran to their bounds" in text and "optimal allocation at" not in text
