"""Items 7-10: one user slowing everyone down."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks._serve import readme_mlp
from benchmarks.hostile.files import PLAN_CAP, refused
from benchmarks.hostile.harness import REPO, Lab, Verdict, connects, probe, redis, rss_mb, wait_until
from benchmarks.hostile.jobs import (
    ZEROS,
    capped_post,
    finished,
    megabytes,
    short,
    status,
    submit,
    terminal,
    tiny_tensors,
    wait_job,
    wide,
)
from benchmarks.llama7b import LLAMA_7B


def small_behind_large(lab: Lab) -> dict[str, Any]:
    """The embedded default on the CPU: the Llama-7B-shaped job running, then the README MLP."""
    service = lab.serve(lab.folder("lanes") / "data", "--device", "cpu")
    large = submit(service.url, LLAMA_7B)["id"]
    wait_job(service.url, large, lambda j: j["state"] == "running" or terminal(j), 300)
    started = time.monotonic()
    small = submit(service.url, readme_mlp(21))["id"]
    limit = lab.size(60, 20)
    try:
        job = wait_job(service.url, small, lambda j: j["state"] != "queued", limit)
        wait: float | None = time.monotonic() - started
    except TimeoutError:
        job, wait = status(service.url, small), None
    return {"wait": wait, "limit": limit, "large": status(service.url, large)["state"], "small": job["state"]}


@probe("7a", "embedded default (--device cpu): the README MLP submitted while the Llama-7B-shaped job runs",
       "the small job's queue wait is under 2 s")  # fmt: skip
def small_wait(lab: Lab) -> Verdict:
    seen = lab.scenario(small_behind_large)
    if seen["wait"] is None:
        return Verdict(False, f"still queued after {seen['limit']} s (the large job {seen['large']})")
    return Verdict(seen["wait"] < 2.0, f"waited {seen['wait']:.2f} s (the large job {seen['large']})")


def routed(lab: Lab) -> dict[str, Any]:
    """Celery, no worker up: where the broker holds the 7B-shaped job's message and the small one's."""
    import redis as redis_py

    folder = lab.folder("routing")
    broker = redis(lab, folder)
    service = lab.serve(folder / "data", "--broker", broker, ready=False)
    ids = {"large": submit(service.url, LLAMA_7B)["id"], "small": submit(service.url, readme_mlp(22))["id"]}
    time.sleep(1.0)
    client = redis_py.Redis.from_url(broker)
    where: dict[str, str] = {}
    for key in client.keys("*"):
        if client.type(key) != b"list":
            continue
        for message in client.lrange(key, 0, -1):
            for kind, job_id in ids.items():
                if job_id.encode() in message:
                    where[kind] = key.decode() if isinstance(key, bytes) else str(key)
    return where


@probe("7b", "Celery: the Llama-7B-shaped job (13.5 GB planned) and the README MLP submitted, no worker up",
       "the large job waits in a queue of its own (default threshold about 1 GB)")  # fmt: skip
def large_routed(lab: Lab) -> Verdict:
    where = lab.scenario(routed)
    if len(where) < 2:
        return Verdict(False, f"messages found for {sorted(where)} only")
    return Verdict(where["large"] != where["small"], f"large in {where['large']!r}, small in {where['small']!r}")


def tiny_flood(lab: Lab) -> dict[str, Any]:
    service = lab.serve(lab.folder("tiny") / "data")
    body = tiny_tensors(10_000)
    started = time.perf_counter()
    try:
        response = httpx.post(f"{service.url}/v1/initializations", json=body, timeout=lab.size(120, 60))
        answer = f"{response.status_code}: {short(response.text, 60)}"
        code = response.status_code
    except httpx.TimeoutException:
        answer, code = "no answer", 0
    return {"code": code, "answer": answer, "seconds": time.perf_counter() - started,
            "rss": rss_mb(service.process.pid, "VmHWM"), "bytes": len(str(body))}  # fmt: skip


@probe("8a", "a 250-byte request for 200,000 tiny tensors (a repeat of 10,000 x 10 Linear(1, 1))",
       "refused within 5 s (4xx naming the limit, 100,000 tensors by default)")  # fmt: skip
def tiny_refused(lab: Lab) -> Verdict:
    seen = lab.scenario(tiny_flood)
    held = 400 <= seen["code"] < 500 and seen["seconds"] < 5
    return Verdict(held, f"{seen['answer']} after {seen['seconds']:.1f} s; API peak RSS {seen['rss']:.0f} MB")


def big_plan(lab: Lab) -> dict[str, Any]:
    """POST /v1/plans for many tensors (under the default limit) while /healthz is timed every 20 ms."""
    service = lab.serve(lab.folder("big-plan") / "data")
    body = tiny_tensors(lab.size(9_000, 3_000), bias=False)
    latencies: list[float] = []
    done = threading.Event()

    def ping() -> None:
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                t = time.perf_counter()
                client.get(f"{service.url}/healthz")
                latencies.append(time.perf_counter() - t)
                time.sleep(0.02)

    pinger = threading.Thread(target=ping)
    pinger.start()
    try:
        code, read, seconds, download = capped_post(f"{service.url}/v1/plans", body, 64_000_000, timeout=600)
    finally:
        done.set()
        pinger.join()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan")
    return {"code": code, "read": read, "seconds": seconds, "p99": p99, "pings": len(latencies), "download": download,
            "tensors": lab.size(90_000, 30_000), "rss": rss_mb(service.process.pid, "VmHWM")}  # fmt: skip


@probe("8b", "POST /v1/plans for 90,000 tiny tensors while /healthz is called every 20 ms",
       "healthz p99 under 100 ms during the plan")  # fmt: skip
def healthz_during_plan(lab: Lab) -> Verdict:
    seen = lab.scenario(big_plan)
    return Verdict(seen["p99"] < 0.1 and seen["pings"] >= 10,
                   f"p99 {seen['p99'] * 1000:.0f} ms over {seen['pings']} calls during {seen['seconds']:.1f} s "
                   f"({seen['tensors']:,} tensors); API peak RSS {seen['rss']:.0f} MB")  # fmt: skip


@probe("8c", "the same plan's answer", f"at most {megabytes(PLAN_CAP)} inline; past that a download "
       "(Content-Disposition: attachment, streamed), bounded by the tensor and name limits")  # fmt: skip
def plan_bounded(lab: Lab) -> Verdict:
    seen = lab.scenario(big_plan)
    more = "+ (stopped reading)" if seen["read"] > 64_000_000 else ""
    kind = "a download" if seen["download"] else "inline"
    held = seen["code"] == 200 and (seen["download"] or seen["read"] <= PLAN_CAP) and seen["read"] <= 64_000_000
    return Verdict(held, f"{seen['code']}, {megabytes(seen['read'])}{more} {kind}")


def many_presets(lab: Lab) -> dict[str, Any]:
    """Presets of 10,000 rules each written into the preset directory (as an older server accepted them)."""
    data = lab.folder("presets") / "data"
    (data / "presets").mkdir(parents=True)
    count = lab.size(30, 5)
    rule = (
        '{{"match": {{"type": "linear", "role": "weight", "name": "model.layers.{}.self_attn.q_proj.weight"}}, '
        '"init": {{"scheme": "normal", "std": 0.02}}}}'
    )
    rules = ",".join(rule.format(j) for j in range(10_000))
    for i in range(count):
        text = f'{{"name": "bulk{i}", "version": 1, "description": "bulk", "rules": [{rules}]}}'
        (data / "presets" / f"bulk{i}@1.json").write_text(text)
    total = sum(p.stat().st_size for p in (data / "presets").iterdir())
    service = lab.serve(data)
    plans = [timed(lambda: httpx.post(f"{service.url}/v1/plans", json=readme_mlp(), timeout=300)) for _ in range(4)]
    lists = [timed(lambda: httpx.get(f"{service.url}/v1/presets", timeout=300)) for _ in range(2)]
    listed = httpx.get(f"{service.url}/v1/presets", timeout=300).json()["presets"]
    bulk = sum(p["name"].startswith("bulk") for p in listed)
    return {"count": count, "bytes": total, "plan": sorted(plans[1:])[1], "list": lists[-1], "listed": bulk}


def timed(call: Callable[[], httpx.Response]) -> float:
    started = time.perf_counter()
    call().raise_for_status()
    return time.perf_counter() - started


@probe("9a", "30 published presets of 10,000 rules each (45 MB) in the preset directory; plan the README MLP",
       "planning is not slowed by them: under 1 s (median of 3, after a first request)")  # fmt: skip
def plan_with_presets(lab: Lab) -> Verdict:
    seen = lab.scenario(many_presets)
    return Verdict(
        seen["plan"] < 1.0, f"{seen['plan']:.2f} s with {seen['count']} presets ({megabytes(seen['bytes'])})"
    )


@probe("9b", "GET /v1/presets with the same presets", "under 5 s (a second call: the presets are cached)")
def list_with_presets(lab: Lab) -> Verdict:
    seen = lab.scenario(many_presets)
    return Verdict(seen["list"] < 5.0, f"{seen['list']:.2f} s with {seen['count']} presets ({seen['listed']} listed)")


def publish(lab: Lab, version: int, rules: int) -> httpx.Response:
    body = {"name": f"hostile-{rules}", "version": version, "description": "probe", "rules": ZEROS["rules"] * rules}
    return httpx.post(f"{lab.shared().url}/v1/presets", json=body, timeout=60)


@probe("9c", "POST /v1/presets with 1,001 rules", "refused: 413/422 naming the bound (1,000 rules)")
def preset_rules_bounded(lab: Lab) -> Verdict:
    response = publish(lab, 1, 1_001)
    return refused((response.status_code, response.text))


@probe("9d", "POST /v1/presets as version 10^30", "refused with 422 (versions below 2^31)")
def preset_version_bounded(lab: Lab) -> Verdict:
    response = publish(lab, 10**30, 1)
    return refused((response.status_code, response.text), (422,))


def stalled_downloads(lab: Lab) -> dict[str, Any]:
    """Connections that ask for a 67 MB file and never read, with small receive buffers."""
    service = lab.serve(lab.folder("stalled") / "data")
    job = finished(service.url, wide(1, seed=3))
    before = rss_mb(service.process.pid)
    request = f"GET /v1/initializations/{job['id']}/weights HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    sockets: list[socket.socket] = []
    refused_n = 0
    try:
        for _ in range(lab.size(800, 200)):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            try:
                s.connect(("127.0.0.1", int(service.url.rsplit(":", 1)[1])))
                s.sendall(request)
            except OSError:
                refused_n += 1
            sockets.append(s)
        time.sleep(lab.size(10, 5))
        peak = rss_mb(service.process.pid)
        started = time.perf_counter()
        try:
            health = f"{httpx.get(f'{service.url}/healthz', timeout=30).status_code}"
        except httpx.HTTPError as exc:
            health = type(exc).__name__
        took = time.perf_counter() - started
    finally:
        for s in sockets:
            s.close()
    return {"n": len(sockets), "refused": refused_n, "before": before, "peak": peak, "health": health, "took": took}


@probe("10a", "800 connections that request a 67 MB download and never read (API directly)",
       "the API's RSS grows by under 256 MB and /healthz answers within 1 s")  # fmt: skip
def stalled_bounded(lab: Lab) -> Verdict:
    seen = lab.scenario(stalled_downloads)
    held = seen["peak"] - seen["before"] < 256 and seen["took"] < 1.0
    return Verdict(held, f"{seen['n']} connections ({seen['refused']} refused): RSS {seen['before']:.0f} -> "
                         f"{seen['peak']:.0f} MB; /healthz {seen['health']} in {seen['took']:.2f} s")  # fmt: skip


def nginx_conf(folder: Path, listen: int, api: str) -> tuple[Path | None, str]:
    """deploy/'s nginx configuration, pointed at `api` and listening on loopback `listen`; (None, why not)."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    confs = sorted(p for p in (REPO / "deploy").rglob("*.conf*") if "nginx" in p.read_text() or "proxy_pass" in
                   p.read_text()) if (REPO / "deploy").is_dir() else []  # fmt: skip
    if not confs:
        return None, "skipped: no nginx configuration under deploy/ in this tree"
    if binary is None:
        return None, "skipped: no nginx binary here (Debian package nginx-light)"
    # The template's envsubst names (docker-compose.yml sets them), then the literal forms a plain file has.
    names = {"INITIUM_UPSTREAM": api, "NGINX_PORT": str(listen), "INITIUM_MAX_BODY_BYTES": str(16 << 20)}
    text = re.sub(r"\$\{(\w+)\}", lambda m: names.get(m[1], os.environ.get(m[1], m[0])), confs[0].read_text())
    text = re.sub(r"(?m)^\s*(user|pid|daemon)\s[^;]*;", "", text)
    text = re.sub(r"listen\s+[^;]+;", f"listen 127.0.0.1:{listen};", text)
    text = re.sub(r"(\bserver\s+)[A-Za-z0-9_.-]+:\d+", rf"\g<1>{api}", text)
    text = re.sub(r"(proxy_pass\s+http://)[A-Za-z0-9_.-]+:\d+", rf"\g<1>{api}", text)
    if "events" not in text:
        text = f"events {{}}\nhttp {{\n{text}\n}}\n"
    path = folder / "nginx.conf"
    path.write_text(text)
    return path, binary


