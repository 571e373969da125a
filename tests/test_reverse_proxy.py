"""deploy/nginx.conf.template run by Debian's nginx in front of a served API (issue 16 item 10):
slow heads and bodies time out, a stalled download is cut at send_timeout and frees the API's side,
and a normal request passes with its headers (ETag, Range, X-Request-ID)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from initium.service.config import Settings
from tests.conftest import free_port, wait_for_job

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf.template"
# `make test` installs nginx (Debian); without it these tests skip, unless INITIUM_REQUIRE_NGINX is set
# (as the Makefile does), where a missing binary is a failure. /usr/sbin is not on a user's PATH.
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
if NGINX is None and os.environ.get("INITIUM_REQUIRE_NGINX"):
    raise RuntimeError("INITIUM_REQUIRE_NGINX is set but nginx is not installed (apt-get install nginx)")
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make test installs it)")

# Short in the test, the shipped values in the file (a test below checks those).
SHORT = {"client_header_timeout": "1s", "client_body_timeout": "1s", "send_timeout": "2s"}
SHIPPED = {"client_header_timeout": "10s", "client_body_timeout": "15s", "send_timeout": "60s"}


def render(upstream: str, port: int, timeouts: dict[str, str]) -> str:
    """The template with its ${...} names filled as the nginx image's envsubst does, and `timeouts`
    replacing the shipped values of those directives."""
    text = TEMPLATE.read_text()
    values = {
        "INITIUM_UPSTREAM": upstream,
        "NGINX_PORT": str(port),
        "INITIUM_MAX_BODY_BYTES": str(Settings().max_body_bytes),
    }
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    for directive, value in timeouts.items():
        text, count = re.subn(rf"^{directive} \S+;$", f"{directive} {value};", text, flags=re.M)
        assert count == 1, directive
    return text


@pytest.fixture(scope="module")
def proxy(served: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """nginx with the rendered template, prefix and temp dirs of its own; yields (its URL, the API's port)."""
    root = tmp_path_factory.mktemp("nginx")
    root.chmod(0o755)
    api_port = int(served.rsplit(":", 1)[1])
    port = free_port()
    (root / "initium.conf").write_text(render(f"127.0.0.1:{api_port}", port, SHORT))
    temps = "\n".join(
        f"  {kind}_temp_path {root / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers under the test's own user (tmp dirs are private)
    (root / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {root / 'nginx.pid'};\nerror_log {root / 'error.log'} info;\n"
        f"events {{ worker_connections 512; }}\nhttp {{\n  access_log {root / 'access.log'};\n{temps}\n"
        f"  include {root / 'initium.conf'};\n}}\n"
    )
    assert NGINX is not None
    process = subprocess.Popen([NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (root / "error.log").read_text()
            time.sleep(0.05)
        yield url, api_port
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def large_job(served: str) -> dict[str, Any]:
    """A 16 MB file: more than nginx's buffers and the kernel's socket buffers hold."""
    request = {
        "spec": {
            "name": "wide",
            "modules": [{"type": "linear", "name": "fc", "in_features": 2048, "out_features": 2048}],
        },
        "policy": {
            "rules": [
                {"match": {"role": "weight"}, "init": {"scheme": "kaiming_normal"}},
                {"match": {"role": "bias"}, "init": {"scheme": "zeros"}},
            ]
        },
        "seed": 3,
        "dtype": "float32",
    }
    with httpx.Client(base_url=served, timeout=30) as http:
        done = wait_for_job(http, http.post("/v1/initializations", json=request).json()["id"])
    assert done["state"] == "succeeded"
    return done


def _connect(url: str, head: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing
    sock.sendall(head)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the peer ended the connection within `seconds` (FIN or RST), and what it sent first."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


def test_slow_request_heads_are_closed_after_the_header_timeout(proxy: tuple[str, int]) -> None:
    url, _ = proxy
    started = time.monotonic()
    socks = [_connect(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(20)]
    outcomes = [_closed_within(s, 5) for s in socks]
    assert all(closed for closed, _ in outcomes) and time.monotonic() - started < 5
    assert {data[:12] for _, data in outcomes} <= {b"", b"HTTP/1.1 408"}
    for s in socks:
        s.close()


def test_a_body_shorter_than_its_content_length_times_out(proxy: tuple[str, int]) -> None:
    url, _ = proxy
    head = b"POST /v1/plans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    sock = _connect(url, head + b'{"spec":')
    started = time.monotonic()
    closed, data = _closed_within(sock, 5)
    assert closed and time.monotonic() - started < 5
    assert data[:12] in (b"", b"HTTP/1.1 408")
    sock.close()


def _stalled_on_api(api_port: int) -> int:
    """Connections the API is sending on with bytes its peer has not taken (tx_queue > 0)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            tx_queue = int(fields[4].split(":")[0], 16)
            count += local_port == api_port and fields[3] == "01" and tx_queue > 0
    return count


def test_a_stalled_download_is_cut_and_frees_the_api(proxy: tuple[str, int], large_job: dict[str, Any]) -> None:
    url, api_port = proxy
    sock = _connect(url, f"GET {large_job['links']['weights']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    deadline = time.monotonic() + 2
    while _stalled_on_api(api_port) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stalled_on_api(api_port) >= 1, "the API's side waits while the client reads nothing"
    closed, data = _closed_within(sock, 6)  # send_timeout 2s
    assert closed and data.startswith(b"HTTP/1.1 200") and len(data) < large_job["size"]
    deadline = time.monotonic() + 3
    while _stalled_on_api(api_port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stalled_on_api(api_port) == 0
    sock.close()


def test_requests_and_downloads_pass_through_with_their_headers(
    proxy: tuple[str, int], served: str, large_job: dict[str, Any]
) -> None:
    url, _ = proxy
    weights = large_job["links"]["weights"]
    with httpx.Client(base_url=url, timeout=30) as via, httpx.Client(base_url=served, timeout=30) as direct:
        whole = via.get(weights, headers={"X-Request-ID": "probe-1"})
        assert whole.status_code == 200 and whole.headers["x-request-id"] == "probe-1"
        assert whole.headers["etag"] == direct.get(weights).headers["etag"] == f'"{large_job["sha256"]}"'
        assert len(whole.content) == large_job["size"]
        part = via.get(weights, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{large_job['size']}"
        assert re.fullmatch(r"[0-9a-f]{32}", via.get("/healthz").headers["x-request-id"])  # nginx's own id
        too_large = via.post("/v1/plans", content=b" " * (Settings().max_body_bytes + 1))
        assert too_large.status_code == 413


def test_the_shipped_file_keeps_the_production_timeouts() -> None:
    text = TEMPLATE.read_text()
    for directive, value in SHIPPED.items():
        assert re.search(rf"^{directive} {value};$", text, flags=re.M), directive
    assert re.search(r"^client_max_body_size \$\{INITIUM_MAX_BODY_BYTES\};$", text, flags=re.M)
    assert "proxy_max_temp_file_size 0;" in text  # stalled downloads never spill to the proxy's disk
