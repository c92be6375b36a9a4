"""Fixtures for the dashboard tests: an isolated store, filled with synthetic runs when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elm_core.budget import allocate, count_params, flops_per_step
from elm_core.records import CurvePoint, RunRecord
from elm_core.store import Store

BUDGETS = (30_000, 60_000, 120_000)
D_M = (1, 2, 4, 8, 16, 32)


def synthetic_runs(store: Store, budgets=BUDGETS, d_m_values=D_M, seeds=(0, 1), task: str = "text") -> list[str]:
    """Done runs with a U-shaped test BPC at each budget (a planted surface plus noise), and one
    running, one queued and one failed run (written without fsyncs: nothing here tests durability)."""
    rng = np.random.default_rng(0)
    ids = []
    for budget in budgets:
        for d_m in d_m_values:
            cfg = allocate(budget, n_in=83, n_out=83, d_m=d_m, d_tree=16, d_brch=8)
            for seed in seeds:
                bpc = 1.5 + 4 * cfg.n_neurons**-0.5 + 3 * cfg.k_e**-0.5 + rng.normal(0, 0.01)
                run_id = f"t{budget}-{d_m}-{seed}"
                curve = [CurvePoint(step=s, tokens=s * 800, wall_time_s=s * 0.05,
                                    train_loss=(bpc + 2.0 / (1 + s / 20)) * np.log(2),  # nats, as train() records
                                    valid_metric=bpc + 0.02 if s % 100 == 0 else None) for s in range(0, 401, 20)]
                store.put(RunRecord(
                    run_id=run_id, sweep_id=f"iso-{budget}", task=task, dataset="text", status="done",
                    n_in=83, n_out=83, n_neurons=cfg.n_neurons, d_m=d_m, l_mlp=1, d_mlp=cfg.d_mlp_eff, d_tree=16,
                    d_brch=8, k_e=cfg.k_e, k_c=cfg.k_c, params=count_params(cfg), budget=budget,
                    flops_per_step=flops_per_step(cfg), seed=seed, test_metric=bpc, valid_metric=bpc + 0.02,
                    best_valid_metric=bpc + 0.015, train_metric=bpc - 0.05, steps=400, tokens_seen=320_000,
                    wall_time_s=20.0, device="cpu", host="test", config={**cfg.to_dict(), "seed": seed},
                    spec={"task": task, "preset": "small", "budget": budget, "d_m": d_m, "seed": seed},
                    curve=curve, created_at=1.7e9 + len(ids), updated_at=1.7e9 + len(ids),
                ), sync=False)
                ids.append(run_id)
    cfg = allocate(60_000, n_in=83, n_out=83, d_m=8, d_tree=16, d_brch=8)
    base = dict(task=task, n_in=83, n_out=83, n_neurons=cfg.n_neurons, d_m=8, l_mlp=1, d_mlp=16, d_tree=16, d_brch=8,
                k_e=cfg.k_e, k_c=cfg.k_c, params=count_params(cfg), budget=60_000, created_at=1.8e9)
    store.put(RunRecord(run_id="live-running", status="running", **base), sync=False)
    store.put(RunRecord(run_id="live-queued", status="queued", **base), sync=False)
    store.put(RunRecord(run_id="live-failed", status="failed", reason="diverged: loss is nan at step 3", **base),
              sync=False)
    return ids


@pytest.fixture
def store(elmlab_home: Path) -> Store:
    return Store(elmlab_home / "store")


@pytest.fixture
def filled_store(store: Store) -> Store:
    synthetic_runs(store)
    store.import_reference_csv()
    return store
