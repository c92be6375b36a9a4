"""Which parameter matters for the metric: a main-effects functional ANOVA (no Streamlit here).

fANOVA (Hutter et al. 2014, what optuna-dashboard shows) splits the variance of the metric over a
fitted random forest into the parts each parameter explains. Neither optuna nor scikit-learn is a
dependency, so this module does the first-order part of that decomposition directly on the runs:
for each parameter alone, a one-way ANOVA of the metric grouped by the parameter's value (a value
per group when it takes at most `bins` values, else `bins` quantile bins), reported as

    omega^2 = (SS_between - (k - 1) MS_within) / (SS_total + MS_within),   clipped at 0,

the share of the metric's variance that parameter explains, corrected for the chance share that k
groups of few runs explain by themselves (eta^2 = SS_between / SS_total is biased upwards). The
shares are main effects only: interactions are not split out, and parameters tied to each other (at
one budget N falls as d_m grows) share the same variance, so their shares may sum past 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

SCHEMA = {"parameter": pl.String, "importance": pl.Float64, "eta_sq": pl.Float64, "groups": pl.Int64,
          "runs": pl.Int64}


def _groups(x: np.ndarray, bins: int) -> np.ndarray:
    """Group labels: the value itself when there are at most `bins` values, else its quantile bin."""
    values = np.unique(x)
    if values.size <= bins:
        return np.searchsorted(values, x)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, x, side="right")


def omega_squared(y: np.ndarray, groups: np.ndarray) -> tuple[float, float, int]:
    """(omega^2, eta^2, number of groups) of `y` grouped by `groups` (module docstring)."""
    labels, inverse = np.unique(groups, return_inverse=True)
    k, n = labels.size, y.size
    ss_total = float(((y - y.mean()) ** 2).sum())
    if k < 2 or n <= k or ss_total <= 0:
        return 0.0, 0.0, int(k)
    sums = np.bincount(inverse, weights=y)
    counts = np.bincount(inverse)
    ss_between = float((counts * (sums / counts - y.mean()) ** 2).sum())
    ms_within = (ss_total - ss_between) / (n - k)
    omega = (ss_between - (k - 1) * ms_within) / (ss_total + ms_within)
    return max(0.0, float(omega)), ss_between / ss_total, int(k)


def parameter_importance(frame: pl.DataFrame, parameters: Sequence[str], metric: str,
                         bins: int = 6) -> pl.DataFrame:
    """One row per parameter that varies among the runs with `metric`: its variance share (omega^2,
    column `importance`), eta^2, the number of groups and runs; largest share first."""
    rows = []
    for p in parameters:
        if p not in frame.columns or metric not in frame.columns:
            continue
        data = frame.select(pl.col(p).cast(pl.Float64), pl.col(metric).cast(pl.Float64)).drop_nulls().drop_nans()
        if data.height < 4 or data[p].n_unique() < 2:
            continue
        y, x = data[metric].to_numpy(), data[p].to_numpy()
        omega, eta, k = omega_squared(y, _groups(x, bins))
        rows.append({"parameter": p, "importance": omega, "eta_sq": eta, "groups": k, "runs": data.height})
    return pl.DataFrame(rows, schema=SCHEMA).sort("importance", descending=True)
