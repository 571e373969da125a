"""Sharded in place: time and peak memory per rank, and whose values survive a change of layout
(issue 17, item 3; the figures in docs/sharded-init.md).

    .venv/bin/python -m benchmarks.sharded [--worlds 1,2,4] [--data-dir DIR] [--keep]

One torch.multiprocessing launch of W gloo processes on cpu (a FileStore rendezvous, no port) per
(world size, method). Each rank builds the default GPT2LMHeadModel(GPT2Config()) (124M parameters)
on the meta device, applies FSDP2 (`fully_shard` per block, then the root) over a 1-D mesh of W,
and then, timed:

  initium               initialize_(model, policy="gpt2", seed=0): to_empty, then each rank draws
                        only the global indices it holds
  initium full tensors  the same values, but every rank draws each full tensor (initium's
                        materialize) and keeps its shard: what a rank does without box draws
  torch full-draw       every rank draws each full tensor with torch.nn.init under
                        torch.manual_seed(0) (normal(0, 0.02) weights, zero biases, unit norms:
                        GPT-2's laws) and keeps its shard, as OLMo-core (PR 319) and llm-foundry
                        (PR 1820) do

Both initium methods make one warm-up call on a tiny module first (loading the service code and
checking the numba fast path), not timed. Each rank runs one numba and one torch thread, so "CPU s"
(user + system) is its cost on one core; W ranks share this machine's cores as the hosts of W GPUs
would not, so the wall times ("s") grow with W here while the CPU seconds show the per-rank work.
(With two numba threads per rank on a busy 2-core machine, numba's waiting threads tripled the CPU
seconds of a rank.)

"peak MiB" is the rank's peak resident set during the timed step above its resident set when the
step started (Linux: /proc/self/clear_refs resets VmHWM), so it is what the step itself added; the
shard is that rank's parameter bytes. The initium launches also time one orthogonal law (a 3072x768
weight, GPT-2's MLP size, sharded by FSDP2) against the same weight under a normal law: a whole-
tensor law is drawn whole by every rank that holds a piece of it. Last, at each world size, on a
Linear(6, 8) weight placed Shard(0) and Shard(1): the sha256 of the gathered values of DTensor's own
nn.init.normal_ under torch.manual_seed(0), and of initium's; DTensor's differ with the layout
(pytorch issue 168058), initium's do not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from benchmarks._scratch import add_keep_argument, scratch

METHODS = ("initium", "initium full tensors", "torch full-draw")


def _peak_reset() -> int:
    """Reset this process's peak RSS to its current RSS; returns that RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measure(step: Callable[[], object]) -> dict[str, float]:
    start_rss = _peak_reset()
    start, cpu = time.perf_counter(), _cpu_seconds()
    step()
    seconds = time.perf_counter() - start
    peak = (_status("VmHWM") - start_rss) / 2**20
    return {"seconds": seconds, "cpu_s": _cpu_seconds() - cpu, "peak_mib": peak}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _gpt2_fsdp(mesh: Any) -> nn.Module:
    from torch.distributed.fsdp import fully_shard
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config())  # type: ignore[no-untyped-call]
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _full_draw_(model: nn.Module) -> None:
    """Every rank draws each full tensor with torch's own init and keeps its shard."""
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    model.to_empty(device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            full = torch.empty(param.shape, dtype=param.dtype)
            if name.endswith("bias"):
                full.zero_()
            elif ".ln_" in name or name.startswith("transformer.ln_f"):
                full.fill_(1.0)
            else:
                nn.init.normal_(full, std=0.02)
            assert isinstance(param, DTensor)
            shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
            box = tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True))
            param._local_tensor.copy_(full[box])


def _initium_full_(model: nn.Module, data_dir: str) -> None:
    """initium's values, but each rank draws every full tensor and keeps its shard."""
    from pathlib import Path as _Path

    from initium.client._request import build_request
    from initium.client._sharded import _local, global_indices, named_tensors
    from initium.client._torch import module_dtype, spec_from_module
    from initium.service.materialize.tensor import materialize
    from initium.service.pipeline.local import LocalService

    spec, _ = spec_from_module(model)
    request = build_request(spec=spec, policy="gpt2", seed=0, dtype=module_dtype(model))
    plan, _ = LocalService(_Path(data_dir), "cpu").plan_and_scales(request)
    model.to_empty(device="cpu")
    named = named_tensors(model)
    with torch.no_grad():
        for planned in plan.tensors:
            whole = materialize(planned, 0, torch.device("cpu"))
            for dim, index in enumerate(global_indices(named[planned.name])):
                whole = whole.index_select(dim, torch.tensor(index, dtype=torch.int64))
            _local(named[planned.name]).copy_(whole)


def _shard_bytes(model: nn.Module) -> int:
    from torch.distributed.tensor import DTensor

    return sum(
        (p._local_tensor if isinstance(p, DTensor) else p).numel() * p.element_size() for p in model.parameters()
    )


