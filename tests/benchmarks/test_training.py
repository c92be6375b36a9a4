"""The training-throughput benchmark (`elmlab bench`, `python -m benchmarks.training`): its JSON and its errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks.training import CONFIGS, resolve_configs
from elm_core import count_params
from elmlab.cli import main

KEYS = {"train_chars_per_s", "fwd_chars_per_s", "gflops", "sgemm_fraction", "peak_mem_mb"}


def test_bench_json_has_the_required_keys(capsys):
    assert main(["bench", "--json", "--configs", "small", "--steps", "2", "--warmup", "1"]) == 0
    out = json.loads(capsys.readouterr().out)  # one JSON object and nothing else
    assert set(out["configs"]) == {"small"}
    small = out["configs"]["small"]
    assert KEYS <= set(small)
    for key in KEYS:
        assert isinstance(small[key], float) and math.isfinite(small[key]) and small[key] >= 0, key
    assert small["train_chars_per_s"] > 0 and small["fwd_chars_per_s"] > 0
    assert 0 < small["sgemm_fraction"] < 1


def test_bench_configs_have_the_stated_sizes():
    assert [count_params(CONFIGS[n].cfg) for n in ("small", "paper-slice", "wide")] == [167_734, 1_052_026, 253_878]
    assert [CONFIGS[n].batch for n in ("small", "paper-slice", "wide", "paper")] == [8, 8, 32, 8]
    assert CONFIGS["paper"].cfg.n_in == 204 and CONFIGS["paper"].cfg.n_neurons == 440
    assert [c.name for c in resolve_configs(None)] == ["small", "paper-slice", "wide"]


def test_unknown_config_is_a_usage_error(capsys):
    assert main(["bench", "--configs", "small,huge"]) == 2
    err = capsys.readouterr().err
    assert "huge" in err and "usage:" in err


def test_bad_step_count_is_a_usage_error(capsys):
    assert main(["bench", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_usage_error(capsys):
    assert main(["bench", "--device", "cuda", "--configs", "small"]) == 2
    assert "CUDA" in capsys.readouterr().err


@pytest.mark.cuda
def test_bench_runs_on_cuda(capsys):
    assert main(["bench", "--json", "--device", "cuda", "--configs", "small", "--steps", "2", "--warmup", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert KEYS <= set(out["configs"]["small"])


def test_module_prints_the_table(capsys, tiny_configs):
    from benchmarks.training import main as module_main

    assert module_main(["--configs", "small", "--steps", "1", "--warmup", "0", "--repeats", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("device cpu, ") and "GFLOP/s" in lines[0] and "2 round(s)" in lines[0]
    assert lines[1].split()[0] == "config"
    row = lines[2].split()
    assert row[0] == "small" and float(row[1]) > 0 and float(row[4]) > 0  # train and forward chars/s (medians)
    for median, span in ((row[1], row[2]), (row[4], row[5])):  # min-max around the median
        low, high = (float(v) for v in span.split("-"))
        assert low <= float(median) <= high
    assert lines[-1].startswith("x ref:")


def test_repeats_report_the_spread(capsys, tiny_configs):
    assert main(["bench", "--json", "--configs", "small", "--steps", "1", "--warmup", "0", "--repeats", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["repeats"] == 3 and len(out["rounds"]) == 3
    for key in ("train_chars_per_s", "fwd_chars_per_s"):
        values = sorted(r["small"][key] for r in out["rounds"])
        assert out["spread"]["small"][key] == {"min": values[0], "median": values[1], "max": values[2]}
        assert out["configs"]["small"][key] == values[1]
    assert main(["bench", "--repeats", "0"]) == 2
    assert "--repeats must be at least 1" in capsys.readouterr().err
