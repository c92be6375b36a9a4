"""Bad input on the command line gets one line naming the problem (exit 2), never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from elmlab.cli import main

HEADER = "run_id,task,status,params\n"


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("usage:", " "))]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize(("name", "content"), [
    ("lots.csv", HEADER + "r1,text,done,lots\n"),
    ("quoting.csv", 'run_id,task,status\n"r1,text,"done\n'),
    ("empty.csv", ""),
    ("random.csv", os.urandom(512)),
    ("random.parquet", os.urandom(512)),
    ("notes.txt", "hello\n"),
    ("status.csv", "run_id,task,status\nr1,text,bogus\n"),
])
def test_store_import_of_a_bad_file_is_one_line_naming_it(tmp_path: Path, capsys, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["store", "import", "--store", str(tmp_path / "store"), str(path)]) == 2
    line = _one_error_line(capsys)
    assert name in line
    if name == "status.csv":
        assert "row 1" in line and "status" in line


def test_fit_iso_of_an_empty_file_is_one_line(tmp_path: Path, capsys):
    (tmp_path / "empty.csv").write_text("")
    assert main(["fit", "iso", "--input", str(tmp_path / "empty.csv")]) == 2
    assert "empty.csv" in _one_error_line(capsys)


def test_fit_iso_says_when_no_metric_is_finite(tmp_path: Path, capsys):
    rows = [f"r{i},text,done,{d},{60000},inf,inf" for i, d in enumerate((2, 4, 8, 16))]
    (tmp_path / "inf.csv").write_text("run_id,task,status,d_m,params,valid_metric,test_metric\n" + "\n".join(rows))
    assert main(["fit", "iso", "--input", str(tmp_path / "inf.csv")]) == 2
    assert "finite" in _one_error_line(capsys)


@pytest.mark.parametrize("budget", ["inf", "1e30", "nan", "lots"])
def test_submit_with_an_impossible_budget_is_one_line(tmp_path: Path, monkeypatch, capsys, budget):
    monkeypatch.setenv("ELMLAB_HOME", str(tmp_path))
    try:
        code = main(["submit", "--budget", budget, "--d-m", "4"])
    except SystemExit as exc:  # argparse refuses the flag itself
        code = exc.code
    assert code == 2 and "budget" in _one_error_line(capsys)
    assert not list(tmp_path.glob("broker/queue/*.msg"))


def test_train_with_a_budget_beyond_the_maximum_is_one_line(capsys):
    assert main(["train", "--budget", "1e12", "--d-m", "4", "--quiet"]) == 2
    assert "at most 2e+09" in _one_error_line(capsys)


@pytest.mark.parametrize(("content", "says"), [
    ("[1, 2, 3]", "a run spec is a JSON object, not list"),
    ("not json", "Expecting value"),
    (os.urandom(64) + b"\xff", "codec can't decode"),
    ('{"task": "synthetic-adding", "n_neurons": 8, "d_m": 3, "task_options": {"bin_ms": NaN}}', "bin_ms=nan"),
    ('{"task": "text", "budget": true, "d_m": 3}', "not a boolean"),
    ('{"task": "text", "n_neurons": 8, "d_m": 3, "seed": -1}', "seed"),
    ('{"task": "text", "n_neurons": 8, "d_m": 3, "seed": 1180591620717411303424}', "seed"),
])
def test_submit_of_a_bad_spec_file_is_one_line_and_queues_nothing(tmp_path: Path, monkeypatch, capsys, content, says):
    monkeypatch.setenv("ELMLAB_HOME", str(tmp_path))
    path = tmp_path / "spec.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["submit", "--spec", str(path)]) == 2
    line = _one_error_line(capsys)
    assert says in line
    assert not list(tmp_path.glob("broker/queue/*.msg")) and not list(tmp_path.glob("store/runs/*"))
