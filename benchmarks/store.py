"""Benchmark of the results store: query times over many synthetic records, before and after compaction.

    elmlab store bench --n 100000          (prints the figures as JSON)
    python -m benchmarks.store --n 100000  (the same)

The store gets `n_records` records: most written in bulk as a few large Parquet files (as
compaction leaves them), plus `n_small` one-record files written through `Store.put` (runs
submitted since the last compaction), which is where the small-file cost shows. Timed, each as
the median of `repeats`: the runs table (`runs()`), an iso-budget slice (`runs(budget=1e6)`, 5%),
and one run with its curve (`run(id)`); plus the first query of a fresh process, which checks
every file once. Then `compact()`, and the same again; the answers must not change.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from polars.testing import assert_frame_equal

from elm_core.records import COLUMNS, CurvePoint, RunRecord
from elm_core.store import Store
from elm_core.store.cache import FileCache
from elm_core.store.files import DIGEST, RUNS_DIR, SCHEMA

BUDGETS = (1e5, 3e5, 1e6, 3e6, 1e7)
BULK_FILE_ROWS = 25_000


def _curve(seed: int, points: int = 20) -> str:
    rng = np.random.default_rng(seed)
    loss = np.sort(rng.uniform(1.2, 3.0, points))[::-1]
    return json.dumps(
        [
            CurvePoint(step=100 * i, tokens=25_600 * i, wall_time_s=0.5 * i, train_loss=float(v)).model_dump()
            for i, v in enumerate(loss)
        ]
    )


def _bulk_table(start: int, stop: int, rng: np.random.Generator, curves: list[str]) -> pa.Table:
    """Rows start..stop: run i // 3 has a queued, a running and a terminal (done or failed) record."""
    i = np.arange(start, stop)
    run = i // 3
    phase = i % 3
    n = len(i)
    budget = np.array(BUDGETS)[run % len(BUDGETS)]
    d_m = (run % 20 + 1) * 5
    k_e = 30 * d_m
    per_neuron = 750 + k_e
    n_neurons = np.maximum(1, (budget * 0.97 / per_neuron).astype(np.int64))
    params = n_neurons * per_neuron + 100_000
    failed = (run % 17) == 0
    status = np.where(phase == 0, "queued", np.where(phase == 1, "running", np.where(failed, "failed", "done")))
    done = status == "done"
    metric = np.where(done, rng.uniform(1.2, 2.5, n), np.nan)
    t = 1.7e9 + run * 60.0 + phase * 20.0
    ids = [f"bench-{r:07d}" for r in run]
    cols: dict[str, Any] = {c: [None] * n for c in COLUMNS}
    cols.update(
        run_id=ids,
        sweep_id=[f"sweep-{r // 50:05d}" for r in run],
        source=["elmlab"] * n,
        task=np.where(run % 4 == 3, "shd", "enwik8").tolist(),
        dataset=["enwik8"] * n,
        dataset_hash=["0" * 16] * n,
        status=status.tolist(),
        reason=[("diverged" if s == "failed" else None) for s in status],
        n_in=[204] * n,
        n_out=[204] * n,
        n_neurons=n_neurons.tolist(),
        d_m=d_m.tolist(),
        l_mlp=[1] * n,
        d_mlp=(2 * d_m).tolist(),
        d_tree=[50] * n,
        d_brch=[15] * n,
        readout_d_m=[3] * n,
        k_e=k_e.tolist(),
        k_c=[750] * n,
        params=params.tolist(),
        budget=budget.astype(np.int64).tolist(),
        seed=(run % 3).tolist(),
        metric_name=["bpc"] * n,
        valid_metric=[None if np.isnan(m) else float(m) for m in metric],
        test_metric=[None if np.isnan(m) else float(m) + 0.01 for m in metric],
        steps=np.where(done, 2000, 0).tolist(),
        tokens_seen=np.where(done, 2000 * 256, 0).tolist(),
        wall_time_s=np.where(done, 120.0, 0.0).tolist(),
        device=["cpu"] * n,
        host=["bench"] * n,
        versions=['{"torch": "2.13.0"}'] * n,
        code_version=["bench"] * n,
        worker=[None] * n,
        attempt=[0] * n,
        config=["{}"] * n,
        spec=["{}"] * n,
        curve=[curves[r % len(curves)] if d else "[]" for r, d in zip(run, done, strict=True)],
        created_at=(1.7e9 + run * 60.0).tolist(),
        updated_at=t.tolist(),
    )
    cols[DIGEST] = [f"{x:020x}" for x in i]
    return pa.table(cols, schema=SCHEMA)


