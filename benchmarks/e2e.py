"""End to end against what users do today: request -> verified safetensors on the client's disk.

    .venv/bin/python -m benchmarks.e2e [--models mlp gpt2 llama-1.1b llama-7b] [--device auto]

For each model, in the same run:
  initium      a fresh `initium serve` (embedded worker); Client.initialize: submit, wait, stream the
               file to disk, verify its sha256. Then the same request again, three ways: `again`
               answered from the client's download cache (no path), `copy` from that cache to a new
               path, `remote` by a client without a cache (the service's cache hit, downloaded).
  transformers the model built from its config (its own init) and saved with safetensors
               (for the MLP: torch.nn built directly, which runs torch's init).
  meta         torch on the meta device, to_empty, every module's reset_parameters, saved.
Baselines run in their own process, so each peak RSS (ru_maxrss) is that process's alone; the
service's is the kernel's high-water mark (VmHWM) of its API and worker processes. Models whose
baseline would not fit in this machine's memory are not run for the baseline and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks._serve import free_port, wait_ready
from benchmarks.llama7b import LLAMA_7B, descendants, peak_rss_mb

MLP = {
    "spec": {"name": "mlp8", "modules": [m for i in range(8) for m in (
        {"type": "linear", "name": f"l{i}", "in_features": 4096, "out_features": 4096}, {"type": "relu"})]},
    "policy": {"preset": "kaiming-relu"},
    "seed": 0,
    "dtype": "float32",
}  # fmt: skip
# Hugging Face configs: GPT-2 small, and TinyLlama-1.1B's shapes.
HF = {
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", {}, "gpt2", "float32"),
    "llama-1.1b": ("LlamaForCausalLM", "LlamaConfig", {
        "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
        "num_key_value_heads": 4, "vocab_size": 32000}, "llama", "bfloat16"),
    "llama-7b": ("LlamaForCausalLM", "LlamaConfig", {}, "llama", "bfloat16"),
}  # fmt: skip
BASELINE = textwrap.dedent("""
    import resource, sys, time, json, torch, transformers
    from safetensors.torch import save_model
    kind, model, cls, cfg_cls, kwargs, dtype, out = sys.argv[1:8]
    torch.set_default_dtype(getattr(torch, dtype))
    t = time.perf_counter()
    def build():
        if model == "mlp":
            return torch.nn.Sequential(*[m for _ in range(8) for m in (torch.nn.Linear(4096, 4096), torch.nn.ReLU())])
        return getattr(transformers, cls)(getattr(transformers, cfg_cls)(**json.loads(kwargs)))
    if kind == "meta":
        with torch.device("meta"):
            m = build()
        m.to_empty(device="cpu")
        for sub in m.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    else:
        m = build()
    save_model(m, out)
    print(json.dumps({"seconds": time.perf_counter() - t,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


HIT_KINDS = ("again", "copy", "remote")


def request_for(model: str) -> dict[str, Any]:
    if model == "mlp":
        return MLP
    if model == "llama-7b":
        return LLAMA_7B
    import torch
    import transformers

    from initium.client import spec_from_module

    cls, cfg_cls, kwargs, preset, dtype = HF[model]
    with torch.device("meta"):
        module = getattr(transformers, cls)(getattr(transformers, cfg_cls)(**kwargs))
    spec, _ = spec_from_module(module)
    return {"spec": spec.model_dump(mode="json"), "policy": {"preset": preset}, "seed": 0, "dtype": dtype}


def run_initium(request: dict[str, Any], folder: Path, device: str) -> dict[str, Any]:
    from initium.client import Client

    port = free_port()
    env = {**os.environ, "INITIUM_DEVICE": device}
    serve = [
        sys.executable,
        "-m",
        "initium.client.cli",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(folder / "data"),
    ]
    server = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        cache = folder / "client-cache"
        with Client(url, progress=False, timeout=600, cache_dir=cache) as client, \
                Client(url, progress=False, timeout=600, cache_dir=False) as uncached:  # fmt: skip

            def timed(c: Client, path: Path | None) -> tuple[float, Any]:
                t = time.perf_counter()
                result = c.initialize(request, path=path, timeout=7200)
                return time.perf_counter() - t, result

            seconds, first = timed(client, folder / "first.safetensors")  # downloaded, linked into the cache
            hits = {
                "again": timed(client, None)[0],  # the client's cache: a status call and a stat
                "copy": timed(client, folder / "copy.safetensors")[0],  # copied from the client's cache
                "remote": timed(uncached, folder / "remote.safetensors")[0],  # the service's cache, downloaded
            }
        rss = {"api": peak_rss_mb(server.pid)}
        rss |= {f"worker {pid}": peak_rss_mb(pid) for pid in descendants(server.pid)}
        return {"seconds": seconds, **hits, "rss_mb": max(rss.values()), "bytes": first.status.size,
                "timings": first.report.provenance.timings.model_dump()}  # fmt: skip
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def run_baseline(kind: str, model: str, folder: Path) -> dict[str, Any]:
    cls, cfg_cls, kwargs, _, dtype = HF.get(model, ("", "", {}, "", "float32"))
    out = folder / f"{kind}.safetensors"
    done = subprocess.run([sys.executable, "-c", BASELINE, kind, model, cls, cfg_cls, json.dumps(kwargs), dtype,
                           str(out)], capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else f"exit {done.returncode}"}
    out.unlink(missing_ok=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def disk_write_gbps(folder: Path, gigabytes: float = 4.0) -> float:
    """Sequential write bandwidth of `folder`'s disk, fsync included (what a job's write pays)."""
    block = os.urandom(64 << 20)
    path = folder / "disk.bin"
    t = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(int(gigabytes * 2**30 / len(block))):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t
    written = path.stat().st_size
    path.unlink()
    return written / 1e9 / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mlp", "gpt2", "llama-1.1b", "llama-7b"])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    cores, machine, python = os.cpu_count(), platform.machine(), platform.python_version()
    print(f"machine: {cores} cores, {machine}, {ram_mb / 1024:.1f} GiB; python {python}")
    with tempfile.TemporaryDirectory(prefix="initium-e2e-disk-") as tmp:
        disk = disk_write_gbps(Path(tmp))
    print(f"disk sequential write (fsync'd, 4 GiB): {disk:.2f} GB/s")
    print(f"{'model':<11} {'run':<13} {'seconds':>8} {'peak RSS MB':>12} {'initium/it':>11}  notes")
    for model in args.models:
        request = request_for(model)
        with tempfile.TemporaryDirectory(prefix=f"initium-e2e-{model}-") as tmp:
            ours = run_initium(request, Path(tmp), args.device)
            size_mb = ours["bytes"] / 2**20
            rate = ours["bytes"] / 1e9 / ours["seconds"]
            hits = "; ".join(f"{k} {ours[k]:.2f} s ({ours['seconds'] / ours[k]:.1f}x)" for k in HIT_KINDS)
            stages = ", ".join(f"{k} {v:.1f}" for k, v in ours["timings"].items() if v >= 0.05)
            print(f"{model:<11} {'initium':<13} {ours['seconds']:>8.2f} {ours['rss_mb']:>12.0f} {'':>11}  "
                  f"{size_mb:,.0f} MB, {rate:.2f} GB/s = {rate / disk:.0%} of the disk's; "
                  f"repeated: {hits}; stages {stages}")  # fmt: skip
            for kind in ("transformers", "meta"):
                if size_mb * 2.2 > ram_mb:  # the model, plus what saving it holds beside it
                    print(f"{model:<11} {kind:<13} {'-':>8} {'-':>12} {'-':>11}  not run: needs about "
                          f"{size_mb * 2.2 / 1024:.0f} GiB, this machine has {ram_mb / 1024:.0f} GiB")  # fmt: skip
                    continue
                theirs = run_baseline(kind, model, Path(tmp))
                if "error" in theirs:
                    print(f"{model:<11} {kind:<13} {'-':>8} {'-':>12} {'-':>11}  failed: {theirs['error']}")
                    continue
                print(f"{model:<11} {kind:<13} {theirs['seconds']:>8.2f} {theirs['rss_mb']:>12.0f} "
                      f"{ours['seconds'] / theirs['seconds']:>11.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
