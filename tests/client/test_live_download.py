"""The live download (issue 17): the client receives the weights while the job writes them, and the
file appears only once it hashes to the job's final sha256.

The app runs under a real uvicorn; the worker is this process's own thread (run_one, as a worker
runs it), so a test can hold the write halfway, break it, or corrupt what the stream sends."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from initium.client import AsyncClient, Client, IntegrityError, JobFailedError, RetryPolicy
from initium.client._download import Received, download
from initium.client._fetch import Fetch
from initium.service.api import live
from initium.service.api.app import create_app
from initium.service.config import Settings
from initium.service.jobs.store import WEIGHTS, JobStore
from initium.service.pipeline.loop import run_one
from initium.service.write import directory
from initium.service.write.directory import LocalArtifacts
from initium.service.write.live import live_temporary, mark_live
from tests.conftest import MLP_REQUEST, uvicorn_in_thread

CPU = torch.device("cpu")


class Service:
    """The real app under uvicorn without its embedded worker, and `work(job_id)` to run a job here."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.store = JobStore(data_dir)

    def stored(self, job_id: str) -> bytes:
        """The job's committed weights file, as the store holds it."""
        return LocalArtifacts(self.store.root).path(job_id, WEIGHTS).read_bytes()

    def queued(self, job_id: str) -> None:
        deadline = time.monotonic() + 10
        while not self.store.records.exists(job_id):
            assert time.monotonic() < deadline, "the job was never stored"
            time.sleep(0.01)

    def work(self, job_id: str) -> threading.Thread:
        """One attempt at the job, on a thread of this process."""

        def attempt() -> None:
            self.queued(job_id)
            run_one(self.store, job_id, CPU)

        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    settings = Settings(data_dir=tmp_path / "data", device="cpu", embedded_worker=False, live_idle_s=2.0)
    with uvicorn_in_thread(create_app(settings), settings) as port:
        yield Service(settings.data_dir, port)


def request(seed: int, output: str = "single") -> dict[str, Any]:
    body = copy.deepcopy(MLP_REQUEST)
    body["seed"] = seed
    body["output"] = {"format": output, "max_shard_bytes": 1_000_000}
    return body


def job_id_of(body: dict[str, Any], url: str) -> str:
    plan = httpx.post(f"{url}/v1/plans", json=body, timeout=30).json()
    job_id: str = plan["request_id"]
    return job_id


def held_write(monkeypatch: pytest.MonkeyPatch, after: int = 1) -> threading.Event:
    """The weights' writer stops after `after` chunks until the returned event is set."""
    go = threading.Event()
    original = directory._LocalWriter._store
    calls = {"n": 0}

    def store(self: directory._LocalWriter, chunk: bytes | memoryview) -> None:
        original(self, chunk)
        if self.name == WEIGHTS:
            calls["n"] += 1
            if calls["n"] == after:
                self._file.flush()
                assert go.wait(20), "the test never let the write go on"

    monkeypatch.setattr(directory._LocalWriter, "_store", store)
    return go


def live_parts(folder: Path) -> list[Path]:
    return list(folder.glob(".*.live.partial"))


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


