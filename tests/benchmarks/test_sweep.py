"""The sweep benchmark (`python -m benchmarks.sweep`): its summary, and one tiny round end to end."""

from __future__ import annotations

import json

import pytest

from benchmarks.sweep import main, summarise


def _side(side: str, wall: float, metrics: dict[str, float]) -> dict:
    return {"side": side, "wall_s": wall, "run_wall_s": [1.0], "devices": ["cpu"], "failed": 0, "metrics": metrics}


def test_summary_ratios_and_metric_differences():
    rounds = [_side("serial", 100.0, {"2/0": 3.5}), _side("default", 55.0, {"2/0": 3.5 + 1e-7}),
              _side("baseline", 200.0, {"2/0": 3.6}), _side("serial", 120.0, {"2/0": 3.5}),
              _side("default", 54.0, {"2/0": 3.5}), _side("baseline", 220.0, {"2/0": 3.6})]
    s = summarise(rounds, ["serial", "default", "baseline"])
    assert s["serial"] == {"median": 110.0, "min": 100.0, "max": 120.0}
    assert s["default/serial"]["per_round"] == [0.55, 0.45]
    assert s["default/serial"]["median_of_medians"] == round(54.5 / 110.0, 3)
    assert s["default/baseline"]["median_of_medians"] == round(54.5 / 210.0, 3)
    assert s["max_metric_diff"] == pytest.approx(1e-7)  # this checkout's sides only
    assert s["max_metric_diff_vs_baseline"] == pytest.approx(0.1)


def test_refuses_an_unknown_side_and_a_folder_that_is_no_checkout(tmp_path):
    with pytest.raises(SystemExit):
        main(["--sides", "threads"])
    with pytest.raises(SystemExit):
        main(["--baseline", str(tmp_path)])


@pytest.mark.slow
def test_one_tiny_round_through_the_queue(capsys):
    """Both sides start `elmlab up` in a fresh home, queue the sweep and read every run's record: one
    run per core trains with one thread, one at a time with two, and the results agree."""
    assert main(["--rounds", "1", "--d-m-values", "4,8", "--seeds", "0", "--steps", "3", "--poll-s", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    serial, default = out["rounds"]
    assert all(d.endswith("x2") for d in serial["devices"])
    assert all(d.endswith("x1") for d in default["devices"])
    assert serial["failed"] == default["failed"] == 0 and set(serial["metrics"]) == {"4/0", "8/0"}
    assert out["summary"]["max_metric_diff"] < 1e-5
    assert out["summary"]["default/serial"]["per_round"][0] > 0
