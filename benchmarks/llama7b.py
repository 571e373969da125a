"""A 7B-parameter Llama-shaped decoder in bfloat16 through the real service, with each process's peak RSS.

    .venv/bin/python -m benchmarks.llama7b [--data-dir DIR] [--broker redis://127.0.0.1:6379/0] [--keep]

Starts `initium serve` on a free loopback port (embedded worker by default; with --broker, the
API alone plus one `initium worker`, which needs a running redis-server), submits the request,
waits, checks the file's sha256 and header, and prints the wall time and the peak resident set
size (VmHWM, the kernel's own high-water mark) of every initium process. The store (a temporary folder
unless --data-dir names one) is removed when the run ends, unless --keep. Llama-2-7B's shapes:
vocab 32000, d_model 4096, 32 layers, 32 heads, MLP 11008 (SwiGLU), RMSNorm, no biases,
untied lm_head: 6,738,415,616 parameters, 13.5 GB in bfloat16.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._scratch import add_keep_argument, scratch
from benchmarks._serve import free_port, ready_report, wait_ready

LLAMA_7B: dict[str, Any] = {
    "spec": {
        "name": "llama-7b",
        "modules": [
            {"type": "embedding", "name": "embed_tokens", "num_embeddings": 32000, "embedding_dim": 4096},
            {"type": "repeat", "name": "layers", "count": 32, "block": {
                "type": "transformer_block", "d_model": 4096, "n_heads": 32, "mlp_hidden": 11008,
                "gated_mlp": True, "activation": "silu", "norm": "rms_norm", "bias": False}},
            {"type": "rms_norm", "name": "norm", "normalized_shape": 4096},
            {"type": "linear", "name": "lm_head", "in_features": 4096, "out_features": 32000, "bias": False},
        ],
    },
    "policy": {"preset": "llama"},
    "seed": 0,
    "dtype": "bfloat16",
}  # fmt: skip


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    children = [int(p) for p in out.split()]
    return children + [g for c in children for g in descendants(c)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the store (kept); default: a temporary one, removed unless --keep")  # fmt: skip
    parser.add_argument("--broker", default=None, help="run the API + one Celery worker on this broker")
    parser.add_argument("--timeout", type=float, default=3600)
    add_keep_argument(parser)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    # The 13.5 GB store goes when the run ends, a failed or interrupted one too (issue 18, item 6).
    with scratch("initium-7b-", args.keep, given=args.data_dir) as data:
        return run(args, data)


def run(args: argparse.Namespace, data: Path) -> int:
    """Serve from `data`, generate the model, verify it and print the figures; the exit status."""
    initium = str(Path(sys.executable).parent / "initium")
    port = free_port()
    env = {**os.environ, "INITIUM_DEVICE": os.environ.get("INITIUM_DEVICE", "auto")}
    processes = {"api": subprocess.Popen([initium, "serve", "--port", str(port), "--data-dir", str(data)]
                                         + (["--broker", args.broker] if args.broker else []), env=env)}  # fmt: skip
    if args.broker:
        worker = [initium, "worker", "--broker", args.broker, "--data-dir", str(data), "--name", "bench@local"]
        processes["worker"] = subprocess.Popen(worker, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=600)
        with httpx.Client(base_url=url, timeout=60) as client:
            started = time.perf_counter()
            job = client.post("/v1/initializations", json=LLAMA_7B).json()
            while job["state"] not in ("succeeded", "failed"):
                if time.perf_counter() - started > args.timeout:
                    raise TimeoutError(f"job {job['id']} still {job['state']}")
                time.sleep(1.0)
                job = client.get(f"/v1/initializations/{job['id']}").json()
            wall = time.perf_counter() - started
            if job["state"] != "succeeded":
                print(f"job failed: {job['error']}")
                return 1
            report = ready_report(url, job["id"], args.timeout)  # computed after the weights (issue 17)
            report_wall = time.perf_counter() - started
        peaks = {}
        for name, process in processes.items():
            peaks[name] = peak_rss_mb(process.pid)
            for child in descendants(process.pid):
                with_cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:60]
                peaks[f"{name} child {child} ({with_cmd.strip()})"] = peak_rss_mb(child)
        path = data / "jobs" / job["id"] / "weights.safetensors"
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
            f.seek(0)
            while chunk := f.read(1 << 24):
                sha.update(chunk)
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    params, size = report["totals"]["parameters"], job["size"]
    print(f"\nmachine: {os.cpu_count()} cores, {platform.machine()}, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB; engine: "
          f"{'celery ' + args.broker if args.broker else 'embedded'}")  # fmt: skip
    digest = sha.hexdigest()
    print(f"{params:,} parameters, {len(header) - 1} tensors, {size / 1e9:.2f} GB bfloat16 in {wall:.1f} s "
          f"({size / 1e6 / wall:.0f} MB/s); sha256 {digest} == status: {digest == job['sha256']}; "
          f"the report after them, at {report_wall:.1f} s")  # fmt: skip
    print(f"stage seconds: {report['provenance']['timings']}")
    for name, mb in peaks.items():
        print(f"peak RSS {mb:8.0f} MB  {name}")
    worst = max(peaks.values())
    print(f"largest peak RSS: {worst:.0f} MB ({'under' if worst < 2048 else 'OVER'} 2 GB)")
    return 0 if worst < 2048 else 1


if __name__ == "__main__":
    raise SystemExit(main())
