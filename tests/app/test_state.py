"""The cached runs frame: read once per store state, served stale while a background read catches up."""

from __future__ import annotations

import time

import streamlit as st

from app import state
from elm_core.records import RunRecord
from elm_core.store import Store


def record(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, task="text", n_in=83, n_out=83, n_neurons=10, d_m=4, l_mlp=1, d_mlp=8,
                     d_tree=16, d_brch=8, k_e=300, k_c=128, params=20_000)


def test_stale_while_revalidate(store: Store):
    st.cache_data.clear()
    store.put(record("a"))
    path, first, frame = state.runs_view(str(store.path))
    assert frame["run_id"].to_list() == ["a"] and first == store.state_token()
    assert state.runs_view(str(store.path))[1] == first  # unchanged store: the same frame
    store.put(record("b"))
    _, token, frame = state.runs_view(str(store.path))
    assert token == first and frame.height == 1  # served at once from the last read
    deadline = time.monotonic() + 20
    while state.runs_view(str(store.path))[1] != store.state_token():
        assert time.monotonic() < deadline, "the background read never landed"
        time.sleep(0.02)
    assert state.runs_view(str(store.path))[2]["run_id"].to_list() == ["a", "b"]
