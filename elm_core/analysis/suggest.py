"""What to run next: (budget, allocation) points whose result would shrink the optimum's uncertainty most.

For every iso-budget group the bootstrap of `fit_iso` gives an ensemble of curves f_b and their
optima z_b = log x*_b. A new run at allocation x returns y = f(x) + noise (sigma: the group's noise).
Treating (f_b(x), z_b) as jointly Gaussian over the ensemble, observing y reduces the variance of
the optimum by (the linear-Gaussian / ensemble Kalman update)

    delta(x) = Cov_b(f_b(x), z_b)^2 / (Var_b(f_b(x)) + sigma^2)

and the score is the expected shrink of its standard deviation, in log units of x:

    score(x) = sd(z) - sqrt(Var(z) - delta(x)).

Candidates span the sampled range; when the optimum sits at an end of it (not bracketed), the range
is widened by a quarter on each side (the P-spline's quadratic continuation). Repeating a
configuration already run (another seed) is a candidate like any other.

New budgets (x = d_m only, when the runs carry the architecture columns and the scaling law fits):
at `budget_factors` x the largest budget (and the smallest / the factor), the scaling-law bootstrap
gives surfaces L_b over d_m (N set by the budget) and optima z_b = log d_m*_b; the same score is
computed with sigma = L sigma_log. Both kinds are in log units of d_m, so they rank together.

`suggest_next_runs` returns one row per suggestion, best first: rank, budget, kind, x_name, x, d_m,
n_neurons, k_e, k_c, predicted_metric, score, sd_reduction_pct, reason.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from elm_core.analysis.frame import done_runs, fit_metric, resolve_maximize
from elm_core.analysis.iso import (
    DEFAULT_SMOOTHING,
    _argmin_refined,
    forward,
    inverse,
    iso_budget_groups,
    iso_ensemble,
)
from elm_core.analysis.scaling import ScalingFit, _log_surface, fit_scaling_law
from elm_core.budget import neurons_for_budget

_GEOMETRY = ("l_mlp", "d_mlp", "d_tree", "d_brch")
_COLUMNS = {
    "rank": pl.Int64,
    "budget": pl.Float64,
    "kind": pl.String,
    "x_name": pl.String,
    "x": pl.Float64,
    "d_m": pl.Int64,
    "n_neurons": pl.Int64,
    "k_e": pl.Float64,
    "k_c": pl.Float64,
    "predicted_metric": pl.Float64,
    "score": pl.Float64,
    "sd_reduction_pct": pl.Float64,
    "reason": pl.String,
}


def _scores(values: np.ndarray, target: np.ndarray, sigma: float) -> tuple[np.ndarray, float]:
    """score per candidate column of `values` (n_boot, n_cand) for the target (n_boot,)."""
    z = target - target.mean()
    sd_z = float(np.sqrt(np.mean(z**2)))
    f = values - values.mean(axis=0)
    cov = (f * z[:, None]).mean(axis=0)
    denom = np.mean(f**2, axis=0) + sigma**2
    delta = np.divide(cov**2, denom, out=np.zeros_like(denom), where=denom > 0)
    return sd_z - np.sqrt(np.maximum(sd_z**2 - delta, 0.0)), sd_z


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = float(np.std(a)), float(np.std(b))
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb)) if sa > 0 and sb > 0 else 0.0


def _geometry(group: pl.DataFrame) -> dict[str, float] | None:
    if not all(c in group.columns for c in ("d_m", *_GEOMETRY)):
        return None
    g = group.select([*_GEOMETRY, "d_m"]).drop_nulls()
    if g.height == 0:
        return None
    mode = {c: g[c].mode().sort()[0] for c in ("l_mlp", "d_tree", "d_brch")}
    ratio = float((g["d_mlp"] / g["d_m"]).median())
    extra = {}
    for c in ("n_out", "readout_d_m"):
        if c in group.columns and group[c].null_count() < group.height:
            extra[c] = int(group[c].drop_nulls().mode().sort()[0])
    return {**mode, "d_mlp_ratio": ratio, **extra}


def _neurons(budget: float, d_m: np.ndarray, geom: dict[str, float]) -> tuple[np.ndarray, ...]:
    return neurons_for_budget(
        budget,
        d_m,
        l_mlp=int(geom["l_mlp"]),
        d_mlp_ratio=geom["d_mlp_ratio"],
        d_tree=int(geom["d_tree"]),
        d_brch=int(geom["d_brch"]),
        n_out=int(geom.get("n_out", 0)),
        readout_d_m=int(geom.get("readout_d_m", 3)),
    )


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"


def _existing(
    runs: pl.DataFrame, x: str, metric: str, maximize: bool, smoothing: float, n_boot: int, seed: int, per_budget: int
) -> list[dict]:
    rows: list[dict] = []
    keys = ["task", "iso_budget"] if "task" in runs.columns else ["iso_budget"]
    for _, group in runs.sort(keys).group_by(keys, maintain_order=True):
        if group[x].n_unique() < 3:
            continue
        budget = float(group["iso_budget"][0])
        grid_x, fitted, boot, sigma, tr = iso_ensemble(
            group, x, metric, maximize, smoothing=smoothing, n_boot=n_boot, seed=seed
        )
        grid_u = forward(grid_x, tr)
        if not 0 < int(np.argmin(fitted)) < grid_u.size - 1:  # optimum not bracketed: look beyond
            grid_x, fitted, boot, sigma, tr = iso_ensemble(
                group, x, metric, maximize, smoothing=smoothing, n_boot=n_boot, seed=seed, extend=0.25
            )
            grid_u = forward(grid_x, tr)
        if boot.shape[0] == 0:
            continue
        target = _argmin_refined(boot, grid_u)
        lo_z, hi_z = np.quantile(target, [0.025, 0.975])
        score, sd_z = _scores(boot, target, sigma)
        integer = x in ("d_m", "n_neurons", "k_e")
        cand_x = np.round(grid_x) if integer else grid_x
        geom = _geometry(group) if x == "d_m" else None
        seen: list[float] = []
        done_x = set(group[x].to_list())
        for i in np.argsort(-score):
            xc = float(cand_x[i])
            if integer and xc < 1:
                continue
            if any(abs(np.log(xc / s)) < 0.08 for s in seen if xc > 0 and s > 0) or xc in seen:
                continue
            seen.append(xc)
            r = _corr(boot[:, i], target)
            n_neurons = k_e = k_c = None
            if geom is not None:
                n_arr, ke_arr, kc_arr = _neurons(budget, np.array([xc]), geom)
                n_neurons, k_e, k_c = int(n_arr[0]), float(ke_arr[0]), float(kc_arr[0])
            pred = float(-fitted[i] if maximize else fitted[i])
            pct = 100.0 * score[i] / sd_z if sd_z > 0 else 0.0
            what = "another seed at" if xc in done_x else "a run at"
            where = f"{x}={_fmt(xc)}" + (f" (N={n_neurons})" if n_neurons else "")
            rows.append(
                {
                    "budget": budget,
                    "kind": "existing budget",
                    "x_name": x,
                    "x": xc,
                    "d_m": int(xc) if x == "d_m" else None,
                    "n_neurons": n_neurons,
                    "k_e": k_e,
                    "k_c": k_c,
                    "predicted_metric": pred,
                    "score": float(score[i]),
                    "sd_reduction_pct": pct,
                    "reason": (
                        f"budget {_fmt(budget)}: optimum {x} 95% CI {_fmt(float(inverse(lo_z, tr)))}"
                        f"-{_fmt(float(inverse(hi_z, tr)))}; {what} {where} is where the "
                        f"bootstrap curves that disagree about the optimum differ most (corr {r:+.2f} with it); "
                        f"expected to cut the optimum's spread by {pct:.0f}%"
                    ),
                }
            )
            if len(seen) >= per_budget:
                break
    return rows


def _new_budgets(
    runs: pl.DataFrame, metric: str, maximize: bool, n_boot: int, seed: int, factors: tuple[float, ...], per_budget: int
) -> list[dict]:
    geom = _geometry(runs)
    if geom is None or runs["params"].null_count() == runs.height:
        return []
    try:
        fit: ScalingFit = fit_scaling_law(runs, metric, maximize, n_boot=n_boot, seed=seed)
    except ValueError:
        return []
    if fit.boot.shape[0] < 10 or fit.k_c is None:
        return []
    p_lo, p_hi = float(runs["params"].min()), float(runs["params"].max())
    d_lo, d_hi = float(runs["d_m"].min()), float(runs["d_m"].max())
    grid_d = np.geomspace(max(1.0, d_lo / 1.5), d_hi * 1.5, 201)
    grid_u = np.log(grid_d)
    sigma = fit.sigma_log * float(runs[metric].mean())
    if maximize:
        sigma = fit.sigma_log * float(1.0 - runs[metric].mean())
    rows: list[dict] = []
    budgets = [p_hi * f for f in factors] + [p_lo / f for f in factors]
    for budget in budgets:
        n, ke, kc = _neurons(budget, grid_d, geom)
        ok = n >= 1
        ln, lke, lkc = np.log(n), np.log(ke), np.log(kc)
        boot = np.exp(np.array([_log_surface(t, ln, lke, lkc) for t in fit.boot]))  # (n_boot, grid)
        boot = np.where(ok[None, :], boot, np.inf)
        target = _argmin_refined(boot, grid_u)
        lo_z, hi_z = np.exp(np.quantile(target, [0.025, 0.975]))
        point = np.exp(_log_surface(fit.theta, ln, lke, lkc))
        finite = np.where(ok, boot, np.nan)
        score, sd_z = _scores(np.nan_to_num(finite, nan=0.0), target, sigma)
        score = np.where(ok, score, -np.inf)
        seen: list[int] = []
        for i in np.argsort(-score):
            dm = int(round(grid_d[i]))
            if not np.isfinite(score[i]) or any(abs(np.log(dm / s)) < 0.08 for s in seen):
                continue
            seen.append(dm)
            nd, ked, kcd = (float(v[0]) for v in _neurons(budget, np.array([float(dm)]), geom))
            pct = 100.0 * score[i] / sd_z if sd_z > 0 else 0.0
            side = "above the largest" if budget > p_hi else "below the smallest"
            pred = float(1.0 - point[i] if maximize else point[i])
            rows.append(
                {
                    "budget": budget,
                    "kind": "new budget",
                    "x_name": "d_m",
                    "x": float(dm),
                    "d_m": dm,
                    "n_neurons": int(nd),
                    "k_e": ked,
                    "k_c": kcd,
                    "predicted_metric": pred,
                    "score": float(score[i]),
                    "sd_reduction_pct": pct,
                    "reason": (
                        f"new budget {_fmt(budget)} ({side} run so far): the scaling-law fit puts the optimum "
                        f"at d_m 95% CI {_fmt(lo_z)}-{_fmt(hi_z)}; a run at d_m={dm} (N={int(nd)}) tests where "
                        f"the bootstrap surfaces disagree; expected to cut that spread by {pct:.0f}%"
                    ),
                }
            )
            if len(seen) >= per_budget:
                break
    return rows


def suggest_next_runs(
    df: pl.DataFrame,
    x: str = "d_m",
    metric: str | None = None,
    maximize: bool | None = None,
    *,
    n: int = 5,
    per_budget: int = 2,
    new_budgets: bool = True,
    budget_factors: tuple[float, ...] = (2.0,),
    tol: float = 0.05,
    smoothing: float = DEFAULT_SMOOTHING,
    n_boot: int = 200,
    seed: int = 0,
) -> pl.DataFrame:
    """Ranked (budget, allocation) suggestions with their reasons (module docstring); `metric` defaults
    to valid_metric (test_metric where the runs have none; frame.fit_metric)."""
    metric = fit_metric(df, metric)
    maximize = resolve_maximize(df, metric, maximize)
    runs = iso_budget_groups(done_runs(df, metric, [x]), tol).filter(pl.col("iso_budget").is_not_null())
    rows = _existing(runs, x, metric, maximize, smoothing, n_boot, seed, per_budget)
    if new_budgets and x == "d_m" and "params" in runs.columns and runs.height:
        rows += _new_budgets(runs, metric, maximize, n_boot, seed, budget_factors, per_budget)
    if not rows:
        return pl.DataFrame(schema=_COLUMNS)
    out = pl.DataFrame(rows, schema={k: v for k, v in _COLUMNS.items() if k != "rank"})
    out = out.sort("score", descending=True).head(n)
    return out.with_columns(pl.int_range(1, out.height + 1, dtype=pl.Int64).alias("rank")).select(list(_COLUMNS))
