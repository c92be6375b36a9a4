"""The dashboard data-layer benchmark (`python -m benchmarks.dashboard`) on a tiny store."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.dashboard import main, run_dashboard_bench

PAGES = {"token", "runs", "explore", "scaling", "design"}


def test_dashboard_bench_runs_small(tmp_path):
    out = run_dashboard_bench(n=300, n_small=10, repeats=1, tmpdir=tmp_path)
    assert out["runs"] == 300 and set(out["cold_s"]) == {"token", "runs", "explore", "scaling", "design"}
    assert out["table_rows_shown"] > 300  # every run listed (fewer than the 500-row cap)
    for key in ("cold_s", "cached_s", "after_a_new_record_s"):
        assert set(out[key]) == PAGES and all(math.isfinite(v) and v >= 0 for v in out[key].values()), key
    assert out["records"] == 900


def test_module_refuses_a_bad_size(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_:
        main(["--runs", "0"])
    assert exit_.value.code == 2 and "--runs" in capsys.readouterr().err


def test_module_prints_json(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert main(["--runs", "40", "--small-files", "2", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 40 and set(out["cached_s"]) == PAGES