@pytest.mark.parametrize("mode", ["sync", "async", "cache"])
def test_the_stream_starts_before_the_job_finishes_and_the_file_is_the_jobs(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """sync and async: into the caller's path; cache: no path, so into the download cache (the live
    part waits in its .live folder, then becomes the cache's entry)."""
    body = request(seed={"sync": 11, "async": 12, "cache": 19}[mode])
    job_id, target = job_id_of(body, service.url), tmp_path / "out" / "w.safetensors"
    cache = tmp_path / "cache"
    receiving = cache / ".live" if mode == "cache" else target.parent
    go = held_write(monkeypatch)  # the header is written, the first tensor waits
    worker = service.work(job_id)
    results: list[Any] = []

    def initialize() -> None:
        if mode == "cache":
            with Client(service.url, progress=False, cache_dir=cache) as client:
                results.append(client.initialize(body, timeout=60))
            return
        if mode == "sync":
            with Client(service.url, progress=False, cache_dir=False) as client:
                results.append(client.initialize(body, path=target, timeout=60))
            return

        async def go_async() -> None:
            async with AsyncClient(service.url, progress=False, cache_dir=False) as client:
                results.append(await client.initialize(body, path=target, timeout=60))

        asyncio.run(go_async())

    caller = threading.Thread(target=initialize)
    caller.start()
    # Bytes reach the client's part file while the job is still running (its write is held).
    wait_for(lambda: any(p.stat().st_size > 0 for p in live_parts(receiving)), "no live bytes arrived")
    assert service.store.records.load(job_id).state == "running"
    assert not target.exists()
    go.set()
    caller.join(60)
    worker.join(60)
    (result,) = results
    stored = service.stored(job_id)
    if mode == "cache":
        target = cache / result.status.sha256 / f"{job_id[:16]}.safetensors"
    assert result.path == target
    assert target.read_bytes() == stored
    assert hashlib.sha256(stored).hexdigest() == result.status.sha256
    assert live.planned_size(service.store, job_id) == len(stored) == result.status.size
    assert not live_parts(receiving) and not list(target.parent.glob(".*.part"))


def test_a_corrupted_byte_in_the_stream_restarts_from_the_finished_file(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = live._Source.read
    corrupted = {"done": False}

    def flipping(self: live._Source, offset: int, count: int) -> bytes:
        data = original(self, offset, count)
        if data and offset > 8 and not corrupted["done"]:  # past the length prefix: the client reads it whole
            corrupted["done"] = True
            return bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    monkeypatch.setattr(live._Source, "read", flipping)
    body = request(seed=13)
    job_id, target = job_id_of(body, service.url), tmp_path / "w.safetensors"
    service.work(job_id)
    with Client(service.url, progress=False, cache_dir=False) as client:
        result = client.initialize(body, path=target, timeout=60)
    assert corrupted["done"]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == result.status.sha256
    assert target.read_bytes() == service.stored(job_id)


def test_a_stream_cut_short_resumes_from_the_finished_file(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attempt's file vanishes mid-stream (the stream ends short); the job then succeeds, and the
    client asks for the rest with Range + If-Range."""
    go = held_write(monkeypatch)
    body = request(seed=14)
    job_id, target = job_id_of(body, service.url), tmp_path / "w.safetensors"
    worker = service.work(job_id)
    ranges: list[str] = []
    sent = httpx.Client.send

    def recording(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if "range" in request.headers:
            ranges.append(request.headers["range"])
        return sent(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", recording)
    monkeypatch.setattr(live, "CHECK_S", 0.0)
    failing, ended = threading.Event(), threading.Event()
    real_state = live._state

    def state(store: JobStore, job: str) -> str:
        if failing.is_set():
            ended.set()
            return "failed"
        return real_state(store, job)

    monkeypatch.setattr(live, "_state", state)
    with Client(service.url, progress=False, cache_dir=False) as client:
        caller = threading.Thread(target=lambda: client.initialize(body, path=target, timeout=60))
        caller.start()
        wait_for(lambda: any(p.stat().st_size > 0 for p in live_parts(tmp_path)), "no live bytes arrived")
        failing.set()  # the stream ends here, short of its Content-Length
        wait_for(ended.is_set, "the stream went on")
        failing.clear()
        go.set()
        caller.join(60)
    worker.join(60)
    assert target.read_bytes() == service.stored(job_id)
    assert len(ranges) == 1 and ranges[0] != "bytes=0-"


def test_a_failed_write_ends_in_job_failed_and_no_file(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = directory._LocalWriter._store
    calls = {"n": 0}

    def failing(self: directory._LocalWriter, chunk: bytes | memoryview) -> None:
        calls["n"] += 1
        if self.name == WEIGHTS and calls["n"] == 3:
            raise OSError(5, "Input/output error")
        original(self, chunk)

    monkeypatch.setattr(directory._LocalWriter, "_store", failing)
    body = request(seed=15)
    job_id, target = job_id_of(body, service.url), tmp_path / "w.safetensors"
    service.work(job_id)
    with Client(service.url, progress=False, cache_dir=False) as client, pytest.raises(JobFailedError):
        client.initialize(body, path=target, timeout=60)
    assert not target.exists() and not live_parts(tmp_path) and not list(tmp_path.glob(".*.part"))


def test_sharded_output_and_stores_that_cannot_be_followed_fall_back_to_waiting(
    service: Service, tmp_path: Path
) -> None:
    body = request(seed=16, output="sharded")
    job_id = job_id_of(body, service.url)
    with Client(service.url, progress=False, cache_dir=False) as client:
        submitted = client.submit(body)
        answer = httpx.get(f"{service.url}/v1/initializations/{job_id}/weights", params={"live": "1"})
        assert answer.status_code == 409  # as without live=1: nothing to follow for sharded output
        service.work(job_id)
        result = client.initialize(body, path=tmp_path / "sharded", timeout=60)
    assert submitted.id == job_id and result.status.state == "succeeded"
    for f in result.status.files:
        assert hashlib.sha256((tmp_path / "sharded" / f.name).read_bytes()).hexdigest() == f.sha256


def test_another_store_gets_the_ordinary_answer(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    class Elsewhere:
        """An artifact store the API cannot follow (as S3)."""

    store = JobStore(service.store.root, artifacts=Elsewhere())  # type: ignore[arg-type]
    body = request(seed=17)
    with Client(service.url, progress=False, cache_dir=False) as client:
        job_id = client.submit(body).id
    assert live.live_weights(store, job_id, 1.0, live.LiveStreams(8)) is None
    assert live.live_weights(service.store, job_id, 1.0, live.LiveStreams(8)) is not None


def test_an_idle_stream_ends_short_after_the_idle_bound(service: Service) -> None:
    body = request(seed=18)
    with Client(service.url, progress=False, cache_dir=False) as client:
        job_id = client.submit(body).id  # queued, and no worker takes it
    started = time.monotonic()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", f"{service.url}/v1/initializations/{job_id}/weights?live=1", timeout=30) as response,
    ):
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == live.planned_size(service.store, job_id)
        response.read()
    assert 1.9 < time.monotonic() - started < 6.0  # INITIUM_LIVE_IDLE_S is 2 s here


def test_follow_goes_on_in_a_newer_attempts_file(tmp_path: Path) -> None:
    """An attempt that stops is followed by the next one's file from the same offset (same bytes)."""
    data = os.urandom(3 * (1 << 20) + 77)
    final = tmp_path / WEIGHTS
    first = tmp_path / f".{WEIGHTS}.1-aaaaaaaa.partial"
    first.write_bytes(data[: 1 << 20])
    mark_live(final, first)

    async def receive() -> bytes:
        got = bytearray()
        candidates = lambda: [p for p in (final, live_temporary(final)) if p is not None]  # noqa: E731
        async for chunk in live.follow(candidates, len(data), lambda: "running", idle_s=5.0):
            got += chunk
            if len(got) == 1 << 20:  # the first attempt stopped here; a second one writes everything
                second = tmp_path / f".{WEIGHTS}.2-bbbbbbbb.partial"
                second.write_bytes(data)
                mark_live(final, second)
        return bytes(got)

    assert asyncio.run(receive()) == data


@pytest.mark.parametrize("served_right", [True, False])
def test_a_received_part_that_does_not_verify_is_fetched_once_more(tmp_path: Path, served_right: bool) -> None:
    """A whole live part with a wrong byte is dropped and the file fetched from the start; when that
    is wrong too, IntegrityError and no target file."""
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest()
    wrong = bytes([data[0] ^ 1]) + data[1:]
    part = tmp_path / ".w.live.partial"
    part.write_bytes(wrong)
    received = Received(part, hashlib.sha256(wrong), len(wrong))
    asked: list[httpx.Request] = []

    def serve(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, headers={"ETag": f'"{sha}"'}, content=data if served_right else wrong)

    fetch = Fetch("/w", tmp_path / "w.safetensors", sha, len(data))
    with httpx.Client(base_url="http://t", transport=httpx.MockTransport(serve)) as http:
        if served_right:
            assert download(http, fetch, RetryPolicy(max_attempts=1), False, received).read_bytes() == data
        else:
            with pytest.raises(IntegrityError):
                download(http, fetch, RetryPolicy(max_attempts=1), False, received)
            assert not fetch.target.exists()
    assert len(asked) == 1 and "range" not in asked[0].headers  # one fetch, from the start
    assert not part.exists() and not list(tmp_path.glob(".*.part"))
