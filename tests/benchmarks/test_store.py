"""The store benchmark (`python -m benchmarks.store`, `elmlab store bench`) on a tiny store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.store import main, run_store_bench


def test_figures_are_sane(tmp_path: Path):
    out = run_store_bench(60, tmp_path, n_small=5, repeats=1)
    assert out["n_records"] == 60 and out["n_small_files"] == 5 and out["answers_equal"] is True
    before, after = out["before_compaction"], out["after_compaction"]
    assert before["files"] == 6 and after["files"] == 1 and before["runs"] == after["runs"] > 0
    assert out["compaction"]["folded_files"] >= 5 and out["compaction"]["seconds"] >= 0
    assert out["write_s"] >= 0


def test_module_prints_json_and_refuses_a_bad_size(elmlab_home: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]):
    assert main(["--n", "30", "--small", "3", "--repeats", "1", "--dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["n_records"] == 30
    assert main(["--n", "0"]) == 2
    err = capsys.readouterr().err
    assert "--n" in err and "Traceback" not in err
