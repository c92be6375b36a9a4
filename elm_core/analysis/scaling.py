"""Scaling law: a parametric loss surface over (N, k_e, k_c) fitted to all runs at once.

In the spirit of Chinchilla's third approach (Hoffmann et al. 2022; Besiroglu et al. 2024), rather
than parabolas through iso-budget slices, which grid width and off-centre sampling bias
(arXiv 2603.22339):

    L(N, k_e, k_c) = E + A N^-alpha + B k_e^-beta  [+ C k_c^-gamma]

The k_c term enters only when k_c varies across the runs; otherwise k_c is held at its value.
For a maximised metric (accuracy) L is the error 1 - metric.

Fit: least squares in log space over all done runs (weights w_i = n_seeds_i),
    min_theta  sum_i w_i (log L_theta(N_i, k_e_i, k_c_i) - log L_i)^2,
with log L_theta = logsumexp(log E, log A - alpha log N, log B - beta log k_e [, log C - gamma log k_c])
and every parameter positive (fitted as its log). Start: a grid over the exponents with
(E, A, B[, C]) solved by non-negative least squares at each grid point (variable projection), then
Levenberg-Marquardt from the best start; uncertainty from a pairs bootstrap (the shared skeleton of
elm_core.analysis.parametric).

Optimal allocation at total budget P: with the hidden budget H = P - P_out (P_out = params -
N (k_e + k_c), the readout, taken as the runs' median) and N = H / (k_e + k_c),
    (k_e*, k_c*) = argmin L(H / (k_e + k_c), k_e, k_c)
on a log grid (k_c within its observed range). When k_e >> k_c the optimum is a power law:
    N* ~ P^(beta / (alpha + beta)),    k_e* ~ P^(alpha / (alpha + beta))      (asymptotic exponents)
`power_laws` fits N* = G_N P^a and k_e* = G_e P^b over a range of budgets, per bootstrap replicate.
A fit that degenerates (elm_core.analysis.parametric.degenerate) has status "failed" and a reason.
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
    logsumexp,
    nnls_start,
    on_test_metric,
    refine,
)

_EXP_GRID = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)
_KE_GRID = np.logspace(0, 8, 801)  # candidate k_e for the optimum search
FEW_NEURONS = 8  # default prediction budgets leave the hidden layer at least this many neurons


@dataclass(frozen=True, eq=False)
class ScalingFit:
    """The fitted surface (module docstring), its bootstrap replicates and the derived allocations.

    params: E, A, alpha, B, beta (and C, gamma when k_c varies); param_ci: bootstrap intervals;
    boot: (n_boot, n_params) replicate parameters in log form; k_c: the fixed k_c (None when it
    varies; then k_c_range bounds the search); overhead: parameters outside the hidden layer;
    sigma_log: residual standard deviation of log L; rmse: of the metric itself; budget_range:
    the smallest and largest parameter count among the runs; status: "ok", or "failed" with the
    `reason` (parametric.degenerate): then the parameters and everything derived from them are
    not to be trusted.
    """

    metric: str
    maximize: bool
    names: tuple[str, ...]
    theta: np.ndarray = field(repr=False)
    boot: np.ndarray = field(repr=False)
    k_c: float | None
    k_c_range: tuple[float, float]
    overhead: float
    sigma_log: float
    rmse: float
    n_runs: int
    ci_level: float
    seed: int
    budget_range: tuple[float, float] = (1.0, 1.0)
    smallest_neuron: float = 1.0  # the runs' smallest k_e + k_c
    status: str = "ok"  # "failed" when the fit degenerated; `reason` says how
    reason: str | None = None
    test_fit: ScalingFit | None = field(default=None, repr=False)  # the surface through test_metric

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    # ---- parameters -------------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, float]:
        with np.errstate(over="ignore"):  # a failed fit may hold a parameter beyond float range
            return dict(zip(self.names, np.exp(self.theta).tolist(), strict=True))

    @property
    def param_ci(self) -> dict[str, tuple[float, float]]:
        lo, hi = self._quantiles(np.exp(self.boot))
        return {n: (float(a), float(b)) for n, a, b in zip(self.names, lo, hi, strict=True)}

    def _quantiles(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return interval(values, self.ci_level)

    # ---- the surface ------------------------------------------------------------------------------
    def _loss(self, theta: np.ndarray, n: np.ndarray, k_e: np.ndarray, k_c: np.ndarray) -> np.ndarray:
        return np.exp(_log_surface(theta, np.log(n), np.log(k_e), np.log(k_c)))

    def _to_metric(self, loss: np.ndarray) -> np.ndarray:
        return 1.0 - loss if self.maximize else loss

    def _kc(self, k_c: Any) -> np.ndarray:
        if k_c is None:
            if self.k_c is None:
                raise ValueError("k_c varies in the fitted runs: pass k_c")
            return np.asarray(self.k_c, dtype=float)
        return np.asarray(k_c, dtype=float)

    def predict(self, n_neurons: Any, k_e: Any, k_c: Any = None) -> np.ndarray:
        """The fitted metric at (N, k_e, k_c)."""
        n, ke, kc = np.broadcast_arrays(np.asarray(n_neurons, float), np.asarray(k_e, float), self._kc(k_c))
        return self._to_metric(self._loss(self.theta, n, ke, kc))

    def predict_interval(self, n_neurons: Any, k_e: Any, k_c: Any = None) -> pl.DataFrame:
        """Prediction with intervals at (N, k_e, k_c): columns n_neurons, k_e, k_c, metric, ci_lo,
        ci_hi (the surface, from the bootstrap) and pi_lo, pi_hi (one new run: the surface plus the
        residual noise of log L)."""
        n, ke, kc = (
            np.atleast_1d(a)
            for a in np.broadcast_arrays(np.asarray(n_neurons, float), np.asarray(k_e, float), self._kc(k_c))
        )
        point = self._loss(self.theta, n, ke, kc)
        boot = np.array([self._loss(t, n, ke, kc) for t in self.boot]).reshape(-1, n.size)
        rng = np.random.default_rng(self.seed)
        noisy = boot * np.exp(self.sigma_log * rng.standard_normal(boot.shape))
        ci_lo, ci_hi = self._quantiles(boot)
        pi_lo, pi_hi = self._quantiles(noisy)
        return self._interval_frame({"n_neurons": n, "k_e": ke, "k_c": kc}, point, ci_lo, ci_hi, pi_lo, pi_hi)

    def _interval_frame(self, cols: dict[str, np.ndarray], point, ci_lo, ci_hi, pi_lo, pi_hi) -> pl.DataFrame:
        if self.maximize:  # error -> accuracy flips the interval
            ci_lo, ci_hi, pi_lo, pi_hi = ci_hi, ci_lo, pi_hi, pi_lo
        return pl.DataFrame(
            {
                **cols,
                "metric": self._to_metric(point),
                "ci_lo": self._to_metric(ci_lo),
                "ci_hi": self._to_metric(ci_hi),
                "pi_lo": self._to_metric(pi_lo),
                "pi_hi": self._to_metric(pi_hi),
            }
        )

    # ---- optimal allocation -----------------------------------------------------------------------
    def _optimum(self, thetas: np.ndarray, budgets: np.ndarray) -> tuple[np.ndarray, ...]:
        """(N*, k_e*, k_c*, L*) of shape (len(thetas), len(budgets))."""
        hidden = np.maximum(np.asarray(budgets, float) - self.overhead, 1.0)
        if self.k_c is None:
            kc_grid = (
                np.geomspace(*self.k_c_range, 24)
                if self.k_c_range[1] > self.k_c_range[0]
                else np.array([self.k_c_range[0]])
            )
        else:
            kc_grid = np.array([self.k_c])
        ke, kc = np.meshgrid(_KE_GRID, kc_grid, indexing="ij")
        ke, kc = ke.ravel(), kc.ravel()  # (g,)
        n = hidden[:, None] / (ke + kc)[None, :]  # (budgets, g)
        valid = n >= 1.0
        ln, lke, lkc = np.log(np.maximum(n, 1.0)), np.log(ke), np.log(kc)
        out = np.empty((4, len(thetas), hidden.size))
        for i, theta in enumerate(thetas):
            loss = _log_surface(theta, ln, lke[None, :], lkc[None, :])
            loss = np.where(valid & np.isfinite(loss), loss, np.inf)
            j = np.argmin(loss, axis=1)
            b = np.arange(hidden.size)
            out[:, i, :] = n[b, j], ke[j], kc[j], np.exp(loss[b, j])
        return tuple(out)

    def optimal_allocation(self, budget: Any) -> pl.DataFrame:
        """Per budget: n_neurons, k_e, k_c at the fitted optimum with bootstrap intervals
        (<col>_lo, <col>_hi), and the metric there with ci_lo/ci_hi and pi_lo/pi_hi; with a
        `test_fit`, test_metric: the test surface at that optimum."""
        budgets = np.atleast_1d(np.asarray(budget, float))
        n, ke, kc, loss = (a[0] for a in self._optimum(self.theta[None, :], budgets))
        boot = self._optimum(self.boot, budgets)  # each (n_boot, budgets)
        cols: dict[str, Any] = {"budget": budgets}
        for name, value, b in (("n_neurons", n, boot[0]), ("k_e", ke, boot[1]), ("k_c", kc, boot[2])):
            cols[name] = value
            cols[f"{name}_lo"], cols[f"{name}_hi"] = self._quantiles(b)
        if self.test_fit is not None:
            cols["test_metric"] = self.test_fit.predict(n, ke, kc)
        rng = np.random.default_rng(self.seed)
        noisy = boot[3] * np.exp(self.sigma_log * rng.standard_normal(boot[3].shape))
        ci_lo, ci_hi = self._quantiles(boot[3])
        pi_lo, pi_hi = self._quantiles(noisy)
        return self._interval_frame(cols, loss, ci_lo, ci_hi, pi_lo, pi_hi)

    def predict_budget(self, budget: Any) -> pl.DataFrame:
        """The metric expected at a budget not yet run, at its optimal allocation (alias of
        `optimal_allocation`; the columns metric, ci_*, pi_* are the prediction)."""
        return self.optimal_allocation(budget)

    def asymptotic_exponents(self) -> dict[str, float]:
        """Closed-form exponents for k_e >> k_c: N* ~ P^(beta/(alpha+beta)), k_e* ~ P^(alpha/(alpha+beta))."""
        p = self.params
        s = p["alpha"] + p["beta"]
        return {"n_neurons": p["beta"] / s, "k_e": p["alpha"] / s}

    def power_laws(self, budgets: Any = None) -> pl.DataFrame:
        """Power laws N* = G P^a and k_e* = G P^a fitted over `budgets` (default 9 budgets from a
        third of the smallest run's to 30x the largest), with bootstrap intervals on the exponent:
        columns quantity, coefficient, exponent, exponent_lo, exponent_hi, asymptotic_exponent."""
        budgets = self._default_budgets() if budgets is None else np.asarray(budgets, float)
        lp = np.log(budgets)

        def slopes(thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            n, ke, _, _ = self._optimum(thetas, budgets)
            cn = np.polyfit(lp, np.log(n).T, 1)  # (2, len(thetas))
            ce = np.polyfit(lp, np.log(ke).T, 1)
            return cn[0], np.exp(cn[1]), ce[0], np.exp(ce[1])

        a_n, g_n, a_e, g_e = (v[0] for v in slopes(self.theta[None, :]))
        asym = self.asymptotic_exponents()
        if self.boot.shape[0]:
            bn, _, be, _ = slopes(self.boot)
            (lo_n, lo_e), (hi_n, hi_e) = self._quantiles(np.stack([bn, be], axis=1))
        else:
            lo_n = hi_n = lo_e = hi_e = float("nan")
        return pl.DataFrame(
            {
                "quantity": ["n_neurons", "k_e"],
                "coefficient": [g_n, g_e],
                "exponent": [a_n, a_e],
                "exponent_lo": [float(lo_n), float(lo_e)],
                "exponent_hi": [float(hi_n), float(hi_e)],
                "asymptotic_exponent": [asym["n_neurons"], asym["k_e"]],
                "budget_min": [float(budgets.min())] * 2,
                "budget_max": [float(budgets.max())] * 2,
            }
        )

    def _default_budgets(self) -> np.ndarray:
        """9 budgets from a third of the smallest run's (but no lower than the readout's fixed cost
        plus FEW_NEURONS of the smallest neurons run, below which there is no hidden layer to split)
        to 30x the largest."""
        lo, hi = self.budget_range
        lo = max(lo / 3, self.overhead + FEW_NEURONS * self.smallest_neuron)
        return np.geomspace(lo, max(hi * 30, 2 * lo), 9)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        ci = self.param_ci
        return {
            "metric": self.metric,
            "maximize": self.maximize,
            "form": "L = E + A N^-alpha + B k_e^-beta" + (" + C k_c^-gamma" if "C" in self.names else ""),
            "params": {k: {"value": v, "ci": list(ci[k])} for k, v in self.params.items()},
            "k_c": self.k_c,
            "n_runs": self.n_runs,
            "rmse": self.rmse,
            "sigma_log": self.sigma_log,
            "asymptotic_exponents": self.asymptotic_exponents(),
            "status": self.status,
            "reason": self.reason,
        }


def _log_surface(theta: np.ndarray, ln: np.ndarray, lke: np.ndarray, lkc: np.ndarray, jac: bool = False) -> Any:
    """log L = logsumexp(log E, log A - alpha log N, log B - beta log k_e [, log C - gamma log k_c]) and,
    with `jac`, its Jacobian (..., theta.size): d log L / d theta_j = sum_k softmax_k(terms) d term_k / d theta_j."""
    ln, lke, lkc = np.broadcast_arrays(ln, lke, lkc)
    n_terms = 1 + (theta.size - 1) // 2
    xs = np.stack([ln, lke, lkc][: n_terms - 1])  # (terms - 1, ...)
    per_term = (slice(None),) + (None,) * ln.ndim
    with np.errstate(all="ignore"):
        rate = np.exp(theta[2::2])[per_term]
        terms = np.concatenate([np.full((1, *ln.shape), theta[0]), theta[1::2][per_term] - rate * xs])
        log_loss = logsumexp(terms)
        if not jac:
            return log_loss
        p = np.exp(terms - log_loss)  # softmax over the terms
        j = np.empty((*ln.shape, theta.size))
        j[..., 0] = p[0]
        j[..., 1::2] = np.moveaxis(p[1:], 0, -1)
        j[..., 2::2] = np.moveaxis(-(p[1:] * rate * xs), 0, -1)
    return log_loss, j


def _start(ln, lke, lkc, y, w, with_kc: bool) -> np.ndarray:
    """Exponents on a grid, (E, A, B[, C]) by NNLS (parametric.nnls_start); theta in log form."""
    xs = (ln, lke, lkc) if with_kc else (ln, lke)
    grid = itertools.product(*([_EXP_GRID] * len(xs)))

    def columns(exps: tuple[float, ...]) -> list[np.ndarray]:
        return [np.ones_like(y), *(np.exp(-a * x) for a, x in zip(exps, xs, strict=True))]

    coef, exps = nnls_start(grid, columns, y, w)
    c = np.maximum(coef, 1e-6 * float(np.mean(y)))
    return np.log(np.concatenate([c[:1], np.column_stack([c[1:], exps]).ravel()]))


def _refine(theta0, ln, lke, lkc, ly, sw, max_nfev: int = 100) -> np.ndarray:
    """Levenberg-Marquardt on the weighted log residuals (parametric.refine)."""
    return refine(lambda t, jac=False: _log_surface(t, ln, lke, lkc, jac), theta0, ly, sw, max_nfev=max_nfev)


def fit_scaling_law(
    df: pl.DataFrame,
    metric: str | None = None,
    maximize: bool | None = None,
    *,
    n_boot: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
) -> ScalingFit:
    """Fit L(N, k_e, k_c) to every done run (raw or seed-collapsed); see the module docstring.

    `metric` defaults to valid_metric (test_metric where the runs have none; frame.fit_metric); fitting
    another metric also fits test_metric (no bootstrap) as `test_fit`, to report it at the optimum."""
    metric = fit_metric(df, metric)
    maximize = resolve_maximize(df, metric, maximize)
    runs, y = loss_target(df, metric, maximize)
    n_par = 5
    if runs.height < n_par + 1:
        raise ValueError(f"a scaling-law fit needs at least {n_par + 1} runs; got {runs.height}")
    ln = np.log(runs["n_neurons"].cast(pl.Float64).to_numpy())
    lke = np.log(runs["k_e"].cast(pl.Float64).to_numpy())
    kcv = runs["k_c"].cast(pl.Float64).to_numpy()
    lkc = np.log(kcv)
    with_kc = bool(np.ptp(kcv) > 0) and runs.height >= 8
    w = seed_weights(runs)
    sw = np.sqrt(w)
    ly = np.log(y)

    theta = _refine(_start(ln, lke, lkc, y, w, with_kc), ln, lke, lkc, ly, sw)
    sigma_log, rmse = fit_quality(_log_surface(theta, ln, lke, lkc), y, w, theta.size)

    def refit(idx: np.ndarray) -> np.ndarray:
        return _refine(theta, ln[idx], lke[idx], lkc[idx], ly[idx], sw[idx], max_nfev=20)

    n = runs.height
    boot_arr = bootstrap(refit, n, theta.size, n_boot, seed, min_distinct=n_par)
    names = ("E", "A", "alpha", "B", "beta") + (("C", "gamma") if with_kc else ())
    jacobian = sw[:, None] * _log_surface(theta, ln, lke, lkc, jac=True)[1]
    reason = degenerate(names, theta, jacobian, n_boot, boot_arr.shape[0])
    params = (
        runs["params"].cast(pl.Float64).drop_nulls() if "params" in runs.columns else pl.Series([], dtype=pl.Float64)
    )
    if params.len():
        budget_range = (float(params.min()), float(params.max()))
    else:
        hidden = np.exp(ln) * (np.exp(lke) + kcv)
        budget_range = (float(hidden.min()), float(hidden.max()))
    return ScalingFit(
        metric=metric,
        maximize=maximize,
        names=names,
        theta=theta,
        boot=boot_arr,
        k_c=None if with_kc else float(np.median(kcv)),
        k_c_range=(float(kcv.min()), float(kcv.max())),
        overhead=hidden_overhead(runs),
        sigma_log=sigma_log,
        rmse=rmse,
        n_runs=n,
        ci_level=ci_level,
        seed=seed,
        budget_range=budget_range,
        smallest_neuron=float(np.min(np.exp(lke) + kcv)),
        status="ok" if reason is None else "failed",
        reason=reason,
        test_fit=on_test_metric(fit_scaling_law, df, metric, maximize, seed),
    )
