"""`initium serve`: the API on uvicorn with its embedded worker (what `make serve` runs)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from initium.service import logs
from initium.service.app import create_app
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


def serve(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.device is not None:
        overrides["device"] = args.device
    if args.no_worker:
        overrides["embedded_worker"] = False
    settings = Settings(**overrides)  # type: ignore[arg-type]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # The worker child inherits this, so both processes agree on the store even when the
    # directory came from the command line.
    os.environ["INITIUM_DATA_DIR"] = str(settings.data_dir.resolve())
    print(f"initium: serving on http://{args.host}:{args.port}, data in {settings.data_dir.resolve()}", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=logs.configure())
    return 0
