"""Iso-budget optimum: the U-shaped curve of a metric against an allocation axis at a fixed budget.

Grouping (`iso_budget_groups`): runs whose parameter counts lie within `tol` (5%) of each other form
one group, max(P) <= (1 + tol) min(P), per task; a non-null `budget` column decides instead.
The group's budget is its `budget` value or the median of its parameter counts.

Smooth fit (`fit_iso`), in log space. With u = log x (logit x for the fraction k_e_frac), scaled to
t in [0, 1] over the sampled range, the curve is a cubic B-spline f(t) = sum_j beta_j B_j(t) on 12
equal segments, fitted by penalised weighted least squares with a third-difference penalty
(a P-spline):

    beta = argmin  sum_i w_i (y_i - f(t_i))^2  +  lambda ||D_3 beta||^2,     w_i = n_seeds_i (or 1)

so f = S y is linear in y. lambda -> infinity gives the parabola in log x ("Chinchilla approach 2",
biased when the arms are asymmetric or the grid is off-centre, arXiv 2603.22339); small lambda lets
the curve follow an asymmetric valley. The default lambda = 1 leaves about 5.5 effective degrees of
freedom, df = tr(H), on the 14-point published sweep. The optimum is the argmin of f over the
sampled range (refined by a parabola through the three grid points around it).

Noise: from repeated seeds where there are any, else from the fit's residuals:
    repeated seeds  each configuration's own seed variance s_i^2 (one without repeats takes the
                    pooled sigma^2 = sum (n_i - 1) s_i^2 / sum (n_i - 1); elm_core.analysis.seeds.pure_error),
                    dof = sum (n_i - 1), so an unstable arm widens the curve only where it lies
    residual        sigma^2 = sum_i w_i r_i^2 / (n - df),   dof = n - df
Differences between neighbouring points are never used: on a smooth U they measure its curvature.

Confidence interval: a parametric bootstrap of the penalised fit. Replicate b draws a noise level
and a curve from the fit's sampling distribution with its smoothing bias included (the Bayesian
covariance of a penalised spline; Wahba 1983, Nychka 1988, as in mgcv):

    c_b = dof / chi2_dof,    beta*_b ~ N(beta, c_b C),    A = B^T W B + lambda D_3^T D_3,
    C = sigma^2 A^-1                                             (residual noise)
    C = A^-1 (B^T W V B + s_med^2 lambda D_3^T D_3) A^-1         (seed noise, V = diag s_i^2)

with s_med^2 the median configuration's variance, the scale of the smoothing bias (the two agree
when every s_i = sigma)
and takes the argmin of f*_b; the interval is the (alpha/2, 1 - alpha/2) percentiles of the argmins.
Removing runs shrinks B^T W B, so A^-1 grows and the interval widens; drawing s_b from its sampling
distribution carries the uncertainty of sigma itself (few degrees of freedom, heavy tails). The
interval can only narrow when a removed run was one the curve fitted badly (sigma drops). With
dof < 1 sigma cannot be estimated and the interval is (nan, nan).

Bracketing: `interior` is False when the optimum or its interval reaches an end of the sampled range
(extend the sweep that way, `extend_toward`, unless that end is the axis's floor, d_m 1, past which no
sweep can go; `edge_advice` says which in words). `bracketed` is True only when the optimum has an
interval and both lie inside the range; False when either reaches an end; None when the optimum lies
inside but has no interval (one seed per allocation and too few points for a noise estimate): the
data do not show it bracketed, and the note says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy.interpolate import BSpline

from elm_core.analysis.frame import done_runs, fit_metric, resolve_maximize, seed_weights
from elm_core.analysis.seeds import pure_error

DEFAULT_SMOOTHING = 1.0
N_SEGMENTS = 12
N_GRID = 401
DEGREE = 3
PENALTY_ORDER = 3
NO_INTERVAL = "too few points to estimate the noise: no interval"

# The smallest value an allocation axis can take: an optimum there cannot be bracketed from below, and no
# sweep can extend past it (d_m 1: one memory unit per neuron, the most neurons a budget buys).
AXIS_FLOOR = {"d_m": 1, "d_tree": 1, "d_brch": 1}


@dataclass(frozen=True, eq=False)
class IsoFit:
    """One iso-budget curve, its optimum and the bootstrap interval (module docstring).

    curve_x / curve_y: the smooth fit on a grid in x (original units); curve_lo / curve_hi: the
    pointwise bootstrap band; points: the group's runs with `fitted` and `residual` columns;
    boot_optima: the bootstrap argmins (x units) behind `ci`; interior: the optimum and its interval
    (where there is one) lie inside the sampled range, else extend_toward says which way to grow the
    sweep; bracketed: True, False, or None without an interval (module docstring).
    """

    budget: float
    x_name: str
    metric: str
    maximize: bool
    optimum: float
    ci: tuple[float, float]
    optimum_metric: float
    interior: bool
    n_points: int
    n_distinct: int
    sigma: float
    sigma_dof: float
    sigma_source: str
    effective_df: float
    smoothing: float
    transform: str
    ci_level: float
    n_boot: int
    seed: int
    curve_x: np.ndarray = field(repr=False)
    curve_y: np.ndarray = field(repr=False)
    curve_lo: np.ndarray = field(repr=False)
    curve_hi: np.ndarray = field(repr=False)
    boot_optima: np.ndarray = field(repr=False)
    points: pl.DataFrame = field(repr=False)
    task: str | None = None
    note: str = ""
    extend_toward: str = ""  # 'smaller', 'larger', 'smaller and larger' x; '' when bracketed or it cannot grow
    edge_advice: str = ""  # what to do about an optimum at the edge, in words; '' when interior
    test_at_optimum: float = float("nan")  # the smoothed test_metric at the optimum

    @property
    def has_interval(self) -> bool:
        """Whether the optimum has a bootstrap interval (False with too few points for a noise estimate)."""
        return bool(np.isfinite(self.ci[0]) and np.isfinite(self.ci[1]))

    @property
    def bracketed(self) -> bool | None:
        """True: the optimum and its interval lie inside the sampled range; False: either reaches an end
        of it; None: the optimum lies inside but has no interval, so bracketing is not shown."""
        if not self.interior:
            return False
        return True if self.has_interval else None

    @property
    def ci_width_log(self) -> float:
        """log(ci_high / ci_low): the interval's width in log units (nan without an interval)."""
        lo, hi = self.ci
        return float(np.log(hi / lo)) if lo > 0 and hi > 0 else float("nan")

    def curve_frame(self) -> pl.DataFrame:
        """The fitted curve and its band as a frame: x, metric, lo, hi."""
        return pl.DataFrame({"x": self.curve_x, "metric": self.curve_y, "lo": self.curve_lo, "hi": self.curve_hi})

    def to_dict(self, curve: bool = False) -> dict[str, Any]:
        """JSON-ready summary (nan -> None); with `curve`, the fitted curve too."""
        out: dict[str, Any] = {
            "budget": _num(self.budget),
            "task": self.task,
            "x": self.x_name,
            "metric": self.metric,
            "maximize": self.maximize,
            "optimum": _num(self.optimum),
            "ci": [_num(self.ci[0]), _num(self.ci[1])],
            "ci_level": self.ci_level,
            "optimum_metric": _num(self.optimum_metric),
            "test_metric_at_optimum": _num(self.test_at_optimum),
            "interior": self.interior,
            "bracketed": self.bracketed,
            "extend_toward": self.extend_toward or None,
            "edge_advice": self.edge_advice or None,
            "n_points": self.n_points,
            "n_distinct": self.n_distinct,
            "sigma": _num(self.sigma),
            "sigma_source": self.sigma_source,
            "effective_df": _num(self.effective_df),
            "smoothing": self.smoothing,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "note": self.note,
        }
        if curve:
            out["curve"] = {"x": [_num(v) for v in self.curve_x], "metric": [_num(v) for v in self.curve_y]}
        return out


