"""Capacity model: a closed-form, information-theoretic account of the layer (ours, not the paper's).

The ELM Network paper describes its model only in words (per-neuron signal-to-noise saturation at
one end, across-neuron redundancy at the other); its formula is not public. This one is ours:

    SNR(k_e, k_c) = 1 / (k_0 / k_e + k_0 / k_c)         per-neuron signal-to-noise
    c(k_e, k_c)   = 1/2 log2(1 + SNR)                    bits per neuron (Gaussian channel)
    N_eff(N)      = N_0 ln(1 + N / N_0)                  effective number of independent neurons
    I             = N_eff(N) c(k_e, k_c)                 capacity of the layer, bits per step
    L             = E + A I^-gamma                       loss (for accuracy: the error 1 - accuracy)

Five parameters: E (irreducible loss), A and gamma (how loss falls with capacity), k_0 (the noise
scale of one neuron), N_0 (the population size at which redundancy sets in).

Assumptions, stated plainly:
- A neuron's output noise has two independent parts, a processing part that falls as 1/k_e (a
  k_e-parameter function approximates its target with error ~ 1/k_e) and a sampling part that falls
  as 1/k_c (it sees only k_c inputs); noise variances add, so SNR is their harmonic combination and
  saturates at k_c / k_0 as complexity grows: more complexity cannot beat limited connectivity.
- Neurons are Gaussian channels, so a neuron carries 1/2 log2(1 + SNR) bits.
- The n-th neuron adds 1 / (1 + n / N_0) new neurons' worth of information (redundancy grows with
  the number of neurons), which integrates to N_eff = N_0 ln(1 + N / N_0): linear below N_0,
  logarithmic above, never saturating.
- Loss is a power law in capacity.

At a fixed hidden budget H = N (k_e + k_c), small k_e wastes neurons on redundancy and large k_e hits
the SNR ceiling with too few neurons: the loss is U-shaped in the split. Writing u = log N and
v = log(k_e + k_c), the optimum satisfies d log N_eff / du = d log c / dv with u + v = log H; both
sides fall as their argument grows, so as H grows both N* and k_e* grow, unless the fit makes one
of them flat (N_0 -> infinity fixes k_e*). The optimum is found numerically (a 1-D grid in k_e).

Fit: least squares of log L over the done runs (weights n_seeds), parameters as logs; a grid over
(k_0, N_0, gamma) with (E, A) by non-negative least squares gives the start, Levenberg-Marquardt
refines it; pairs bootstrap for intervals (the skeleton shared with the scaling law,
elm_core.analysis.parametric). When the runs leave k_0 or N_0 unidentified (one budget, one k_c:
in the low-SNR limit c ~ SNR / (2 ln 2) and only A k_0^gamma is fixed), a weak ridge
10^-3 (log k_0 - log median k_c) and 10^-3 (log N_0 - log median N), added to the log residuals,
keeps them finite; where the data do pin them it moves nothing. A fit that degenerates all the same
(elm_core.analysis.parametric.degenerate) has status "failed" and a reason.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from elm_core.analysis.frame import fit_metric, hidden_overhead, loss_target, resolve_maximize, seed_weights
from elm_core.analysis.parametric import (
    bootstrap,
    degenerate,
    fit_quality,
    interval,
    nnls_start,
    on_test_metric,
    refine,
)

PARAM_NAMES = ("E", "A", "gamma", "k_0", "N_0")
_KE_GRID = np.logspace(0, 8, 801)


@dataclass(frozen=True)
class CapacityModel:
    """The model with fixed parameters (module docstring); all methods are vectorised."""

    E: float
    A: float
    gamma: float
    k_0: float
    N_0: float

    @classmethod
    def from_theta(cls, theta: np.ndarray) -> CapacityModel:
        with np.errstate(over="ignore"):
            return cls(*np.exp(np.asarray(theta, dtype=float)).tolist())

    @property
    def theta(self) -> np.ndarray:
        return np.log([self.E, self.A, self.gamma, self.k_0, self.N_0])

    def snr(self, k_e: Any, k_c: Any) -> np.ndarray:
        """SNR = 1 / (k_0 / k_e + k_0 / k_c)."""
        return 1.0 / (self.k_0 / np.asarray(k_e, float) + self.k_0 / np.asarray(k_c, float))

    def bits_per_neuron(self, k_e: Any, k_c: Any) -> np.ndarray:
        """c = 1/2 log2(1 + SNR)."""
        return 0.5 * np.log2(1.0 + self.snr(k_e, k_c))

    def effective_neurons(self, n_neurons: Any) -> np.ndarray:
        """N_eff = N_0 ln(1 + N / N_0)."""
        return self.N_0 * np.log1p(np.asarray(n_neurons, float) / self.N_0)

    def capacity(self, n_neurons: Any, k_e: Any, k_c: Any) -> np.ndarray:
        """I = N_eff(N) c(k_e, k_c), in bits."""
        return self.effective_neurons(n_neurons) * self.bits_per_neuron(k_e, k_c)

    def loss(self, n_neurons: Any, k_e: Any, k_c: Any) -> np.ndarray:
        """L = E + A I^-gamma (the error for a maximised metric)."""
        with np.errstate(all="ignore"):
            return self.E + self.A * self.capacity(n_neurons, k_e, k_c) ** (-self.gamma)

    def optimum(self, hidden_budget: Any, k_c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N*, k_e*, L*) per hidden budget H = N (k_e + k_c), on a log grid in k_e with N >= 1."""
        h = np.atleast_1d(np.asarray(hidden_budget, float))[:, None]
        n = h / (_KE_GRID + k_c)[None, :]
        loss = self.loss(np.maximum(n, 1.0), _KE_GRID[None, :], k_c)
        loss = np.where((n >= 1.0) & np.isfinite(loss), loss, np.inf)
        j = np.argmin(loss, axis=1)
        rows = np.arange(h.shape[0])
        return n[rows, j], _KE_GRID[j], loss[rows, j]


