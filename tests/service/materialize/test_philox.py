"""The reproducibility contract: Random123's known answers, device-independent arithmetic, the numba
fast path equal to the torch reference bit for bit, and slices equal to slices of the whole."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from initium.service.materialize import fastpath, philox, sampling
from initium.service.materialize.sampling import Stream, index_chunks, reference, runs, sample
from initium.service.plan import distributions as d

# Random123 1.14 kat_vectors, philox4x32_10: (counter, key) -> output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
KEY = (0x01234567, 0x89ABCDEF)
LAWS: dict[str, d.Distribution] = {
    "uniform": d.Uniform(-1.5, 2.0),
    "normal": d.Normal(0.3, 0.7),
    "truncated_wide": d.TruncatedNormal(0.0, 1.0, -2.0, 2.0),
    "truncated_narrow": d.TruncatedNormal(0.1, 0.5, 0.4, 0.9),
    "truncated_tail": d.TruncatedNormal(0.0, 1.0, 6.0, 7.0),
}


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_random123_known_answers(counter: tuple[int, ...], key: tuple[int, int], expected: tuple[int, ...]) -> None:
    words = tuple(torch.tensor([c], dtype=torch.int64) for c in counter)
    out = philox.philox4x32_10(words, *key)  # type: ignore[arg-type]
    assert tuple(int(w) for w in out) == expected


@pytest.mark.skipif(not fastpath.AVAILABLE, reason="numba is not installed")
@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_fast_path_known_answers(counter: tuple[int, ...], key: tuple[int, int], expected: tuple[int, ...]) -> None:
    words = [np.uint64(c) for c in counter]
    assert tuple(int(w) for w in fastpath._philox4x32_10(*words, *key)) == expected


def test_uniform_bits_scale_exactly() -> None:
    top = torch.tensor([0, 0xFFFFFFFF], dtype=torch.int64)
    assert philox.uniform53(top, top).tolist() == [0.0, 1 - 2**-53]
    assert philox.uniform_open(top, top).tolist() == [2**-53, 1 - 2**-53]


def test_device_independent_math_is_accurate() -> None:
    x = torch.linspace(1e-300, 80.0, 100_001, dtype=torch.float64)[1:]
    assert torch.allclose(
        philox.log(x), torch.tensor([math.log(v) for v in x.tolist()], dtype=torch.float64), rtol=3e-16, atol=0
    )
    assert torch.allclose(
        philox.sqrt(x), torch.tensor([math.sqrt(v) for v in x.tolist()], dtype=torch.float64), rtol=3e-16, atol=0
    )
    u = torch.arange(0, 2**20, dtype=torch.float64) / 2**20
    exact = torch.tensor([math.cos(2 * math.pi * v) for v in u.tolist()], dtype=torch.float64)
    assert (philox.cos_2pi(u) - exact).abs().max().item() < 1e-15


@pytest.mark.skipif(not fastpath.AVAILABLE, reason="numba is not installed")
@pytest.mark.parametrize("law", sorted(LAWS))
@pytest.mark.parametrize(("start", "count"), [(0, 300_000), (2**32 - 1000, 2000), (2**40 + 7, 1000)])
def test_fast_path_equals_reference_bit_for_bit(law: str, start: int, count: int) -> None:
    ref = reference(LAWS[law], torch.arange(start, start + count), KEY)
    fast = np.empty(count)
    fastpath.fill_run(LAWS[law], start, KEY, fast)
    assert np.array_equal(ref.numpy().view(np.int64), fast.view(np.int64))
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert torch.equal(ref.to(dtype), torch.from_numpy(fast).to(dtype))


def test_sampling_without_the_fast_path_is_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Stream(KEY, torch.device("cpu"))
    box = [(3, 40), (0, 64)]
    fast = {law: sample(dist, (50, 64), stream, box) for law, dist in LAWS.items()}
    monkeypatch.setattr(fastpath, "AVAILABLE", False)
    for law, dist in LAWS.items():
        assert torch.equal(sample(dist, (50, 64), stream, box), fast[law]), law


def test_values_do_not_depend_on_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Stream(KEY, torch.device("cpu"))
    whole = sample(LAWS["normal"], (37, 101), stream)
    import initium.service.materialize.sampling as sampling

    monkeypatch.setattr(sampling, "CHUNK", 97)
    assert torch.equal(sample(LAWS["normal"], (37, 101), stream), whole)


@pytest.mark.parametrize(
    "box", [[(1, 3), (0, 5), (2, 5)], [(1, 3), (0, 5), (0, 6)], [(0, 4), (0, 5), (0, 6)], [(2, 3), (4, 5), (5, 6)]]
)
def test_index_chunks_and_runs_cover_the_box_in_order(box: list[tuple[int, int]]) -> None:
    shape = (4, 5, 6)
    expected = torch.arange(math.prod(shape)).reshape(shape)[tuple(slice(a, b) for a, b in box)].reshape(-1)
    assert torch.equal(torch.cat(list(index_chunks(shape, box, torch.device("cpu"), chunk=4))), expected)
    from_runs = torch.cat([torch.arange(start, start + n) for start, n in runs(shape, box)])
    assert torch.equal(from_runs, expected)
    if box == [(0, 4), (0, 5), (0, 6)]:
        assert list(runs(shape, box)) == [(0, 120)]


@st.composite
def boxes(draw: Any) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)))
    box = []
    for n in shape:
        start = draw(st.integers(0, n - 1))
        box.append((start, draw(st.integers(start + 1, n))))
    return shape, box


@settings(max_examples=40, deadline=None)
@given(boxes(), st.sampled_from([*sorted(LAWS), "orthogonal", "constant", "eye"]))
def test_a_slice_is_the_same_bytes_as_that_part_of_the_whole(case: Any, law: str) -> None:
    shape, box = case
    dist: d.Distribution
    if law == "orthogonal":
        if len(shape) < 2:
            return
        dist = d.Orthogonal(1.0, shape[0], math.prod(shape[1:]))
    else:
        dist = d.Constant(0.25) if law == "constant" else LAWS.get(law, d.Constant(0.0))
    if law == "eye":
        if len(shape) != 2:
            return
        dist = d.Eye(1.0, shape[0], shape[1], tile=False, noise=0.1)
    stream = Stream(KEY, torch.device("cpu"))
    whole = sample(dist, shape, stream)
    part = sample(dist, shape, stream, box)
    assert torch.equal(part, whole[tuple(slice(a, b) for a, b in box)])


def test_different_keys_and_indices_are_independent() -> None:
    a = reference(LAWS["normal"], torch.arange(50_000), KEY).numpy()
    b = reference(LAWS["normal"], torch.arange(50_000), (KEY[0] + 1, KEY[1])).numpy()
    c = reference(LAWS["normal"], torch.arange(50_000, 100_000), KEY).numpy()
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.02 and abs(np.corrcoef(a, c)[0, 1]) < 0.02


@pytest.mark.skipif(not fastpath.AVAILABLE, reason="numba is not installed")
def test_fast_path_verifies_itself() -> None:
    assert fastpath.verified()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("path", ["fast", "reference"])
def test_sampling_into_a_dtype_is_one_cast_of_the_float64_draws(
    dtype: torch.dtype, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rounding straight into the dtype (no float64 copy of the tensor) gives torch's .to(dtype) of
    the float64 draws, across the fast path's scratch-chunk boundary and in a slice."""
    if path == "reference":
        monkeypatch.setattr(sampling, "_fast_filler", lambda device: None)
    stream = Stream(KEY, torch.device("cpu"))
    shape, box = (300, 1000), [(90, 299), (3, 1000)]  # 300,000 elements: more than one CHUNK
    for law in [*LAWS.values(), d.Constant(0.1)]:
        whole = sample(law, shape, stream)
        assert torch.equal(sample(law, shape, stream, dtype=dtype).view(torch.int16), whole.to(dtype).view(torch.int16))
        part = sample(law, shape, stream, box, dtype=dtype)
        assert torch.equal(part.view(torch.int16), whole[90:299, 3:].to(dtype).view(torch.int16))
