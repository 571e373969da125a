"""docker-compose.yml and the Dockerfile describe what the code supports (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def test_compose_service_has_gpu_volume_and_healthcheck() -> None:
    service = _compose()["services"]["initium"]
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    # compose refuses count and device_ids together
    assert ("count" in device) != ("device_ids" in device)
    assert any(v.startswith("artifacts:") for v in service["volumes"])
    assert "artifacts" in _compose()["volumes"]
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert service["environment"]["INITIUM_DATA_DIR"] == "/data"


def test_dockerfile_runs_serve_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "USER initium" in text
    assert '"initium", "serve"' in text and '"/data"' in text
    for folder in ("schemas", "client", "service"):
        assert f"COPY {folder}/ {folder}/" in text