@dataclass(frozen=True, eq=False)
class CapacityFit:
    """A fitted CapacityModel with its bootstrap replicates.

    model: the point fit; boot: (n_boot, 5) replicate log-parameters; k_c: the median k_c of the
    runs (the default for allocations); overhead: parameters outside the hidden layer;
    points: the runs with `fitted` and `residual` columns; status: "ok", or "failed" with the
    `reason` (parametric.degenerate): then the model and its optima are not to be trusted.
    """

    metric: str
    maximize: bool
    model: CapacityModel
    boot: np.ndarray = field(repr=False)
    k_c: float
    overhead: float
    rmse: float
    sigma_log: float
    n_runs: int
    ci_level: float
    points: pl.DataFrame = field(repr=False)
    status: str = "ok"  # "failed" when the fit degenerated; `reason` says how
    reason: str | None = None
    test_model: CapacityModel | None = None  # the model through test_metric, when `metric` is another

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def _metric(self, loss: np.ndarray) -> np.ndarray:
        return 1.0 - loss if self.maximize else loss

    def _quantiles(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return interval(values, self.ci_level)

    @property
    def params(self) -> dict[str, float]:
        return dict(zip(PARAM_NAMES, np.exp(self.model.theta).tolist(), strict=True))

    @property
    def param_ci(self) -> dict[str, tuple[float, float]]:
        lo, hi = self._quantiles(np.exp(self.boot))
        return {n: (float(a), float(b)) for n, a, b in zip(PARAM_NAMES, lo, hi, strict=True)}

    def predict(self, n_neurons: Any, k_e: Any, k_c: Any = None) -> np.ndarray:
        """The model's metric at (N, k_e, k_c); k_c defaults to the runs' median."""
        return self._metric(self.model.loss(n_neurons, k_e, self.k_c if k_c is None else k_c))

    def iso_curve(self, budget: float, k_c: float | None = None, n: int = 200) -> pl.DataFrame:
        """The predicted U at total budget P: columns k_e, n_neurons, metric (N >= 1)."""
        k_c = self.k_c if k_c is None else k_c
        hidden = budget - self.overhead
        k_e = np.geomspace(1.0, max(2.0, hidden - k_c), n)
        n_neurons = hidden / (k_e + k_c)
        keep = n_neurons >= 1.0
        k_e, n_neurons = k_e[keep], n_neurons[keep]
        return pl.DataFrame({"k_e": k_e, "n_neurons": n_neurons, "metric": self.predict(n_neurons, k_e, k_c)})

    def optimal_allocation(self, budget: Any, k_c: float | None = None) -> pl.DataFrame:
        """Per total budget P: the model's optimum n_neurons, k_e (with bootstrap intervals *_lo,
        *_hi) and the metric there; with a `test_model`, test_metric: its value at that optimum."""
        k_c = self.k_c if k_c is None else k_c
        budgets = np.atleast_1d(np.asarray(budget, float))
        hidden = np.maximum(budgets - self.overhead, 1.0)
        n, ke, loss = self.model.optimum(hidden, k_c)
        cols: dict[str, Any] = {"budget": budgets, "k_c": np.full(budgets.size, float(k_c))}
        boot = [CapacityModel.from_theta(t).optimum(hidden, k_c) for t in self.boot]
        for name, value, i in (("n_neurons", n, 0), ("k_e", ke, 1)):
            lo, hi = self._quantiles(np.array([b[i] for b in boot]).reshape(-1, budgets.size))
            cols[name], cols[f"{name}_lo"], cols[f"{name}_hi"] = value, lo, hi
        lo, hi = self._quantiles(np.array([b[2] for b in boot]).reshape(-1, budgets.size))
        if self.maximize:
            lo, hi = hi, lo
        cols["metric"], cols["metric_lo"], cols["metric_hi"] = self._metric(loss), self._metric(lo), self._metric(hi)
        if self.test_model is not None:
            cols["test_metric"] = self._metric(self.test_model.loss(n, ke, k_c))
        return pl.DataFrame(cols)

    def to_dict(self) -> dict[str, Any]:
        ci = self.param_ci
        return {
            "metric": self.metric,
            "maximize": self.maximize,
            "form": "L = E + A (N_0 ln(1 + N/N_0) * 1/2 log2(1 + 1/(k_0/k_e + k_0/k_c)))^-gamma",
            "params": {k: {"value": v, "ci": list(ci[k])} for k, v in self.params.items()},
            "k_c": self.k_c,
            "n_runs": self.n_runs,
            "rmse": self.rmse,
            "sigma_log": self.sigma_log,
            "status": self.status,
            "reason": self.reason,
        }


def _log_loss_and_jac(theta: np.ndarray, n, k_e, k_c, jac: bool = False):
    """log L and, with `jac`, d log L / d theta (theta = logs of E, A, gamma, k_0, N_0)."""
    with np.errstate(all="ignore"):
        e, a, g, k0, n0 = np.exp(theta)
        snr = k_e * k_c / (k0 * (k_e + k_c))
        c = 0.5 * np.log2(1.0 + snr)
        neff = n0 * np.log1p(n / n0)
        cap = neff * c
        excess = a * cap ** (-g)
        loss = e + excess
        log_loss = np.log(loss)
        if not jac:
            return log_loss
        dlog_cap_dk0 = -0.5 * snr / (np.log(2.0) * (1.0 + snr)) / c
        dlog_cap_dn0 = n0 * (np.log1p(n / n0) - (n / n0) / (1.0 + n / n0)) / neff
        j = np.stack(
            [
                e / loss,
                excess / loss,
                -g * np.log(cap) * excess / loss,
                -g * excess * dlog_cap_dk0 / loss,
                -g * excess * dlog_cap_dn0 / loss,
            ],
            axis=1,
        )
    return log_loss, j


def _start(n, k_e, k_c, y, w) -> np.ndarray:
    """(k_0, N_0, gamma) on a grid, (E, A) by NNLS (parametric.nnls_start); theta in log form."""
    grid = itertools.product(np.logspace(-1, 4, 11), np.logspace(0, 5, 11), (0.25, 0.5, 1.0, 2.0))

    def columns(point: tuple[float, ...]) -> list[np.ndarray]:
        k_0, n_0, gamma = point
        return [np.ones_like(y), CapacityModel(1.0, 1.0, gamma, k_0, n_0).capacity(n, k_e, k_c) ** (-gamma)]

    coef, (k_0, n_0, gamma) = nnls_start(grid, columns, y, w)
    return np.log(np.array([max(coef[0], 1e-6 * y.mean()), max(coef[1], 1e-9), gamma, k_0, n_0]))


RIDGE = 1e-3


def _refine(theta0, n, k_e, k_c, ly, sw, ref: np.ndarray, max_nfev: int = 100) -> np.ndarray:
    """Levenberg-Marquardt on the weighted log residuals plus the weak ridge
    RIDGE (log k_0 - log median k_c), RIDGE (log N_0 - log median N) (see fit_capacity_model)."""

    def log_model(theta: np.ndarray, jac: bool = False):
        return _log_loss_and_jac(theta, n, k_e, k_c, jac=jac)

    return refine(log_model, theta0, ly, sw, max_nfev=max_nfev, ridge=(np.array([3, 4]), ref, RIDGE))


def fit_capacity_model(
    df: pl.DataFrame,
    metric: str | None = None,
    maximize: bool | None = None,
    *,
    n_boot: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
) -> CapacityFit:
    """Fit the capacity model to the done runs (raw or seed-collapsed; module docstring).

    `metric` defaults to valid_metric (test_metric where the runs have none; frame.fit_metric); fitting
    another metric also fits test_metric (no bootstrap) as `test_model`, to report it at the optimum."""
    metric = fit_metric(df, metric)
    maximize = resolve_maximize(df, metric, maximize)
    runs, y = loss_target(df, metric, maximize)
    if runs.height < len(PARAM_NAMES) + 1:
        raise ValueError(f"the capacity model needs at least {len(PARAM_NAMES) + 1} runs; got {runs.height}")
    n = runs["n_neurons"].cast(pl.Float64).to_numpy()
    k_e = runs["k_e"].cast(pl.Float64).to_numpy()
    k_c = runs["k_c"].cast(pl.Float64).to_numpy()
    w = seed_weights(runs)
    sw, ly = np.sqrt(w), np.log(y)

    ref = np.log([np.median(k_c), np.median(n)])
    theta = _refine(_start(n, k_e, k_c, y, w), n, k_e, k_c, ly, sw, ref)
    model = CapacityModel.from_theta(theta)
    pred = model.loss(n, k_e, k_c)
    sigma_log, rmse = fit_quality(np.log(pred), y, w, theta.size)

    def refit(idx: np.ndarray) -> np.ndarray:
        return _refine(theta, n[idx], k_e[idx], k_c[idx], ly[idx], sw[idx], ref, max_nfev=30)

    boot = bootstrap(refit, runs.height, len(PARAM_NAMES), n_boot, seed)
    jacobian = sw[:, None] * _log_loss_and_jac(theta, n, k_e, k_c, jac=True)[1]
    reason = degenerate(PARAM_NAMES, theta, jacobian, n_boot, boot.shape[0])
    sign_pred = 1.0 - pred if maximize else pred
    points = runs.with_columns(
        pl.Series("fitted", sign_pred), pl.Series("residual", runs[metric].cast(pl.Float64).to_numpy() - sign_pred)
    )
    return CapacityFit(
        metric=metric,
        maximize=maximize,
        model=model,
        boot=boot,
        k_c=float(np.median(k_c)),
        overhead=hidden_overhead(runs),
        rmse=rmse,
        sigma_log=sigma_log,
        n_runs=runs.height,
        ci_level=ci_level,
        points=points,
        status="ok" if reason is None else "failed",
        reason=reason,
        test_model=getattr(on_test_metric(fit_capacity_model, df, metric, maximize, seed), "model", None),
    )
