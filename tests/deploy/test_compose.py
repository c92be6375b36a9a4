"""docker-compose.yml: validated by the compose tool itself, and the services a distributed ELM Lab needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_compose_file_validates():
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("no docker compose tool on this machine (CI installs Debian's docker-compose)")
    out = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_compose_has_broker_dashboard_workers_and_flower():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"redis", "dashboard", "worker-cpu", "worker-gpu", "flower"} <= set(services)
    for name in ("dashboard", "worker-cpu", "worker-gpu", "flower"):
        env = services[name]["environment"]
        assert env["ELMLAB_BROKER_URL"].startswith("redis://redis:6379")
    gpu = services["worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "--concurrency" in gpu["command"] and gpu["command"][gpu["command"].index("--concurrency") + 1] == "1"
    assert gpu["build"]["args"]["TORCH"] == "cuda"
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))


def test_dockerfile_runs_as_non_root_with_volumes_and_a_torch_choice():
    text = (ROOT / "Dockerfile").read_text()
    assert "USER elmlab" in text and "VOLUME" in text and "ARG TORCH=cpu" in text
    assert "torch==2.13.0" in text
