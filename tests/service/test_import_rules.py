"""DESIGN.md section 2's import rules, each checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_after(imports: str) -> set[str]:
    code = f"import sys; {imports}; print('\\n'.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


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
