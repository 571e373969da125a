"""One name per layer type: the spec schema's module types are exactly the planner's and the torch
model builder's, and the probe and the client register only names the schema knows.

Adding a layer type touches three places: the schema (its class in schemas/spec_layers.py or
spec_blocks.py, in spec.Module), the planner entry (register_layer in plan/layers.py, or
register_composite in plan/composite.py for a block) and the model-builder entry (model/modules.py
MODULES). The probe's input shape (model/propagation.py PROBE_SHAPES) and the client's torch class
(client/_modules.py TORCH_CLASSES) are optional: without them the probe asks for report.probe_shape,
and spec_from_module describes the module's tensors as raw parameters.
"""

from __future__ import annotations

from typing import get_args

from initium.client._modules import TORCH_CLASSES
from initium.schemas import spec as s
from initium.schemas._module import MATRIX_TYPES, NORM_TYPES, WEIGHTED_SUM_TYPES, ParameterizedType
from initium.service.model.modules import MODULES
from initium.service.model.propagation import PROBE_SHAPES
from initium.service.plan import planner  # noqa: F401  (loads every planner registration)
from initium.service.plan.composite import list_composites
from initium.service.plan.layers import CONTAINER_TYPES, list_layers

# Types the model builder has no entry for, and why: a raw tensor is an attribute of its parent
# module (modules.build_sequential registers it), not a module of its own.
NOT_MODULES = {"parameter"}


def schema_types() -> set[str]:
    """Every `type` tag of the spec.Module union."""
    (union, _) = get_args(s.Module)
    return {tag for cls in get_args(union) for tag in get_args(cls.model_fields["type"].annotation)}


def _differ(what: str, names: set[str]) -> str:
    expected = schema_types()
    return f"{what}: missing {sorted(expected - names)}, not in the schema {sorted(names - expected)}"


def test_the_planner_knows_every_schema_type() -> None:
    planned = [*list_layers(), *list_composites(), *CONTAINER_TYPES]
    assert len(planned) == len(set(planned)), "a type registered twice across layers, composites and containers"
    assert set(planned) == schema_types(), _differ("planner (plan/layers*.py, composite.py, tree.py)", set(planned))


def test_the_model_builder_knows_every_schema_type() -> None:
    built = set(MODULES.names()) | NOT_MODULES
    assert built == schema_types(), _differ("model builder (model/modules.py MODULES)", built)
    assert not NOT_MODULES & set(MODULES.names())


def test_the_probe_and_the_client_name_only_schema_types() -> None:
    assert set(PROBE_SHAPES.names()) <= schema_types(), _differ("probe (PROBE_SHAPES)", set(PROBE_SHAPES.names()))
    assert set(TORCH_CLASSES.names()) <= schema_types(), _differ("client (TORCH_CLASSES)", set(TORCH_CLASSES.names()))


def test_the_client_maps_every_parameterized_type_with_a_torch_class() -> None:
    """A manifest's module_type: every type that owns tensors, `parameter` being the fallback."""
    assert set(TORCH_CLASSES.names()) | {"parameter"} == set(get_args(ParameterizedType))


def test_the_type_groups_name_schema_types() -> None:
    groups = {*get_args(ParameterizedType), *WEIGHTED_SUM_TYPES, *MATRIX_TYPES, *NORM_TYPES, *s.ACTIVATION_TYPES}
    assert groups <= schema_types(), sorted(groups - schema_types())
