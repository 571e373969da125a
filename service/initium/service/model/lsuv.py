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
from initium.schemas.policy import Lsuv
from initium.schemas.report import LsuvLayer
from initium.schemas.request import InitRequest
from initium.schemas.spec import Spec
from initium.service.errors import RequestInvalidError
from initium.service.materialize.tensor import materialize
from initium.service.model.memory import attach_memory
from initium.service.model.modules import build
from initium.service.model.propagation import _probe, probe_shape

_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


def _round(scale: float) -> float:
    mantissa, exponent = math.frexp(scale)
    return math.ldexp(round(mantissa * 2**20) / 2**20, exponent)


def lsuv_scales(
    request: InitRequest, plan: Plan, device: torch.device
) -> tuple[dict[str, float], list[LsuvLayer], str | None]:
    """Weight name -> the factor its values are multiplied by, what each layer did, and why LSUV
    rescaled nothing (None when it did, or was not asked for).

    Errors: RequestInvalidError (loc policy.lsuv) when the probe batch cannot pass through the
    network. The job fails rather than keep the unscaled draws: those would be bytes the request did
    not ask for, and a later release that can run the network would write other bytes under the same
    request id (issue 15). Running out of memory is raised as it is (a retry elsewhere may pass).
    """
    options = request.policy.lsuv
    if options is None or not isinstance(request.spec, Spec):
        return {}, [], None
    try:
        scales, layers = _lsuv(request, request.spec, options, plan, device)
    except Exception as exc:  # the forward pass: a shape the spec does not chain, an input it does not say
        if _out_of_memory(exc):
            raise
        raise RequestInvalidError(
            f"LSUV cannot pass the probe batch through the network ({type(exc).__name__}: {exc}); make the "
            "layers' sizes chain, give report.probe_shape where the first layer does not say its input, or drop "
            "policy.lsuv",
            loc=["policy", "lsuv"],
        ) from exc
    return scales, layers, None if layers else "the forward pass calls no linear or conv layer to rescale"


def _out_of_memory(exc: Exception) -> bool:
    """A failure that depends on the machine, not the request: it is raised as itself, so the job
    record does not blame the request for it."""
    message = str(exc).lower()
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and any(m in message for m in ("out of memory", "can't allocate memory"))
    )


def _lsuv(request: InitRequest, spec: Spec, options: Lsuv, plan: Plan,
          device: torch.device) -> tuple[dict[str, float], list[LsuvLayer]]:  # fmt: skip
    model = build(spec).to_empty(device=device)
    whole = [t.model_copy(update={"slice": None}) for t in plan.tensors]
    model.load_state_dict({t.name: materialize(t, request.seed, device).float() for t in whole}, strict=True)
    model.float().eval()
    attach_memory(model, "", request.seed, device)
    x = _probe(spec, probe_shape(spec.modules[0], request.report), request.report.probe_batch, request.seed, device)
    scales: dict[str, float] = {}
    layers: list[LsuvLayer] = []
    called = _called_layers(model, x)
    for name, module in model.named_modules():
        if name in called:
            scale, record = _rescale(
                model, module, name, x, options.target_std, options.tolerance, options.max_iterations
            )
            scales[f"{name}.weight"] = scale
            layers.append(record)
    return scales, layers


def _called_layers(model: nn.Module, x: torch.Tensor) -> set[str]:
    """The linear and conv layers the forward pass calls as modules. torch's MultiheadAttention
    applies its out_proj weight itself, never calling the module: such a layer has no output of its
    own to measure, so it keeps its draws."""
    called: set[str] = set()
    handles = [
        module.register_forward_hook(lambda m, a, out, name=name: called.add(name))
        for name, module in model.named_modules()
        if isinstance(module, _LAYERS)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return called


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
