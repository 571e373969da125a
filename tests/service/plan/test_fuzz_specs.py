"""Hypothesis-generated specs: the plan always names and shapes tensors as torch does, or refuses
the request with a located error; never anything else."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from initium.schemas import InitRequest
from initium.service.model.modules import build
from initium.service.plan.planner import make_plan

small = st.integers(min_value=1, max_value=6)
names = st.none() | st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(
            lambda i, o, b: {"type": "linear", "in_features": i, "out_features": o, "bias": b},
            small,
            small,
            st.booleans(),
        ),
        st.builds(
            lambda n, c, k, g, b: {
                "type": f"conv{n}d",
                "in_channels": c * g,
                "out_channels": c * g,
                "kernel_size": k,
                "groups": g,
                "bias": b,
            },
            st.integers(1, 3),
            small,
            st.integers(1, 3),
            st.integers(1, 3),
            st.booleans(),
        ),
        st.builds(lambda n, d: {"type": "embedding", "num_embeddings": n, "embedding_dim": d}, small, small),
        st.builds(
            lambda c, a: {"type": "layer_norm", "normalized_shape": c, "elementwise_affine": a}, small, st.booleans()
        ),
        st.builds(
            lambda n, c, a, t: {"type": f"batch_norm{n}d", "num_features": c, "affine": a, "track_running_stats": t},
            st.integers(1, 3),
            small,
            st.booleans(),
            st.booleans(),
        ),
        st.sampled_from([{"type": t} for t in ("relu", "tanh", "gelu", "dropout", "flatten", "identity")]),
    )


def _named(module: dict[str, Any], name: str | None) -> dict[str, Any]:
    return module if name is None else {**module, "name": name}


modules = st.recursive(
    st.builds(_named, _leaf(), names),
    lambda children: st.builds(
        lambda ms, n: _named({"type": "sequential", "modules": ms}, n),
        st.lists(children, min_size=1, max_size=4),
        names,
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(modules, min_size=1, max_size=5))
def test_random_specs_plan_like_torch(spec_modules: list[dict[str, Any]]) -> None:
    body = {"spec": {"name": "fuzz", "modules": spec_modules}, "policy": {"rules": [{"init": {"scheme": "zeros"}}]}}
    try:
        request = InitRequest.model_validate(body)
    except ValidationError as exc:
        # Only name collisions (siblings, or nn.Module's own attributes) are generated invalid.
        assert all(
            "duplicate module name" in e["msg"] or "attribute of torch.nn.Module" in e["msg"] for e in exc.errors()
        ), exc
        return
    plan = make_plan(request)
    expected = {k: list(v.shape) for k, v in build(request.spec).state_dict().items()}
    assert [(t.name, t.shape) for t in plan.tensors] == list(expected.items())
