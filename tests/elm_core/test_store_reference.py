"""Published runs as read-only reference records; export and import of any selection."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from elm_core.budget import neuron_params
from elm_core.store import REFERENCE_CSV, ReadOnlyRecordError, Store, read_reference_csv
from elm_core.store.files import REFERENCE_DIR
from tests.elm_core.test_store import done, make_record


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def csv_rows(path: Path = REFERENCE_CSV) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_packaged_sweep_imports_as_14_done_reference_runs(store: Store) -> None:
    assert store.import_reference_csv() == 14
    frame = store.runs()
    assert frame.height == 14
    assert set(frame["source"]) == {"reference"}
    assert set(frame["status"]) == {"done"}
    assert set(frame["sweep_id"]) == {"reference-enwik8"}
    assert set(frame["metric_name"]) == {"bpc"}
    assert (frame["n_in"] == frame["n_out"]).all()
    assert frame["run_id"].str.starts_with("ref-enwik8-").all()
    rows = csv_rows()
    assert frame["d_m"].to_list() == [int(r["d_m"]) for r in rows]  # sweep order kept
    assert frame["test_metric"].to_list() == [float(r["test_metric"]) for r in rows]
    assert frame["params"].to_list() == [int(r["params"]) for r in rows]


def test_k_e_and_k_c_follow_the_closed_form_and_add_up_to_the_published_count(store: Store) -> None:
    store.import_reference_csv()
    for r in store.runs().iter_rows(named=True):
        assert r["k_c"] == r["d_tree"] * r["d_brch"]
        p_h = r["k_e"] + r["k_c"]
        assert p_h == neuron_params(r["d_m"], r["l_mlp"], r["d_mlp"], r["d_tree"], r["d_brch"])
        p_r = neuron_params(r["readout_d_m"], 0, 0, r["d_tree"], r["d_brch"])
        total = r["n_neurons"] * p_h + r["n_out"] * p_r + r["n_out"] * r["n_out"] + r["n_out"]
        assert total == r["params"]


FIELDS = ("n_in", "n_out", "n_neurons", "d_m", "l_mlp", "d_mlp", "d_tree", "d_brch", "readout_d_m")


def test_k_e_agrees_with_elm_core_budget(store: Store) -> None:
    budget = pytest.importorskip("elm_core.budget")
    config = pytest.importorskip("elm_core.config")
    store.import_reference_csv()
    for r in store.runs().iter_rows(named=True):
        cfg = config.ELMConfig(**{k: r[k] for k in FIELDS})
        assert (cfg.k_e, cfg.k_c, budget.count_params(cfg)) == (r["k_e"], r["k_c"], r["params"])


def test_importing_again_changes_nothing(store: Store) -> None:
    store.import_reference_csv()
    token = store.state_token()
    assert store.import_reference_csv() == 14
    assert store.state_token() == token
    assert len(os.listdir(store.path / REFERENCE_DIR)) == 14


def test_reference_runs_are_read_only(store: Store) -> None:
    store.import_reference_csv()
    ref = store.run(store.runs()["run_id"][0])
    with pytest.raises(ReadOnlyRecordError, match="read-only"):
        store.put(ref.model_copy(update={"source": "elmlab", "test_metric": 0.1}))
    with pytest.raises(ReadOnlyRecordError, match="read-only"):
        store.put(ref.model_copy(update={"status": "failed"}))
    store.put(ref)  # the same reference record again: a no-op
    assert store.run(ref.run_id) == ref


def test_reference_runs_survive_compaction_unchanged(store: Store) -> None:
    store.import_reference_csv()
    store.put(make_record("a"))
    store.put(done(make_record("a"), t=101.0))
    before = store.runs(with_curve=True)
    store.compact()
    assert_frame_equal(store.runs(with_curve=True), before)
    assert len(os.listdir(store.path / REFERENCE_DIR)) == 14


def test_any_file_of_that_shape_imports(store: Store, tmp_path: Path) -> None:
    rows = csv_rows()[:2]
    for r in rows:
        r["task"] = "shd"
    path = tmp_path / "mine.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert store.import_reference_csv(path) == 2
    frame = store.runs(task="shd")
    assert frame["sweep_id"].to_list() == ["reference-shd"] * 2
    assert frame["metric_name"].to_list() == ["accuracy"] * 2


def test_a_file_of_another_shape_is_refused_naming_the_file_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("task,d_m,params\nenwik8,5,100\n")
    with pytest.raises(ValueError, match=r"other\.csv.*missing columns: N_rec, d_tree, d_brch"):
        read_reference_csv(path)
    bad_value = tmp_path / "bad.csv"
    rows = csv_rows()[:1]
    rows[0]["d_m"] = "five"
    with bad_value.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match=r"bad\.csv, line 2"):
        read_reference_csv(bad_value)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_reference_csv(tmp_path / "missing.csv")


# --- export and import -----------------------------------------------------------------------


@pytest.fixture
def mixed(store: Store) -> Store:
    store.import_reference_csv()
    for i, task in enumerate(["enwik8", "shd", "enwik8"]):
        r = make_record(f"run{i}", task=task, sweep_id=f"s{i % 2}", created_at=1000.0 + i, config={"i": i})
        store.put(r)
        store.put(done(r, t=1100.0 + i, reason=None, test_metric=1.0 / (i + 3)))
    return store


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_then_import_gives_the_same_runs(mixed: Store, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"runs.{fmt}"
    assert mixed.export(out, fmt) == 17
    copy = Store(tmp_path / "copy")
    assert copy.import_records(out) == 17
    assert_frame_equal(copy.runs(with_curve=True), mixed.runs(with_curve=True))
    assert copy.run("run2") == mixed.run("run2")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_writes_only_the_selection(mixed: Store, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"sel.{fmt}"
    assert mixed.export(out, fmt, task="enwik8", source="elmlab", with_curve=False) == 2
    frame = pl.read_parquet(out) if fmt == "parquet" else pl.read_csv(out)
    assert frame["run_id"].to_list() == ["run0", "run2"]
    assert "curve" not in frame.columns


def test_export_refuses_an_unknown_format(mixed: Store, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        mixed.export(tmp_path / "x.json", "json")  # type: ignore[arg-type]


def test_a_reference_run_makes_only_its_own_run_id_read_only(store: Store):
    store.put(make_record("abc-", source="reference", status="done"))  # its file "abc---a00000-done.parquet"
    assert store.is_reference("abc-") and not store.is_reference("abc") and not store.is_reference("ab")
    assert store.put(make_record("abc", status="queued"))  # a local run whose id is a prefix of it
    assert store.run("abc").status == "queued" and store.run("abc-").source == "reference"
    with pytest.raises(ReadOnlyRecordError, match="read-only"):
        store.put(make_record("abc-", status="queued"))
