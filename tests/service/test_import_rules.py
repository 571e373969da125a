"""DESIGN.md section 2's import rules, each checked in a fresh interpreter."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import initium.client
import initium.service

SERVICE = Path(initium.service.__file__).parent
CLIENT = Path(initium.client.__file__).parent
SERVER_PACKAGES = {"fastapi", "starlette", "uvicorn", "celery"}


def _modules_after(imports: str, env: dict[str, str] | None = None) -> set[str]:
    """Every module loaded once `imports` ran in a fresh interpreter (full dotted names); `env` adds
    to the environment."""
    code = f"import sys; {imports}; print('\\n'.join(sorted(sys.modules)))"
    environ = {**os.environ, **(env or {})}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environ).stdout
    return set(out.split())


def _loaded_after(imports: str) -> set[str]:
    """The top-level packages loaded once `imports` ran in a fresh interpreter."""
    return {m.split(".")[0] for m in _modules_after(imports)}


def test_api_process_never_imports_torch() -> None:
    # Building the app and serving a plan is everything the API process does.
    code = (
        "from fastapi.testclient import TestClient; from initium.service.api.app import create_app; "
        "from initium.service.config import Settings; import tempfile; "
        "app = create_app(Settings(data_dir=tempfile.mkdtemp(), embedded_worker=False)); "
        "c = TestClient(app); "
        "r = c.post('/v1/plans', json={'spec': {'name': 'm', 'modules': [{'type': 'linear', 'in_features': 2, "
        "'out_features': 2}]}, 'policy': {'preset': 'xavier'}}); assert r.status_code == 200, r.text; "
        "c.get('/v1/schemes'); c.get('/metrics')"
    )
    loaded = _loaded_after(code)
    assert "torch" not in loaded and "safetensors" not in loaded


@pytest.mark.parametrize("module", ["initium.service.plan", "initium.service.api.routes.initializations"])
def test_planning_modules_are_torch_free(module: str) -> None:
    assert "torch" not in _loaded_after(f"import {module}")


def test_schemas_import_pydantic_only() -> None:
    baseline = _loaded_after("pass")  # the interpreter's own start-up (site hooks and the like)
    loaded = _loaded_after("import initium.schemas") - baseline - set(sys.stdlib_module_names)
    third_party = {m for m in loaded if not m.startswith("_sysconfigdata")}  # stdlib, platform-named
    assert third_party <= {
        "initium",
        "pydantic",
        "pydantic_core",
        "typing_extensions",
        "annotated_types",
        "typing_inspection",
    }


def test_client_imports_no_torch_and_no_server() -> None:
    loaded = _loaded_after("import initium.client")
    assert not loaded & {"torch", "fastapi", "starlette", "uvicorn", "safetensors"}


def test_client_distribution_requires_no_torch_or_server() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "client" / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["dependencies"]}
    assert names == {"initium-schemas", "httpx", "pydantic", "tqdm"}  # tqdm: pure Python, the progress bars
    assert "torch" in " ".join(project["optional-dependencies"]["torch"])
    assert "initium-service" in " ".join(project["optional-dependencies"]["local"])  # Client.local()


# -- What a training process needs imports no server (issue 14, item 6) ---------------------------


TRAINING_SIDE = [
    "initium.service.plan.planner",  # the planner
    "initium.service.materialize.tensor",  # the samplers
    "initium.service.write.safetensors",  # the writer
    "initium.service.pipeline.local",  # local mode's entry point
]


def test_what_a_training_process_needs_imports_no_server() -> None:
    # One interpreter for all four (each imports torch, seconds apiece): a server package loaded by
    # any of them is in the union, which is what is asserted.
    loaded = _loaded_after("; ".join(f"import {m}" for m in TRAINING_SIDE))
    assert not loaded & SERVER_PACKAGES, f"{sorted(loaded & SERVER_PACKAGES)} loaded by one of {TRAINING_SIDE}"


# -- Workers read the stored plan: they never plan again (issue 14, item 1) ------------------------

PLANNING = {
    "initium.service.plan.planner",
    "initium.service.plan.rules",
    "initium.service.plan.resolve",
    "initium.service.plan.schemes",
    "initium.service.jobs.presets",
}


# Every process that runs jobs: the embedded worker's loop, the Celery tasks (which read the settings,
# so the settings must not import the planner either), a job run and fan-out.
WORKER_SIDE = [
    "initium.service.pipeline.job",
    "initium.service.pipeline.fanout",
    "initium.service.pipeline.loop",
    "initium.service.pipeline.celery_tasks",  # (pipeline.__main__ runs loop.main: covered by loop)
]


def test_workers_never_import_the_planner_or_the_presets() -> None:
    # The Celery module needs a broker URL to import (nothing connects at import time).
    imports = "; ".join(f"import {m}" for m in WORKER_SIDE)
    planning = sorted(_modules_after(imports, {"INITIUM_BROKER_URL": "redis://127.0.0.1:1/0"}) & PLANNING)
    assert not planning, f"importing {WORKER_SIDE} loads {planning}: a worker reads the stored plan"


# -- Stage order: a stage folder imports only the stages before it ---------------------------------

# stage folder -> the stage folders it may import (root modules such as errors and config: any).
STAGES: dict[str, set[str]] = {
    "plan": set(),
    "materialize": {"plan"},
    "summarize": {"plan", "materialize"},
    "model": {"plan", "materialize"},
    "write": {"plan"},
    "jobs": {"plan"},
    "api": {"plan", "jobs"},
    "pipeline": {"plan", "materialize", "summarize", "model", "write", "jobs"},  # all but api
}
# Module-level exceptions: the artifact store's interface (torch-free) lives with the writer, and
# jobs (reports, file checks) and api (serving bytes) reach bytes at rest only through it.
ALSO_ALLOWED: dict[str, tuple[str, ...]] = {
    "jobs": ("initium.service.write.artifacts",),
    "api": ("initium.service.write.artifacts",),
}
ROOT_IMPORTING_API = {"cli"}  # `initium serve` builds the app; nothing else imports the HTTP layer


def _service_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every initium.service import in a module: module level, in functions
    and under TYPE_CHECKING alike; `from initium.service import errors` gives initium.service.errors."""
    package = ".".join(("initium", *path.relative_to(SERVICE.parent.parent).parent.parts[1:]))
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: against this module's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("initium.service."):
                yield node.lineno, name


