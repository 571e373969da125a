"""docker-compose.yml and the Dockerfile describe what the code supports (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def test_compose_redis_is_append_only_and_healthchecked() -> None:
    redis = _compose()["services"]["redis"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "ping" in redis["healthcheck"]["test"]
    assert any(v.startswith("redis-data:") for v in redis["volumes"])


def test_compose_api_waits_for_a_healthy_broker_and_checks_readiness() -> None:
    api = _compose()["services"]["api"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["environment"]["INITIUM_BROKER_URL"].startswith("redis://redis:6379")
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert api["command"][:2] == ["initium", "serve"]


def test_compose_has_one_worker_per_gpu_on_the_shared_volume() -> None:
    services = _compose()["services"]
    workers = {name: s for name, s in services.items() if name.startswith("worker-")}
    assert len(workers) >= 2
    gpus = []
    for service in workers.values():
        device = service["deploy"]["resources"]["reservations"]["devices"][0]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert "count" not in device  # compose refuses count and device_ids together
        gpus += device["device_ids"]
        assert service["command"][:2] == ["initium", "worker"]
        assert service["environment"]["INITIUM_BROKER_URL"] == services["api"]["environment"]["INITIUM_BROKER_URL"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert len(gpus) == len(set(gpus)) == len(workers), "each worker pins its own GPU"
    for service in [services["api"], *workers.values()]:
        assert "artifacts:/data" in service["volumes"]
        assert service["environment"]["INITIUM_DATA_DIR"] == "/data"
    assert {"artifacts", "redis-data"} <= set(_compose()["volumes"])


def test_worker_command_in_compose_is_a_real_cli_command() -> None:
    from initium.client.cli import build_parser

    args = build_parser().parse_args(["worker", "--name", "gpu0@host"])
    assert args.command == "worker" and args.name == "gpu0@host"


def test_dockerfile_runs_serve_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "USER initium" in text
    assert '"initium", "serve"' in text and '"/data"' in text
    for folder in ("schemas", "client", "service"):
        assert f"COPY {folder}/ {folder}/" in text
