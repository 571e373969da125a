"""The live download's bounds (issue 17): at most INITIUM_MAX_LIVE_STREAMS bodies followed at once
(past it, the ordinary answer), the planned size parsed from the stored plan once per job, and an
idle body that looks for new bytes less and less often."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from fastapi.responses import StreamingResponse

from initium.service.api import live
from initium.service.api.live import LiveStreams, follow, live_weights
from tests.conftest import MLP_REQUEST
from tests.service.pipeline.test_weights_first import submitted


def test_past_the_limit_a_live_request_gets_the_ordinary_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, job_id = submitted(tmp_path, MLP_REQUEST)  # queued: a live body would follow it
    parsed: list[str] = []
    real = live.planned_size

    def counted(store_: object, job: str) -> int | None:
        parsed.append(job)
        return real(store, job)

    monkeypatch.setattr(live, "planned_size", counted)
    assert live_weights(store, job_id, 1.0, LiveStreams(0)) is None  # INITIUM_MAX_LIVE_STREAMS=0: off
    streams = LiveStreams(1)
    answer = live_weights(store, job_id, 1.0, streams)
    assert isinstance(answer, StreamingResponse)
    data_bytes = (784 * 512 + 512 + 512 * 10 + 10) * 4
    assert int(answer.headers["content-length"]) > 8 + data_bytes  # length prefix, header, data
    streams.entered()  # that body's first step: the one stream allowed is taken
    assert live_weights(store, job_id, 1.0, streams) is None
    streams.left()
    assert isinstance(live_weights(store, job_id, 1.0, streams), StreamingResponse)
    assert parsed == [job_id]  # the plan was read once for the requests that got that far


def test_an_idle_body_polls_less_often_and_gives_its_slot_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep, here = asyncio.sleep, threading.get_ident()

    async def recorded(seconds: float, *args: object) -> None:
        if threading.get_ident() != here:  # another test's server thread, still up in this process
            await real_sleep(seconds, *args)
            return
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recorded)  # the module api.live sleeps through
    streams = LiveStreams(4)

    async def drain() -> None:
        async for _ in follow(list, 10, lambda: "queued", 0.3, streams):
            pass

    with pytest.raises(live.LiveStreamEnded, match="INITIUM_LIVE_IDLE_S"):
        asyncio.run(drain())
    assert slept[:4] == [0.01, 0.02, 0.04, 0.08] and max(slept) == live.MAX_POLL_S
    assert streams.active == 0  # counted while it ran, given back however it ended


def test_a_job_taken_by_a_worker_past_the_idle_bound_keeps_its_stream(tmp_path: Path) -> None:
    """The state is read before the idle bound ends a stream: a job a worker took meanwhile is
    running, and its stream goes on (150 streams once ended the moment their job started)."""
    path = tmp_path / "weights.safetensors"
    threading.Timer(0.4, lambda: path.write_bytes(b"0123456789")).start()

    async def drain() -> bytes:
        got = b""
        async for chunk in follow(lambda: [path], 10, lambda: "running", 0.05):
            got += chunk
        return got

    assert asyncio.run(drain()) == b"0123456789"
