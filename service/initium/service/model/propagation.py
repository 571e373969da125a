"""Signal propagation: a seeded probe batch through the initialized network, and a gradient back.

The network runs one top-level unit at a time (a repeat's copies are units of their own), loaded
from the written file, so memory stays about one block plus a batch of activations; the backward
pass recomputes each unit from its stored input. Per layer it records what Brock et al. (2021)
plot for signal propagation (mean, std, average channel squared mean and channel variance), dead
ReLUs and saturated tanh/sigmoid units, and the gradient's std; then it warns where the signal
grows or shrinks across depth, or saturates, naming the first layer and a policy change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from initium.schemas import spec as s
from initium.schemas.report import LayerSignal, Propagation
from initium.schemas.request import ReportOptions
from initium.service.identity import tensor_key
from initium.service.materialize.sampling import Stream, sample
from initium.service.model.memory import attach_memory
from initium.service.model.modules import LecunTanh, build_module
from initium.service.model.propagation_checks import warnings_for
from initium.service.plan import distributions as d
from initium.service.registry import Registry

Loader = Callable[[str, nn.Module], None]  # loads a unit's tensors (by prefix) into the module
SEQUENCE = 16  # probe tokens for sequence layers
SPATIAL = {1: 64, 2: 32, 3: 12}  # probe size per spatial dimension for convolutions


@dataclass(frozen=True)
class Unit:
    path: str
    module: s.Module
    block: bool = False  # one copy of a repeat: its output is the depth signal between blocks


def units(spec: s.Spec) -> list[Unit]:
    out: list[Unit] = []
    for index, m in enumerate(spec.modules):
        path = m.name if m.name is not None else str(index)
        if isinstance(m, s.Repeat):
            out += [Unit(f"{path}.{i}", m.block, block=True) for i in range(m.count)]
        elif not isinstance(m, s.Parameter):
            out.append(Unit(path, m))
    return out


# The probe's input shape (without the batch) for a network that starts with a module of this type.
# The types not registered (norms, activations, dropout, flatten, raw parameters) do not say what
# shape they read: a network starting with one needs report.probe_shape.
ProbeShape = Callable[[Any], list[int]]
PROBE_SHAPES: Registry[ProbeShape] = Registry("probe input type")


def _probe_shapes(fn: ProbeShape, *names: str) -> None:
    for name in names:
        PROBE_SHAPES.register(name)(fn)


_CONVS = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
_probe_shapes(lambda m: _input_shape(_first(m.modules, "sequential")), "sequential")
_probe_shapes(lambda m: _input_shape(_first(m.body, "residual")), "residual")
_probe_shapes(lambda m: _input_shape(m.block), "repeat")
_probe_shapes(lambda m: [m.in_features], "linear")
_probe_shapes(lambda m: [m.in_channels, *[SPATIAL[m.spatial_dims]] * m.spatial_dims], *_CONVS)
_probe_shapes(lambda m: [SEQUENCE], "embedding")
_probe_shapes(lambda m: [SEQUENCE, m.input_size], "rnn", "lstm", "gru")
_probe_shapes(lambda m: [SEQUENCE, m.embed_dim], "multihead_attention")
_probe_shapes(lambda m: [SEQUENCE, m.d_model], "transformer_block")
_probe_shapes(lambda m: [m.in_channels, SPATIAL[2], SPATIAL[2]], "resnet_basic", "resnet_bottleneck")


def _first(children: list[s.Module], container: str) -> s.Module:
    if not children:
        raise ProbeError(f"cannot infer a probe shape from an empty {container}; give report.probe_shape")
    return children[0]


def _input_shape(m: s.Module) -> list[int]:
    if m.type not in PROBE_SHAPES:
        raise ProbeError(f"cannot infer a probe shape from a first {m.type}; give report.probe_shape")
    return PROBE_SHAPES.get(m.type)(m)


def probe_shape(first: s.Module, options: ReportOptions) -> list[int]:
    """The probe's input shape without the batch: report.probe_shape, else what the first module
    reads (a container's first child's); ValueError when that module does not say."""
    if options.probe_shape:
        return list(options.probe_shape)
    return _input_shape(first)


def _first_layer(m: s.Module) -> s.Module:
    """The layer that reads the network's input: a container's first child, as the probe shape is
    inferred (an embedding inside a sequential reads token ids, not floats)."""
    if isinstance(m, s.Sequential) and m.modules:
        return _first_layer(m.modules[0])
    if isinstance(m, s.Residual) and m.body:
        return _first_layer(m.body[0])
    if isinstance(m, s.Repeat):
        return _first_layer(m.block)
    return m


def _probe(spec: s.Spec, shape: list[int], batch: int, seed: int, device: torch.device) -> torch.Tensor:
    stream = Stream(tensor_key(seed, "initium/probe"), device)
    first = _first_layer(spec.modules[0])
    if isinstance(first, s.Embedding):
        u = sample(d.Uniform(0.0, float(first.num_embeddings)), (batch, *shape), stream)
        return u.floor().long().clamp_(0, first.num_embeddings - 1)
    return sample(d.Normal(0.0, 1.0), (batch, *shape), stream).float()


def propagate(spec: s.Spec, load: Loader, options: ReportOptions, seed: int, device: torch.device) -> Propagation:
    """Run the probe; a network the probe cannot pass through is reported as skipped, not failed."""

    def load_with_memory(prefix: str, module: nn.Module) -> None:
        load(prefix, module)
        attach_memory(module, prefix, seed, device)  # what cross-attention layers attend to

    try:
        shape = probe_shape(spec.modules[0], options)
        x = _probe(spec, shape, options.probe_batch, seed, device)
        return _run(spec, x, shape, load_with_memory, options, seed, device)
    except Exception as exc:  # any of it: a statistic that cannot be computed never fails the job (DESIGN 6)
        why = str(exc) if isinstance(exc, ProbeError) else f"{type(exc).__name__}: {exc}"
        return Propagation(probe_shape=options.probe_shape or [], skipped=why)


class ProbeError(ValueError):
    """The probe cannot run on this network: no input shape to infer, or the batch did not pass
    through one unit (the message names it). Reported as the reason the probe was skipped."""


def _run(spec: s.Spec, x: torch.Tensor, shape: list[int], load: Loader, options: ReportOptions, seed: int,
         device: torch.device) -> Propagation:  # fmt: skip
    inputs: list[torch.Tensor] = []
    records = _Records()
    for unit in units(spec):
        inputs.append(x)
        with torch.no_grad():
            x = _forward(unit, x, load, device, records, track_grad=False)
        if unit.block and x.is_floating_point():
            records[f"block:{unit.path}"] = _signal(unit.path, _Block(), x.detach(), records.channels_first)
    loss_name, loss, at_chance, grad = _loss(x, seed, _ends_in_linear(spec))
    for unit, unit_input in zip(reversed(units(spec)), reversed(inputs), strict=True):
        if unit.block and grad is not None:
            _set_grad(records, f"block:{unit.path}", grad)
        grad = _backward(unit, unit_input, grad, load, device, records)
    layers = list(records.values())
    return Propagation(
        probe_shape=shape, probe_batch=int(x.shape[0]), loss=loss, loss_name=loss_name, loss_at_chance=at_chance,
        layers=layers,
        warnings=warnings_for(layers, options.warn_factor, loss, at_chance),
    )  # fmt: skip


def _module(unit: Unit, load: Loader, device: torch.device) -> nn.Module:
    with torch.device("meta"):
        module = build_module(unit.module)
    module = module.to_empty(device=device)
    load(unit.path, module)
    return module.eval()


def _forward(unit: Unit, x: torch.Tensor, load: Loader, device: torch.device, records: _Records,
             track_grad: bool) -> torch.Tensor:  # fmt: skip
    module = _module(unit, load, device)
    handles = [
        leaf.register_forward_hook(_recorder(f"{unit.path}.{name}" if name else unit.path, leaf, records, track_grad))
        for name, leaf in module.named_modules()
        if _observed(leaf)
    ]
    try:
        out: torch.Tensor = module(x)
    except Exception as exc:
        raise ProbeError(f"{type(exc).__name__} at {unit.path} ({unit.module.type}): {exc}") from exc
    finally:
        for h in handles:
            h.remove()
    return out


def _backward(unit: Unit, unit_input: torch.Tensor, grad: torch.Tensor | None, load: Loader, device: torch.device,
              records: _Records) -> torch.Tensor | None:  # fmt: skip
    if grad is None:
        return None
    x = unit_input.detach().requires_grad_(unit_input.is_floating_point())
    with torch.enable_grad():
        out = _forward(unit, x, load, device, records, track_grad=True)
        if not out.requires_grad:
            return None
        torch.autograd.backward(out, grad)
    return x.grad if x.is_floating_point() else None


def _ends_in_linear(spec: s.Spec) -> bool:
    last = spec.modules[-1]
    return isinstance(last, s.Linear) and last.out_features > 1


def _loss(y: torch.Tensor, seed: int, head: bool) -> tuple[str, float, float | None, torch.Tensor | None]:
    """Cross-entropy on random labels when the network ends in a linear head (per token for sequence
    outputs [batch, tokens, classes]), else a seeded random projection <y, t> / batch, t ~ N(0, 1):
    its gradient t / batch is the same whatever y is. Half the mean square read y's own scale back,
    and behind a final LayerNorm it is a constant, so every gradient was rounding noise and each
    post-norm transformer was told "gradients vanish" (issue 15)."""
    y = y.detach().float().requires_grad_(True)
    with torch.enable_grad():
        if head:
            logits = y.reshape(-1, y.shape[-1])
            generator = torch.Generator(device="cpu").manual_seed(seed)
            labels = torch.randint(0, y.shape[-1], (logits.shape[0],), generator=generator).to(y.device)
            loss = F.cross_entropy(logits, labels)
            name, chance = "cross_entropy", math.log(y.shape[-1])
        else:
            generator = torch.Generator(device="cpu").manual_seed(seed)
            target = torch.randn(y.shape, generator=generator, dtype=torch.float32).to(y.device)
            loss, name, chance = (y * target).sum() / y.shape[0], "random_projection", None
        torch.autograd.backward(loss)
    return name, float(loss.detach()), chance, y.grad


class _Records(dict[str, LayerSignal]):
    """One probe run's records by layer name, in forward order, and the layout of the outputs being
    recorded: channels first (N, C, ...) once a conv has run, channels last (N, ..., C) once a linear,
    recurrent, attention or embedding layer has (the activations and pools after a conv are
    channels-first too; their channel statistics and dead units are per channel, not per column)."""

    channels_first: bool = False


_CHANNELS_LAST = (nn.Linear, nn.RNNBase, nn.MultiheadAttention, nn.Embedding)


class _Block(nn.Module):
    """Marks a record as the output of a whole block (a repeat's copy), not of one layer in it."""


_OBSERVED = (nn.Linear, nn.modules.conv._ConvNd, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SELU,
             nn.SiLU, nn.RNNBase, nn.MultiheadAttention, nn.Embedding, LecunTanh, nn.modules.pooling._AvgPoolNd,
             nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._MaxPoolNd)  # fmt: skip


def _observed(module: nn.Module) -> bool:
    # Leaves, and attention as a whole: torch's MultiheadAttention applies its out_proj weight
    # itself, so that child never runs as a module and would record nothing.
    leaf = not list(module.children()) or isinstance(module, nn.MultiheadAttention)
    return leaf and isinstance(module, _OBSERVED)


def _recorder(name: str, module: nn.Module, records: _Records, track_grad: bool) -> Callable[..., None]:
    def hook(mod: nn.Module, args: object, output: object) -> None:
        y = output if isinstance(output, torch.Tensor) else None
        if y is None or not y.is_floating_point():
            return
        if track_grad:
            if y.requires_grad:
                y.register_hook(lambda g: _set_grad(records, name, g))  # type: ignore[no-untyped-call]
            return
        if isinstance(mod, nn.modules.conv._ConvNd):
            records.channels_first = True
        elif isinstance(mod, _CHANNELS_LAST):
            records.channels_first = False
        records[name] = _signal(name, module, y.detach(), records.channels_first)

    return hook


def _set_grad(records: dict[str, LayerSignal], name: str, g: torch.Tensor) -> None:
    if name in records:
        g64 = g.double()
        norm = float(g64.reshape(g64.shape[0], -1).square().sum(dim=1).mean().sqrt())
        records[name] = records[name].model_copy(update={"grad_std": float(g64.std()), "grad_norm": norm})


def _signal(name: str, module: nn.Module, y: torch.Tensor, channels_first: bool) -> LayerSignal:
    y64 = y.double()
    # Channels: dim 1 of (N, C, ...) outputs, the last dim of (N, ..., C) ones ([_Records]).
    per_channel = y64.transpose(0, 1) if channels_first else y64.movedim(-1, 0)
    flat = per_channel.reshape(per_channel.shape[0], -1)
    dead = saturated = None
    if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
        dead = float((flat.amax(dim=1) <= 0).double().mean())
    if isinstance(module, nn.Tanh):
        saturated = float((y64.abs() > 0.99).double().mean())
    if isinstance(module, LecunTanh):  # within 1% of its bound 1.7159, as for tanh's 1
        saturated = float((y64.abs() > 0.99 * LecunTanh.SCALE).double().mean())
    if isinstance(module, nn.Sigmoid):
        saturated = float(((y64 < 0.01) | (y64 > 0.99)).double().mean())
    kind = "block" if isinstance(module, _Block) else type(module).__name__
    return LayerSignal(
        name=name, type=kind, mean=float(y64.mean()), std=float(y64.std(correction=0)),
        channel_sq_mean=float((flat.mean(dim=1) ** 2).mean()), channel_var=float(flat.var(dim=1, correction=0).mean()),
        dead_fraction=dead, saturated_fraction=saturated,
    )  # fmt: skip
