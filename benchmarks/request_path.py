"""How far one request travels: the service modules it runs, from the route to the bytes on disk.

Runs the DESIGN.md example request through the real app (TestClient) and one worker in this
process, with a profile hook on every thread, and counts:
- modules: the initium.service modules whose functions ran (import-time code excluded: a warm-up
  request runs first, and module bodies are not counted);
- climbs: distinct caller -> callee module pairs where worker-side code (materialize, summarize,
  the model, write, the pipeline) calls back into the planner proper (planner, resolve, rules, tree,
  layers, schemes, presets): planning again, or rebuilding a law through the planner, instead of
  reading the plan made at submit.

    .venv/bin/python -m benchmarks.request_path            # this tree
    .venv/bin/python -m benchmarks.request_path --old      # the flat layout before issue 14, from a checkout of it
    .venv/bin/python -m benchmarks.request_path --keep     # keep the job store (removed by default)

Written for issue 14's closing note ("the number of modules a request crosses, before and after").
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks._scratch import add_keep_argument, scratch
from benchmarks._serve import readme_mlp

STAGES = ["api", "jobs", "plan", "materialize", "summarize", "model", "write", "pipeline"]
SHARED = {"errors", "identity", "registry", "logs", "config", "__init__"}
# The flat layout before issue 14: module -> stage (its folders named no stage).
OLD = {
    "app": "api", "deps": "api", "http": "api", "security": "api", "metrics": "api", "report_html": "api",
    "report_svg": "api", "routes": "api", "jobs": "jobs", "store": "jobs", "engine": "jobs", "presets": "jobs",
    "supervisor": "jobs", "plan": "plan", "init.schemes": "plan", "init.schemes_structural": "plan",
    "init.schemes_families": "plan", "init.distributions": "plan", "init.gain": "plan", "init": "materialize",
    "worker.materialize": "materialize", "worker.stats": "summarize", "worker.checks": "summarize",
    "worker.modules": "model", "worker.modules_blocks": "model", "worker.probe": "model",
    "worker.propagation": "model", "worker.propagation_checks": "model", "worker.lsuv": "model",
    "worker.serialize": "write", "worker": "pipeline",
}  # fmt: skip


def module_of(filename: str) -> str | None:
    """'initium/service/plan/resolve.py' -> 'plan.resolve'; None outside the service package."""
    marker = "/initium/service/"
    if marker not in filename:
        return None
    return filename.split(marker, 1)[1].removesuffix(".py").replace("/", ".")


PLANNER = ("plan.planner", "plan.resolve", "plan.rules", "plan.tree", "plan.layers", "plan.composite",
           "plan.manifest", "plan.schemes", "init.schemes", "presets", "jobs.presets")  # fmt: skip


def is_climb(caller: str, callee: str, old: bool) -> bool:
    worker_side = STAGES[STAGES.index("materialize") :]
    return stage_of(caller, old) in worker_side and callee.startswith(PLANNER)


def stage_of(module: str, old: bool) -> str | None:
    if module.split(".")[-1] in SHARED and "." not in module.removesuffix(".__init__"):
        return None
    if not old:
        head = module.split(".")[0]
        return head if head in STAGES else None
    for prefix in sorted(OLD, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return OLD[prefix]
    return None


class Tracer:
    def __init__(self) -> None:
        self.modules: set[str] = set()
        self.edges: set[tuple[str, str]] = set()
        self.phase = "api"  # "worker" while the worker runs the job
        self.by_phase: dict[str, set[str]] = {"api": set(), "worker": set()}

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call" or frame.f_code.co_name == "<module>":
            return
        callee = module_of(frame.f_code.co_filename)
        if callee is None:
            return
        self.modules.add(callee)
        self.by_phase[self.phase].add(callee)
        caller = frame.f_back and module_of(frame.f_back.f_code.co_filename)
        if caller and caller != callee:
            self.edges.add((caller, callee))


TRACER: Tracer | None = None


def run_request(old: bool, seed: int, data_dir: Path) -> None:
    from fastapi.testclient import TestClient

    body = readme_mlp(seed)
    if old:
        from initium.service.app import create_app  # type: ignore[import-not-found]
    else:
        from initium.service.api.app import create_app
    from initium.service.config import Settings

    settings = Settings(data_dir=data_dir, embedded_worker=False)
    with TestClient(create_app(settings)) as client:
        job = client.post("/v1/initializations", json=body).json()
        if TRACER is not None:
            TRACER.phase = "worker"
        run_worker(old, client, settings, job["id"])
        if TRACER is not None:
            TRACER.phase = "api"
        assert client.get(f"/v1/initializations/{job['id']}").json()["state"] == "succeeded"
        assert client.get(f"/v1/initializations/{job['id']}/weights").status_code == 200


def run_worker(old: bool, client: Any, settings: Any, job_id: str) -> None:
    """One worker pass in this process, over what the app itself uses."""
    import torch

    if old:
        from initium.service.worker.loop import Worker  # type: ignore[import-not-found]

        Worker(client.app.state.store, torch.device("cpu")).run_pending()
        return
    from initium.service.pipeline.loop import Worker

    Worker(client.app.state.store, torch.device("cpu")).run_pending()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", action="store_true", help="map modules with the flat layout before issue 14")
    add_keep_argument(parser)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    with scratch("initium-request-path-", args.keep) as tmp:
        run_request(args.old, seed=1, data_dir=tmp)  # warm-up: imports and first-use caches
        global TRACER
        tracer = TRACER = Tracer()
        threading.setprofile(tracer)
        sys.setprofile(tracer)
        try:
            run_request(args.old, seed=2, data_dir=tmp)
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
    climbs = sorted((a, b) for a, b in tracer.edges if is_climb(a, b, args.old))
    shared = len(tracer.by_phase["api"] & tracer.by_phase["worker"])
    print(f"modules run: {len(tracer.modules)} distinct (API side {len(tracer.by_phase['api'])}, worker side "
          f"{len(tracer.by_phase['worker'])}, {shared} on both)")  # fmt: skip
    print(f"climbs back into the planner from worker-side code: {len(climbs)}")
    for a, b in climbs:
        print(f"  {a} -> {b}")
    for phase, modules in tracer.by_phase.items():
        print(f"{phase} side:", ", ".join(sorted(modules)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
