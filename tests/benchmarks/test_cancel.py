"""The status and cancel benchmark (`python -m benchmarks.cancel`) with a handful of runs."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.cancel import HEAVY, main


@pytest.fixture(autouse=True)
def _no_elmlab_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("ELMLAB_")]:
        monkeypatch.delenv(k)


def test_module_prints_status_and_cancel_figures(capsys: pytest.CaptureFixture[str]):
    assert main(["--n", "3", "--status-repeats", "2", "--no-drain"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "embedded" and out["n"] == 3
    assert len(out["status_s"]) == len(out["status_cpu_s"]) == 2
    assert all(t > 0 for t in out["status_s"] + out["status_cpu_s"])
    assert min(out["status_s"]) <= out["status_median_s"] <= max(out["status_s"])
    assert min(out["status_cpu_s"]) <= out["status_cpu_median_s"] <= max(out["status_cpu_s"])
    assert set(out["status_heavy_imports"]) <= set(HEAVY)
    assert out["recorded_cancelled"] == 3 and out["cancel_ms_per_run"] > 0
    assert "drain_per_s" not in out  # --no-drain: no worker started


def test_module_refuses_bad_options(capsys: pytest.CaptureFixture[str]):
    for argv in (["--n", "0"], ["--status-repeats", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and "--n must be" in capsys.readouterr().err
