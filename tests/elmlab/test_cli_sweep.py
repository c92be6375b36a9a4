"""`elmlab sweep` leaves designs off the iso-budget curve out, and says which and why."""

from __future__ import annotations

import json

from elmlab.cli import main


def test_iso_sweep_skips_a_one_neuron_design_with_the_reason(capsys, elmlab_home):
    assert main(["sweep", "iso", "--budget", "50000", "--d-m-values", "2,8,64", "--preset", "small",
                 "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert [s["d_m"] for s in json.loads(out)] == [2, 8]
    assert "d_m 64, N 1" in err and "below the floor" in err


def test_keep_off_curve_queues_it_anyway(capsys, elmlab_home):
    assert main(["sweep", "iso", "--budget", "50000", "--d-m-values", "2,64", "--preset", "small",
                 "--keep-off-curve", "--dry-run"]) == 0
    assert [s["d_m"] for s in json.loads(capsys.readouterr().out)] == [2, 64]


def test_a_sweep_with_nothing_left_is_a_one_line_error(capsys, elmlab_home):
    assert main(["sweep", "iso", "--budget", "50000", "--d-m-values", "64", "--preset", "small", "--dry-run"]) == 2
    assert "every design of this sweep was skipped" in capsys.readouterr().err
