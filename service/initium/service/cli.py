"""`initium serve`: the API on uvicorn with its embedded worker (what `make serve` runs), or the API
alone in front of Celery workers; `initium worker`: one Celery worker (one per GPU)."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

import uvicorn

from initium.service import logs
from initium.service.api.app import create_app
from initium.service.config import Settings


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
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=logs.configure())
    return 0


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

    return celery_tasks.main(args.name or f"initium-{os.getpid()}@{socket.gethostname()}")
