"""The result record: what one run leaves behind (docs/design.md, "What a result record holds").

`RunRecord` is the one shape that travels everywhere: `elm_core.train` returns it, the `record_run`
task receives it as JSON, `elm_core.store` writes it as one Parquet row, and `elm_core.analysis`
reads the flat columns back as a Polars frame.

Canonical columns (the store's schema; analysis functions rely on these names):
    run_id, sweep_id, source, task, dataset, dataset_hash, status, reason,
    n_in, n_out, n_neurons, d_m, l_mlp, d_mlp, d_tree, d_brch, readout_d_m, k_e, k_c,
    params, budget, flops_per_step, seed, metric_name,
    train_metric, valid_metric, test_metric, best_valid_metric,
    steps, tokens_seen, wall_time_s, test_items, converged, tail_improvement, final_slope, budget_used,
    baselines, device, host, versions, code_version, config, spec, curve, created_at, updated_at, worker, attempt
`config`, `spec`, `versions`, `baselines` and `curve` are JSON strings in the store.
Diagnostics (elm_core.diagnostics): `converged` (None = unknown), `tail_improvement` and `final_slope` from
the validation curve, `budget_used` = params / budget, `test_items` = targets (characters or samples) the
test pass saw, `baselines` = the data set's n-gram test BPC by order ("0"-"4"; character tasks only).
Metrics: `metric_name` is "bpc" (lower is better) or "accuracy" (higher is better).
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["queued", "running", "done", "failed", "cancelled"]
STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled")
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
PRUNED = "pruned at step"  # how the reason of a run a search stopped begins (elm_core/search/policy.py)
# A run has diverged when its loss ends this many nats above the untrained model's ln(n_out), or its BPC
# as many bits over log2(n_out) (elm_core/train.py marks such runs failed; elm_core.analysis.frame
# keeps done runs recorded before that out of fits).
DIVERGE_MARGIN = 1.0


class CurvePoint(BaseModel):
    """One point of a learning curve. `valid_metric` is set only where validation ran."""

    model_config = ConfigDict(extra="forbid")

    step: int
    tokens: int
    wall_time_s: float
    train_loss: float
    valid_metric: float | None = None


class RunRecord(BaseModel):
    """Everything known about one run, at any point of its life (queued ... done)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    sweep_id: str | None = None
    source: Literal["elmlab", "reference"] = "elmlab"
    task: str
    dataset: str = ""
    dataset_hash: str = ""
    status: Status = "queued"
    reason: str | None = None

    # Architecture (flattened from the ELMConfig, kept as columns for querying and fitting).
    n_in: int
    n_out: int
    n_neurons: int
    d_m: int
    l_mlp: int
    d_mlp: int
    d_tree: int
    d_brch: int
    readout_d_m: int = 3
    k_e: int
    k_c: int
    params: int
    budget: int | None = None
    flops_per_step: int | None = None
    seed: int = 0

    # Results.
    metric_name: Literal["bpc", "accuracy"] = "bpc"
    train_metric: float | None = None
    valid_metric: float | None = None
    test_metric: float | None = None
    best_valid_metric: float | None = None
    steps: int = 0
    tokens_seen: int = 0
    wall_time_s: float = 0.0
    test_items: int | None = None
    converged: bool | None = None
    tail_improvement: float | None = None
    final_slope: float | None = None
    budget_used: float | None = None
    baselines: dict[str, float] = Field(default_factory=dict)

    # Provenance.
    device: str = ""
    host: str = ""
    versions: dict[str, str] = Field(default_factory=dict)
    code_version: str = ""
    worker: str | None = None
    attempt: int = 0
    config: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any] = Field(default_factory=dict)
    curve: list[CurvePoint] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)

    def to_row(self) -> dict[str, Any]:
        """A flat dict for the store: nested fields become JSON strings."""
        row = self.model_dump()
        for key in ("versions", "config", "spec", "baselines"):
            row[key] = json.dumps(row[key], sort_keys=True)
        row["curve"] = json.dumps(row["curve"])
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunRecord:
        """Inverse of `to_row` (extra store-only columns are ignored)."""
        data = {k: v for k, v in row.items() if k in cls.model_fields}
        for key in ("versions", "config", "spec", "baselines", "curve"):
            if isinstance(data.get(key), str):
                data[key] = json.loads(data[key])
        return cls.model_validate(data)


COLUMNS: tuple[str, ...] = tuple(RunRecord.model_fields)
