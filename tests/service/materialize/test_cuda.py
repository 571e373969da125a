"""The reproducibility contract on a GPU: the bytes generated on cuda equal those on cpu, for every
scheme and dtype (runs on the GPU machine; skipped where there is no CUDA device)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from initium.schemas import InitRequest
from initium.service.materialize import tritonpath
from initium.service.materialize.sampling import Stream, reference, sample
from initium.service.materialize.tensor import TORCH_DTYPES, materialize, pick_device
from initium.service.plan import distributions as d
from initium.service.plan.planner import make_plan
from initium.service.plan.schemes import list_schemes, resolve
from tests.service.plan.test_schemes import EXAMPLES, _geometry, _params

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
DTYPES = ["float32", "float16", "bfloat16", "float64"]
LINEAR = {"type": "linear", "name": "w", "in_features": 384, "out_features": 384}
KEY = (0x5EED, 11)


def test_auto_picks_cuda() -> None:
    assert pick_device("auto").type == "cuda"


def _plan(scheme: str, dtype: str, slices: dict[str, Any] | None = None) -> Any:
    weight_rule = {"match": {"role": "weight"}, "init": {"scheme": scheme, **EXAMPLES[scheme]}}
    body = {
        "spec": {"name": "g", "modules": [LINEAR]},
        "policy": {"rules": [{"init": {"scheme": "zeros"}}, weight_rule]},
        "seed": 11,
        "dtype": dtype,
        "slices": slices or {},
    }
    return make_plan(InitRequest.model_validate(body))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scheme", list_schemes())
def test_cuda_bytes_equal_cpu_bytes(scheme: str, dtype: str) -> None:
    """Each scheme's law, as it resolves in its test geometry (depth, roles, kernels), on both devices."""
    dist, shape = resolve(_params(scheme), _geometry(scheme)), _geometry(scheme).shape
    cpu = sample(dist, shape, Stream(KEY, torch.device("cpu")), dtype=TORCH_DTYPES[dtype])
    cuda = sample(dist, shape, Stream(KEY, torch.device("cuda")), dtype=TORCH_DTYPES[dtype]).cpu()
    if not dist.elementwise and dtype == "float64":
        # The QR runs in the device's LAPACK or cuSOLVER; float64 keeps their last-bit differences.
        torch.testing.assert_close(cuda, cpu, rtol=0, atol=1e-12)
        return
    same = (cpu.view(-1).view(torch.uint8) == cuda.view(-1).view(torch.uint8)).all().item()
    assert same, f"{scheme} {dtype}: {(cpu != cuda).sum().item()} of {cpu.numel()} values differ"


@pytest.mark.parametrize("dtype", DTYPES)
def test_materialize_on_cuda_equals_cpu(dtype: str) -> None:
    weight = _plan("kaiming_normal", dtype).tensors[0]
    cuda = materialize(weight, 11, torch.device("cuda")).cpu()
    assert torch.equal(cuda, materialize(weight, 11, torch.device("cpu")))


def test_cuda_slice_equals_cpu_slice() -> None:
    weight = _plan("normal", "float32", {"w.weight": [[80, 160], [0, 384]]}).tensors[0]
    assert torch.equal(
        materialize(weight, 11, torch.device("cuda")).cpu(), materialize(weight, 11, torch.device("cpu"))
    )


def test_triton_path_verifies_itself_and_is_used() -> None:
    assert tritonpath.AVAILABLE and tritonpath.verified(torch.device("cuda"))


@pytest.mark.parametrize(
    "law",
    [
        d.Uniform(-0.1, 0.3),
        d.Normal(0.0, 0.02),
        d.TruncatedNormal(0.0, 0.02, -0.04, 0.04),
        d.TruncatedNormal(0.0, 1.0, 3.0, 5.0),
    ],
    ids=["uniform", "normal", "truncated", "tail"],
)
@pytest.mark.parametrize("start", [0, 2**31 - 5_000, 2**32 - 70_000, 2**40 + 17])
def test_triton_runs_equal_the_reference(law: d.Distribution, start: int) -> None:
    """Long runs across block, int32 and counter-word boundaries, not only verified()'s 200 values."""
    device = torch.device("cuda")
    fast = torch.empty(100_003, dtype=torch.float64, device=device)
    tritonpath.fill_run(law, start, (0x1234ABCD, 0xFEDC4321), fast)
    ref = reference(law, torch.arange(start, start + fast.numel(), device=device), (0x1234ABCD, 0xFEDC4321))
    assert torch.equal(fast.view(torch.int64), ref.view(torch.int64))
