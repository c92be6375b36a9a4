"""`elmlab gpu-check`: skips cleanly without CUDA, and its parts work (run on the CPU with tiny models)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from elmlab.cli import main
from elmlab.commands import gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_it_prints_why_and_succeeds(capsys):
    assert main(["gpu-check", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cuda"] is False and "no CUDA device" in out["skipped"]


@pytest.mark.slow  # a process per part (a pytest run, a bench, three runs, a kill and two resumes): about a minute
def test_every_part_of_the_check_runs_and_passes(capsys):
    """The same parts on the CPU: CUDA tests (skipped here), bench, a run per precision, kill and resume."""
    assert main(["gpu-check", "--json", "--device", "cpu", "--tiny", "--train-s", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and set(out["parts"]) == {"tests", "bench", "train", "resume"}
    assert out["parts"]["tests"]["counts"]["skipped"] > 0  # the cuda-marked tests, skipped with a reason
    assert set(out["parts"]["train"]["runs"]) == {"fp32", "tf32", "bf16"}
    assert all(r["steps"] > 0 for r in out["parts"]["train"]["runs"].values())
    resume = out["parts"]["resume"]
    assert resume["killed"] and resume["resumed"]["attempt"] == 1
    assert resume["resumed"]["test_metric"] == resume["whole"]["test_metric"]


def test_the_train_part_runs_in_each_precision():
    """The check's per-precision child, in this process (the whole check, above, runs it as a process)."""
    for precision in gpu.PRECISIONS:
        args = argparse.Namespace(part="train", precision=precision, device="cpu", tiny=True, train_s=0.2)
        out = gpu._run_part(args)
        assert out["ok"] is True and out["status"] == "cancelled" and out["steps"] > 0, (precision, out)
        assert out["tokens_per_s"] > 0, (precision, out)


def test_a_bad_duration_is_a_usage_error(capsys):
    assert main(["gpu-check", "--device", "cpu", "--train-s", "0"]) == 2
    assert "--train-s" in capsys.readouterr().err
