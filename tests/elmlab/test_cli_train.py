"""`elmlab train` and `elmlab allocate` as a user types them."""

from __future__ import annotations

import json

from elmlab.cli import main

TINY = ["--n-neurons", "8", "--d-m", "3", "--d-tree", "3", "--d-brch", "3", "--steps", "3", "--batch-size", "2",
        "--seq-len", "10", "--eval-chars", "100", "--test-chars", "100", "--quiet"]


def test_train_prints_the_result_and_writes_json(tmp_path, capsys, elmlab_home):
    out = tmp_path / "r.json"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed["status"] == "done" and printed["run_id"] == saved["run_id"]
    assert saved["steps"] == 3 and len(saved["curve"]) >= 1


def test_train_takes_a_spec_file_and_flags_override_it(tmp_path, capsys, elmlab_home):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"task": "text", "n_neurons": 8, "d_m": 3, "steps": 50}))
    assert main(["train", "--spec", str(spec), *TINY]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3


def test_train_names_the_base_learning_rate_it_starts_from(capsys, elmlab_home):
    """The `cpu` preset's rate follows the budget: a 40k run says 0.01, an explicit rate is scaled too."""
    tiny = TINY[2:]  # without --n-neurons: the budget decides N
    assert main(["train", "--preset", "cpu", "--budget", "40000", *tiny]) == 0
    assert "lr=0.01 (fan-in-budget)" in capsys.readouterr().err
    assert main(["train", "--preset", "cpu", "--budget", "40000", "--lr", "1e-3", *tiny]) == 0
    assert "lr=0.002 (fan-in-budget)" in capsys.readouterr().err
    assert main(["train", *TINY]) == 0
    assert "lr=0.003 (constant)" in capsys.readouterr().err  # the small preset's


def test_bad_arguments_give_one_line_and_the_usage(capsys, elmlab_home):
    assert main(["train", "--budget", "-4", "--d-m", "3"]) == 2
    err = capsys.readouterr().err
    assert "error: invalid run spec: budget" in err and "usage: elmlab train" in err
    assert "Traceback" not in err
    assert main(["train", "--task", "enwik8", "--n-neurons", "4", "--d-m", "2"]) == 2
    assert "enwik8" in capsys.readouterr().err


def test_allocate_reports_the_exact_count(capsys):
    assert main(["allocate", "--budget", "3.516748e6", "--d-m", "15", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_neurons"] == 1024 and out["params"] == 3_516_748 and out["k_c"] == 750
    assert main(["allocate", "--budget", "100"]) == 2
    assert "minimum budget" in capsys.readouterr().err


def test_gpu_workers_are_one_process_per_gpu_pinned_by_cuda_visible_devices():
    from elmlab.commands.queue import gpu_worker_commands

    cmds = gpu_worker_commands(3, "train", pid=42)
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in cmds] == ["0", "1", "2"]
    for argv, _ in cmds:
        assert argv[argv.index("--queues") + 1] == "gpu,train" and argv[argv.index("--concurrency") + 1] == "1"
    assert len({argv[argv.index("--hostname") + 1] for argv, _ in cmds}) == 3


def test_gpu_workers_without_a_gpu_is_a_clear_error(capsys, elmlab_home):
    assert main(["worker", "--gpus", "all"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
