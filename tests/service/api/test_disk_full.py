"""A full data volume through the API (issue 16, item 5), on a real tmpfs the test mounts: both
writing POSTs answer 507 with the fix and no server path, /readyz reports the store full, nothing
of the refused job is left, and once space is freed both POSTs succeed under the same id and /readyz
is ready again, with no restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from initium.service.api.app import create_app
from initium.service.api.routes import catalog, initializations, plans, reports
from initium.service.config import Settings
from tests.service.write.test_storage_full import fill, leftovers, tmpfs

__all__ = ["tmpfs"]  # the fixture, used by name below

MIN_FREE = 512 << 10  # INITIUM_MIN_FREE_BYTES here: the 4 MiB volume is "full" below it
PRESET = {
    "name": "house",
    "version": 1,
    "description": "ACME's MLP init: zero biases.",
    "rules": [{"match": {"role": "bias"}, "init": {"scheme": "zeros"}}],
}


def test_a_full_volume_is_507_and_not_ready_then_recovers_by_itself(tmpfs: Path, mlp_request: dict[str, Any]) -> None:
    settings = Settings(data_dir=tmpfs / "data", embedded_worker=False, min_free_bytes=MIN_FREE)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["store"] == "ok"
        job_id = client.post("/v1/plans", json=mlp_request).json()["request_id"]

        filler = fill(tmpfs)
        for path, body in (("/v1/initializations", mlp_request), ("/v1/presets", PRESET)):
            refused = client.post(path, json=body)
            assert refused.status_code == 507 and refused.headers["retry-after"] == "60", path
            error = refused.json()["error"]
            assert error["type"] == "insufficient_storage" and "INITIUM_STORE_MAX_BYTES" in error["message"]
            assert str(tmpfs) not in error["message"] and "/" not in error["message"]
        full = client.get("/readyz")
        assert full.status_code == 503
        assert full.json() == {
            "status": "not_ready", "store": "full", "store_free_bytes": 0, "artifacts": "ok", "worker": "external"
        }  # fmt: skip
        assert client.get(f"/v1/initializations/{job_id}").status_code == 404  # no half-created job
        assert client.get("/v1/presets/house@1").status_code == 404
        assert leftovers(tmpfs) == []

        filler.unlink()  # space is freed: no restart, no call to make
        assert client.get("/readyz").status_code == 200
        created = client.post("/v1/initializations", json=mlp_request)
        assert created.status_code == 202 and created.json()["id"] == job_id
        assert created.json()["state"] == "queued" and created.json()["attempts"] == 0
        assert client.post("/v1/presets", json=PRESET).status_code == 201
        assert client.get("/v1/presets/house@1").json()["rules"][0]["init"] == {"scheme": "zeros"}


def test_the_writing_posts_document_507() -> None:
    documented = {
        route.path: set(route.responses)
        for module in (catalog, initializations, plans, reports)
        for route in module.router.routes
        if isinstance(route, APIRoute) and "POST" in (route.methods or ())
    }
    # /v1/plans too: a plan answer past INITIUM_MAX_PLAN_INLINE_BYTES is spooled to the data volume
    for path in ("/v1/initializations", "/v1/presets", "/v1/reports", "/v1/plans"):
        assert 507 in documented[path], path
