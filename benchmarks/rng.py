"""Generation throughput of initium's Philox sampler against torch's native normal_ and uniform_.

    .venv/bin/python -m benchmarks.rng [--elements 268435456] [--device cpu|cuda] [--dtype float32]

Both sides produce a fresh tensor of the same size, dtype and device per call (allocation
included, as a job pays it); the best of --repeats is reported, as GB/s of output and as the ratio
initium / native. The same run checks that the fast path's bytes (numba on CPU, Triton on CUDA)
equal the torch reference path's on index windows across the tensor (the reference is slow, so it
is not run over everything).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from initium.service.materialize import fastpath, tritonpath
from initium.service.materialize.sampling import Stream, reference, sample
from initium.service.plan import distributions as d

KEY = (0x9E3779B9, 0x7F4A7C15)
LAWS: dict[str, tuple[d.Distribution, Callable[[torch.Tensor], torch.Tensor]]] = {
    "uniform": (d.Uniform(-1.0, 1.0), lambda t: t.uniform_(-1.0, 1.0)),
    "normal": (d.Normal(0.0, 1.0), lambda t: t.normal_(0.0, 1.0)),
}


def best_of(repeats: int, fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        del out
    return min(times)


def fast_path(device: torch.device) -> str:
    if device.type == "cuda":
        return "Triton" if tritonpath.verified(device) else "off"
    return "numba" if fastpath.AVAILABLE and fastpath.verified() else "off"


def check_fast_equals_reference(n: int, device: torch.device, windows: int = 8, width: int = 65_536) -> bool:
    if fast_path(device) == "off":
        return True
    for dist, _ in LAWS.values():
        for start in np.linspace(0, n - width, windows).astype(np.int64).tolist():
            fast = torch.empty(width, dtype=torch.float64, device=device)
            if device.type == "cuda":
                tritonpath.fill_run(dist, start, KEY, fast)
            else:
                fastpath.fill_run(dist, start, KEY, fast.numpy())
            ref = reference(dist, torch.arange(start, start + width, device=device), KEY)
            if not torch.equal(fast.view(torch.int64), ref.view(torch.int64)):
                return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", type=int, default=256 * 2**20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device, dtype, n = torch.device(args.device), getattr(torch, args.dtype), args.elements
    stream = Stream(KEY, device)
    gb = n * torch.empty(0, dtype=dtype).element_size() / 1e9
    name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}"
    )
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"fast path {fast_path(device)}")  # fmt: skip
    print(f"{n:,} elements of {args.dtype} ({gb:.2f} GB), best of {args.repeats}\n")
    print(f"{'law':<8} {'initium s':>10} {'GB/s':>7} {'native s':>10} {'GB/s':>7} {'ratio':>7}")
    for law, (dist, native) in LAWS.items():
        sample(dist, (1024,), stream)  # compile and verify the kernels outside the timing
        ours = best_of(args.repeats, lambda dist=dist: sample(dist, (n,), stream, dtype=dtype), device)
        theirs = best_of(args.repeats, lambda native=native: native(torch.empty(n, dtype=dtype, device=device)), device)
        print(f"{law:<8} {ours:>10.4f} {gb / ours:>7.2f} {theirs:>10.4f} {gb / theirs:>7.2f} {theirs / ours:>7.2f}")
    same = check_fast_equals_reference(n, device)
    print(f"\nfast path bytes equal the reference path's on 8 windows of 65,536 per law: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
