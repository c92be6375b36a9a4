"""The submission benchmark (`python -m benchmarks.submission`) with a handful of runs."""

from __future__ import annotations

import json

import pytest

from benchmarks.submission import bench, main
from tests.workers.conftest import REDIS_HOST, REDIS_PORT


def _sane(out: dict, mode: str, n: int) -> None:
    assert out["mode"] == mode and out["n"] == n
    for key in ("per_submission_ms", "validate_ms", "publish_ms", "store_put_ms"):
        ms = out[key]
        assert 0 < ms["p50"] <= ms["p95"] <= ms["max"] and ms["mean"] > 0, key
    assert out["submissions_per_s"] > 0 and out["submit_many_ms_per_run"] > 0 and out["submit_total_s"] > 0
    # warm-up + n through the client + n timed by part + n in one submit_many, all still queued (no worker runs)
    assert out["runs_in_store"] == 3 * n + 1 and out["queued_after"]["train"] == 3 * n + 1


def test_embedded_figures_are_sane():
    _sane(bench("embedded", 3, "redis://unused"), "embedded", 3)


@pytest.mark.redis
def test_module_prints_json_for_redis(capsys: pytest.CaptureFixture[str]):
    import redis

    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=0.5).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_HOST}:{REDIS_PORT} (.ci/run starts one)")
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/14"
    assert main(["--n", "2", "--modes", "redis", "--redis-url", url]) == 0
    (out,) = json.loads(capsys.readouterr().out)
    _sane(out, "redis", 2)
    assert out["broker"] == url


def test_module_refuses_bad_options(capsys: pytest.CaptureFixture[str]):
    for argv in (["--n", "0"], ["--modes", "rabbit"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and "--modes" in capsys.readouterr().err
