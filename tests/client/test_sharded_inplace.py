"""`initialize_` on DTensors: each rank fills only its shard, and gathered, every tensor is the
single-process result byte for byte (issue 17, item 3).

Real torch.distributed processes (gloo on CPU, rendezvous over a FileStore under tmp_path, so no
port). A launch costs seconds here, so ONE launch of 4 ranks runs every layout: 1-D meshes of 4
ranks, of 2 (each row of a 2x2 mesh is one) and of 1 (each rank of a 4x1 mesh), which are the
meshes a 1-, 2- or 4-rank job builds, and the 2-D FSDP x TP mesh, whose first linear layer is
`_StridedShard`. Each rank writes what it found to a JSON file that the test reads.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from initium.client import RequestInvalidError, initialize_
from initium.schemas.plan import PlannedTensor

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")

WORLD = 4
SEED = 5
# Orthogonal (a whole-tensor law) on a tensor that TP shards, the rest GPT-2's laws.
POLICY: dict[str, Any] = {
    "preset": "gpt2",
    "rules": [{"match": {"name": "up.weight"}, "init": {"scheme": "orthogonal"}}],
}


class Small(nn.Module):
    """Sizes that no world size divides: 7 rows over 2 or 4 ranks leave a short (or empty) shard.
    The attention's fused in_proj_weight [18, 6] is three parts (q, k, v), each with its own
    Philox key, so FSDP's row shards (5, 5, 5, 3 over 4 ranks) cut across part boundaries."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.attn = nn.MultiheadAttention(6, 2)
        self.up = nn.Linear(6, 7)
        self.norm = nn.LayerNorm(7)
        self.down = nn.Linear(7, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down(self.norm(self.up(self.embed(tokens))))
        return out


class Tied(Small):
    """Small with an output head tied to the embedding (GPT-2's lm_head and wte): one parameter under
    two names, which FSDP2 shards once (the root unit holds it) and initialize_ must fill once."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 11, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([super().forward(tokens).flatten(), self.head(self.embed(tokens)).flatten()])


def _bytes(tensors: dict[str, torch.Tensor]) -> dict[str, bytes]:
    return {n: t.detach().contiguous().view(torch.uint8).numpy().tobytes() for n, t in tensors.items()}


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor by state_dict name, DTensors gathered (a collective: every rank calls it)."""
    from torch.distributed.tensor import DTensor

    state = module.state_dict(keep_vars=True)
    return {n: t.full_tensor() if isinstance(t, DTensor) else t for n, t in state.items()}


@contextmanager
def _drawn(log: list[tuple[str, int]]) -> Iterator[None]:
    """Record (tensor name, elements drawn) of every draw (materialize call) the sharded path makes."""
    from initium.service.pipeline.local import LocalService

    real = LocalService.draw

    def counting(tensor: PlannedTensor, seed: int, device: torch.device, scale: float = 1.0) -> torch.Tensor:
        values = real(tensor, seed, device, scale)
        log.append((tensor.name, values.numel()))
        return values

    LocalService.draw = staticmethod(counting)  # type: ignore[method-assign]
    try:
        yield
    finally:
        LocalService.draw = staticmethod(real)  # type: ignore[method-assign]


def _tp_plan() -> dict[str, Any]:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    # embed: Shard(1) (6 columns), up: Shard(0) (7 rows), down: Shard(1) (7 columns) + a Replicate bias.
    return {"embed": ColwiseParallel(), "up": ColwiseParallel(), "down": RowwiseParallel()}


def _layouts(meshes: dict[str, Any]) -> dict[str, Callable[[], nn.Module]]:
    """Case name -> a function building the sharded module (on meta where the recipe does)."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import parallelize_module

    def fsdp(mesh: Any, build: Callable[[], nn.Module], meta: bool = True) -> Callable[[], nn.Module]:
        def make() -> nn.Module:
            with torch.device("meta" if meta else "cpu"):
                model = build()
            for child in model.children():  # one FSDP unit per layer, then the root: the usual recipe
                fully_shard(child, mesh=mesh)
            fully_shard(model, mesh=mesh)
            return model

        return make

    def tp(mesh: Any) -> Callable[[], nn.Module]:
        return lambda: parallelize_module(Small(), mesh, _tp_plan())

    def strided() -> nn.Module:
        """_StridedShard alone (distribute_tensor needs sizes it divides): a rank holds indices that
        are not one run, e.g. rows [0, 1, 2, 6, 7, 8, 12, 13, 14] of the fused q, k, v weight, so
        its local tensor is several boxes of the full one."""
        from torch.distributed.tensor import distribute_tensor
        from torch.distributed.tensor.placement_types import _StridedShard

        model = Small()
        attention = model.attn
        for name, dim in (("in_proj_weight", 0), ("in_proj_bias", 0)):
            full = getattr(attention, name).detach()
            setattr(
                attention,
                name,
                nn.Parameter(distribute_tensor(full, meshes["2"], [_StridedShard(dim, split_factor=3)])),
            )
        full = attention.out_proj.weight.detach()
        attention.out_proj.weight = nn.Parameter(
            distribute_tensor(full, meshes["2"], [_StridedShard(1, split_factor=3)])
        )
        return model

    def two_d() -> nn.Module:
        with torch.device("meta"):
            model = parallelize_module(Small(), meshes["2d"]["tp"], _tp_plan())
        fully_shard(model, mesh=meshes["2d"]["dp"])
        return model

    cases: dict[str, Callable[[], nn.Module]] = {}
    for size in ("1", "2", "4"):
        mesh = meshes[size]
        cases[f"fsdp-meta-w{size}"] = fsdp(mesh, Small)
        cases[f"fsdp-on-device-w{size}"] = fsdp(mesh, Small, meta=False)
        cases[f"tp-w{size}"] = tp(mesh)
    cases["fsdp-x-tp-2x2"] = two_d
    cases["strided-rows"] = strided
    return cases


def _check(name: str, model: nn.Module, reference: dict[str, bytes], log: list[tuple[str, int]]) -> dict[str, Any]:
    """What one case found on this rank: mismatched names, placements seen, elements drawn vs held."""
    from torch.distributed.tensor import DTensor

    from initium.client._sharded import global_indices

    held = {
        n: t._local_tensor.numel()
        for n, t in model.named_parameters()
        if isinstance(t, DTensor) and n != "up.weight"  # up.weight is orthogonal: drawn whole
    }
    drawn: dict[str, int] = {}
    for tensor, count in log:
        drawn[tensor] = drawn.get(tensor, 0) + count
    gathered = _bytes(_state(model))
    placements = sorted({str(t.placements) for t in model.parameters() if isinstance(t, DTensor)})
    return {
        "mismatched": sorted(n for n in reference if gathered.get(n) != reference[n]),
        "names": sorted(gathered) == sorted(reference),
        "placements": placements,
        "overdrawn": {n: [drawn.get(n, 0), held[n]] for n in held if drawn.get(n, 0) != held[n]},
        "ortho_drawn": [c for t, c in log if t == "up.weight"],
        "meta_left": [n for n, t in model.state_dict().items() if t.is_meta],
        # tensors whose local shard is several runs of global indices along some dimension
        "split": sorted(n for n, t in model.named_parameters() if any(_gaps(i) for i in global_indices(t))),
        "case": name,
    }


def _gaps(indices: list[int]) -> bool:
    return any(b != a + 1 for a, b in itertools.pairwise(indices))


def _worker(rank: int, store: str, out: str, data_dir: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        meshes = {
            "4": init_device_mesh("cpu", (WORLD,)),
            "2": init_device_mesh("cpu", (2, 2), mesh_dim_names=("row", "col"))["col"],
            "1": init_device_mesh("cpu", (WORLD, 1), mesh_dim_names=("all", "one"))["one"],
            "2d": init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp")),
        }
        single = initialize_(Small(), policy=POLICY, seed=SEED, data_dir=data_dir)
        reference, tokens = _bytes(_state(single)), torch.arange(10) % 11
        expected = single(tokens).detach()
        results = []
        for name, build in _layouts(meshes).items():
            model, log = build(), list[tuple[str, int]]()
            with _drawn(log):
                initialize_(model, policy=POLICY, seed=SEED, data_dir=data_dir)
            results.append(_check(name, model, reference, log))
            # FSDP2's forward all-gathers the storage the shards were written to: it must compute
            # what the single-process module computes.
            if name.startswith(("fsdp-meta", "fsdp-on-device")):
                results[-1]["forward_equal"] = bool(torch.equal(model(tokens).detach(), expected))
        results += _tied(meshes, tokens, data_dir)
        Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def _tied(meshes: dict[str, Any], tokens: torch.Tensor, data_dir: str) -> list[dict[str, Any]]:
    """The tied model under FSDP2 (the root unit only: the shared weight belongs to one unit), built
    on meta, at world sizes 2 and 4: the gathered values, the tie kept, the forward."""
    from torch.distributed.fsdp import fully_shard

    single = initialize_(Tied(), policy=POLICY, seed=SEED, data_dir=data_dir)
    reference, expected = _bytes(_state(single)), single(tokens).detach()
    results = []
    for size in ("2", "4"):
        with torch.device("meta"):
            model = Tied()
        fully_shard(model, mesh=meshes[size])
        log = list[tuple[str, int]]()
        with _drawn(log):
            initialize_(model, policy=POLICY, seed=SEED, data_dir=data_dir)
        result = _check(f"fsdp-tied-w{size}", model, reference, log)
        result["tie_kept"] = model.head.weight is model.embed.weight
        result["forward_equal"] = bool(torch.equal(model(tokens).detach(), expected))
        results.append(result)
    return results


@pytest.fixture(scope="module")
def per_rank(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, dict[str, Any]]]:
    """Every rank's findings by case, from one launch of WORLD gloo processes."""
    root = tmp_path_factory.mktemp("sharded")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = (str(root / "store"), str(root), str(root / "data"))
    mp.spawn(_worker, args=args, nprocs=WORLD, join=True)  # type: ignore[attr-defined, no-untyped-call]
    return [{r["case"]: r for r in json.loads((root / f"rank{rank}.json").read_text())} for rank in range(WORLD)]


CASES = [f"{kind}-w{size}" for size in ("1", "2", "4") for kind in ("fsdp-meta", "fsdp-on-device", "tp")]
TIED = ["fsdp-tied-w2", "fsdp-tied-w4"]


@pytest.mark.parametrize("case", [*CASES, *TIED, "fsdp-x-tp-2x2", "strided-rows"])
def test_gathered_shards_equal_the_single_process_values_byte_for_byte(
    per_rank: list[dict[str, dict[str, Any]]], case: str
) -> None:
    for rank, found in enumerate(per_rank):
        result = found[case]
        assert result["names"], (rank, case)
        assert result["mismatched"] == [], (rank, case)
        assert result["meta_left"] == [], (rank, case)
        if case.startswith(("fsdp-meta", "fsdp-on-device", "fsdp-tied")):
            assert result["forward_equal"] is True, (rank, case)
        if case in TIED:
            assert result["tie_kept"] is True, (rank, case)


@pytest.mark.parametrize("case", [*CASES, *TIED, "fsdp-x-tp-2x2", "strided-rows"])
def test_each_rank_draws_exactly_the_elements_it_holds(per_rank: list[dict[str, dict[str, Any]]], case: str) -> None:
    """Elementwise laws: the elements drawn for a sharded parameter are its local shard's count, so
    no rank ever builds the full tensor. The orthogonal weight is drawn whole (7x6) by every rank
    that holds a piece of it, and by no other."""
    for found in per_rank:
        assert found[case]["overdrawn"] == {}
        assert found[case]["ortho_drawn"] in ([], [42])  # up.weight is 7 x 6
    assert any(found[case]["ortho_drawn"] == [42] for found in per_rank)


def test_the_layouts_include_uneven_strided_and_replicated_shards(per_rank: list[dict[str, dict[str, Any]]]) -> None:
    seen = {p for found in per_rank for result in found.values() for p in result["placements"]}
    assert "(_StridedShard(dim=0, sf=2), Shard(dim=0))" in seen  # the 2-D mesh's colwise weight
    assert {"(Shard(dim=0),)", "(Shard(dim=1),)", "(Replicate(),)"} <= seen
    assert all(
        found["strided-rows"]["split"] == ["attn.in_proj_bias", "attn.in_proj_weight", "attn.out_proj.weight"]
        for found in per_rank
    )


def test_local_boxes_cover_a_split_shard_in_local_order() -> None:
    """Rows [0, 1, 6, 7, 8] and columns [2, 3, 5] of a 10x6 tensor: 2 x 2 runs, and chunks of at
    most 4 elements; each (local slices, global box) pair must put that box at those slices."""
    from initium.client._sharded import local_boxes

    full = torch.arange(60).reshape(10, 6)
    rows, cols = [0, 1, 6, 7, 8], [2, 3, 5]
    local = torch.full((5, 3), -1)
    pairs = list(local_boxes([rows, cols], chunk=4))
    for where, box in pairs:
        assert local[where].numel() <= 4
        local[where] = full[tuple(slice(a, b) for a, b in box)]
    assert torch.equal(local, full[rows][:, cols])
    # rows 0-1 x columns 2-3, rows 0-1 x column 5, rows 6-8 x columns 2-3 in 2 chunks (2 and 1
    # rows), rows 6-8 x column 5 (3 elements, one chunk)
    assert len(pairs) == 5


def test_lsuv_and_partial_placements_are_refused_before_anything_is_drawn(tmp_path: Path) -> None:
    """One rank, in this process: LSUV needs a forward pass that a module's manifest does not
    carry (refused as single-process initialize_ refuses it); a Partial DTensor has no values."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Partial, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        model = nn.Linear(4, 3)
        model.weight = nn.Parameter(distribute_tensor(torch.zeros(3, 4), mesh, [Partial()]))
        with pytest.raises(ValueError, match=r"weight: a DTensor placed .*Partial.* pending reduction"):
            initialize_(model, policy="gpt2", data_dir=tmp_path)
        lsuv = {"preset": "gpt2", "lsuv": {}}
        with pytest.raises(RequestInvalidError, match="LSUV runs the network"):
            initialize_(model, policy=lsuv, data_dir=tmp_path)
        assert not model.weight.to_local().any()  # type: ignore[attr-defined]  # untouched
    finally:
        dist.destroy_process_group()
