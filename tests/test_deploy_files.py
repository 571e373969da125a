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


def test_compose_minio_is_the_artifact_store_of_the_api_and_every_worker() -> None:
    """MinIO serves S3 on the port the services are pointed at, keeps its objects on a volume, and
    the API and each worker use it (the same bucket and prefix) once it is healthy."""
    from initium.service.config import Settings

    services = _compose()["services"]
    minio = services["minio"]
    assert minio["command"][0] == "server" and minio["command"][minio["command"].index("--address") + 1] == ":9000"
    assert {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} <= set(minio["environment"])
    assert any(v.endswith(":/data") and v.startswith("minio-data") for v in minio["volumes"])
    assert "ready" in minio["healthcheck"]["test"]
    assert "minio-data" in _compose()["volumes"]
    users = [services["api"], *(s for name, s in services.items() if name.startswith("worker-"))]
    stores = {u["environment"]["INITIUM_ARTIFACT_STORE"] for u in users}
    assert len(stores) == 1 and stores.pop().startswith("s3://")
    for service in users:
        env = service["environment"]
        assert env["INITIUM_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"] and env["AWS_DEFAULT_REGION"]
        assert "MINIO_ROOT_PASSWORD" in env["AWS_SECRET_ACCESS_KEY"]  # the credentials MinIO was started with
        assert service["depends_on"]["minio"]["condition"] == "service_healthy"
        # The service's settings accept what compose gives them.
        store, endpoint = env["INITIUM_ARTIFACT_STORE"], env["INITIUM_S3_ENDPOINT_URL"]
        assert Settings(artifact_store=store, s3_endpoint_url=endpoint).artifact_store == store


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


def test_compose_publishes_only_the_proxy_which_runs_the_shipped_nginx_template() -> None:
    """Clients reach the API through nginx alone (issue 16): the API's port is not published, the
    proxy's is, its template is the file tests/test_reverse_proxy.py runs, and both refuse the same
    bodies."""
    from initium.service.config import Settings

    services = _compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}, "only the proxy's port is published"
    api, proxy = services["api"], services["proxy"]
    assert api["expose"] == ["8000"] and "--port" in api["command"]
    assert api["command"][api["command"].index("--port") + 1] == "8000"
    assert proxy["image"].startswith("nginx:") and proxy["ports"] == ["8000:8080"]
    env = proxy["environment"]
    assert env["INITIUM_UPSTREAM"] == "api:8000" and env["NGINX_PORT"] == "8080"
    assert env["INITIUM_MAX_BODY_BYTES"] == api["environment"]["INITIUM_MAX_BODY_BYTES"]
    assert int(env["INITIUM_MAX_BODY_BYTES"]) == Settings().max_body_bytes
    source, target = proxy["volumes"][0].split(":")[:2]
    assert (ROOT / source).resolve() == ROOT / "deploy" / "nginx.conf.template"
    assert target.startswith("/etc/nginx/templates/") and target.endswith(".template")
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    template = (ROOT / "deploy" / "nginx.conf.template").read_text()
    for name in ("INITIUM_UPSTREAM", "NGINX_PORT", "INITIUM_MAX_BODY_BYTES"):
        assert "${" + name + "}" in template