def _num(v: float) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


# --------------------------------------------------------------------------------------------------
# Axis transforms


def resolve_transform(x_name: str, values: np.ndarray, transform: str = "auto") -> str:
    """'logit' for a fraction (k_e_frac, or a *_frac column in (0, 1)), 'log' for positive values,
    else 'linear'."""
    if transform != "auto":
        if transform not in ("log", "logit", "linear"):
            raise ValueError(f"unknown transform {transform!r} (log, logit, linear, auto)")
        return transform
    if x_name.endswith("frac") and np.all((values > 0) & (values < 1)):
        return "logit"
    return "log" if np.all(values > 0) else "linear"


def forward(x: np.ndarray, transform: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if transform == "log":
        return np.log(x)
    if transform == "logit":
        return np.log(x / (1.0 - x))
    return x


def inverse(u: np.ndarray, transform: str) -> np.ndarray:
    u = np.asarray(u, dtype=float)
    if transform == "log":
        return np.exp(u)
    if transform == "logit":
        return 1.0 / (1.0 + np.exp(-u))
    return u


# --------------------------------------------------------------------------------------------------
# The P-spline smoother and its bootstrap


def _basis(t: np.ndarray) -> np.ndarray:
    knots = np.arange(-DEGREE, N_SEGMENTS + DEGREE + 1) / N_SEGMENTS
    return BSpline.design_matrix(np.clip(t, 0.0, 1.0), knots, DEGREE).toarray()


def _penalised(t: np.ndarray, w: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(basis at t, A^-1, lambda D_3^T D_3) with A = B^T W B + lambda D_3^T D_3; beta = A^-1 B^T W y."""
    b = _basis(t)  # (n, k)
    k = b.shape[1]
    d = np.diff(np.eye(k), PENALTY_ORDER, axis=0)  # (k - 3, k)
    penalty = lam * d.T @ d
    return b, np.linalg.inv((b.T * w) @ b + penalty), penalty


def _argmin_refined(curves: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Argmin of each row of `curves` over `grid`, refined by the parabola through its neighbours."""
    curves = np.atleast_2d(curves)
    i = np.argmin(curves, axis=1)
    j = np.clip(i, 1, grid.size - 2)
    rows = np.arange(curves.shape[0])
    y0, y1, y2 = curves[rows, j - 1], curves[rows, j], curves[rows, j + 1]
    denom = y0 - 2 * y1 + y2
    step = np.where(denom > 0, 0.5 * (y0 - y2) / np.where(denom > 0, denom, 1.0), 0.0)
    h = grid[1] - grid[0]
    inside = (i > 0) & (i < grid.size - 1)
    return np.where(inside, grid[j] + np.clip(step, -1, 1) * h, grid[i])


@dataclass(frozen=True, eq=False)
class _Ensemble:
    grid_u: np.ndarray  # evaluation grid in transformed units
    fitted: np.ndarray  # f on the grid (loss orientation: minimised)
    boot: np.ndarray  # (n_boot, grid) bootstrap curves; empty when sigma is unknown
    fitted_points: np.ndarray
    sigma: float
    dof: float
    source: str
    effective_df: float


def _ensemble(
    u: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    *,
    lam: float,
    n_boot: int,
    seed: int,
    noise: tuple[np.ndarray, float, int],
    extend: float = 0.0,
) -> _Ensemble:
    """The penalised fit and its bootstrap curves; `noise` = seeds.pure_error of the rows."""
    lo, hi = float(u.min()), float(u.max())
    span = hi - lo
    lo_d, hi_d = lo - extend * span, hi + extend * span
    t = (u - lo_d) / (hi_d - lo_d)
    grid_u = np.linspace(lo_d, hi_d, N_GRID)
    b, a_inv, penalty = _penalised(t, w, lam)
    beta = a_inv @ (b.T * w) @ y  # (k,)
    g = _basis((grid_u - lo_d) / (hi_d - lo_d))  # (grid, k)
    fitted_points = b @ beta
    edf = float(np.trace(a_inv @ (b.T * w) @ b))  # tr(H), H = B A^-1 B^T W
    variances, pooled, pure_dof = noise
    res_dof = y.size - edf
    if pure_dof >= 1:
        sigma, dof, source = pooled, float(pure_dof), "repeated seeds"
        typical = float(np.median([variances[u == v][0] for v in np.unique(u)]))  # per configuration
        root = _psd_root(a_inv @ ((b.T * (w * variances)) @ b + typical * penalty) @ a_inv)
    elif res_dof >= 1:
        sigma, dof, source = float(np.sqrt(np.sum(w * (y - fitted_points) ** 2) / res_dof)), res_dof, "residual"
        root = sigma * np.linalg.cholesky((a_inv + a_inv.T) / 2)  # (k, k)
    else:
        return _Ensemble(grid_u, g @ beta, np.empty((0, N_GRID)), fitted_points, np.nan, 0.0, "none", edf)
    rng = np.random.default_rng(seed)
    scale = np.sqrt(dof / rng.chisquare(dof, size=(n_boot, 1)))  # (n_boot, 1)
    betas = beta[None, :] + scale * (rng.standard_normal((n_boot, beta.size)) @ root.T)  # (n_boot, k)
    return _Ensemble(grid_u, g @ beta, betas @ g.T, fitted_points, sigma, dof, source, edf)


def _psd_root(m: np.ndarray) -> np.ndarray:
    """R with R R^T = m for a symmetric positive semi-definite m (eigenvalues below 0 clipped)."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return vecs * np.sqrt(np.clip(vals, 0.0, None))


# --------------------------------------------------------------------------------------------------
# Grouping and fitting


def _cluster(values: np.ndarray, tol: float) -> np.ndarray:
    """Group label per value: sorted values start a new group above (1 + tol) x the group's first."""
    order = np.argsort(values)
    labels = np.empty(values.size, dtype=np.int64)
    start, label = None, -1
    for i in order:
        if start is None or values[i] > start * (1.0 + tol):
            start, label = values[i], label + 1
        labels[i] = label
    return labels


def iso_budget_groups(df: pl.DataFrame, tol: float = 0.05) -> pl.DataFrame:
    """`df` with an `iso_budget` column: the group's budget (module docstring). Rows with neither a
    budget nor a parameter count get null."""
    n = df.height
    budget = np.full(n, np.nan)
    if "budget" in df.columns:
        budget = df["budget"].cast(pl.Float64).fill_null(np.nan).to_numpy().copy()
    if "params" in df.columns:
        params = df["params"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        tasks = df["task"].cast(pl.String).fill_null("").to_numpy() if "task" in df.columns else np.full(n, "")
        free = np.isnan(budget) & np.isfinite(params)
        for task in np.unique(tasks[free]):
            idx = np.flatnonzero(free & (tasks == task))
            labels = _cluster(params[idx], tol)
            for lab in np.unique(labels):
                members = idx[labels == lab]
                budget[members] = float(np.median(params[members]))
    return df.with_columns(pl.Series("iso_budget", budget).fill_nan(None))


def fit_iso(
    df: pl.DataFrame,
    x: str = "d_m",
    metric: str | None = None,
    maximize: bool | None = None,
    *,
    budget: float | None = None,
    smoothing: float = DEFAULT_SMOOTHING,
    n_boot: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
    transform: str = "auto",
) -> IsoFit:
    """Fit one iso-budget group (all rows of `df` are taken as one budget) and locate its optimum.

    Raw or seed-collapsed rows; only done runs with finite `x` and `metric` enter. Needs at least
    three distinct allocations. `budget` defaults to the median of `iso_budget`, `budget` or `params`.
    `metric` defaults to valid_metric (test_metric where the runs have none; frame.fit_metric); the
    test metric at the optimum is `test_at_optimum` (the same smoother through the test numbers).
    """
    metric = fit_metric(df, metric)
    maximize = resolve_maximize(df, metric, maximize)
    runs = done_runs(df, metric, [x])
    xv = runs[x].cast(pl.Float64).to_numpy()
    yv = runs[metric].cast(pl.Float64).to_numpy()
    if runs.height == 0 and df.height > 0 and metric in df.columns:
        raise ValueError(f"no done run has a finite {metric} (NaN or infinite in all {df.height} rows); nothing to fit")
    if np.unique(xv).size < 3:
        raise ValueError(f"an iso-budget fit needs at least 3 distinct values of {x}; got {np.unique(xv).size}")
    if budget is None:
        budget = next(
            (
                float(runs[c].cast(pl.Float64).median())
                for c in ("iso_budget", "budget", "params")
                if c in runs.columns and runs[c].null_count() < runs.height
            ),
            float("nan"),
        )
    tr = resolve_transform(x, xv, transform)
    u = forward(xv, tr)
    w = seed_weights(runs)
    loss = -yv if maximize else yv
    sign = -1.0 if maximize else 1.0
    noise = pure_error(runs, x, metric)
    ens = _ensemble(u, loss, w, lam=smoothing, n_boot=n_boot, seed=seed, noise=noise)

    grid = ens.grid_u
    u_opt = float(_argmin_refined(ens.fitted, grid)[0])
    alpha = 1.0 - ci_level
    lo_u = hi_u = u_opt
    note = ""
    if ens.boot.shape[0]:
        boot_u = _argmin_refined(ens.boot, grid)
        lo_u, hi_u = np.quantile(boot_u, [alpha / 2, 1 - alpha / 2])
        ci = (float(inverse(lo_u, tr)), float(inverse(hi_u, tr)))
        band_lo, band_hi = np.quantile(ens.boot, [alpha / 2, 1 - alpha / 2], axis=0)
        boot_opt = inverse(boot_u, tr)
    else:
        ci = (float("nan"), float("nan"))
        band_lo = band_hi = np.full(grid.size, np.nan)
        boot_opt = np.empty(0)
        note = f"{NO_INTERVAL}, so the optimum is not shown to be bracketed"
    edge = 1e-9 * (grid[-1] - grid[0])
    low, high = bool(min(lo_u, u_opt) <= grid[0] + edge), bool(max(hi_u, u_opt) >= grid[-1] - edge)
    floor = AXIS_FLOOR.get(x)
    at_floor = low and floor is not None and float(xv.min()) <= floor
    extend_toward = _direction(low and not at_floor, high)
    advice = _edge_advice(x, extend_toward, floor if at_floor else None)
    if low or high:
        note = "; ".join(
            [
                f"not bracketed: the optimum or its interval reaches the sampled range's edge; {advice}",
                *([NO_INTERVAL] if note else []),
            ]
        )
    if maximize:
        band_lo, band_hi = band_hi, band_lo
    opt_metric = float(sign * np.interp(u_opt, grid, ens.fitted))
    test_at_optimum = opt_metric if metric == "test_metric" else _smoothed_at(runs, x, tr, smoothing, u_opt, maximize)
    points = runs.with_columns(
        pl.Series("fitted", sign * ens.fitted_points), pl.Series("residual", yv - sign * ens.fitted_points)
    )
    task = None
    if "task" in runs.columns and runs["task"].n_unique() == 1:
        task = runs["task"][0]
    return IsoFit(
        budget=float(budget),
        x_name=x,
        metric=metric,
        maximize=maximize,
        optimum=float(inverse(u_opt, tr)),
        ci=ci,
        optimum_metric=opt_metric,
        interior=not (low or high),
        n_points=runs.height,
        n_distinct=int(np.unique(xv).size),
        sigma=ens.sigma,
        sigma_dof=ens.dof,
        sigma_source=ens.source,
        effective_df=ens.effective_df,
        smoothing=smoothing,
        transform=tr,
        ci_level=ci_level,
        n_boot=n_boot,
        seed=seed,
        curve_x=inverse(grid, tr),
        curve_y=sign * ens.fitted,
        curve_lo=sign * band_lo,
        curve_hi=sign * band_hi,
        boot_optima=boot_opt,
        points=points,
        task=task,
        note=note,
        extend_toward=extend_toward,
        edge_advice=advice,
        test_at_optimum=test_at_optimum,
    )


def _smoothed_at(runs: pl.DataFrame, x: str, tr: str, lam: float, u_opt: float, maximize: bool) -> float:
    """The P-spline through the runs' test_metric, at u_opt (nan without three distinct tested x)."""
    if "test_metric" not in runs.columns:
        return float("nan")
    tested = done_runs(runs, "test_metric")
    xv = tested[x].cast(pl.Float64).to_numpy()
    if np.unique(xv).size < 3:
        return float("nan")
    sign = -1.0 if maximize else 1.0
    y = sign * tested["test_metric"].cast(pl.Float64).to_numpy()
    ens = _ensemble(forward(xv, tr), y, seed_weights(tested), lam=lam, n_boot=0, seed=0, noise=(np.zeros(0), 0.0, 0))
    return float(sign * np.interp(u_opt, ens.grid_u, ens.fitted))


def _edge_advice(x: str, extend_toward: str, floor: int | None) -> str:
    """What to do about an optimum at the edge: extend the sweep, or (at the axis's floor) nothing can."""
    parts = []
    if floor is not None:
        parts.append(
            f"{x} {floor} is the smallest {x} there is, so the sweep cannot grow that way: the optimum lies at that end"
        )
    if extend_toward:
        parts.append(f"extend the sweep to {extend_toward} {x}")
    return "; ".join(parts)


def _direction(low: bool, high: bool) -> str:
    """Where a sweep must grow to bracket its optimum: 'smaller', 'larger', 'smaller and larger', or ''."""
    return " and ".join(w for w, hit in (("smaller", low), ("larger", high)) if hit)


def fit_iso_budgets(
    df: pl.DataFrame,
    x: str = "d_m",
    metric: str | None = None,
    maximize: bool | None = None,
    *,
    tol: float = 0.05,
    smoothing: float = DEFAULT_SMOOTHING,
    n_boot: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
    transform: str = "auto",
) -> list[IsoFit]:
    """`fit_iso` for every iso-budget group (per task) with at least 3 distinct allocations,
    ordered by task and budget; `metric` as in `fit_iso`. Without `maximize`, runs of several tasks
    whose metrics differ (BPC and accuracy) are fitted task by task, each in its own direction."""
    kw = dict(tol=tol, smoothing=smoothing, n_boot=n_boot, seed=seed, ci_level=ci_level, transform=transform)
    mixed = {"task", "metric_name"} <= set(df.columns) and df["metric_name"].drop_nulls().n_unique() > 1
    if maximize is None and mixed:
        return [
            f
            for _, part in df.sort("task").group_by("task", maintain_order=True)
            for f in fit_iso_budgets(part, x, metric, None, **kw)
        ]
    metric = fit_metric(df, metric)
    maximize = resolve_maximize(df, metric, maximize)
    runs = iso_budget_groups(done_runs(df, metric, [x]), tol).filter(pl.col("iso_budget").is_not_null())
    keys = ["task", "iso_budget"] if "task" in runs.columns else ["iso_budget"]
    fits = []
    for _, group in runs.sort(keys).group_by(keys, maintain_order=True):
        if group[x].n_unique() < 3:
            continue
        fits.append(
            fit_iso(
                group,
                x,
                metric,
                maximize,
                budget=float(group["iso_budget"][0]),
                smoothing=smoothing,
                n_boot=n_boot,
                seed=seed,
                ci_level=ci_level,
                transform=transform,
            )
        )
    return fits


def iso_ensemble(
    df: pl.DataFrame,
    x: str,
    metric: str,
    maximize: bool,
    *,
    smoothing: float = DEFAULT_SMOOTHING,
    n_boot: int = 200,
    seed: int = 0,
    transform: str = "auto",
    extend: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, str]:
    """(grid_x, fitted, boot_curves, sigma, transform) in loss orientation (minimised), on a grid
    extended by `extend` x the sampled log-range on each side. Used by `suggest_next_runs`."""
    runs = done_runs(df, metric, [x])
    xv = runs[x].cast(pl.Float64).to_numpy()
    yv = runs[metric].cast(pl.Float64).to_numpy()
    tr = resolve_transform(x, xv, transform)
    ens = _ensemble(
        forward(xv, tr),
        -yv if maximize else yv,
        seed_weights(runs),
        lam=smoothing,
        n_boot=n_boot,
        seed=seed,
        noise=pure_error(runs, x, metric),
        extend=extend,
    )
    return inverse(ens.grid_u, tr), ens.fitted, ens.boot, ens.sigma, tr
