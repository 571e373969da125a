"""The streaming writer produces files safetensors reads, byte for byte what the format says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from initium.schemas.plan import PlannedTensor
from initium.service.write.directory import LocalArtifacts
from initium.service.write.safetensors import SafetensorsStreamWriter, build_header

JOB = "0" * 64


def _planned(name: str, shape: list[int], dtype: str = "float32") -> PlannedTensor:
    return PlannedTensor(
        name=name, shape=shape, dtype=dtype, module="", module_type="parameter", role="weight", fan_in=1, fan_out=1,
        followed_by=None, rule=None, init=None, distribution=None, expected_mean=None, expected_std=None,
        elementwise=True,
    )  # fmt: skip


def test_header_bytes_are_pinned() -> None:
    # Same layout as the reference test in huggingface/safetensors (tests/test_pt_comparison.py),
    # with our metadata: 8-byte length, JSON, spaces to a multiple of 8.
    header = build_header([_planned("test", [2, 2], "float32")], {"format": "pt"})
    body = b'{"__metadata__":{"format":"pt"},"test":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}'
    assert len(body) == 91
    assert header == (96).to_bytes(8, "little") + body + b" " * 5
    assert len(header) % 8 == 0


def test_stream_equals_safetensors_reference(tmp_path: Path) -> None:
    tensors = {
        "a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "b": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "c": torch.tensor(7, dtype=torch.int64),
        "d": torch.ones(3, dtype=torch.float16),
    }
    dtypes = {"a": "float32", "b": "bfloat16", "c": "int64", "d": "float16"}
    plan = [_planned(k, list(v.shape), dtypes[k]) for k, v in tensors.items()]
    store = LocalArtifacts(tmp_path)
    path = store.path(JOB, "x.safetensors")
    with SafetensorsStreamWriter(store.writer(JOB, "x.safetensors"), plan, {"format": "pt", "k": "v"}) as writer:
        for name, value in tensors.items():
            writer.write(name, value)
        info = writer.close()
    sha = info.sha256
    assert info.name == "x.safetensors" and info.size == writer.bytes_written == path.stat().st_size
    loaded = load_file(path)
    for name, value in tensors.items():
        assert torch.equal(loaded[name], value) and loaded[name].dtype == value.dtype
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"format": "pt", "k": "v"}
    import hashlib

    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    # The data section equals what safetensors itself writes for the same tensors.
    reference = save(tensors)
    ref_len = int.from_bytes(reference[:8], "little")
    ours = path.read_bytes()
    our_len = int.from_bytes(ours[:8], "little")
    ref_header = json.loads(reference[8 : 8 + ref_len])
    for name in tensors:
        start, end = ref_header[name]["data_offsets"]
        ours_header = json.loads(ours[8 : 8 + our_len])
        o_start, o_end = ours_header[name]["data_offsets"]
        assert ours[8 + our_len + o_start : 8 + our_len + o_end] == reference[8 + ref_len + start : 8 + ref_len + end]


def test_writer_refuses_out_of_order_and_missing_tensors(tmp_path: Path) -> None:
    plan = [_planned("a", [2]), _planned("b", [2])]
    store = LocalArtifacts(tmp_path)
    path = store.path(JOB, "y.safetensors")
    with (
        pytest.raises(ValueError, match="expected a"),
        SafetensorsStreamWriter(store.writer(JOB, "y.safetensors"), plan, {}) as writer,
    ):
        writer.write("b", torch.zeros(2))
    assert not path.exists() and store.names(JOB) == []
    writer = SafetensorsStreamWriter(store.writer(JOB, "y.safetensors"), plan, {})
    writer.write("a", torch.zeros(2))
    with pytest.raises(ValueError, match="1 planned tensors were never written"):
        writer.close()
    assert not path.exists() and not list(path.parent.iterdir())  # nothing half-written stays
