"""Published runs (a CSV of the shape of reference_data/paper_sweeps_enwik8.csv) as RunRecords.

Each row becomes a `done` record with source="reference", a run id derived from the row's values
(`ref-<task>-<hash>`, so importing the same file again changes nothing) and sweep id
`reference-<task>`. Per hidden neuron k_c = d_tree d_brch and k_e = P_h - k_c, with P_h the closed
form `elm_core.budget.neuron_params` (elm_core/reference_data/FORMAT.md).
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

from elm_core.records import RunRecord

REFERENCE_CSV = Path(__file__).resolve().parent.parent / "reference_data" / "paper_sweeps_enwik8.csv"
INT_COLUMNS = ("d_m", "N_rec", "d_tree", "d_brch", "l_mlp", "d_mlp", "n_out", "readout_d_m", "params")
FLOAT_COLUMNS = ("test_metric", "valid_metric")
CSV_COLUMNS = ("task", *INT_COLUMNS, *FLOAT_COLUMNS)
# Optional columns: n_in (default n_out, a character vocabulary in and out), metric_name.


def _metric_name(task: str) -> str:
    return "accuracy" if task.lower().startswith("shd") else "bpc"


def read_reference_csv(path: str | Path) -> list[RunRecord]:
    """The rows of `path` as reference RunRecords (ValueError naming the file for a bad shape)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference file not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: not a reference sweep file; missing columns: {', '.join(missing)}")
        rows = list(reader)
    records = []
    for i, row in enumerate(rows):
        try:
            records.append(_record(row, path.name, i))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}, line {i + 2}: bad value ({exc})") from exc
    return records


def _record(row: dict[str, Any], file_name: str, index: int) -> RunRecord:
    task = (row["task"] or "").strip()
    if not task:
        raise ValueError("empty task")
    v = {c: int(row[c]) for c in INT_COLUMNS}
    m = {c: float(row[c]) for c in FLOAT_COLUMNS}
    n_in = int(row["n_in"]) if row.get("n_in") else v["n_out"]
    metric_name = (row.get("metric_name") or "").strip() or _metric_name(task)
    arch = {
        "n_in": n_in,
        "n_out": v["n_out"],
        "n_neurons": v["N_rec"],
        "d_m": v["d_m"],
        "l_mlp": v["l_mlp"],
        "d_mlp": v["d_mlp"],
        "d_tree": v["d_tree"],
        "d_brch": v["d_brch"],
        "readout_d_m": v["readout_d_m"],
    }
    content = json.dumps({"task": task, **arch, "params": v["params"], **m}, sort_keys=True)
    from elm_core.budget import neuron_params  # here, not above: reading the store needs no budget code

    k_c = v["d_tree"] * v["d_brch"]
    k_e = int(neuron_params(v["d_m"], v["l_mlp"], v["d_mlp"], v["d_tree"], v["d_brch"])) - k_c
    return RunRecord(
        run_id=f"ref-{task}-{hashlib.sha256(content.encode()).hexdigest()[:12]}",
        sweep_id=f"reference-{task}",
        source="reference",
        task=task,
        dataset=task,
        status="done",
        **arch,
        k_e=k_e,
        k_c=k_c,
        params=v["params"],
        metric_name=metric_name,
        valid_metric=m["valid_metric"],
        test_metric=m["test_metric"],
        config=arch,
        spec={"reference_file": file_name},
        # Published runs carry no time: the row's position stands in for it (sorting by created_at
        # keeps sweep order), fixed so that importing the file again writes nothing.
        created_at=float(index),
        updated_at=float(index),
    )