def _sha(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()[:12]


def _layout_hashes(mesh: Any, data_dir: str) -> dict[str, str]:
    """sha256 of the gathered Linear(6, 8) weight per (RNG, placement)."""
    from torch.distributed.tensor import Shard, distribute_tensor

    from initium.client import initialize_

    hashes = {}
    for dim in (0, 1):
        for rng in ("dtensor", "initium"):
            model = nn.Linear(6, 8, bias=False)
            model.weight = nn.Parameter(distribute_tensor(torch.zeros(8, 6), mesh, [Shard(dim)]))
            if rng == "dtensor":
                torch.manual_seed(0)
                nn.init.normal_(model.weight, std=0.02)
            else:
                initialize_(model, policy="gpt2", seed=0, data_dir=data_dir)
            hashes[f"{rng} Shard({dim})"] = _sha(model.weight.full_tensor())  # type: ignore[attr-defined]
    return hashes


def _orthogonal(mesh: Any, law: str, data_dir: str) -> dict[str, float]:
    from torch.distributed.fsdp import fully_shard

    from initium.client import initialize_

    with torch.device("meta"):
        model = nn.Linear(768, 3072, bias=False)
    fully_shard(model, mesh=mesh)
    policy = {"preset": "gpt2", "rules": [{"match": {"name": "weight"}, "init": {"scheme": law}}]}
    return _measure(lambda: initialize_(model, policy=policy, seed=0, data_dir=data_dir))


def _rank(rank: int, world: int, method: str, store: str, out: str, data_dir: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    from initium.client import initialize_

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        result: dict[str, Any] = {}
        if method.startswith("initium"):
            initialize_(nn.Linear(4, 4), policy="gpt2", data_dir=data_dir)  # warm-up, not timed
        model = _gpt2_fsdp(mesh)
        if method == "initium":
            result["gpt2"] = _measure(lambda: initialize_(model, policy="gpt2", seed=0, data_dir=data_dir))
            result["orthogonal"] = _orthogonal(mesh, "orthogonal", data_dir)
            result["normal"] = _orthogonal(mesh, "normal", data_dir)
            result["hashes"] = _layout_hashes(mesh, data_dir)
        elif method == "initium full tensors":
            result["gpt2"] = _measure(lambda: _initium_full_(model, data_dir))
        else:
            result["gpt2"] = _measure(lambda: _full_draw_(model))
        result["shard_mib"] = _shard_bytes(model) / 2**20
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def run(world: int, method: str, data_dir: str, keep: bool = False) -> list[dict[str, Any]]:
    """One launch: each rank's measurements (its rendezvous file and results in a scratch folder)."""
    os.environ["NUMBA_NUM_THREADS"] = "1"  # read by the children: one thread per rank (see above)
    with scratch("sharded-bench-", keep) as tmp:
        args = (world, method, str(tmp / "store"), str(tmp), data_dir)
        mp.spawn(_rank, args=args, nprocs=world, join=True)  # type: ignore[attr-defined, no-untyped-call]
        return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", default="1,2,4")
    parser.add_argument("--data-dir", default=None, help="local mode's data dir (kept; default: a temporary one)")
    add_keep_argument(parser)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with scratch("sharded-bench-data-", args.keep, given=args.data_dir) as data_dir:
        measure_all(args.worlds, str(data_dir), args.keep)


def measure_all(worlds: str, data_dir: str, keep: bool) -> None:
    """Every (world size, method) launch of `worlds` ("1,2,4"), printed as the markdown tables."""
    print(f"torch {torch.__version__}, {os.cpu_count()} cpus, GPT-2 small under FSDP2, gloo on cpu")
    print("| W | method | s (slowest rank) | CPU s (max rank) | peak MiB (max rank) | shard MiB (max rank) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    extras: dict[int, list[dict[str, Any]]] = {}
    for world in [int(w) for w in worlds.split(",")]:
        for method in METHODS:
            ranks = run(world, method, data_dir, keep)
            seconds = max(r["gpt2"]["seconds"] for r in ranks)
            cpu = max(r["gpt2"]["cpu_s"] for r in ranks)
            peak = max(r["gpt2"]["peak_mib"] for r in ranks)
            shard = max(r["shard_mib"] for r in ranks)
            print(f"| {world} | {method} | {seconds:.2f} | {cpu:.2f} | {peak:.0f} | {shard:.0f} |", flush=True)
            if method == "initium":
                extras[world] = ranks
    print("\northogonal 3072x768 under FSDP2 vs the same weight normal (max over ranks):")
    print("| W | law | s | CPU s | peak MiB |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for world, ranks in extras.items():
        for law in ("orthogonal", "normal"):
            worst = {k: max(r[law][k] for r in ranks) for k in ("seconds", "cpu_s", "peak_mib")}
            print(f"| {world} | {law} | {worst['seconds']:.3f} | {worst['cpu_s']:.3f} | {worst['peak_mib']:.0f} |")
    print("\nsha256[:12] of the gathered Linear(6, 8) weight:")
    for world, ranks in extras.items():
        print(f"  W={world}: " + ", ".join(f"{k} {v}" for k, v in ranks[0]["hashes"].items()))


if __name__ == "__main__":
    main()
