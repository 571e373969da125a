"""Load generated tensors into an nn.Module so it comes back usable as it was: the same ties, no
meta tensor, and every buffer the service does not generate as the module's framework computes it.

[Note: loading a meta module] load_state_dict(assign=True) wraps each name's tensor in its own
Parameter, so aliases the module had (GPT-2's lm_head.weight is transformer.wte.weight, T5's
three-way tie) would come back as separate Parameters that an optimizer moves apart (issue 13).
Non-persistent buffers (Llama's rotary inv_freq, BERT's position_ids) are in no state_dict, so a
load never reaches them. So: fill every meta buffer first, load, put each alias group back on one
object, and refuse to hand back a module with any meta tensor left.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def load_tensors(module: torch.nn.Module, tensors: Mapping[str, Any], aliases: Mapping[str, str]) -> torch.nn.Module:
    """Load generated `tensors` (state_dict names -> tensors) into `module` strictly, in place.

    Tied names (`aliases`, alias -> generated name) get their target's tensor. A module on the meta
    device is loaded with assign=True (its parameters become the loaded tensors, no second copy); its
    buffers that the service does not generate are computed as its framework computes them. Every
    tensor keeps the dtype the module gave it. Raises
    ValueError naming every tensor that would be left on the meta device.
    """
    ties = alias_groups(module)
    device = next((t.device for t in tensors.values()), None)
    if device is not None:
        fill_meta_buffers(module, set(tensors) | set(aliases), device)
    own = module.state_dict()
    state = dict(own)
    state.update(tensors)
    state.update({alias: tensors[target] for alias, target in aliases.items()})
    _refuse_meta([name for name, value in state.items() if value.is_meta], "are not generated")
    on_meta = any(t.is_meta for t in own.values())
    if on_meta:
        # assign=True keeps the loaded tensor's dtype; a module that keeps some tensors wider (fp32
        # norms in a bf16 model) must get them back in its own dtypes, as a copy into them would.
        state = {name: value.to(own[name].dtype) for name, value in state.items()}
    module.load_state_dict(state, strict=True, assign=on_meta)
    retie(module, ties)
    _refuse_meta(meta_tensors(module), "are still on the meta device")
    return module


def alias_groups(module: torch.nn.Module) -> list[list[str]]:
    """Names that share one Parameter (or buffer) object, in registration order; one list per tie."""
    groups: dict[int, list[str]] = {}
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        if tensor is not None:
            groups.setdefault(id(tensor), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def retie(module: torch.nn.Module, groups: list[list[str]]) -> None:
    """Make every name of each group the same object as the group's first name again."""
    for first, *others in groups:
        owner, local = _owner(module, first)
        is_parameter = local in owner._parameters
        shared = owner._parameters[local] if is_parameter else owner._buffers[local]
        for name in others:
            other_owner, other_local = _owner(module, name)
            if is_parameter:
                other_owner._parameters[other_local] = owner._parameters[local]
            else:
                other_owner._buffers[other_local] = shared


def meta_tensors(module: torch.nn.Module) -> list[str]:
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    return [name for name, tensor in named if tensor is not None and tensor.is_meta]


def fill_meta_buffers(module: torch.nn.Module, generated: set[str], device: torch.device) -> None:
    """Compute, on `device`, every meta buffer of `module` that is not in `generated`.

    A buffer is filled by the framework's own code for it: today the `_init_weights` of the nearest
    Hugging Face PreTrainedModel above its module (transformers >= 5 recomputes rotary inv_freq,
    position_ids and token_type_ids there, as from_pretrained does for a model built on meta). The
    code is run twice from two different garbage starts, and a buffer counts as filled only if both
    runs agree, so a buffer the code does not write is never mistaken for a computed one.
    Raises ValueError naming every buffer it could not fill.
    """
    missing = []
    for owner_path, owner in module.named_modules():
        names = [n for n, b in owner.named_buffers(recurse=False) if b is not None and b.is_meta]
        names = [n for n in names if _join(owner_path, n) not in generated]
        if not names:
            continue
        compute = _framework_init(module, owner_path)
        filled = _fill(owner, names, device, compute) if compute is not None else {}
        missing += [_join(owner_path, n) for n in names if n not in filled]
    _refuse_meta(
        missing,
        "are buffers on the meta device that initium cannot compute (no framework code recomputes them)",
    )


def _fill(
    owner: torch.nn.Module, names: list[str], device: torch.device, compute: Callable[[torch.nn.Module], None]
) -> set[str]:
    import torch

    meta = {n: b for n, b in owner._buffers.items() if n in names and b is not None}
    runs: list[dict[str, torch.Tensor | None]] = []
    for garbage in (0, 1):
        for n, b in meta.items():
            owner._buffers[n] = _garbage(torch.empty_like(b, device=device), garbage)
        # The framework computes with factory calls (torch.arange): inside a caller's
        # `with torch.device("meta")` those would be meta too.
        with torch.device(device):
            compute(owner)
        runs.append({n: owner._buffers[n] for n in names})
    filled = {n for n in names if _same(runs[0][n], runs[1][n])}
    for n in names:
        owner._buffers[n] = runs[1][n] if n in filled else meta[n]
    return filled


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    import torch

    return a is not None and b is not None and a.shape == b.shape and bool(torch.equal(a, b))


def _garbage(tensor: torch.Tensor, which: int) -> torch.Tensor:
    """Two starting values no framework computes, different from each other."""
    import torch

    if tensor.dtype == torch.bool:
        return tensor.fill_(bool(which))
    if tensor.is_floating_point() or tensor.is_complex():
        return tensor.fill_(float("nan") if which == 0 else -7.25e13)
    info = torch.iinfo(tensor.dtype)
    return tensor.fill_(info.max if which == 0 else info.min)


def _framework_init(root: torch.nn.Module, path: str) -> Callable[[torch.nn.Module], None] | None:
    """The `_init_weights` of the nearest Hugging Face PreTrainedModel at or above `path` (composite
    models dispatch to each sub-model's own), guarded by transformers' no-init context if any."""
    import torch

    parts = path.split(".") if path else []
    for depth in range(len(parts), -1, -1):
        candidate = root.get_submodule(".".join(parts[:depth]))
        init = getattr(candidate, "_init_weights", None)
        if callable(init) and hasattr(candidate, "config"):

            def compute(owner: torch.nn.Module, init: Callable[[Any], Any] = init) -> None:
                with torch.no_grad():
                    init(owner)

            return compute
    return None


def _refuse_meta(names: list[str], why: str) -> None:
    if names:
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise ValueError(
            f"{shown} {why}; the module would come back with meta tensors. Build the module on a real "
            "device, or materialize these first (module.to_empty(device=...) and set their values)"
        )


def _owner(module: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    path, _, local = name.rpartition(".")
    return module.get_submodule(path), local


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
