"""Every law family has a reference sampler and a report check, fast paths only cover elementwise laws
they are checked on, and the families agree across the plan's laws, the wire and the registries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

import pytest
import torch

from initium.schemas.plan import Distribution as WireDistribution
from initium.service.materialize import fastpath, sampling, tritonpath
from initium.service.materialize.sampling import CHECK_LAWS, ELEMENTWISE, SAMPLERS, Stream, sample
from initium.service.plan import distributions as d
from initium.service.registry import Registry, UnknownNameError
from initium.service.summarize.checks import LAW_CHECKS

FAMILIES = set(d.FAMILIES)
FAST_PATHS: dict[str, Registry[Any]] = {"numba": fastpath.KERNELS, "triton": tritonpath.FILLERS}


def test_the_law_families_agree_with_the_wire() -> None:
    assert set(get_args(d.Family)) == FAMILIES
    assert set(get_args(WireDistribution.model_fields["family"].annotation)) == FAMILIES
    assert all(cls.family == family for family, cls in d.FAMILIES.items())


def test_every_law_family_has_a_reference_sampler() -> None:
    missing, extra = FAMILIES - set(SAMPLERS.names()), set(SAMPLERS.names()) - FAMILIES
    assert not missing, f"law families without a sampler in materialize (sampling or structured): {sorted(missing)}"
    assert not extra, f"samplers for families plan/distributions.py does not define: {sorted(extra)}"


def test_every_law_family_has_a_report_check() -> None:
    missing, extra = FAMILIES - set(LAW_CHECKS.names()), set(LAW_CHECKS.names()) - FAMILIES
    assert not missing, f"law families without an entry in summarize/checks.py LAW_CHECKS: {sorted(missing)}"
    assert not extra, f"checks for families plan/distributions.py does not define: {sorted(extra)}"


def test_elementwise_definitions_are_laws() -> None:
    assert set(ELEMENTWISE.names()) <= FAMILIES


@pytest.mark.parametrize("path", sorted(FAST_PATHS))
def test_fast_paths_cover_only_elementwise_laws_they_are_checked_on(path: str) -> None:
    """A fast path is used for a family only after first_mismatch compared it with the definition."""
    families = set(FAST_PATHS[path].names())
    assert families <= set(ELEMENTWISE.names()), f"{path} kernels without a reference definition"
    unchecked = families - {law.family for law in CHECK_LAWS}
    assert not unchecked, f"{path} kernels for laws sampling.CHECK_LAWS does not check: {sorted(unchecked)}"


@dataclass(frozen=True)
class _Unregistered:
    family: str = "no_such_law"
    elementwise: bool = True


def test_an_unknown_family_names_the_valid_ones() -> None:
    law = _Unregistered()
    with pytest.raises(UnknownNameError, match=r"no_such_law.*valid: constant"):
        sample(law, (2, 2), Stream((1, 2), torch.device("cpu")))  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="elementwise law 'no_such_law'"):
        sampling.reference(law, torch.arange(4), (1, 2))  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="law check 'no_such_law'"):
        LAW_CHECKS.get(law.family)


def test_a_family_without_a_fast_kernel_uses_the_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    """An elementwise law need not have fast-path entries: without one, the reference draws it."""
    law = d.Uniform(-1.0, 1.0)
    stream = Stream((3, 4), torch.device("cpu"))
    expected = sample(law, (64, 3), stream, dtype=torch.float32)
    monkeypatch.setattr(sampling, "_fast_families", lambda device: ())
    assert torch.equal(sample(law, (64, 3), stream, dtype=torch.float32), expected)
