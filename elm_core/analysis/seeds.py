"""Seeds: runs that differ only by seed collapse to one row with mean, standard deviation and count.

    collapse_seeds(df) -> frame with one row per configuration:
        the configuration columns (CONFIG_COLUMNS present in df, plus the training config without
        its seed when a `config` JSON column exists),
        <outcome>      = mean over seeds            (same name, so every fit reads it unchanged)
        <outcome>_std  = sample standard deviation  (ddof = 1; null for one seed)
        n_seeds        = number of seeds,  seeds = their list,  run_ids = their run ids

Only status == 'done' rows are collapsed. Every fitter accepts raw or collapsed frames: a collapsed
row is weighted by n_seeds, and its `<metric>_std` is its configuration's noise (`pure_error`), pooled
    sigma^2 = sum_i (n_i - 1) s_i^2 / sum_i (n_i - 1)  for configurations without repeats.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl

from elm_core.analysis.frame import CONFIG_COLUMNS, OUTCOME_COLUMNS

_CONFIG_KEY = "_config_key"


def _strip_seed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_seed(v) for k, v in value.items() if k not in ("seed", "run_id")}
    if isinstance(value, list):
        return [_strip_seed(v) for v in value]
    return value


def _config_key(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return json.dumps(_strip_seed(json.loads(text)), sort_keys=True)
    except (TypeError, ValueError):
        return text


def collapse_seeds(df: pl.DataFrame) -> pl.DataFrame:
    """One row per configuration: outcome means, `<outcome>_std`, `n_seeds` (module docstring).

    A frame that already has `n_seeds` is returned unchanged.
    """
    if "n_seeds" in df.columns:
        return df
    if "status" in df.columns:
        df = df.filter(pl.col("status") == "done")
    keys = [c for c in CONFIG_COLUMNS if c in df.columns]
    if "config" in df.columns and df.schema["config"] == pl.String:
        df = df.with_columns(pl.col("config").map_elements(_config_key, return_dtype=pl.String).alias(_CONFIG_KEY))
        keys.append(_CONFIG_KEY)
    if not keys:
        raise ValueError("no configuration columns to group seeds by")
    outcomes = [c for c in OUTCOME_COLUMNS if c in df.columns]
    aggs: list[pl.Expr] = []
    for c in outcomes:
        aggs += [pl.col(c).mean().alias(c), pl.col(c).std(ddof=1).alias(f"{c}_std")]
    aggs.append(pl.len().alias("n_seeds"))
    if "seed" in df.columns:
        aggs.append(pl.col("seed").sort().alias("seeds"))
    if "run_id" in df.columns:
        aggs.append(pl.col("run_id").sort().alias("run_ids"))
    out = df.group_by(keys, maintain_order=True).agg(aggs)
    if _CONFIG_KEY in out.columns:
        out = out.drop(_CONFIG_KEY)
    if "k_e" in out.columns and "k_c" in out.columns:
        out = out.with_columns((pl.col("k_e") / (pl.col("k_e") + pl.col("k_c"))).alias("k_e_frac"))
    return out


def pure_error(df: pl.DataFrame, x: str, metric: str) -> tuple[np.ndarray, float, int]:
    """(per-row variance, pooled sigma, dof): the run-to-run noise of repeated configurations.

    A configuration with seeds keeps its own variance s_i^2 (so one unstable configuration does not
    inflate the others); one without takes the pooled sigma^2 = sum_i (n_i - 1) s_i^2 / sum_i (n_i - 1).
    Collapsed rows bring (n_i, s_i); raw rows are grouped by `x` (within one iso-budget group the
    allocation fixes the configuration). Without repeats dof = 0, sigma is nan and so is every variance.
    """
    std_col = f"{metric}_std"
    if "n_seeds" in df.columns and std_col in df.columns:
        n = df["n_seeds"].cast(pl.Float64).fill_null(1.0).to_numpy()
        s2 = df[std_col].cast(pl.Float64).fill_null(np.nan).to_numpy() ** 2
    else:
        per_x = pl.col(metric).var(ddof=1).over(x)
        stats = df.select(pl.len().over(x).cast(pl.Float64).alias("n"), per_x.cast(pl.Float64).alias("v"))
        n, s2 = stats["n"].to_numpy(), stats["v"].fill_null(np.nan).to_numpy()
        s2 = np.where(n > 1, s2, np.nan)
    repeated = (n > 1) & np.isfinite(s2)
    # each configuration once: a raw row stands for 1 / n_i of its configuration
    share = np.ones_like(n) if "n_seeds" in df.columns else 1.0 / n
    dof = int(round(float(np.sum(share * (n - 1) * repeated))))
    if dof == 0:
        return np.full(n.size, np.nan), float("nan"), 0
    pooled = float(np.sum(np.where(repeated, share * (n - 1) * s2, 0.0)) / dof)
    return np.where(repeated, s2, pooled), float(np.sqrt(pooled)), dof
