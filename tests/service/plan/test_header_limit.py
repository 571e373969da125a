"""Issue 16 item 1: the planner sizes every output file's safetensors header exactly, counts a spec's
tensors and names exactly before planning, and refuses a file every safetensors reader would refuse."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from initium.schemas import InitRequest
from initium.schemas.plan import Plan
from initium.service.errors import LimitExceededError
from initium.service.plan import output
from initium.service.plan.bounds import spec_size
from initium.service.plan.limits import Limits
from initium.service.plan.output import HeaderSizer, provenance_metadata
from initium.service.plan.planner import make_plan
from initium.service.write.index import metadata_for
from initium.service.write.safetensors import build_header
from tests.service.plan.test_layers_vs_torch import EXAMPLES

CATCH_ALL = {"rules": [{"init": {"scheme": "normal"}}]}
names = st.none() | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,40}", fullmatch=True)
small = st.integers(1, 5)


def _named(module: dict[str, Any], name: str | None) -> dict[str, Any]:
    return module if name is None else {**module, "name": name}


leaves = st.one_of(
    st.builds(lambda i, o, b, n: _named({"type": "linear", "in_features": i, "out_features": o, "bias": b}, n),
              small, small, st.booleans(), names),
    st.builds(lambda d, n: _named({"type": "layer_norm", "normalized_shape": d}, n), small, names),
    st.builds(lambda v, d, n: _named({"type": "embedding", "num_embeddings": v, "embedding_dim": d}, n),
              small, small, names),
    st.builds(lambda n: _named({"type": "relu"}, n), names),
)  # fmt: skip


def _containers(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    some = st.lists(inner, min_size=1, max_size=3)
    return st.one_of(
        st.builds(lambda ms, n: _named({"type": "sequential", "modules": ms}, n), some, names),
        st.builds(
            lambda b, c, n: _named({"type": "repeat", "count": c, "block": b}, n), inner, st.integers(1, 12), names
        ),
        st.builds(
            lambda b, s, n: _named({"type": "residual", "body": b, "shortcut": s}, n), some, st.none() | some, names
        ),
    )


modules = st.recursive(leaves, _containers, max_leaves=8)
outputs = st.one_of(
    st.just({"format": "single"}),
    st.builds(lambda m: {"format": "sharded", "max_shard_bytes": m}, st.integers(1, 400)),
)


def _request(mods: list[dict[str, Any]], dtype: str = "float32", out: dict[str, Any] | None = None) -> InitRequest:
    body = {"spec": {"name": "t", "modules": mods}, "policy": CATCH_ALL, "dtype": dtype, "seed": 3}
    return InitRequest.model_validate({**body, "output": out or {"format": "single"}})


def _written_header_sizes(plan: Plan, request: InitRequest) -> list[int]:
    """N (the length prefix) of every file the writer would write for `plan`."""
    by_name = {t.name: t for t in plan.tensors}
    metadata = metadata_for(plan, request)
    return [len(build_header([by_name[n] for n in shard.tensors], metadata)) - 8 for shard in plan.shards]


@settings(max_examples=60, deadline=None)
@given(st.lists(modules, min_size=1, max_size=3), st.sampled_from(["float32", "bfloat16", "float64"]), outputs)
def test_planned_sizes_equal_the_written_ones(mods: list[dict[str, Any]], dtype: str, out: dict[str, Any]) -> None:
    try:
        request = _request(mods, dtype, out)
    except ValueError:
        return  # a spec the schema refuses (duplicate names, say) is not this test's subject
    plan = make_plan(request)
    metadata = metadata_for(plan, request)
    assert provenance_metadata(plan.request_id, request.seed) == metadata  # the writer's metadata, exactly
    sizer = HeaderSizer(plan.tensors, metadata)
    planned = sizer.shard_sizes(request.output.format, request.output.max_shard_bytes)
    assert planned == _written_header_sizes(plan, request)
    assert all(n % 8 == 0 for n in planned)
    counted = spec_size(request.spec, Limits())
    assert (counted.tensors, counted.name_bytes) == (len(plan.tensors), sum(len(t.name) for t in plan.tensors))


@pytest.mark.parametrize("layer_type", sorted(EXAMPLES))
def test_counts_are_exact_for_every_layer(layer_type: str) -> None:
    examples = [{"type": layer_type, **params} for params in EXAMPLES[layer_type]]
    request = _request(
        [{"type": "repeat", "name": "blocks", "count": 11, "block": {"type": "sequential", "modules": examples}}]
    )
    plan = make_plan(request)
    counted = spec_size(request.spec, Limits())
    assert (counted.tensors, counted.name_bytes) == (len(plan.tensors), sum(len(t.name) for t in plan.tensors))


def _long_names(depth: int, count: int, width: int = 128) -> list[dict[str, Any]]:
    """The issue's shape: `depth` nested sequentials named with `width` characters around a repeat of
    `count` one-by-one linears."""
    inner: dict[str, Any] = {
        "type": "repeat",
        "count": count,
        "block": {"type": "linear", "in_features": 1, "out_features": 1},
    }
    for i in range(depth):
        inner = {"type": "sequential", "name": chr(97 + i % 26) * width, "modules": [inner]}
    return [inner]


def test_header_past_the_limit_is_refused_with_advice_that_works(monkeypatch: pytest.MonkeyPatch) -> None:
    # The limit scaled down 1,000-fold (the arithmetic is the same): 100,000 bytes.
    monkeypatch.setattr(output, "SAFETENSORS_MAX_HEADER_BYTES", 100_000)
    request = _request(_long_names(depth=8, count=60))
    with pytest.raises(LimitExceededError) as refused:
        make_plan(request)
    message = refused.value.message
    assert refused.value.status == 413 and tuple(refused.value.loc) == ("output",)
    assert re.search(r"weights\.safetensors would have a [\d,]+-byte safetensors header", message)
    assert "100,000 bytes" in message and "shorter names" in message
    advised = json.loads(re.search(r"output (\{.*?\}) passes", message).group(1))  # type: ignore[union-attr]
    fixed = _request(_long_names(depth=8, count=60), out=advised)
    plan = make_plan(fixed)
    sizes = _written_header_sizes(plan, fixed)
    assert len(sizes) > 1 and max(sizes) <= 100_000
    # and it is the largest such budget: one byte more gives a shard past the limit
    bigger = _request(
        _long_names(depth=8, count=60), out={**advised, "max_shard_bytes": advised["max_shard_bytes"] + 1}
    )
    with pytest.raises(LimitExceededError):
        make_plan(bigger)


def test_the_issue_input_is_refused_before_planning() -> None:
    # 58 sequentials named with 128 characters around a repeat of 10,000 linears: 20,000 tensors whose
    # names total 149,877,780 bytes (a 151,092,440-byte header before this fix). Refused from the counts.
    request = _request(_long_names(depth=58, count=10_000))
    started = time.perf_counter()
    with pytest.raises(LimitExceededError, match="INITIUM_MAX_NAME_BYTES") as refused:
        make_plan(request)
    assert time.perf_counter() - started < 0.5
    assert "149,877,780 bytes of tensor names" in refused.value.message


def test_the_limit_is_the_one_safetensors_enforces(tmp_path: Path) -> None:
    # safetensors refuses a length prefix past 100,000,000 before reading the header; at the limit it
    # reads on (and finds this file too short): the boundary is exactly SAFETENSORS_MAX_HEADER_BYTES.
    def error_for(n: int) -> str:
        path = tmp_path / f"{n}.safetensors"
        path.write_bytes(n.to_bytes(8, "little") + b"{}      ")
        with pytest.raises(Exception) as error:  # safetensors raises its own type
            safe_open(str(path), framework="pt")
        return str(error.value)

    assert "header too large" in error_for(output.SAFETENSORS_MAX_HEADER_BYTES + 1)
    assert "header too large" not in error_for(output.SAFETENSORS_MAX_HEADER_BYTES)
