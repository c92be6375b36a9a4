"""`elmlab bench --vs-reference PATH`: a harness written here prints the reference harness's output format."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from benchmarks import reference
from elmlab.cli import main

FAKE = '''
import argparse, json, os, sys
p = argparse.ArgumentParser()
p.add_argument("--json", action="store_true")
p.add_argument("--configs")
p.add_argument("--steps", type=int)
p.add_argument("--warmup", type=int)
p.add_argument("--threads", type=int)
a = p.parse_args()
with open("calls.log", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
with open("cpus.log", "a") as f:
    f.write(json.dumps(sorted(os.sched_getaffinity(0))) + "\\n")
n = sum(1 for _ in open("calls.log"))
FAIL
print("compiling", flush=True)  # the harness may print more before its JSON
configs = {c: {"params": 1, "train_chars_per_s": 1000.0 * n, "fwd_chars_per_s": 4000.0, "train_step_ms": 1.0}
           for c in a.configs.split(",")}
print(json.dumps({"configs": configs, "jax": "0"}))
'''


def _harness(folder: Path, fail: str = "") -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "ref_bench.py").write_text(FAKE.replace("FAIL", fail))
    return folder


def _bench(folder: Path, *extra: str) -> list[str]:
    return ["bench", "--configs", "small,paper", "--steps", "1", "--warmup", "0", "--vs-reference", str(folder),
            "--reference-python", sys.executable, *extra]


def test_reference_runs_after_each_round_and_ratios_pair_the_rounds(tmp_path, capsys, tiny_configs):
    folder = _harness(tmp_path / "ref")
    assert main([*_bench(folder, "--repeats", "2", "--threads", "1", "--json")]) == 0
    out = json.loads(capsys.readouterr().out)
    calls = [json.loads(line) for line in (folder / "calls.log").read_text().splitlines()]
    # once per round, only the configurations it knows ("paper" is ours alone), our steps and thread count
    assert calls == [["--json", "--configs", "small", "--steps", "1", "--warmup", "0", "--threads=1"]] * 2
    ref = out["reference"]
    assert [r["small"]["train_chars_per_s"] for r in ref["rounds"]] == [1000.0, 2000.0]
    assert ref["spread"]["small"]["train_chars_per_s"] == {"min": 1000.0, "median": 1500.0, "max": 2000.0}
    ours = [r["small"]["train_chars_per_s"] for r in out["rounds"]]
    ratios = sorted(o / r for o, r in zip(ours, (1000.0, 2000.0), strict=True))
    assert ref["ratios"]["small"]["train_chars_per_s"] == pytest.approx(
        {"min": ratios[0], "median": sum(ratios) / 2, "max": ratios[1]})
    assert set(ref["ratios"]) == {"small"} and set(out["configs"]) == {"small", "paper"}


def test_one_thread_runs_the_reference_under_taskset_on_one_cpu(tmp_path):
    argv = reference.harness_argv(tmp_path / "ref_bench.py", "py", ["small", "wide"], steps=3, warmup=1,
                                  threads=1, cpu=1)
    assert Path(argv[0]).name == "taskset" and argv[1:3] == ["-c", "1"]
    assert argv[3:] == ["py", str(tmp_path / "ref_bench.py"), "--json", "--configs", "small,wide", "--steps", "3",
                        "--warmup", "1", "--threads=1"]
    # the default CPU: the last one this process may run on
    assert reference.harness_argv(tmp_path, "py", ["small"], steps=1, warmup=0, threads=1)[1:3] == [
        "-c", str(max(os.sched_getaffinity(0)))]


@pytest.mark.parametrize("threads", [None, 2])
def test_more_threads_run_the_reference_as_it_is(tmp_path, threads):
    argv = reference.harness_argv(tmp_path, "py", ["small"], steps=1, warmup=0, threads=threads, cpu=1)
    assert argv == ["py", str(tmp_path), "--json", "--configs", "small", "--steps", "1", "--warmup", "0"]


def test_one_thread_without_taskset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(reference.shutil, "which", lambda name: None)
    with pytest.raises(reference.ReferenceError, match="taskset, which is not installed"):
        reference.harness_argv(tmp_path, "py", ["small"], steps=1, warmup=0, threads=1)


def test_the_reference_round_runs_pinned_to_the_cpu_asked_for(tmp_path, capsys, tiny_configs):
    folder = _harness(tmp_path / "ref")
    cpu = min(os.sched_getaffinity(0))
    assert main([*_bench(folder, "--repeats", "1", "--threads", "1", "--reference-cpu", str(cpu), "--json")]) == 0
    assert json.loads((folder / "cpus.log").read_text()) == [cpu]


def test_a_reference_cpu_the_machine_lacks_is_one_line(tmp_path, capsys):
    assert main([*_bench(_harness(tmp_path / "ref"), "--threads", "1", "--reference-cpu", str(os.cpu_count()))]) == 2
    err = capsys.readouterr().err
    assert "--reference-cpu must be a CPU of this machine" in err and "Traceback" not in err


def test_table_prints_the_reference_and_the_ratios(tmp_path, capsys, tiny_configs):
    assert main(_bench(_harness(tmp_path / "ref"), "--repeats", "1")) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("reference harness"))
    row = lines[at + 2].split()
    assert row[0] == "small" and float(row[1]) == 1000.0 and float(row[3]) > 0 and float(row[5]) == 4000.0


@pytest.mark.parametrize(("fail", "says"), [
    (None, "no ref_bench.py in"),
    ("sys.exit('no module named jax')", "exited with status 1: no module named jax"),
    ("print('not json'); sys.exit(0)", "printed no JSON"),
])
def test_a_broken_harness_is_one_line(tmp_path, capsys, tiny_configs, fail, says):
    folder = tmp_path / "ref"
    if fail is None:
        folder.mkdir()
    else:
        _harness(folder, fail)
    assert main(_bench(folder, "--repeats", "1")) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_a_missing_reference_python_is_one_line(tmp_path, capsys):
    argv = _bench(_harness(tmp_path / "ref"))
    argv[argv.index("--reference-python") + 1] = str(tmp_path / "no-such-python")
    assert main(argv) == 2
    assert "--reference-python" in capsys.readouterr().err


REAL_HARNESS = os.environ.get("ELMLAB_REFERENCE_HARNESS")  # the folder holding the real ref_bench.py
REAL_PYTHON = os.environ.get("ELMLAB_REFERENCE_PYTHON")  # the Python of the reference's environment (jax, equinox)
REFERENCE_SRC = os.environ.get("ELMREF_SRC")  # the scratch copy of the reference's src/ that the harness imports


def _real_harness_missing() -> str:
    if not (REAL_HARNESS and REAL_PYTHON and REFERENCE_SRC):
        return ("the reference harness is not set up here: set ELMLAB_REFERENCE_HARNESS (the folder of ref_bench.py), "
                "ELMLAB_REFERENCE_PYTHON (its environment's Python) and ELMREF_SRC (the reference's files)")
    for what, path in (("ELMLAB_REFERENCE_HARNESS", Path(REAL_HARNESS) / "ref_bench.py"),
                       ("ELMLAB_REFERENCE_PYTHON", Path(REAL_PYTHON)),
                       ("ELMREF_SRC", Path(REFERENCE_SRC) / "src" / "models" / "elm_network.py")):
        if not path.exists():
            return f"{what}: no {path}"
    return ""


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the reference compiles its step first: minutes on a busy machine
@pytest.mark.skipif(bool(_real_harness_missing()), reason=_real_harness_missing() or "set up")
def test_the_real_reference_harness_runs_beside_the_bench(capsys):
    """One timed step of `small` on each side: the real harness compiles and trains the reference's own
    step, on a network of exactly our parameter count, and the ratios pair its round with ours."""
    argv = ["bench", "--configs", "small", "--steps", "1", "--warmup", "0", "--repeats", "1", "--threads", "1",
            "--vs-reference", REAL_HARNESS, "--reference-python", REAL_PYTHON, "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    (ref,) = out["reference"]["rounds"]
    theirs, ours = ref["small"], out["configs"]["small"]
    assert theirs["params"] == ours["params"] and theirs["batch"] == 8 and theirs["seq_len"] == 100
    assert theirs["train_finite"] and theirs["train_chars_per_s"] > 0 and theirs["fwd_chars_per_s"] > 0
    assert theirs["fwd_logits_shape"] == [8, 100, 205]
    q = out["reference"]["ratios"]["small"]
    assert q["train_chars_per_s"]["median"] == pytest.approx(ours["train_chars_per_s"] / theirs["train_chars_per_s"])
    assert q["fwd_chars_per_s"]["median"] == pytest.approx(ours["fwd_chars_per_s"] / theirs["fwd_chars_per_s"])