def _stage_of(name: str) -> str | None:
    """The stage folder a dotted initium.service name lies in (None for a root module)."""
    part = name.split(".")[2]
    return part if (SERVICE / part).is_dir() else None


def test_every_stage_folder_has_a_place_in_the_order() -> None:
    folders = {p.parent.name for p in SERVICE.glob("*/__init__.py")}
    assert folders == set(STAGES), "add the new folder to STAGES with the stages it may import"


def test_a_stage_imports_only_the_stages_before_it() -> None:
    offending = []
    for path in sorted(SERVICE.rglob("*.py")):
        relative = path.relative_to(SERVICE)
        stage = relative.parts[0] if len(relative.parts) > 1 else None
        if stage is not None and stage not in STAGES:
            continue  # a leftover folder without __init__.py (the test above names new packages)
        for line, name in _service_imports(path):
            target = _stage_of(name)
            if target is None or target == stage:
                continue
            allowed = STAGES[stage] if stage is not None else set(STAGES) - {"api"}
            if stage is None and relative.stem in ROOT_IMPORTING_API:
                allowed = set(STAGES)
            also = ALSO_ALLOWED.get(stage or "", ())
            if target not in allowed and not any(name == m or name.startswith(f"{m}.") for m in also):
                offending.append(f"{relative}:{line} imports {name} ({stage or 'root'} -> {target})")
    assert not offending, "imports against the stage order:\n" + "\n".join(offending)


# -- Local mode calls one public service entry point ----------------------------------------------


def test_the_client_reaches_the_service_only_through_its_local_entry_point() -> None:
    allowed = {"initium.service.pipeline.local"}
    offending = []
    for path in sorted(CLIENT.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("initium.service"):
                names = {node.module}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names if a.name.startswith("initium.service")}
            else:
                continue
            # The CLI's `initium serve` and `initium worker` start the service itself.
            extra = {"initium.service.cli"} if path.name == "cli.py" else set()
            offending += [f"{path.name}:{node.lineno} imports {n}" for n in names - allowed - extra]
    assert not offending, "\n".join(offending)
