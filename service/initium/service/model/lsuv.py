"""LSUV (Mishkin and Matas 2016): rescale each layer, first to last, to unit output variance on the probe.

The scales are computed on the model built from the plan (float32 forward passes on the worker's
device); the written values are then the same Philox draws times the scale, applied in float64
before the single rounding to the dtype. Each scale is rounded to 20 significant bits, so the
last-ulp differences between devices' forward passes almost never change the bytes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from initium.schemas.plan import Plan
from initium.schemas.report import LsuvLayer
from initium.schemas.request import InitRequest
from initium.schemas.spec import Spec
from initium.service.materialize.tensor import materialize
from initium.service.model.modules import build
from initium.service.model.propagation import _probe, probe_shape

_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


def _round(scale: float) -> float:
    mantissa, exponent = math.frexp(scale)
    return math.ldexp(round(mantissa * 2**20) / 2**20, exponent)


def lsuv_scales(request: InitRequest, plan: Plan, device: torch.device) -> tuple[dict[str, float], list[LsuvLayer]]:
    """Weight name -> the factor its values are multiplied by, and what each layer did."""
    options = request.policy.lsuv
    if options is None or not isinstance(request.spec, Spec):
        return {}, []
    model = build(request.spec).to_empty(device=device)
    whole = [t.model_copy(update={"slice": None}) for t in plan.tensors]
    model.load_state_dict({t.name: materialize(t, request.seed, device).float() for t in whole}, strict=True)
    model.float().eval()
    x = _probe(request.spec, probe_shape(request.spec.modules[0], request.report), request.report.probe_batch,
               request.seed, device)  # fmt: skip
    scales: dict[str, float] = {}
    layers: list[LsuvLayer] = []
    for name, module in model.named_modules():
        if isinstance(module, _LAYERS):
            scale, record = _rescale(
                model, module, name, x, options.target_std, options.tolerance, options.max_iterations
            )
            scales[f"{name}.weight"] = scale
            layers.append(record)
    return scales, layers


def _output_std(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> float:
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return float(seen[0].double().std())


def _rescale(model: nn.Module, layer: nn.Module, name: str, x: torch.Tensor, target: float, tolerance: float,
             max_iterations: int) -> tuple[float, LsuvLayer]:  # fmt: skip
    weight: torch.Tensor = layer.weight  # type: ignore[assignment]
    std = before = _output_std(model, layer, x)
    scale, iterations = 1.0, 0
    while abs(std - target) > tolerance and iterations < max_iterations and std > 0:
        step = _round(target / std)
        with torch.no_grad():
            weight.mul_(step)
        scale = _round(scale * step)
        iterations += 1
        std = _output_std(model, layer, x)
    converged = abs(std - target) <= tolerance
    return scale, LsuvLayer(name=name, std_before=before, std_after=std, iterations=iterations, scale=scale,
                            converged=converged)  # fmt: skip
