"""The reproducibility contract on a GPU: the bytes generated on cuda equal those on cpu, for every
scheme and dtype (runs on the GPU machine; skipped where there is no CUDA device)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from initium.schemas import InitRequest
from initium.service.init.schemes import list_schemes
from initium.service.plan import make_plan
from initium.service.worker.materialize import materialize, pick_device
from tests.service.init.test_schemes import EXAMPLES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
DTYPES = ["float32", "float16", "bfloat16", "float64"]
LINEAR = {"type": "linear", "name": "w", "in_features": 384, "out_features": 384}
CONV = {"type": "conv2d", "name": "w", "in_channels": 32, "out_channels": 64, "kernel_size": 3, "groups": 2}
MODULES = {"dirac": CONV, "delta_orthogonal": CONV}


def test_auto_picks_cuda() -> None:
    assert pick_device("auto").type == "cuda"


def _plan(scheme: str, dtype: str, slices: dict[str, Any] | None = None) -> Any:
    weight_rule = {"match": {"role": "weight"}, "init": {"scheme": scheme, **EXAMPLES[scheme]}}
    body = {
        "spec": {"name": "g", "modules": [MODULES.get(scheme, LINEAR)]},
        "policy": {"rules": [{"init": {"scheme": "zeros"}}, weight_rule]},
        "seed": 11,
        "dtype": dtype,
        "slices": slices or {},
    }
    return make_plan(InitRequest.model_validate(body))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scheme", list_schemes())
def test_cuda_bytes_equal_cpu_bytes(scheme: str, dtype: str) -> None:
    weight = _plan(scheme, dtype).tensors[0]
    cpu = materialize(weight, 11, torch.device("cpu"))
    cuda = materialize(weight, 11, torch.device("cuda")).cpu()
    if scheme in ("orthogonal", "delta_orthogonal", "looks_linear") and dtype == "float64":
        # The QR runs in the device's LAPACK or cuSOLVER; float64 keeps their last-bit differences.
        torch.testing.assert_close(cuda, cpu, rtol=0, atol=1e-12)
        return
    same = (cpu.view(-1).view(torch.uint8) == cuda.view(-1).view(torch.uint8)).all().item()
    assert same, f"{scheme} {dtype}: {(cpu != cuda).sum().item()} of {cpu.numel()} values differ"


def test_cuda_slice_equals_cpu_slice() -> None:
    weight = _plan("normal", "float32", {"w.weight": [[80, 160], [0, 384]]}).tensors[0]
    assert torch.equal(
        materialize(weight, 11, torch.device("cuda")).cpu(), materialize(weight, 11, torch.device("cpu"))
    )
