"""Fixtures for the benchmark tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def tiny_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    """`small` and `paper` shrunk to tiny networks, and the matmul peak measured on small matrices: for the
    tests of the bench's rounds, tables and reference harness, which read its figures but not their size
    (test_bench_json_has_the_required_keys measures the real `small`)."""
    from benchmarks import training

    for name in ("small", "paper"):
        monkeypatch.setitem(
            training.CONFIGS, name, training.BenchConfig(name, training._cfg(16, 4, 4, 4), batch=2, seq_len=10)
        )
    sgemm_flops = training.sgemm_flops
    monkeypatch.setattr(training, "sgemm_flops", lambda device: sgemm_flops(device, n=256))
