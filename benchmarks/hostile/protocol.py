"""Items 12-15: HTTP as clients expect (conditional and range requests, bodies, keys, 404s)."""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Any

import httpx

from benchmarks._serve import readme_mlp
from benchmarks.hostile.crashes import disk_full
from benchmarks.hostile.harness import Lab, Verdict, probe
from benchmarks.hostile.jobs import megabytes, short
from benchmarks.hostile.records import shared_job


def weights_answer(lab: Lab, method: str, headers: dict[str, str]) -> httpx.Response:
    seen = lab.scenario(shared_job)
    return httpx.request(method, seen["weights"], headers=headers, timeout=60)


@probe("12a", "HEAD on a job's weights", "200 with the headers (ETag, Content-Length), no body")
def head_weights(lab: Lab) -> Verdict:
    r = weights_answer(lab, "HEAD", {})
    held = r.status_code == 200 and "etag" in r.headers and not r.content
    return Verdict(held, f"{r.status_code}, ETag {r.headers.get('etag', 'none')[:14]}..., {len(r.content)} body bytes")


@probe("12b", "GET the weights with If-None-Match: the current ETag", "304, no body")
def not_modified(lab: Lab) -> Verdict:
    etag = weights_answer(lab, "GET", {"Range": "bytes=0-0"}).headers.get("etag", "")
    r = weights_answer(lab, "GET", {"If-None-Match": etag})
    return Verdict(r.status_code == 304 and not r.content, f"{r.status_code}, {megabytes(len(r.content))}")


@probe("12c", 'GET the weights with If-Match: "wrong"', "412")
def precondition_failed(lab: Lab) -> Verdict:
    r = weights_answer(lab, "GET", {"If-Match": '"wrong"'})
    return Verdict(r.status_code == 412, f"{r.status_code}, {megabytes(len(r.content))}")


@probe("12d", "GET the weights with Range: bytes=abc (malformed)", "ignored: 200 with the whole file")
def bad_range_ignored(lab: Lab) -> Verdict:
    r = weights_answer(lab, "GET", {"Range": "bytes=abc"})
    size = lab.scenario(shared_job)["job"]["size"]
    return Verdict(
        r.status_code == 200 and len(r.content) == size, f"{r.status_code}, {len(r.content)} of {size} bytes"
    )


def post_raw(lab: Lab, content: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{lab.shared().url}/v1/initializations", content=content, headers=headers, timeout=120)


@probe("13a", 'POST /v1/initializations with malformed JSON ({"spec": )', "400")
def malformed_json(lab: Lab) -> Verdict:
    r = post_raw(lab, b'{"spec": ', {"Content-Type": "application/json"})
    return Verdict(r.status_code == 400, f"{r.status_code}: {short(r.text, 100)}")


@probe("13b", "POST /v1/initializations with a 10 MB text/plain body", "415, answer under 4 KB (no echo)")
def text_plain(lab: Lab) -> Verdict:
    body = b"a" * lab.size(10_000_000, 1_000_000)
    r = post_raw(lab, body, {"Content-Type": "text/plain"})
    return Verdict(r.status_code == 415 and len(r.content) < 4096, f"{r.status_code}, {len(r.content):,} bytes back "
                                                                   f"for {len(body):,} sent")  # fmt: skip


@probe("13c", "POST /v1/initializations with Content-Encoding: gzip (the README MLP, gzipped)",
       "415, or decoded within the body limit (200/202)")  # fmt: skip
def gzip_body(lab: Lab) -> Verdict:
    body = gzip.compress(json.dumps(readme_mlp(32)).encode())
    r = post_raw(lab, body, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    return Verdict(r.status_code in (415, 200, 202), f"{r.status_code}: {short(r.text, 100)}")


def with_keys(lab: Lab) -> dict[str, Any]:
    """A service with one API key configured (INITIUM_API_KEY_HASHES), asked without it."""
    key = "hostile-probe-key"
    env = {"INITIUM_API_KEY_HASHES": hashlib.sha256(key.encode()).hexdigest()}
    service = lab.serve(lab.folder("keys") / "data", env=env)
    bad_body = httpx.post(f"{service.url}/v1/initializations", content=b'{"spec": ',
                          headers={"Content-Type": "application/json"}, timeout=60)  # fmt: skip
    docs = {p: httpx.get(f"{service.url}{p}", timeout=60).status_code for p in ("/docs", "/redoc", "/openapi.json")}
    keyed = {p: httpx.get(f"{service.url}{p}", headers={"Authorization": f"Bearer {key}"}, timeout=60).status_code
             for p in docs}  # fmt: skip
    return {"bad_body": bad_body, "docs": docs, "keyed": keyed}


@probe("14a", "API keys configured: POST malformed JSON without a key", "401: the key is checked before the body")
def key_first(lab: Lab) -> Verdict:
    r = lab.scenario(with_keys)["bad_body"]
    return Verdict(r.status_code == 401, f"{r.status_code}: {short(r.text, 100)}")


@probe("14b", "API keys configured, docs setting left at its default: GET /docs, /redoc, /openapi.json",
       "closed (not 200) without a key")  # fmt: skip
def docs_closed(lab: Lab) -> Verdict:
    seen = lab.scenario(with_keys)
    held = all(code != 200 for code in seen["docs"].values())
    return Verdict(held, f"without a key {seen['docs']}; with it {seen['keyed']}")


@probe("14c", "the disk-full answers of 5a-5c", "no server file path in any message")
def no_paths(lab: Lab) -> Verdict:
    seen = lab.scenario(disk_full)
    texts = [seen[k].text for k in ("job", "preset", "ready")]
    leaks = [t for t in texts if seen["path"] in t or "/tmp/" in t]
    return Verdict(not leaks, f"{len(leaks)} of 3 answers show a path" + (f": {short(leaks[0], 80)}" if leaks else ""))


@probe("15a", "GET /v1/presets/no-such-preset", "404")
def unknown_preset(lab: Lab) -> Verdict:
    r = httpx.get(f"{lab.shared().url}/v1/presets/no-such-preset", timeout=60)
    return Verdict(r.status_code == 404, f"{r.status_code}: {short(r.text, 100)}")
