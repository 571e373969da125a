"""The client and schemas wheels alone, in a fresh virtual environment (issue 18, item 2).

A pipeline installs `initium-client` without torch or fastapi (DESIGN.md, layout). This builds the two
wheels from the checkout (`pip wheel --no-deps`, as `make dist` does with `build`), installs them into
a new venv with their declared dependencies from the package index, pinned by constraints to the
versions this environment tests (so pip's cache serves them), and shows that neither torch nor
fastapi nor `initium.service` is importable there while `initium plan` from that venv gets the same
plan from a real server as the client of this environment. About 15 s: two builds, a venv, an
install (marked slow: it runs subprocesses and reaches the package index).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from initium.client import Client
from initium.schemas.plan import Plan
from initium.service.api.app import create_app
from initium.service.config import Settings
from tests.conftest import MLP_REQUEST, uvicorn_in_thread

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ABSENT = ("torch", "fastapi", "uvicorn", "safetensors", "initium.service")
PRESET = "torch-default"


def run(cmd: list[str | Path], env: dict[str, str] | None = None) -> str:
    """`cmd`'s stdout; its output in the failure message when it exits non-zero."""
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=240, check=False)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def constraints(path: Path) -> Path:
    """This environment's distributions as pip constraints (name==version), initium's own left out."""
    pins = {d.metadata["Name"].lower(): d.version for d in metadata.distributions() if d.metadata["Name"]}
    lines = [f"{name}=={version}" for name, version in sorted(pins.items()) if not name.startswith("initium")]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the schemas and client wheels and their dependencies; its bin folder."""
    tmp = tmp_path_factory.mktemp("wheels")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp / "dist", ROOT / "schemas", ROOT / "client"])
    wheels = sorted((tmp / "dist").glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == ["initium_client", "initium_schemas"]
    venv.create(tmp / "venv", with_pip=True)
    bin_dir = tmp / "venv" / "bin"
    run([bin_dir / "python", "-m", "pip", "install", "--quiet", "-c", constraints(tmp / "pins.txt"), *wheels])
    return bin_dir


def isolated_env(tmp: Path) -> dict[str, str]:
    """The environment without this venv's traces (PYTHONPATH, VIRTUAL_ENV) and with its own cache."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["INITIUM_CACHE_DIR"] = str(tmp / "cache")
    return env


def test_wheels_bring_neither_torch_nor_fastapi(client_venv: Path, tmp_path: Path) -> None:
    probe = "import importlib.util as u, json, sys; print(json.dumps({m: bool(u.find_spec(m)) for m in sys.argv[1:]}))"
    found = json.loads(run([client_venv / "python", "-c", probe, "initium.client", *ABSENT], isolated_env(tmp_path)))
    assert found == {"initium.client": True} | dict.fromkeys(ABSENT, False)
    installed = run([client_venv / "python", "-m", "pip", "list", "--format=json"], isolated_env(tmp_path))
    names = {p["name"].lower() for p in json.loads(installed)}
    assert {"initium-client", "initium-schemas", "httpx", "pydantic"} <= names
    assert not names & {"torch", "fastapi", "initium-service", "numpy"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The real app under uvicorn in this process (planning needs no worker); its URL."""
    settings = Settings(data_dir=tmp_path / "data", device="cpu", embedded_worker=False)
    with uvicorn_in_thread(create_app(settings), settings) as port:
        yield f"http://127.0.0.1:{port}"


def test_initium_plan_from_the_wheels(client_venv: Path, server: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(MLP_REQUEST["spec"]))
    cli: list[str | Path] = [client_venv / "initium", "plan", spec, "--policy", PRESET, "--server", server]
    planned = Plan.model_validate_json(run([*cli, "--json"], isolated_env(tmp_path)))
    with Client(server) as client:
        expected = client.plan({"spec": MLP_REQUEST["spec"], "policy": {"preset": PRESET}})
    assert planned == expected
    assert [t.name for t in planned.tensors] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    table = run(cli, isolated_env(tmp_path)).splitlines()
    assert [line.split()[0] for line in table[1:5]] == [t.name for t in planned.tensors]
