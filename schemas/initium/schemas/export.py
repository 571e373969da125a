"""Write the JSON Schemas of the wire types into initium/schemas/json (run: python -m initium.schemas.export)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from initium.schemas.errors import ErrorBody
from initium.schemas.job import JobStatus
from initium.schemas.plan import Plan
from initium.schemas.report import Report
from initium.schemas.request import InitRequest

JSON_DIR = Path(__file__).parent / "json"
EXPORTED: dict[str, type[BaseModel]] = {
    "request": InitRequest,
    "plan": Plan,
    "report": Report,
    "job": JobStatus,
    "error": ErrorBody,
}


def render(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    for stem, model in EXPORTED.items():
        (JSON_DIR / f"{stem}.schema.json").write_text(render(model))
    sys.stderr.write(f"wrote {len(EXPORTED)} schemas to {JSON_DIR}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
