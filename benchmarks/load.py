"""Load: many concurrent clients against a loopback service, every job checked to its sha256.

    .venv/bin/python -m benchmarks.load [--clients 32] [--requests 2000] [--distinct 400] [--url URL] [--keep]

Starts `initium serve` on a free port (or uses --url), then `--clients` asyncio tasks share
`--requests` requests drawn from `--distinct` small specs (MLPs and convnets of varied sizes,
schemes, seeds and dtypes), so some are new jobs and some are cache hits, as a pipeline's traffic
is. Each request is the client's whole path: submit, wait, download with sha256 verification,
and latency is measured over that. It prints errors (must be 0), lost jobs (submitted but never
succeeded: must be 0), p50/p99/max latency and throughput, and exits non-zero when anything failed.
Its folder (the service's store and the downloads) is removed at the end, unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._scratch import add_keep_argument, scratch
from benchmarks._serve import free_port, wait_ready
from initium.client import AsyncClient, RetryPolicy

SCHEMES = [
    {"scheme": "kaiming_normal", "nonlinearity": "relu"},
    {"scheme": "xavier_uniform"},
    {"scheme": "orthogonal"},
    {"scheme": "truncated_normal", "std": 0.02, "a": -0.04, "b": 0.04},
    {"scheme": "lecun_normal"},
]


def small_request(i: int) -> dict[str, Any]:
    """Request number i of the mix: deterministic, so --distinct N means N different jobs."""
    rng = random.Random(i)
    if rng.random() < 0.7:
        widths = [rng.choice([16, 32, 64, 128, 256]) for _ in range(rng.randint(2, 5))]
        modules: list[dict[str, Any]] = []
        for k, (a, b) in enumerate(itertools.pairwise(widths)):
            modules += [{"type": "linear", "name": f"fc{k}", "in_features": a, "out_features": b}, {"type": "relu"}]
    else:
        c = rng.choice([8, 16, 32])
        modules = [
            {"type": "conv2d", "name": "conv", "in_channels": 3, "out_channels": c, "kernel_size": 3},
            {"type": "batch_norm2d", "name": "bn", "num_features": c},
            {"type": "relu"},
            {"type": "flatten"},
            {"type": "linear", "name": "head", "in_features": c, "out_features": 10},
        ]
    scheme = rng.choice(SCHEMES)
    weights = [{"match": {"type": t, "role": "weight"}, "init": scheme} for t in ("linear", "conv2d")]
    return {
        "spec": {"name": f"load{i}", "modules": modules},
        "policy": {
            "rules": [
                {"init": {"scheme": "zeros"}},
                {"match": {"type": "batch_norm2d", "role": "weight"}, "init": {"scheme": "ones"}},
                *weights,
            ]
        },
        "seed": rng.randint(0, 10**6),
        "dtype": rng.choice(["float32", "float32", "bfloat16", "float16"]),
    }


async def one(client: AsyncClient, body: dict[str, Any], folder: Path, n: int) -> float:
    started = time.perf_counter()
    await client.initialize(body, path=folder / f"{n}.safetensors", timeout=300)
    (folder / f"{n}.safetensors").unlink()
    return time.perf_counter() - started


async def run(url: str, clients: int, requests: int, distinct: int, folder: Path) -> dict[str, Any]:
    """The whole load against `url`, each download written into `folder` and removed once verified."""
    latencies: list[float] = []
    errors: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(requests):
        queue.put_nowait(n)

    async def worker() -> None:
        # cache_dir=False: 32 independent pipelines, each downloading what it asks for (no shared client cache)
        async with AsyncClient(url, progress=False, retry=RetryPolicy(max_attempts=5), cache_dir=False) as client:
            while not queue.empty():
                n = queue.get_nowait()
                try:
                    latencies.append(await one(client, small_request(n % distinct), folder, n))
                except Exception as exc:  # counted and reported, never hidden
                    errors.append(f"{type(exc).__name__}: {exc}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - started
    async with httpx.AsyncClient(base_url=url) as http:  # every distinct job must have succeeded
        ids = [(await http.post("/v1/plans", json=small_request(i))).json()["request_id"] for i in range(distinct)]
        states = [(await http.get(f"/v1/initializations/{i}")).json().get("state") for i in ids]
    return {"latencies": latencies, "errors": errors, "wall": wall, "lost": sum(s != "succeeded" for s in states)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--distinct", type=int, default=400)
    parser.add_argument("--url", default=None, help="a running service (default: start one here)")
    add_keep_argument(parser)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    with scratch("initium-load-", args.keep) as folder:  # the store and downloads, gone at the end (issue 18)
        result = serve_and_run(args, folder)
    return report(args, result)


def serve_and_run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The load against --url, or against a service started here on `folder`/data and stopped after."""
    server = None
    url = args.url
    if url is None:
        port = free_port()
        initium = str(Path(sys.executable).parent / "initium")
        server = subprocess.Popen([initium, "serve", "--port", str(port), "--data-dir", str(folder / "data")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
    try:
        if server is not None:
            wait_ready(url)  # inside the try: a service that never gets ready is stopped too
        downloads = folder / "downloads"
        downloads.mkdir()
        return asyncio.run(run(url, args.clients, args.requests, args.distinct, downloads))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)


def report(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """Print the figures of `run`'s result; the exit status (1 when any request failed or was lost)."""
    lat = sorted(result["latencies"])
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [0.0] * 99
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}; {args.clients} clients, {args.requests} requests "
          f"over {args.distinct} distinct specs")  # fmt: skip
    wall = result["wall"]
    print(f"completed {len(lat)}, errors {len(result['errors'])}, lost jobs {result['lost']}, wall {wall:.1f} s, "
          f"{len(lat) / wall:.1f} requests/s")  # fmt: skip
    print(f"latency (submit -> verified file on disk): p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, "
          f"max {lat[-1] * 1000:.0f} ms")  # fmt: skip
    for error in result["errors"][:5]:
        print(f"error: {error}")
    return 0 if not result["errors"] and not result["lost"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
