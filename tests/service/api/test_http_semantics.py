"""HTTP as clients expect it (issue 16 items 12 and 14): HEAD and conditional downloads under RFC 9110
section 13.2.2's order, Range by the grammar of section 14.1, API keys checked before anything else,
docs closed with keys, and no server path in any answer."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.datastructures import Headers

from initium.service.api.app import create_app
from initium.service.api.conditional import entity_tags, if_match_holds, if_none_match_holds, precondition_status
from initium.service.api.downloads import byte_range
from initium.service.api.security import hash_key
from initium.service.config import Settings
from initium.service.errors import StoreUnavailableError
from tests.conftest import MLP_REQUEST, wait_for_job

SIZE = 1000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 100)),
        ("Bytes=0-99", (0, 100)),  # range units compare case-insensitively (section 14.1)
        ("bytes=990-", (990, 1000)),
        ("bytes=-10", (990, 1000)),
        ("bytes=-5000", (0, 1000)),  # a suffix past the start is the whole file
        ("bytes=900-5000", (900, 1000)),
        ("bytes=0007-0009", (7, 10)),
        ("bytes=0-99,", (0, 100)),  # an empty list element is skipped (section 5.6.1.2)
        ("bytes=" + "0" * 5000 + "5-9", (5, 10)),
        ("bytes=1000-", False),
        ("bytes=" + "9" * 5000 + "-", False),  # past Python's int-string limit: still a 416, not a 500
        ("bytes=-0", False),
        # the grammar refuses these, so the field is ignored: the whole file
        ("bytes=abc", None),
        ("bytes=5-1", None),
        ("bytes=" + "9" * 30 + "-" + "9" * 29, None),
        ("bytes=--1", None),
        ("bytes = 0-5", None),
        ("bytes=0 - 5", None),
        ("bytes=0-1.5", None),
        ("bytes=", None),
        ("bytes", None),
        ("junk", None),
        ("items=0-5", None),
        ("bytes=\u0663-", None),  # an Arabic-Indic digit: `\d` would take it
        ("bytes=\xe9-1", None),
        ("bytes=0-1\x7f", None),
        ("bytes=0-1,5-6", None),  # several ranges: ignored (section 14.2 allows it)
    ],
)
def test_byte_range_follows_the_grammar(value: str | None, expected: object) -> None:
    assert byte_range(value, SIZE) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"a"', [(False, "a")]),
        ('W/"a", "b"', [(True, "a"), (False, "b")]),
        (' "a" ,, "b" ', [(False, "a"), (False, "b")]),
        ('"a,b"', [(False, "a,b")]),
        ("*", "*"),
        ("a", None),
        ('"a" junk', None),
        ('"a', None),
        ("", None),
    ],
)
def test_entity_tag_lists(value: str, expected: object) -> None:
    assert entity_tags(value) == expected


def test_conditions_compare_as_section_13_says() -> None:
    assert if_match_holds('"x"', "x") and if_match_holds('"y", "x"', "x") and if_match_holds("*", "x")
    assert not if_match_holds('W/"x"', "x") and not if_match_holds("x", "x")  # strong only; malformed fails
    assert not if_none_match_holds('W/"x"', "x") and not if_none_match_holds("*", "x")  # weak comparison
    assert if_none_match_holds('"y"', "x") and if_none_match_holds("garbage", "x")
    both = Headers({"if-match": '"y"', "if-none-match": '"x"'})
    assert precondition_status(both, "x", "GET") == 412  # If-Match first (section 13.2.2)
    assert precondition_status(Headers({"if-none-match": '"x"'}), "x", "POST") == 412
    assert precondition_status(Headers({"if-none-match": '"x"'}), "x", "HEAD") == 304


@pytest.fixture(scope="module")
def done(app_client: TestClient) -> dict[str, Any]:
    response = app_client.post("/v1/initializations", json={**MLP_REQUEST, "seed": 16_012})
    assert response.status_code in (200, 202), response.text
    status = wait_for_job(app_client, response.json()["id"])
    assert status["state"] == "succeeded"
    return status


def test_head_answers_the_get_headers_without_reading(
    app_client: TestClient, done: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = done["links"]["weights"]
    got = app_client.get(url)
    monkeypatch.setattr(app_client.app.state.store.artifacts, "read", _no_read)  # type: ignore[attr-defined]
    head = app_client.head(url)
    assert head.status_code == 200 and head.content == b""
    for field in ("etag", "content-length", "content-type", "accept-ranges", "cache-control", "content-disposition"):
        assert head.headers[field] == got.headers[field], field
    assert int(head.headers["content-length"]) == done["size"]
    # Range is a GET's alone (RFC 9110 section 14.2): a HEAD with one answers as a GET without it.
    assert app_client.head(url, headers={"Range": "bytes=0-9"}).status_code == 200
    assert app_client.head(url, headers={"If-None-Match": got.headers["etag"]}).status_code == 304


def test_every_get_route_answers_head_with_its_headers(app_client: TestClient, done: dict[str, Any]) -> None:
    # Round two of issue 16: HEAD answered 405 everywhere but the downloads (RFC 9110 section 9.1: a
    # general-purpose server MUST support HEAD). The TestClient, like a browser, reads no HEAD body.
    links = done["links"]
    for url in (links["self"], links["report"], links["report_html"], "/v1/presets", "/v1/presets/gpt2",
                "/v1/schemes", "/healthz", "/v1/initializations/" + "0" * 64):  # fmt: skip
        got, head = app_client.get(url), app_client.head(url)
        assert head.status_code == got.status_code and head.content == b"", url
        for field in ("content-type", "content-length", "etag"):
            assert head.headers.get(field) == got.headers.get(field), (url, field)
    assert "head" not in app_client.get("/openapi.json").json()["paths"][links["self"].replace(done["id"], "{job_id}")]


def _no_read(*args: object, **kwargs: object) -> Iterator[bytes]:
    raise AssertionError("the artifact was read")


def test_conditional_downloads(app_client: TestClient, done: dict[str, Any]) -> None:
    url, etag = done["links"]["weights"], f'"{done["sha256"]}"'
    for field in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = app_client.get(url, headers={"If-None-Match": field})
        assert cached.status_code == 304 and cached.content == b"", field
        assert cached.headers["etag"] == etag and "immutable" in cached.headers["cache-control"]
    fresh = app_client.get(url, headers={"If-None-Match": '"other"'})
    assert fresh.status_code == 200 and hashlib.sha256(fresh.content).hexdigest() == done["sha256"]
    for field in ('"other"', f"W/{etag}", "not-a-tag"):
        refused = app_client.get(url, headers={"If-Match": field})
        assert refused.status_code == 412 and refused.json()["error"]["type"] == "precondition_failed", field
        assert refused.headers["etag"] == etag
    assert app_client.get(url, headers={"If-Match": f'"other", {etag}'}).status_code == 200
    assert app_client.get(url, headers={"If-Match": "*", "Range": "bytes=0-9"}).status_code == 206
    # If-Match is evaluated before If-None-Match, and both before Range (section 13.2.2).
    assert app_client.get(url, headers={"If-Match": '"other"', "If-None-Match": etag}).status_code == 412
    assert app_client.get(url, headers={"If-None-Match": etag, "Range": "bytes=0-9"}).status_code == 304


def test_ranges(app_client: TestClient, done: dict[str, Any]) -> None:
    url, size = done["links"]["weights"], done["size"]
    whole = app_client.get(url).content
    part = app_client.get(url, headers={"Range": "bytes=-100"})
    assert part.status_code == 206 and part.content == whole[-100:]
    assert part.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
    for malformed in ("bytes=abc", "bytes=5-1", "bytes=0-1,5-6", "bytes=\xe9-1", "bytes=" + "9" * 5000 + "-1"):
        ignored = app_client.get(url, headers={b"Range": malformed.encode("latin-1")})
        assert ignored.status_code == 200 and ignored.content == whole, malformed
    past = app_client.get(url, headers={"Range": "bytes=" + "9" * 5000 + "-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    assert past.json()["error"]["type"] == "range_not_satisfiable"
    weak = app_client.get(url, headers={"Range": "bytes=0-9", "If-Range": f'W/"{done["sha256"]}"'})
    assert weak.status_code == 200  # a weak validator never satisfies If-Range (section 13.1.5)


KEY = "ik_semantics_key"


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", embedded_worker=False, api_key_hashes=hash_key(KEY))
    with TestClient(create_app(settings)) as client:
        yield client


def test_docs_need_the_key_unless_public(keyed: TestClient, tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    for path in ("/docs", "/redoc", "/openapi.json", "/v1/nothing-here"):
        closed = keyed.get(path)
        assert closed.status_code == 401 and closed.headers["www-authenticate"] == "Bearer", path
        assert keyed.get(path, headers=auth).status_code in (200, 404), path
    for path in ("/healthz", "/metrics"):
        assert keyed.get(path).status_code == 200
    public = Settings(
        data_dir=tmp_path / "public", embedded_worker=False, api_key_hashes=hash_key(KEY), public_docs=True
    )
    client = TestClient(create_app(public))
    assert client.get("/openapi.json").status_code == 200 and client.get("/docs").status_code == 200
    assert client.get("/v1/schemes").status_code == 401


def test_the_key_is_checked_before_the_body_is_read(keyed: TestClient) -> None:
    """A 10 MB body without a key: 401, and the app never asks for a byte of it."""
    import anyio

    sent: list[dict[str, Any]] = []
    asked: list[str] = []
    scope = {
        "type": "http", "method": "POST", "path": "/v1/plans", "raw_path": b"/v1/plans", "query_string": b"",
        "root_path": "", "scheme": "http", "http_version": "1.1", "server": ("test", 80), "client": ("test", 1),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(10 * 2**20).encode())],
        "app": keyed.app,
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        asked.append("receive")
        return {"type": "http.request", "body": b"{" * (10 * 2**20), "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(keyed.app, scope, receive, send)  # type: ignore[arg-type]
    start = sent[0]
    assert start["status"] == 401 and asked == []
    assert (b"connection", b"close") in start["headers"]  # the unread body is not drained either


def test_no_answer_shows_the_data_directory(app_client: TestClient, done: dict[str, Any], tmp_path: Path) -> None:
    """Drive the error paths a caller can reach; the data directory's absolute path is in none."""
    private = str(Path(app_client.app.state.settings.data_dir).resolve())  # type: ignore[attr-defined]
    job = done["id"]
    answers = [
        app_client.get(f"/v1/initializations/{job}/files/nope.bin"),
        app_client.get(f"/v1/initializations/{job}/files/..%2F..%2Fetc"),
        app_client.get(f"/v1/initializations/{'0' * 64}/weights"),
        app_client.get(done["links"]["weights"], headers={"If-Match": '"x"'}),
        app_client.get(done["links"]["weights"], headers={"Range": "bytes=99999999-"}),
        app_client.post("/v1/initializations", content=b"{", headers={"content-type": "application/json"}),
        app_client.get("/v1/presets/nobody@1"),
    ]
    # A store whose directory went away: its errors name the setting, not the path.
    data = tmp_path / "gone"
    bare = TestClient(create_app(Settings(data_dir=data, embedded_worker=False)), raise_server_exceptions=False)
    shutil.rmtree(data / "jobs")
    body = {"spec": {"name": "m", "modules": [{"type": "linear", "in_features": 2, "out_features": 2}]},
            "policy": {"preset": "xavier"}}  # fmt: skip
    answers += [
        bare.post("/v1/initializations", json=body),
        bare.get("/readyz"),
        bare.get(f"/v1/initializations/{job}"),
    ]
    assert any(a.status_code >= 500 for a in answers[-3:])  # the missing store was reached
    for answer in answers:
        assert answer.status_code >= 400, answer.request.url
        for secret in (private, str(data.resolve())):
            assert secret not in answer.text, (answer.request.url, answer.text)


