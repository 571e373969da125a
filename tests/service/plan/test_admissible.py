"""Laws the job could not carry out are refused at plan time with a 422 naming the field (issue 15)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from initium.client import Client
from initium.client import RequestInvalidError as ClientRequestInvalidError
from initium.schemas.request import InitRequest
from initium.service.errors import RequestInvalidError
from initium.service.plan import truncated
from initium.service.plan.planner import make_plan

FIELD = ["policy", "rules", 0, "init"]


def request(init: dict[str, Any], dtype: str = "float32", out_features: int = 3) -> dict[str, Any]:
    """One linear layer whose weight gets `init` (its bias zeros)."""
    linear = {"type": "linear", "name": "fc", "in_features": 4, "out_features": out_features}
    rules = [{"match": {"role": "weight"}, "init": init}, {"match": {"role": "bias"}, "init": {"scheme": "zeros"}}]
    return {"spec": {"name": "t", "modules": [linear]}, "policy": {"rules": rules}, "seed": 3, "dtype": dtype}


def plan(init: dict[str, Any], dtype: str = "float32", out_features: int = 3) -> Any:
    return make_plan(InitRequest.model_validate(request(init, dtype, out_features)))


# (init, dtype, the field at fault, the range the message states): the issue's constant and every kind of law.
OUT_OF_RANGE = [
    ({"scheme": "constant", "value": 1e300}, "float16", "value", "[-65504, 65504]"),
    ({"scheme": "constant", "value": 65505.0}, "float16", "value", "[-65504, 65504]"),
    ({"scheme": "constant", "value": -1e39}, "bfloat16", "value", "[-3.38953e+38, 3.38953e+38]"),
    ({"scheme": "constant", "value": 1e300}, "float32", "value", "[-3.40282e+38, 3.40282e+38]"),
    ({"scheme": "uniform", "a": 0.0, "b": 1e6}, "float16", "b", "[-65504, 65504]"),
    ({"scheme": "uniform", "a": -1e39, "b": 0.0}, "float32", "a", "[-3.40282e+38, 3.40282e+38]"),
    ({"scheme": "normal", "std": 2e4}, "float16", "std", "[-65504, 65504]"),  # 6 std = 120,000
    ({"scheme": "normal", "mean": 1e5, "std": 1.0}, "float16", "mean", "[-65504, 65504]"),
    ({"scheme": "truncated_normal", "std": 4e4, "a": -2, "b": 2, "bounds": "std"}, "float16", "a", "[-65504"),
    ({"scheme": "truncated_normal", "mean": 0, "std": 2e4, "a": -1e9, "b": 1e9}, "float16", "std", "[-65504"),
    ({"scheme": "xavier_uniform", "gain": 1e5}, "float16", "gain", "[-65504, 65504]"),
]


@pytest.mark.parametrize(("init", "dtype", "field", "limits"), OUT_OF_RANGE)
def test_a_law_the_dtype_cannot_hold_is_refused(init: dict[str, Any], dtype: str, field: str, limits: str) -> None:
    with pytest.raises(RequestInvalidError) as refused:
        plan(init, dtype)
    assert refused.value.loc == [*FIELD, field]
    assert f"{dtype}'s range {limits}" in refused.value.message and "fc.weight" in refused.value.message
    wider = re.search(r"or use dtype (\w+)$", refused.value.message)
    assert wider is not None and plan(init, wider.group(1)).tensors[0].distribution is not None  # the advice works


@pytest.mark.parametrize(
    ("init", "dtype"),
    [
        ({"scheme": "constant", "value": 65504.0}, "float16"),  # the largest float16
        ({"scheme": "constant", "value": 1e300}, "float64"),
        ({"scheme": "normal", "std": 1e4}, "float16"),  # 6 std = 60,000
        ({"scheme": "truncated_normal", "std": 1.0, "a": -1e9, "b": 2.0}, "float16"),  # draws within [-6, 2]
        ({"scheme": "uniform", "a": 0.0, "b": 1e6}, "bfloat16"),
        # 1e-10 std above 1e10 rounds to 1e10: a point mass, which the sampler draws
        ({"scheme": "truncated_normal", "mean": 1e10, "std": 1e-10, "a": 0, "b": 1e-10, "bounds": "std"}, "float64"),
    ],
)
def test_a_law_the_dtype_holds_is_planned(init: dict[str, Any], dtype: str) -> None:
    assert plan(init, dtype).tensors[0].distribution is not None


def test_a_uniform_whose_width_overflows_the_sampler_is_refused() -> None:
    """float64 holds -1e308 and 1e308, but b - a is inf: every drawn value would be inf or nan."""
    with pytest.raises(RequestInvalidError) as refused:
        plan({"scheme": "uniform", "a": -1e308, "b": 1e308}, "float64")
    assert refused.value.loc == [*FIELD, "b"] and "overflows float64" in refused.value.message
    assert plan({"scheme": "uniform", "a": -0.5e308, "b": 0.5e308}, "float64").tensors[0].expected_mean == 0.0


def test_local_mode_refuses_the_same_way(tmp_path: Path) -> None:
    with pytest.raises(ClientRequestInvalidError) as refused:
        Client.local(tmp_path / "local", device="cpu").plan(request({"scheme": "constant", "value": 1e300}, "float16"))
    assert refused.value.status_code == 422 and refused.value.loc == [*FIELD, "value"]


def test_the_issues_upper_tail_plans_exact_moments_in_local_mode(tmp_path: Path) -> None:
    """From a = 8.3 the plan raised a bare ZeroDivisionError."""
    planned = Client.local(tmp_path / "local", device="cpu").plan(
        request({"scheme": "truncated_normal", "a": 8.3, "b": 9})
    )
    weight = planned.tensors[0]
    assert weight.expected_mean == pytest.approx(8.415711923064901, rel=1e-15)
    assert weight.expected_std == pytest.approx(0.11112337401673222, rel=1e-15)


@pytest.mark.parametrize(("a", "b", "field"), [(8.0, 1e300, "b"), (-1e300, -8.0, "a"), (0.6, 1e10, "b")])
@pytest.mark.parametrize("bounds", ["absolute", "std"])
def test_a_tail_the_sampler_cannot_draw_is_refused_and_the_advice_works(
    a: float, b: float, field: str, bounds: str
) -> None:
    """Uniform proposals over [8, 1e300] std are never accepted: the job failed after 100,000 rounds.
    The bound the message gives holds the same law to 1e-12, and the sampler draws it."""
    mean, std = 1.0, 0.5
    low, high = mean + std * a, mean + std * b
    init = {"scheme": "truncated_normal", "mean": mean, "std": std, "bounds": bounds}
    init |= {"a": a, "b": b} if bounds == "std" else {"a": low, "b": high}
    with pytest.raises(RequestInvalidError) as refused:
        plan(init)
    assert refused.value.loc == [*FIELD, field]
    advice = re.search(r"lies beyond (\S+?)(?: std)?: set (\w) to that", refused.value.message)
    assert advice is not None and advice.group(2) == field
    fixed = plan({**init, field: float(advice.group(1))}).tensors[0]
    assert fixed.distribution is not None
    assert truncated.rejection_acceptance(**fixed.distribution.params) > 0.02
    exact = truncated.truncated_moments(mean, std, low, high)
    assert fixed.expected_mean == pytest.approx(exact[0], rel=1e-12)
    assert fixed.expected_std == pytest.approx(exact[1], rel=1e-12)


def test_a_tail_the_sampler_draws_slowly_is_still_planned() -> None:
    """[8, 50] std accepts 0.3% of proposals: slow, but every element is drawn (the bytes stay)."""
    assert plan({"scheme": "truncated_normal", "a": 8.0, "b": 50.0}, out_features=1000).tensors[0].expected_mean > 8


def test_the_sampler_constants_are_the_samplers() -> None:
    from initium.service.materialize import sampling

    assert (truncated.MAX_ATTEMPTS, truncated.NORMAL_PROPOSAL_MIN_MASS) == (
        sampling.MAX_ATTEMPTS,
        sampling.NORMAL_PROPOSAL_MIN_MASS,
    )


def test_moments_that_do_not_converge_are_refused_not_guessed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no precision up to MAX_PREC settles the moments, a 422 names the bound instead of a wrong number."""
    monkeypatch.setattr(truncated, "MAX_PREC", 32)
    truncated.truncated_moments.cache_clear()
    with pytest.raises(RequestInvalidError) as refused:
        plan({"scheme": "truncated_normal", "a": 8.0, "b": 9.0})
    truncated.truncated_moments.cache_clear()
    assert refused.value.loc == [*FIELD, "b"] and "did not converge in 32 bits" in refused.value.message


