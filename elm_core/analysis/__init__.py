"""Analysis of run records: pure functions on Polars frames with the canonical run-record columns.

    df = load_reference_sweep()                  # or Store(...).runs(); normalize_frame(any frame)
    collapse_seeds(df)                           # one row per configuration: mean, <metric>_std, n_seeds
    pareto_frontier(df, x="params")              # ParetoResult: .frame (on_frontier column), .frontier
    fit_iso_budgets(df, x="d_m")                 # [IsoFit]: optimum, ci, curve_x/curve_y, points, ...
    fit_iso(group, x="d_m")                      # one iso-budget group
    fit_scaling_law(df)                          # ScalingFit: params, optimal_allocation(P), power_laws(),
                                                 #   predict(N, k_e), predict_interval(...), predict_budget(P)
    fit_capacity_model(df)                       # CapacityFit: model (CapacityModel), optimal_allocation(P),
                                                 #   iso_curve(P), predict(N, k_e)
    suggest_next_runs(df, x="d_m")               # ranked frame: budget, x, d_m, n_neurons, score, reason

Metric direction: every function takes `maximize: bool | None`; None derives it from metric_name
('accuracy' is maximised, 'bpc' minimised). Only status == 'done' rows enter a fit. Raw and
seed-collapsed frames are both accepted (collapsed rows are weighted by n_seeds). Bootstraps take a
`seed` and are reproducible. Formulas: each module's docstring and docs/analysis.md.
"""

from elm_core.analysis.capacity import CapacityFit, CapacityModel, fit_capacity_model
from elm_core.analysis.frame import (
    ALLOCATION_AXES,
    REFERENCE_SWEEP_CSV,
    done_runs,
    fit_metric,
    load_reference_sweep,
    metric_name_for_task,
    normalize_frame,
    read_runs,
    resolve_maximize,
)
from elm_core.analysis.iso import IsoFit, fit_iso, fit_iso_budgets, iso_budget_groups
from elm_core.analysis.pareto import ParetoResult, pareto_frontier, pareto_mask
from elm_core.analysis.scaling import ScalingFit, fit_scaling_law
from elm_core.analysis.seeds import collapse_seeds
from elm_core.analysis.suggest import suggest_next_runs
from elm_core.budget import d_m_for_k_e, neuron_counts, neurons_for_budget, readout_params

__all__ = [
    "ALLOCATION_AXES",
    "REFERENCE_SWEEP_CSV",
    "CapacityFit",
    "CapacityModel",
    "IsoFit",
    "ParetoResult",
    "ScalingFit",
    "collapse_seeds",
    "d_m_for_k_e",
    "done_runs",
    "fit_capacity_model",
    "fit_iso",
    "fit_metric",
    "fit_iso_budgets",
    "fit_scaling_law",
    "iso_budget_groups",
    "load_reference_sweep",
    "metric_name_for_task",
    "neuron_counts",
    "neurons_for_budget",
    "normalize_frame",
    "pareto_frontier",
    "pareto_mask",
    "read_runs",
    "readout_params",
    "resolve_maximize",
    "suggest_next_runs",
]