def test_a_message_built_from_a_path_names_the_setting(tmp_path: Path) -> None:
    """The net under every message: an error built from a store path (an OSError's filename, a store
    that names its directory) reaches the caller with the setting in the path's place."""
    data = tmp_path / "data"
    app = create_app(Settings(data_dir=data, embedded_worker=False))

    @app.get("/broken")
    def broken() -> None:
        raise StoreUnavailableError(f"the artifact store {data.resolve() / 'jobs'} is missing: mount it")

    answer = TestClient(app).get("/broken")
    assert answer.status_code == 503
    assert answer.json()["error"]["message"] == "the artifact store <INITIUM_DATA_DIR>/jobs is missing: mount it"


def test_a_request_uvicorn_refuses_gets_the_error_envelope(tmp_path: Path) -> None:
    """A NUL in a header (here a Range) is refused by h11 before the app runs: still the JSON envelope."""
    import socket
    import threading
    import time

    import uvicorn

    from initium.service.api.protocol import JsonErrorH11Protocol

    app = create_app(Settings(data_dir=tmp_path, embedded_worker=False))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=JsonErrorH11Protocol, lifespan="off", log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        with socket.create_connection(listener.getsockname(), timeout=5) as connection:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\x00\r\n\r\n")
            answer = b""
            while chunk := connection.recv(4096):
                answer += chunk
    finally:
        server.should_exit = True
        thread.join(5)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["type"] == "bad_request"


def test_reports_revalidate_by_etag(app_client: TestClient, done: dict[str, Any]) -> None:
    for link, media_type in (
        (done["links"]["report"], "application/json"),
        (done["links"]["report_html"], "text/html"),
    ):
        first = app_client.get(link)
        assert first.headers["content-type"].startswith(media_type) and first.headers["cache-control"] == "no-cache"
        assert first.headers["etag"] == f'"{hashlib.sha256(first.content).hexdigest()}"'
        cached = app_client.get(link, headers={"If-None-Match": first.headers["etag"]})
        assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == first.headers["etag"]
        assert app_client.get(link, headers={"If-Match": '"other"'}).status_code == 412
    report = app_client.get(done["links"]["report"]).json()
    assert report["artifact"]["sha256"] == done["sha256"]
