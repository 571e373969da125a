"""In-place init inside the training process: `initialize_(module, policy=...)` (issue 17, item 2).

torch's trailing-underscore convention (`nn.init.normal_`): the module's own parameters and buffers
are filled where they live, and no file is written. The values are the service's for the same
request, byte for byte: the request is planned and drawn by the service's own code in this process
(local mode's LocalService.tensors), and loaded as `initialize_module` loads a file's tensors (ties
kept, a meta module materialized with assign=True, framework buffers computed). No report is made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from initium.client._load import fill_meta_buffers, load_tensors
from initium.client._request import PolicyLike, build_request
from initium.client._sharded import initialize_sharded_, is_sharded
from initium.client._torch import module_dtype, spec_from_module

if TYPE_CHECKING:
    import torch


def initialize_(
    module: torch.nn.Module,
    *,
    policy: PolicyLike,
    seed: int = 0,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    roles: Mapping[str, Sequence[str]] | None = None,
    data_dir: str | Path | None = None,
) -> torch.nn.Module:
    """Initialize `module` in place under `policy` (a policy, or a preset's name such as "gpt2");
    returns it.

    `device`: where the values are drawn; default the module's own device, cpu for a module on the
    meta device. A meta module is materialized there; a module that has its tensors keeps them where
    they are (the values are copied in), as load_state_dict does; the meta device itself holds no
    values (ValueError). `dtype`: the request's dtype, a name or a torch.dtype (default the
    module's); every tensor keeps the dtype the module gave it. A module without parameters or
    buffers (nn.ReLU) has nothing to fill and comes back as it is. `data_dir`: where local mode keeps
    published presets (default as Client.local()). The request is the one `Client.initialize_module`
    would send, so the values equal the service's file for it. Raises the client's typed errors
    (RequestInvalidError for a policy that leaves a parameter uncovered, as the service answers 422),
    and ValueError naming any meta buffer its framework cannot compute.

    DTensor parameters (FSDP2, tensor parallel, 2-D meshes): every rank fills only its local shard,
    drawing only the global indices it holds, and gathered the values are the single-process ones
    (initium.client._sharded; docs/sharded-init.md). A meta module is then materialized on
    `device`, default its DeviceMesh's device type; a Partial placement raises ValueError.
    """
    import torch

    from initium.client._local import _as_client_errors, default_data_dir
    from initium.service.pipeline.local import LocalService

    if next(iter((*module.parameters(), *module.buffers())), None) is None:
        return module  # nothing to fill, as torch's own init of a parameterless module
    if device is not None and torch.device(device).type == "meta":
        raise ValueError("device='meta' holds no values to fill; pass the device to draw on (cpu, cuda), or none")
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    spec, aliases = spec_from_module(module, roles=roles)
    target = torch.device(device) if device is not None else _home(module)
    # Buffers first: one that cannot be computed fails the call before anything is drawn.
    fill_meta_buffers(module, {t.name for t in spec.tensors} | set(aliases), target)
    request = build_request(spec=spec, policy=policy, seed=seed, dtype=dtype or module_dtype(module))
    with _as_client_errors():
        service = LocalService(Path(data_dir) if data_dir is not None else default_data_dir(), str(target))
        if is_sharded(module):  # DTensors: each rank fills its own shard (docs/sharded-init.md)
            return initialize_sharded_(module, request, service, torch.device(device) if device is not None else None)
        tensors = service.tensors(request)
    load_tensors(module, tensors, aliases)
    return module


def _home(module: torch.nn.Module) -> torch.device:
    """The device of the module's first tensor, cpu when it has none or lives on the meta device."""
    import torch

    first = next((t for t in (*module.parameters(), *module.buffers())), None)
    return torch.device("cpu") if first is None or first.is_meta else first.device
