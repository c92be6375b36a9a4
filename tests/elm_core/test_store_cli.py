"""`elmlab store ...`, `elmlab export` and `elmlab import-reference`, through `elmlab.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from app import annotations
from elm_core.store import Store
from elmlab.cli import main
from tests.elm_core.test_store import done, make_record


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_import_reference_then_info(elmlab_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "import-reference")
    assert code == 0 and "14 reference runs" in out
    code, out, _ = run_cli(capsys, "store", "info", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["path"] == str(elmlab_home / "store")
    assert (info["runs"], info["reference_runs"], info["by_status"]["done"]) == (14, 14, 14)
    code, out, _ = run_cli(capsys, "store", "info")
    assert code == 0 and "runs       14" in out


def test_import_reference_of_a_badly_shaped_file_is_a_one_line_error(
    elmlab_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    code, _, err = run_cli(capsys, "import-reference", str(bad))
    assert code == 2
    assert "bad.csv" in err and "missing columns" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "import-reference", str(tmp_path / "absent.csv"))
    assert code == 2 and "absent.csv" in err


def test_export_csv_and_parquet_of_a_selection(
    elmlab_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store()
    store.import_reference_csv()
    store.put(done(make_record("mine", sweep_id="s9"), t=101.0))
    out = tmp_path / "refs.csv"
    code, text, _ = run_cli(capsys, "export", "--format", "csv", "--out", str(out), "--source", "reference")
    assert code == 0 and "wrote 14 runs" in text
    assert pl.read_csv(out).height == 14
    out = tmp_path / "mine.parquet"
    code, _, _ = run_cli(capsys, "export", "--format", "parquet", "--out", str(out), "--sweep", "s9", "--no-curve")
    frame = pl.read_parquet(out)
    assert code == 0 and frame["run_id"].to_list() == ["mine"] and "curve" not in frame.columns
    code, text, _ = run_cli(capsys, "export", "--format", "csv", "--out", "-", "--status", "done", "--task", "nope")
    assert code == 0 and text.startswith("run_id,")


def test_export_mistakes_are_usage_errors(
    elmlab_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "export", "--format", "parquet", "--out", "-")
    assert code == 2 and "csv only" in err
    code, _, err = run_cli(capsys, "export", "--out", str(tmp_path / "no" / "such" / "x.parquet"))
    assert code == 2 and "does not exist" in err


def test_store_dir_option_overrides_the_settings(
    elmlab_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other-store"
    code, _, _ = run_cli(capsys, "import-reference", "--store", str(other))
    assert code == 0
    assert Store(other).runs().height == 14 and Store().runs().height == 0


def test_compact_and_import(elmlab_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store()
    for i in range(3):
        store.put(make_record(f"r{i}"))
    before = store.runs()
    code, out, _ = run_cli(capsys, "store", "compact", "--json")
    assert code == 0 and json.loads(out)["folded_files"] == 3
    assert store.runs().equals(before)
    code, out, _ = run_cli(capsys, "store", "compact")
    assert code == 0 and "nothing to compact" in out

    exported = tmp_path / "runs.parquet"
    assert run_cli(capsys, "export", "--out", str(exported))[0] == 0
    code, out, _ = run_cli(capsys, "store", "import", str(exported), "--store", str(tmp_path / "copy"))
    assert code == 0 and "imported 3 records" in out
    assert Store(tmp_path / "copy").runs().equals(before)



@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_and_import_carry_tags_and_notes(
    elmlab_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    store = Store()
    for i in range(3):
        store.put(done(make_record(f"r{i}"), t=101.0 + i))
    annotations.save(store.path, "r1", ["best", "check lr"], "lr looks high, too")
    exported = tmp_path / f"runs.{fmt}"
    assert run_cli(capsys, "export", "--format", fmt, "--out", str(exported))[0] == 0
    frame = pl.read_csv(exported) if fmt == "csv" else pl.read_parquet(exported)
    row = frame.filter(pl.col("run_id") == "r1").row(0, named=True)
    assert (row["tags"], row["note"]) == ("best, check lr", "lr looks high, too")
    copy = tmp_path / "copy"
    annotations.save(copy, "r2", ["mine"], "kept: the export says nothing of r2")
    code, out, _ = run_cli(capsys, "store", "import", str(exported), "--store", str(copy))
    assert code == 0 and "imported 3 records" in out and "tags and notes of 1" in out
    assert annotations.load(copy) == {"r1": {"tags": ["best", "check lr"], "note": "lr looks high, too"},
                                      "r2": {"tags": ["mine"], "note": "kept: the export says nothing of r2"}}
    if fmt == "csv":  # a tag over the limit stops the import before any record is written
        exported.write_text(exported.read_text().replace("check lr", "x" * 60))
        code, _, err = run_cli(capsys, "store", "import", str(exported), "--store", str(tmp_path / "other"))
        assert code == 2 and "run r1" in err and "longer than 40" in err
        assert Store(tmp_path / "other").runs().height == 0


def test_store_bench_prints_its_figures_as_json(
    elmlab_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "store", "bench", "--n", "400", "--small", "10", "--repeats", "1", "--dir", str(tmp_path)
    )
    figures = json.loads(out)
    assert code == 0 and figures["answers_equal"] is True
    assert figures["before_compaction"]["files"] == 11 and figures["after_compaction"]["files"] == 1
    assert figures["before_compaction"]["runs"] == figures["after_compaction"]["runs"] > 0
    assert run_cli(capsys, "store", "bench", "--n", "0")[0] == 2
