"""The worker on a GPU: the same code with device=cuda (runs on the GPU machine, skipped elsewhere).

Until the counter-based generator lands, CUDA and CPU draw different values from the same seed
(torch's generators differ by device), so these check laws and the file, not CPU bytes.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from scipy import stats

from initium.schemas import InitRequest
from initium.service.plan import make_plan
from initium.service.worker.materialize import materialize, pick_device

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_auto_picks_cuda() -> None:
    assert pick_device("auto").type == "cuda"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_materialize_on_cuda_follows_the_plan(mlp_request: dict[str, Any], dtype: str) -> None:
    mlp_request["dtype"] = dtype
    plan = make_plan(InitRequest.model_validate(mlp_request))
    weight = plan.tensors[0]
    values = materialize(weight, 7, torch.device("cuda"))
    assert values.device.type == "cuda" and str(values.dtype) == f"torch.{dtype}"
    again = materialize(weight, 7, torch.device("cuda"))
    assert torch.equal(values, again)  # reproducible on the same device
    x = values.double().cpu().numpy().ravel()
    assert stats.kstest(x, "norm", args=(0.0, weight.expected_std)).pvalue > 1e-4