def write_synthetic(store: Store, n_records: int, n_small: int, seed: int = 0) -> list[str]:
    """Fill `store` with `n_records` records (n_small of them one per file); returns some run ids."""
    rng = np.random.default_rng(seed)
    curves = [_curve(s) for s in range(16)]
    runs_dir = store.path / RUNS_DIR
    runs_dir.mkdir(parents=True, exist_ok=True)
    n_bulk = max(0, n_records - n_small)
    for k, start in enumerate(range(0, n_bulk, BULK_FILE_ROWS)):
        table = _bulk_table(start, min(n_bulk, start + BULK_FILE_ROWS), rng, curves)
        pq.write_table(table, runs_dir / f"bulk-{k:04d}.parquet")
    template = RunRecord(
        run_id="x", task="enwik8", n_in=204, n_out=204, n_neurons=500, d_m=10, l_mlp=1, d_mlp=20,
        d_tree=50, d_brch=15, k_e=1441, k_c=750, params=1_000_000, budget=1_000_000,
    )  # fmt: skip
    for j in range(n_small):  # recently submitted runs: one queued record each
        store.put(template.model_copy(update={"run_id": f"new-{j:06d}", "created_at": 1.8e9 + j}))
    first_runs = [f"bench-{r:07d}" for r in range(0, max(1, n_bulk // 3), max(1, n_bulk // 30))]
    return first_runs[:10] or ["new-000000"]


def _median_s(fn: Any, repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _measure(path: Path, run_ids: list[str], repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    FileCache.reset()
    store = Store(path)
    t0 = time.perf_counter()
    store.runs()
    cold = time.perf_counter() - t0
    t_runs, table = _median_s(store.runs, repeats)
    t_slice, iso = _median_s(lambda: store.runs(budget=1e6, budget_tol=0.05), repeats)
    t_run, _ = _median_s(lambda: [store.run(r) for r in run_ids[:3]], repeats)
    files = store.info()
    figures = {
        "files": files["files"],
        "bytes": files["bytes"],
        "first_query_s": round(cold, 4),
        "runs_table_s": round(t_runs, 4),
        "iso_budget_slice_s": round(t_slice, 4),
        "one_run_with_curve_s": round(t_run / 3, 4),
        "runs": table.height,
        "runs_in_slice": iso.height,
    }
    return figures, {"runs": table, "iso": iso}


def run_store_bench(
    n_records: int = 100_000, tmpdir: str | Path | None = None, n_small: int = 2_000, repeats: int = 3
) -> dict[str, Any]:
    """Write the synthetic store under `tmpdir` (a fresh temp folder if None), time the queries
    before and after `compact()`, and check that the answers are equal. Returns the figures."""
    with tempfile.TemporaryDirectory(dir=tmpdir) as tmp:
        path = Path(tmp) / "store"
        store = Store(path)
        t0 = time.perf_counter()
        run_ids = write_synthetic(store, n_records, min(n_small, n_records))
        write_s = time.perf_counter() - t0
        before, answers_before = _measure(path, run_ids, repeats)
        stats = store.compact()
        after, answers_after = _measure(path, run_ids, repeats)
        for key in answers_before:
            assert_frame_equal(answers_before[key], answers_after[key])
        return {
            "n_records": n_records,
            "n_small_files": min(n_small, n_records),
            "write_s": round(write_s, 2),
            "before_compaction": before,
            "compaction": {k: stats[k] for k in ("folded_files", "rows", "seconds")},
            "after_compaction": after,
            "answers_equal": True,
        }


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.store [options]`: the same as `elmlab store bench [options]`."""
    import sys

    from elmlab.cli import main as cli

    return cli(["store", "bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
