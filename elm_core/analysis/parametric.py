"""The skeleton shared by the parametric loss fits (the scaling law and the capacity model).

Both fit a positive loss surface L_theta to the done runs by weighted least squares in log space,

    min_theta  sum_i w_i (log L_theta(x_i) - log L_i)^2     (w_i = n_seeds_i, theta = log-parameters),

in four steps, each a function here:
- `nnls_start`: a grid over the nonlinear parameters; at each grid point the linear coefficients
  (L = sum_k c_k f_k(x), c_k >= 0) by non-negative least squares on the relative error
  sum_i w_i (sum_k c_k f_k(x_i) - L_i)^2 / L_i^2 (variable projection); the best grid point starts the fit.
- `refine`: Levenberg-Marquardt (`scipy.optimize.least_squares`, method "lm") on the weighted log
  residuals with the model's analytic Jacobian; non-finite residuals count as 1e3 and non-finite
  Jacobian entries as 0, so a step into an overflow is rejected rather than fatal. An optional weak
  ridge weight (theta_j - ref_j) keeps parameters the data leave unidentified finite.
- `bootstrap`: pairs bootstrap, resampling runs with replacement and refitting from the estimate;
  resamples with too few distinct runs (by default fewer than parameters) are skipped and replicates
  with a log-parameter beyond +-MAX_LOG_PARAM have diverged and are dropped.
- `fit_quality` and `interval`: the residual scale of log L, the RMSE of L, and bootstrap quantiles.
- `on_test_metric`: the same fit through test_metric, for a fit located on another metric.
- `degenerate`: why a fit failed, if it did: a log-parameter at +-MAX_LOG_PARAM (the fit ran to a
  bound: the runs do not pin it), a Jacobian at the estimate with condition number above
  MAX_CONDITION (a singular system: some direction of the parameters is not determined), or fewer
  than MIN_BOOT_FRACTION of the bootstrap replicates surviving (the estimate is not stable).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from scipy.optimize import least_squares, nnls

MAX_LOG_PARAM = 50.0  # a replicate with a parameter beyond e^+-50 has diverged
MAX_CONDITION = 1e8  # beyond this the Jacobian's condition number marks a singular system
MIN_BOOT_FRACTION = 0.5  # a fit whose bootstrap keeps fewer replicates than this has failed

# log_model(theta, jac=False) -> log L (n,); log_model(theta, jac=True) -> (log L (n,), d log L / d theta (n, p))
LogModel = Callable[..., Any]


def logsumexp(t: np.ndarray) -> np.ndarray:
    """log(sum(exp(t), axis=0)), stable: max + log sum exp(t - max) (scipy's is slow for many small calls)."""
    with np.errstate(all="ignore"):
        m = t.max(axis=0)
        return m + np.log(np.exp(t - m).sum(axis=0))


def nnls_start(
    grid: Iterable[tuple[float, ...]],
    columns: Callable[[tuple[float, ...]], list[np.ndarray]],
    y: np.ndarray,
    w: np.ndarray,
) -> tuple[np.ndarray, tuple[float, ...]]:
    """(c, point): the grid point whose NNLS coefficients c on `columns(point)` (the f_k at the runs)
    minimise the weighted relative error (module docstring); the first best point wins ties."""
    rw = np.sqrt(w) / y
    best: tuple[float, Any] = (np.inf, None)
    for point in grid:
        x = np.stack(columns(point), axis=1) * rw[:, None]
        coef, rnorm = nnls(x, y * rw)
        if rnorm < best[0]:
            best = (rnorm, (coef, point))
    return best[1]


def refine(
    log_model: LogModel,
    theta0: np.ndarray,
    ly: np.ndarray,
    sw: np.ndarray,
    *,
    max_nfev: int = 100,
    ridge: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> np.ndarray:
    """theta minimising sum_i (sw_i (log L_theta(x_i) - ly_i))^2 [+ sum_j (weight (theta_j - ref_j))^2]
    by Levenberg-Marquardt from theta0; `ridge` = (indices j, ref, weight); at most max_nfev
    evaluations per parameter."""
    if ridge is not None:
        idx, ref, weight = ridge
        ridge_jac = np.zeros((len(idx), theta0.size))
        ridge_jac[np.arange(len(idx)), idx] = weight

    def resid(theta: np.ndarray) -> np.ndarray:
        r = sw * (log_model(theta) - ly)
        r = np.where(np.isfinite(r), r, 1e3)
        return r if ridge is None else np.concatenate([r, weight * (theta[idx] - ref)])

    def jac(theta: np.ndarray) -> np.ndarray:
        j = sw[:, None] * log_model(theta, jac=True)[1]
        j = np.where(np.isfinite(j), j, 0.0)
        return j if ridge is None else np.concatenate([j, ridge_jac])

    with np.errstate(all="ignore"):
        return least_squares(resid, theta0, jac=jac, method="lm", max_nfev=max_nfev * theta0.size).x


def bootstrap(
    refit: Callable[[np.ndarray], np.ndarray],
    n_rows: int,
    n_params: int,
    n_boot: int,
    seed: int,
    min_distinct: int | None = None,
) -> np.ndarray:
    """(replicates, n_params) refitted log-parameters: `refit(idx)` on each resample idx of the rows,
    skipping resamples with fewer than `min_distinct` (default n_params) distinct rows and dropping
    diverged replicates (module docstring); reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    min_distinct = n_params if min_distinct is None else min_distinct
    boot = []
    for _ in range(n_boot):
        idx = rng.integers(0, n_rows, n_rows)
        if np.unique(idx).size < min_distinct:
            continue
        t = refit(idx)
        if np.all(np.isfinite(t)) and np.all(np.abs(t) < MAX_LOG_PARAM):
            boot.append(t)
    return np.array(boot) if boot else np.empty((0, n_params))


def fit_quality(log_pred: np.ndarray, y: np.ndarray, w: np.ndarray, n_params: int) -> tuple[float, float]:
    """(sigma_log, rmse): sigma_log^2 = sum_i w_i (log L_theta_i - log L_i)^2 / max(1, sum w - p), the
    noise of one run's log loss; rmse = sqrt(weighted mean of (L_theta_i - L_i)^2), in the metric's units."""
    resid = log_pred - np.log(y)
    sigma_log = float(np.sqrt(np.sum(w * resid**2) / max(1.0, float(w.sum()) - n_params)))
    rmse = float(np.sqrt(np.average((np.exp(log_pred) - y) ** 2, weights=w)))
    return sigma_log, rmse


def interval(values: np.ndarray, ci_level: float) -> tuple[np.ndarray, np.ndarray]:
    """The central ci_level interval of bootstrap `values` along axis 0 (NaN when there are none)."""
    if values.shape[0] == 0:
        return np.full(values.shape[1:], np.nan), np.full(values.shape[1:], np.nan)
    a = 1.0 - ci_level
    lo, hi = np.nanquantile(values, [a / 2, 1 - a / 2], axis=0)
    return lo, hi


def degenerate(
    names: tuple[str, ...], theta: np.ndarray, jacobian: np.ndarray, n_boot: int, n_survived: int
) -> str | None:
    """The reason the fit at `theta` (log-parameters named `names`) failed, or None (module docstring);
    `jacobian` is d log L / d theta at the runs."""
    with np.errstate(all="ignore"):
        values = np.exp(theta)
    at_bound = [f"{n} = {v:.3g}" for n, t, v in zip(names, theta, values, strict=True) if not abs(t) < MAX_LOG_PARAM]
    if at_bound:
        return f"parameters ran to their bounds ({', '.join(at_bound)}): the runs do not pin them"
    if not np.all(np.isfinite(jacobian)):
        return "singular system: the model is not differentiable at the estimate"
    cond = float(np.linalg.cond(jacobian))
    if not cond <= MAX_CONDITION:
        return f"singular system: the runs do not determine every parameter (condition number {cond:.2g})"
    if n_boot > 0 and n_survived < MIN_BOOT_FRACTION * n_boot:
        return f"only {n_survived} of {n_boot} bootstrap replicates converged: the estimate is not stable"
    return None


def on_test_metric(fit: Callable[..., Any], df: Any, metric: str, maximize: bool, seed: int) -> Any | None:
    """`fit(df, "test_metric", maximize, n_boot=0, seed=seed)` when the fit was located on another
    metric; None when it was located on test_metric, the runs have none, or it cannot be fitted."""
    if metric == "test_metric" or "test_metric" not in df.columns:
        return None
    try:
        return fit(df, "test_metric", maximize, n_boot=0, seed=seed)
    except ValueError:
        return None