def test_the_field_at_fault_is_the_one_that_scales_the_law() -> None:
    """identity_plus_noise's gain (not its std) and t5's factor were named wrongly or not at all."""
    for init, field in (
        ({"scheme": "identity_plus_noise", "gain": 1e6, "std": 0.01}, "gain"),
        ({"scheme": "t5", "factor": 1e10}, "factor"),
    ):
        with pytest.raises(RequestInvalidError) as refused:
            plan(init, "float16", out_features=4)  # square: identity_plus_noise needs rows a multiple of columns
        assert refused.value.loc == [*FIELD, field]


def test_a_law_whose_every_value_rounds_to_zero_is_refused() -> None:
    with pytest.raises(RequestInvalidError) as refused:
        plan({"scheme": "normal", "std": 1e-9}, "float16")
    assert refused.value.loc == [*FIELD, "std"] and "rounds to 0 in float16" in refused.value.message
    assert plan({"scheme": "normal", "std": 1e-9}, "float32").tensors[0].expected_std == 1e-9
    assert plan({"scheme": "normal", "std": 1e-7}, "float16").tensors[0].expected_std == 1e-7  # subnormal, not 0


def test_a_huge_negative_slope_plans_instead_of_a_500() -> None:
    """slope**2 raised OverflowError (a 500) past 1e154: the gain of such a slope is 0."""
    for scheme in ("kaiming_uniform", "kaiming_normal"):
        assert plan({"scheme": scheme, "negative_slope": 1e300}).tensors[0].expected_std == 0.0


