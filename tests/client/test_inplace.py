"""`initialize_`: a module filled in place, in the training process, with the service's values byte
for byte, and no file written (issue 17, item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from initium.client import Client, RequestInvalidError, initialize_
from initium.client._load import alias_groups
from tests.client.test_load import BUFFERED, TIED, _on_meta

CASES = [("gpt2", TIED["gpt2"], "gpt2"), ("llama", BUFFERED["llama"], "llama")]


def _bytes(module: torch.nn.Module) -> dict[str, bytes]:
    """Every parameter and buffer's raw bytes by state_dict name (tied names included)."""
    state = module.state_dict(keep_vars=True)
    return {name: t.detach().contiguous().view(torch.uint8).numpy().tobytes() for name, t in state.items()}


@pytest.mark.parametrize("on_meta", [True, False], ids=["meta", "cpu"])
@pytest.mark.parametrize(("family", "build", "policy"), CASES, ids=[c[0] for c in CASES])
def test_in_place_values_are_the_services_file_byte_for_byte(
    app_client: TestClient, tmp_path: Path, family: str, build: object, policy: str, on_meta: bool
) -> None:
    served = _on_meta(build) if on_meta else build()  # type: ignore[arg-type, operator]
    Client(http_client=app_client).initialize_module(served, policy=policy, seed=11)
    model = _on_meta(build) if on_meta else build()  # type: ignore[arg-type, operator]
    groups = alias_groups(model)
    assert initialize_(model, policy=policy, seed=11, data_dir=tmp_path) is model
    assert not [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    assert alias_groups(model) == groups  # ties kept
    ours, theirs = _bytes(model), _bytes(served)
    assert ours.keys() == theirs.keys()
    assert [name for name in ours if ours[name] != theirs[name]] == []
    assert not any((tmp_path / "jobs").iterdir())  # nothing written: no job, no file


def test_a_policy_that_leaves_a_parameter_uncovered_is_refused_as_the_service_refuses(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 4)
    before = model.weight.detach().clone()
    with pytest.raises(RequestInvalidError, match="no rule initializes"):
        initialize_(model, policy={"rules": [{"match": {"role": "weight"}, "init": {"scheme": "zeros"}}]},
                    data_dir=tmp_path)  # fmt: skip
    assert torch.equal(model.weight, before)  # untouched


def test_odd_arguments_get_what_torch_users_expect(tmp_path: Path) -> None:
    """Found by the break-it run: a parameterless module was a raw validation error (it has nothing
    to fill: it comes back as it is), a torch.dtype was refused (it names the dtype as a string
    does), and device='meta' read as "weight, bias are not generated" (it holds no values)."""
    relu = torch.nn.ReLU()
    assert initialize_(relu, policy="gpt2", data_dir=tmp_path) is relu
    by_name = initialize_(torch.nn.Linear(4, 3), policy="torch-default", dtype="float64", data_dir=tmp_path)
    by_dtype = initialize_(torch.nn.Linear(4, 3), policy="torch-default", dtype=torch.float64, data_dir=tmp_path)
    assert _bytes(by_name) == _bytes(by_dtype)
    with pytest.raises(ValueError, match="device='meta' holds no values"):
        initialize_(torch.nn.Linear(4, 3), policy="torch-default", device="meta", data_dir=tmp_path)
