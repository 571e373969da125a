"""`initium serve`: the API on uvicorn with its embedded worker (what `make serve` runs), or the API
alone in front of Celery workers; `initium worker`: one Celery worker (one per GPU)."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Any

import uvicorn

from initium.service import logs
from initium.service.api.app import create_app
from initium.service.api.protocol import JsonErrorH11Protocol
from initium.service.config import Settings
from initium.service.jobs.queue import LARGE_QUEUE, QUEUE


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="job store and artifacts (default $INITIUM_DATA_DIR or .initium-data)",
    )
    parser.add_argument("--device", default=None, help="worker device: auto (default), cpu or cuda")
    parser.add_argument("--no-worker", action="store_true", help="API only; workers run elsewhere")
    parser.add_argument(
        "--broker", default=None, help="Celery broker (e.g. redis://host:6379/0; default $INITIUM_BROKER_URL): "
        "jobs go to `initium worker` processes instead of the embedded worker",
    )  # fmt: skip


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default=None, help="Celery broker URL (default $INITIUM_BROKER_URL)")
    parser.add_argument("--data-dir", type=Path, default=None, help="the API's data directory (a shared volume)")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--name", default=None, help="worker node name (default initium-<pid>@<host>)")
    parser.add_argument(
        "--queues", type=_queues, default=(LARGE_QUEUE, QUEUE), metavar="Q[,Q]",
        help=f"the queues this worker takes jobs from, comma-separated: {LARGE_QUEUE} (jobs of at least "
        f"INITIUM_LARGE_JOB_BYTES) and/or {QUEUE} (smaller ones); default both. Give at least one worker "
        f"{QUEUE} alone (a CPU is enough), so small jobs never wait behind large ones",
    )  # fmt: skip


def _queues(value: str) -> tuple[str, ...]:
    queues = tuple(dict.fromkeys(q.strip() for q in value.split(",") if q.strip()))
    unknown = [q for q in queues if q not in (LARGE_QUEUE, QUEUE)]
    if not queues or unknown:
        raise argparse.ArgumentTypeError(f"unknown queue {', '.join(unknown) or value!r}; give {LARGE_QUEUE}, "
                                         f"{QUEUE} or both, comma-separated")  # fmt: skip
    return queues


def serve(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.device is not None:
        overrides["device"] = args.device
    if args.no_worker:
        overrides["embedded_worker"] = False
    if args.broker is not None:
        overrides["broker_url"] = args.broker
    settings = Settings(**overrides)  # type: ignore[arg-type]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # The worker child inherits this, so both processes agree on the store even when the
    # directory came from the command line.
    os.environ["INITIUM_DATA_DIR"] = str(settings.data_dir.resolve())
    print(f"initium: serving on http://{args.host}:{args.port}, data in {settings.data_dir.resolve()}", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=logs.configure(),
                **server_bounds(settings))  # fmt: skip
    return 0


def server_bounds(settings: Settings) -> dict[str, Any]:
    """uvicorn.run's keyword arguments for what one serving process may hold open (issue 16): open
    connections (503 past them), idle keep-alive, the request head's size, the listen backlog.
    h11 by name: the head limit is h11's (httptools, which "auto" prefers when installed, ignores it),
    answering what it refuses in the API's JSON envelope (initium.service.api.protocol)."""
    return {
        "http": JsonErrorH11Protocol,
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_s,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "backlog": settings.backlog,
    }


def worker(args: argparse.Namespace) -> int:
    """A Celery worker. Its settings travel as INITIUM_* variables, which the pool process reads too."""
    for flag, variable in (
        ("broker", "INITIUM_BROKER_URL"),
        ("data_dir", "INITIUM_DATA_DIR"),
        ("device", "INITIUM_DEVICE"),
    ):
        value = getattr(args, flag)
        if value is not None:
            os.environ[variable] = str(value.resolve() if isinstance(value, Path) else value)
    if not os.environ.get("INITIUM_BROKER_URL"):
        print("initium worker: error: no broker; pass --broker redis://host:6379/0 or set INITIUM_BROKER_URL")
        return 2
    logs.configure()
    from initium.service.pipeline import celery_tasks  # imports torch: only in worker processes

    return celery_tasks.main(args.name or f"initium-{os.getpid()}@{socket.gethostname()}", args.queues)
