"""The HTML report of a ResNet-18 (62 parameter tensors, 60 buffers) laid out by a real headless
Chromium at 1400 and 390 px wide: the page never overflows sideways, the parameter table fits at
1400 px and scrolls in its own box at 390, shapes stay on one line, no SVG text is stroked, and the
browser reports no error.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages
ended by NUL on file descriptors 3 and 4), one browser for both widths: `--window-size` cannot go
under 500 px in headless mode and `--dump-dom` cannot read a layout value back, while the protocol's
device metrics emulate any width and Runtime.evaluate reads the measurements.

The screenshots go to $INITIUM_REPORT_SHOTS when it is set (docs/report-page/ keeps the ones the
docs show: `INITIUM_REPORT_SHOTS=docs/report-page pytest tests/service/api/test_report_page.py`).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import wait_for_job

CHROMIUM = shutil.which("chromium")
# A closed network and a root user (the machine's notes): no sandbox, no background traffic.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--remote-debugging-pipe"]  # fmt: skip
WIDTHS = (1400, 390)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium is not installed (make debs)"
)


class DevTools:
    """A Chromium over --remote-debugging-pipe: `call` sends one command to the page's session and
    returns its result; the events that arrive meanwhile are kept in `events`."""

    def __init__(self, chromium: str, profile: Path, timeout: float = 60.0) -> None:
        to_chromium, self._commands = os.pipe()
        self._replies, from_chromium = os.pipe()
        # bash puts the pipe ends on fds 3 and 4 before it becomes chromium; from fds of 10 or more,
        # so neither move overwrites the other's source (no preexec_fn: unsafe in a threaded process).
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chromium, from_chromium)]
        for fd in (to_chromium, from_chromium):
            os.close(fd)
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{ends[0]} 4>&{ends[1]}', chromium, *FLAGS,
             f"--user-data-dir={profile}", "about:blank"],
            pass_fds=ends, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for fd in ends:
            os.close(fd)
        self.timeout, self._next, self._buffer = timeout, 0, b""
        self.events: list[dict[str, Any]] = []
        target = self._send("Target.createTarget", {"url": "about:blank"}, None)["targetId"]
        self.session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True}, None)["sessionId"]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self._send(method, params, self.session)

    def wait_for(self, event: str) -> dict[str, Any]:
        """The first `event` kept or still to come (it is taken out of `events`)."""
        while True:
            for kept in self.events:
                if kept.get("method") == event:
                    self.events.remove(kept)
                    return kept
            self.events.append(self._read())

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError, RuntimeError):  # it may close before it answers
            self._send("Browser.close", {}, None)
        os.close(self._commands)
        os.close(self._replies)
        self.process.wait(timeout=self.timeout)

    def _send(self, method: str, params: dict[str, Any], session: str | None) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while (reply := self._read()).get("id") != self._next:
            self.events.append(reply)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._replies, 1 << 20) if ready else b""
            if not chunk:
                raise TimeoutError("chromium did not answer") if not ready else EOFError("chromium exited")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed


def resnet18() -> dict[str, Any]:
    """torchvision's resnet18 without its pooling layers (state_dict names and shapes alike)."""
    modules: list[dict[str, Any]] = [
        {"type": "conv2d", "name": "conv1", "in_channels": 3, "out_channels": 64, "kernel_size": 7, "stride": 2,
         "padding": 3, "bias": False},
        {"type": "batch_norm2d", "name": "bn1", "num_features": 64}, {"type": "relu"},
    ]  # fmt: skip
    width = 64
    for i, (channels, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], 1):
        modules.append({"type": "sequential", "name": f"layer{i}", "modules": [
            {"type": "resnet_basic", "in_channels": width, "channels": channels, "stride": stride},
            {"type": "resnet_basic", "in_channels": channels, "channels": channels}]})  # fmt: skip
        width = channels
    modules += [{"type": "flatten"}, {"type": "linear", "name": "fc", "in_features": 512, "out_features": 1000}]
    return {"name": "resnet18", "modules": modules}


@pytest.fixture(scope="module")
def page(app_client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A 16x16 probe leaves a 1x1 map before `fc`: the probe runs without pooling layers.
    body = {
        "spec": resnet18(),
        "policy": {"preset": "resnet-kaiming"},
        "seed": 0,
        "report": {"probe_shape": [3, 16, 16]},
    }
    job = app_client.post("/v1/initializations", json=body).json()
    assert wait_for_job(app_client, job["id"], timeout=120)["state"] == "succeeded"
    html = app_client.get(f"/v1/initializations/{job['id']}/report.html")
    assert html.status_code == 200
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(html.text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    assert CHROMIUM is not None, "CI must have chromium: `make test` installs it"
    tools = DevTools(CHROMIUM, tmp_path_factory.mktemp("profile"))
    try:
        yield tools
    finally:
        tools.close()


# What the page's layout says, read in the page: sideways overflow, the parameter table's own
# scrolling, shapes that wrap (a text run on more than one line) and SVG text with a stroke.
MEASURE = """JSON.stringify((() => {
  const root = document.documentElement, table = document.querySelector('.scroll');
  const lines = td => { const r = document.createRange(); r.selectNodeContents(td); return r.getClientRects().length; };
  return {
    scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, innerWidth: window.innerWidth,
    height: root.scrollHeight, tableScroll: table.scrollWidth, tableBox: table.clientWidth,
    rows: table.querySelectorAll('tbody tr').length,
    wrappedShapes: [...document.querySelectorAll('td.shape')].filter(td => lines(td) > 1).length,
    strokedText: [...document.querySelectorAll('svg text')].filter(t => getComputedStyle(t).stroke !== 'none').length,
    plots: document.querySelectorAll('svg.plot').length,
    buffers: document.querySelector('details > summary').textContent,
  };
})())"""


def _layout(browser: DevTools, page: Path, width: int) -> dict[str, Any]:
    browser.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
    browser.call("Page.navigate", url=page.as_uri())
    browser.wait_for("Page.loadEventFired")
    value = browser.call("Runtime.evaluate", expression=MEASURE, returnByValue=True)["result"]["value"]
    layout: dict[str, Any] = json.loads(value)
    return layout


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_page_fits_a_desktop_and_a_phone(browser: DevTools, page: Path, tmp_path: Path) -> None:
    for domain in ("Page", "Runtime", "Log"):  # load events; script errors and console errors; the browser's own
        browser.call(f"{domain}.enable")
    shots = Path(os.environ.get("INITIUM_REPORT_SHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    layouts = {}
    for width in WIDTHS:
        layouts[width] = layout = _layout(browser, page, width)
        png = base64.b64decode(browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        (shots / f"{width}.png").write_bytes(png)
        assert layout["innerWidth"] == width
        assert layout["scrollWidth"] <= layout["clientWidth"] <= width, layout  # no page-level sideways scroll
        assert _png_size(png) == (width, layout["height"]) and len(png) > 50_000  # the whole page, drawn
        assert layout["rows"] == 62 and layout["buffers"].startswith("60 buffers (running_mean, running_var")
        assert layout["wrappedShapes"] == 0 and layout["strokedText"] == 0
        assert layout["plots"] == 2 + 4  # std scatter, depth lines, the 4 largest weights' histograms
    assert layouts[1400]["tableScroll"] <= layouts[1400]["tableBox"]  # the table fits a desktop
    assert layouts[390]["tableScroll"] > layouts[390]["tableBox"]  # on a phone it scrolls in its own box
    errors = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]  # fmt: skip
    assert errors == []