def seconds_of(conf: str, directive: str) -> float:
    """An nginx timeout directive's value in seconds (nginx's default, 60 s, when absent)."""
    found = re.search(rf"{directive}\s+(\d+)(ms|s|m)?\s*;", conf)
    if not found:
        return 60.0
    return int(found[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[found[2]]


def behind_proxy(lab: Lab) -> dict[str, Any]:
    """nginx with deploy/'s configuration in front of a default service: slowloris and a short body."""
    folder = lab.folder("proxy")
    service = lab.serve(folder / "data")
    port = lab.port()
    conf, binary = nginx_conf(folder, port, service.url.removeprefix("http://"))
    if conf is None:
        return {"skip": binary}
    (folder / "logs").mkdir()
    lab.spawn([binary, "-p", str(folder), "-c", str(conf), "-g", f"daemon off; pid {folder}/nginx.pid; "
               f"error_log {folder}/logs/error.log;"], folder / "nginx.log")  # fmt: skip
    wait_until(lambda: connects(port), 10, "nginx listening")
    text = conf.read_text()
    header_s, body_s = seconds_of(text, "client_header_timeout"), seconds_of(text, "client_body_timeout")
    n = lab.size(3_000, 300)
    slow = slowloris(port, n, min(header_s, 60) + 10)
    short_body = short_post(port, min(body_s, 60) + 10)
    return {"n": n, "slow": slow, "short": short_body, "header_s": header_s, "body_s": body_s}


def slowloris(port: int, n: int, limit: float) -> tuple[int, int, float]:
    """`n` connections sending a header line every 5 s and never ending the header: (closed by the
    server, of which refused at connect, seconds). An answer (408, or 503 past a cap) or a close counts."""
    sockets: list[socket.socket] = []
    for _ in range(n):
        with contextlib.suppress(OSError):  # refused at connect: a cap did its job, counted as closed
            s = socket.create_connection(("127.0.0.1", port), 5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            sockets.append(s)
    waiting = selectors.DefaultSelector()  # epoll: select() stops at descriptor 1024
    for s in sockets:
        waiting.register(s, selectors.EVENT_READ)
    started = last = time.monotonic()
    try:
        while waiting.get_map() and time.monotonic() - started < limit:
            for key, _ in waiting.select(1.0):
                waiting.unregister(key.fileobj)
            if time.monotonic() - last > 5:
                last = time.monotonic()
                for key in list(waiting.get_map().values()):
                    try:
                        key.fileobj.sendall(b"X-a: b\r\n")  # type: ignore[union-attr]
                    except OSError:
                        waiting.unregister(key.fileobj)
        still_open = len(waiting.get_map())
    finally:
        waiting.close()
        for s in sockets:
            s.close()
    return n - still_open, n - len(sockets), time.monotonic() - started


def short_post(port: int, limit: float) -> str:
    """A POST whose body is 990 bytes shorter than its Content-Length: what the proxy does within `limit`."""
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(b"POST /v1/plans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"spec\": ")  # fmt: skip
        s.settimeout(limit)
        started = time.monotonic()
        try:
            first = s.recv(200).split(b"\r\n", 1)[0].decode(errors="replace")
        except TimeoutError:
            return f"no answer after {limit:.0f} s"
        except ConnectionResetError:  # nginx's reset_timedout_connection
            first = "reset"
        return f"{first or 'closed'} after {time.monotonic() - started:.1f} s"


@probe("10b", "3,000 slowloris connections (header never finished) through nginx per deploy/",
       "every one closed by the proxy's header timeout")  # fmt: skip
def slowloris_closed(lab: Lab) -> Verdict:
    seen = lab.scenario(behind_proxy)
    if "skip" in seen:
        return Verdict(None, seen["skip"])
    closed, refused_n, took = seen["slow"]
    return Verdict(closed == seen["n"], f"{closed} of {seen['n']} closed ({refused_n} at connect) within {took:.0f} s "
                                        f"(client_header_timeout {seen['header_s']:.0f} s)")  # fmt: skip


@probe("10c", "a POST whose body is shorter than its Content-Length, through nginx per deploy/",
       "timed out by the proxy (408 or closed), never left hanging")  # fmt: skip
def short_body_timed_out(lab: Lab) -> Verdict:
    seen = lab.scenario(behind_proxy)
    if "skip" in seen:
        return Verdict(None, seen["skip"])
    return Verdict(
        not seen["short"].startswith("no answer"), f"{seen['short']} (client_body_timeout {seen['body_s']:.0f} s)"
    )