def test_lsuv_targets_must_be_finite() -> None:
    for field in ("target_std", "tolerance"):
        body = request({"scheme": "normal", "std": 0.1})
        body["policy"]["lsuv"] = {field: float("inf")}
        with pytest.raises(ValueError, match=field):
            InitRequest.model_validate(body)


def test_an_interval_far_narrower_than_the_std_plans_as_the_uniform_it_is() -> None:
    """At 96 bits the acceptance of [-1e-30, 1e-30] std units cancelled to 0: refused as undrawable."""
    for a, b in ((-1e-30, 1e-30), (0.0, 1e-30)):
        tensor = plan({"scheme": "truncated_normal", "a": a, "b": b}).tensors[0]
        assert tensor.expected_mean == pytest.approx((a + b) / 2, rel=1e-12, abs=1e-45)
        assert tensor.expected_std == pytest.approx((b - a) / 12**0.5, rel=1e-9)


def test_a_spread_the_dtype_cannot_resolve_at_its_mean_is_refused() -> None:
    """float64 N(1e300, 1) wrote 1e300 everywhere and its histogram divided by a zero width."""
    for init, dtype in (({"scheme": "normal", "mean": 1e300, "std": 1.0}, "float64"),
                        ({"scheme": "normal", "mean": 100.0, "std": 0.001}, "float16")):  # fmt: skip
        with pytest.raises(RequestInvalidError) as refused:
            plan(init, dtype)
        assert (
            refused.value.loc == [*FIELD, "std"] and f"rounds to {init['mean']:.6g} in {dtype}" in refused.value.message
        )
    assert plan({"scheme": "normal", "mean": 100.0, "std": 0.01}, "float16").tensors[0].expected_std == 0.01


@pytest.mark.parametrize(
    ("init", "dtype"),
    [
        ({"scheme": "normal", "mean": 100.0, "std": 0.001}, "float16"),  # unresolved at its mean
        ({"scheme": "normal", "std": 1e-9}, "float16"),  # rounds to 0
        ({"scheme": "normal", "std": 1e-50}, "float32"),
    ],
)
def test_the_dtype_advised_for_an_unresolvable_law_resolves_it(init: dict[str, Any], dtype: str) -> None:
    with pytest.raises(RequestInvalidError) as refused:
        plan(init, dtype)
    wider = re.search(r"or use dtype (\w+)$", refused.value.message)
    assert wider is not None and plan(init, wider.group(1)).tensors[0].expected_std == init["std"]
