"""The cached runs frame: read once per store state, and a changed store is on the next view."""

from __future__ import annotations

import pytest
import streamlit as st

from app import state
from elm_core.records import RunRecord
from elm_core.store import Store


def record(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, task="text", n_in=83, n_out=83, n_neurons=10, d_m=4, l_mlp=1, d_mlp=8,
                     d_tree=16, d_brch=8, k_e=300, k_c=128, params=20_000)


def test_runs_frame_is_read_once_per_store_state(store: Store, monkeypatch: pytest.MonkeyPatch):
    st.cache_data.clear()
    reads = []
    read = Store.runs
    monkeypatch.setattr(Store, "runs", lambda self, *a, **k: reads.append(1) or read(self, *a, **k))
    store.put(record("a"))
    assert state.runs(str(store.path))["run_id"].to_list() == ["a"]
    assert state.runs(str(store.path))["run_id"].to_list() == ["a"] and len(reads) == 1  # unchanged: cached
    store.put(record("b"))
    assert state.runs(str(store.path))["run_id"].to_list() == ["a", "b"] and len(reads) == 2  # changed: read again
