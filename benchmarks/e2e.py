"""End to end against what users do today: request -> verified safetensors fsync'd on the client's disk.

    .venv/bin/python -m benchmarks.e2e [--models mlp gpt2 llama-1.1b] [--runs 5] [--device auto] [--keep]

The protocol of issue 17 (item 1), for each model, in the same run:
  baseline  the model built with its framework's own init and saved, in its own fresh process,
            imports excluded: transformers' model from its config (the MLP: torch.nn.Sequential of
            nn.Linear, torch's init), saved with safetensors' save_model (save_file with tied
            duplicates dropped, as save_pretrained does: save_file itself refuses GPT-2's tied
            lm_head), then fsync'd. Median of --runs processes.
  initium   a fresh `initium serve` (embedded worker), warmed by one request first (seed 1000, not
            counted); then Client.initialize(request, path=...) for seeds 0..runs-1, each a new
            job, timed from the call (submit) until the verified file is fsync'd on the client's
            disk. Median. After each, off the clock, the benchmark waits for the job's report (the
            service computes it after the weights), so no measurement shares the cores with the
            previous job's report; its own report runs beside its download, as a user meets it.
            The client fsyncs its download (file and folder) before it returns; the
            benchmark fsyncs every result file once more inside the timed region, which costs
            next to nothing on a clean file and holds the protocol for every path (cache copies
            included) and client version.
  again, copy, remote  the seed-0 request once more: answered from the client's download cache
            (no path), copied from it to a new path, and by a client without a cache (the
            service's cache hit, downloaded).
  stream    one more new job (seed = runs), watched every 5 ms by a thread: when the first byte
            of the weights reached the client's disk, and when the worker's materialize finished,
            read from the worker's own file in its data dir (<data>/jobs/<id>/, where the job
            writes tensor after tensor as it materializes them): materialize has finished after
            that file holds every tensor but the last, less 1 MiB for what its writer may still
            buffer (the last tensor's materialize starts only then), and before it holds them
            all. Times are seconds after submit, to within the 5 ms sampling.
Targets (issue 17): GPT-2 small at most 0.5 of the baseline; the 8x4096^2 MLP under `torch-default`
(the law torch itself draws) at most 0.8; a 1.1B model's first byte on the client's disk before
materialize has finished. Peak RSS: each baseline process's ru_maxrss (median); the service's is
the kernel's high-water mark (VmHWM) of its API and worker processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks._scratch import add_keep_argument, scratch
from benchmarks._serve import free_port, wait_ready
from benchmarks.llama7b import LLAMA_7B, descendants, peak_rss_mb

MLP = {
    "spec": {"name": "mlp8", "modules": [m for i in range(8) for m in (
        {"type": "linear", "name": f"l{i}", "in_features": 4096, "out_features": 4096}, {"type": "relu"})]},
    "policy": {"preset": "torch-default"},
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
TARGETS = {"gpt2": 0.5, "mlp": 0.8}
WARM_UP_SEED = 1000
BASELINE = textwrap.dedent("""
    import json, os, resource, sys, time, torch, transformers
    from safetensors.torch import save_model
    model, cls, cfg_cls, kwargs, dtype, out = sys.argv[1:7]
    torch.set_default_dtype(getattr(torch, dtype))
    if model != "mlp":
        model_class, config_class = getattr(transformers, cls), getattr(transformers, cfg_cls)  # imported here
    t = time.perf_counter()
    if model == "mlp":
        m = torch.nn.Sequential(*[m for _ in range(8) for m in (torch.nn.Linear(4096, 4096), torch.nn.ReLU())])
    else:
        m = model_class(config_class(**json.loads(kwargs)))
    save_model(m, out)
    with open(out, "rb") as f:
        os.fsync(f.fileno())
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


@contextmanager
def serving(folder: Path, device: str, port: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A fresh `initium serve` (embedded worker) on loopback `port` (0: a free one), data in folder/data."""
    port = port or free_port()
    command = [sys.executable, "-m", "initium.client.cli", "serve", "--port", str(port),
               "--data-dir", str(folder / "data")]  # fmt: skip
    env = {**os.environ, "INITIUM_DEVICE": device}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url, server
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def fsynced(result: Any) -> None:
    """fsync every file of an InitResult: on the client's disk, as the baseline's file is."""
    for path in result.files():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def timed(client: Any, request: dict[str, Any], path: Path | None) -> tuple[float, Any]:
    """Seconds from Client.initialize's submit to the verified file fsync'd, and the result.

    Then, off the clock, waits for the job's report: the service computes it after the weights, and
    left running it would take a core from the next measurement (a warm service, not a busy one)."""
    from initium.client import InitiumError

    t = time.perf_counter()
    result = client.initialize(request, path=path, timeout=7200)
    fsynced(result)
    seconds = time.perf_counter() - t
    with contextlib.suppress(InitiumError):  # a failed report leaves the weights, and this figure, as they are
        result.report  # noqa: B018  (the property fetches it, waiting)
    return seconds, result


def run_initium(request: dict[str, Any], folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    from initium.client import Client

    runs = args.runs
    with serving(folder, args.device, args.port) as (url, server), \
            Client(url, progress=False, timeout=600, cache_dir=folder / "client-cache") as client, \
            Client(url, progress=False, timeout=600, cache_dir=False) as uncached:  # fmt: skip
        # The warm-up and the stream row go through the client without a cache, so their files can
        # be removed at once (a 1.1B model's copies would otherwise fill the disk).
        timed(uncached, {**request, "seed": WARM_UP_SEED}, folder / "warm-up.safetensors")[1].path.unlink()
        seconds, results = [], []
        for seed in range(runs):
            s, result = timed(client, {**request, "seed": seed}, folder / f"seed{seed}.safetensors")
            seconds.append(s)
            results.append(result)
        first = {**request, "seed": 0}
        hits = {
            "again": timed(client, first, None)[0],  # the client's cache: a status call and a stat
            "copy": timed(client, first, folder / "copy.safetensors")[0],  # copied from the client's cache
            "remote": timed(uncached, first, folder / "remote.safetensors")[0],  # the service's cache, downloaded
        }
        stream = watched(uncached, {**request, "seed": runs}, folder)
        rss = {"api": peak_rss_mb(server.pid)} | {f"worker {p}": peak_rss_mb(p) for p in descendants(server.pid)}
        timings = results[0].report.provenance.timings.model_dump()
    return {"seconds": seconds, **hits, "stream": stream, "rss_mb": max(rss.values()),
            "bytes": results[0].status.size, "timings": timings}  # fmt: skip


def watched(client: Any, request: dict[str, Any], folder: Path) -> dict[str, float | None]:
    """The stream row: one new job with a StreamWatch on the client's target and the worker's files."""
    target = folder / "stream.safetensors"
    with StreamWatch(target, folder / "data" / "jobs") as watch:
        seconds, result = timed(client, request, target)
    summary = watch.summary(result.status.size, last_tensor_bytes(target)) | {"done": seconds}
    target.unlink()
    return summary


class StreamWatch(threading.Thread):
    """Every `interval` seconds: the bytes of the client's `target` (its part file, then the file)
    and of the worker's files of the job folders that appear under `jobs` after the watch starts."""

    def __init__(self, target: Path, jobs: Path, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.target, self.jobs, self.interval = target, jobs, interval
        self.before = set(os.listdir(jobs)) if jobs.exists() else set()
        self.samples: list[tuple[float, int, int]] = []  # (seconds, client bytes, worker bytes)
        self.done = threading.Event()
        self.t0 = 0.0

    def __enter__(self) -> StreamWatch:
        self.t0 = time.perf_counter()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.perf_counter() - self.t0, self._client(), self._worker()))
            self.done.wait(self.interval)

    def _client(self) -> int:
        return max((_size(p) for p in self.target.parent.glob(f"*{self.target.name}*")), default=0)

    def _worker(self) -> int:
        new = [self.jobs / d for d in (os.listdir(self.jobs) if self.jobs.exists() else []) if d not in self.before]
        return max((_size(p) for d in new for p in d.glob("*safetensors*")), default=0)

    def summary(self, size: int, last: int) -> dict[str, float | None]:
        """first_byte: the client's first byte; last_began: the worker's file held every tensor but
        the last (less 1 MiB of buffering); worker_written: the worker's file was whole."""

        def first(index: int, at_least: int) -> float | None:
            return next((s[0] for s in self.samples if s[index] >= at_least), None)

        return {"first_byte": first(1, 1), "last_began": first(2, size - last - (1 << 20)),
                "worker_written": first(2, size)}  # fmt: skip


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed or removed between the listing and the stat
        return 0


def last_tensor_bytes(path: Path) -> int:
    """The byte length of the tensor stored last in a safetensors file (its header's data_offsets)."""
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    begin, end = max((v["data_offsets"] for k, v in header.items() if k != "__metadata__"), key=lambda o: o[1])
    return int(end - begin)


def run_baseline(model: str, folder: Path, runs: int) -> dict[str, Any] | str:
    """The baseline's median seconds and peak RSS over `runs` fresh processes, or why it failed."""
    cls, cfg_cls, kwargs, _, dtype = HF.get(model, ("", "", {}, "", "float32"))
    out = folder / "baseline.safetensors"
    results = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", BASELINE, model, cls, cfg_cls, json.dumps(kwargs), dtype,
                               str(out)], capture_output=True, text=True)  # fmt: skip
        out.unlink(missing_ok=True)
        if done.returncode != 0:
            return f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr else f'exit {done.returncode}'}"
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(r[key] for r in results) for key in ("seconds", "rss_mb")}


def disk_write_gbps(folder: Path, gigabytes: float) -> float:
    """Sequential write bandwidth of `folder`'s disk, fsync included (what a job's write pays)."""
    block = os.urandom(64 << 20)
    path = folder / "disk.bin"
    t = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(max(1, int(gigabytes * 2**30 / len(block)))):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t
    written = path.stat().st_size
    path.unlink()
    return written / 1e9 / seconds


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def report_model(model: str, ours: dict[str, Any], theirs: dict[str, Any] | str, disk: float) -> None:
    """Print one model's rows: initium (median, min-max), the baseline and the ratio, hits, stream."""
    median = statistics.median(ours["seconds"])
    size_mb = ours["bytes"] / 2**20
    rate = ours["bytes"] / 1e9 / median
    spread = f"{min(ours['seconds']):.2f}-{max(ours['seconds']):.2f}"
    stages = ", ".join(f"{k} {v:.1f}" for k, v in ours["timings"].items() if v >= 0.05)
    print(f"{model:<11} {'initium':<13} {median:>8.2f} {ours['rss_mb']:>12.0f} {'':>8}  "
          f"{len(ours['seconds'])} seeds, {spread} s; {size_mb:,.0f} MB, {rate:.2f} GB/s = {rate / disk:.0%} of the "
          f"disk's; seed 0's stages {stages}")  # fmt: skip
    if isinstance(theirs, str):
        print(f"{model:<11} {'baseline':<13} {'-':>8} {'-':>12} {'-':>8}  {theirs}")
    else:
        ratio = median / theirs["seconds"]
        target = TARGETS.get(model)
        verdict = f"target <= {target}: {'met' if ratio <= target else 'missed'}" if target else ""
        print(f"{model:<11} {'baseline':<13} {theirs['seconds']:>8.2f} {theirs['rss_mb']:>12.0f} {ratio:>8.2f}  "
              f"{verdict}")  # fmt: skip
    for kind in HIT_KINDS:
        print(f"{model:<11} {kind:<13} {ours[kind]:>8.2f} {'':>12} {'':>8}  {median / ours[kind]:.1f}x faster")
    s = ours["stream"]
    print(f"{model:<11} {'stream':<13} {s['done']:>8.2f} {'':>12} {'':>8}  {stream_note(s)}")


def stream_note(s: dict[str, float | None]) -> str:
    def at(key: str) -> str:
        value = s[key]
        return "never seen" if value is None else f"{value:.2f} s"

    first, began, written = s["first_byte"], s["last_began"], s["worker_written"]
    if first is not None and began is not None and first < began:
        verdict = "before materialize finished"
    elif first is not None and written is not None and first >= written:
        verdict = "after the worker's file was whole"
    else:
        verdict = "not decided (within the last tensor, or not seen)"
    return (f"first byte on the client's disk {at('first_byte')}; worker's materialize finished between "
            f"{at('last_began')} and {at('worker_written')}: {verdict}")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mlp", "gpt2", "llama-1.1b"],
                        choices=["mlp", *HF])  # fmt: skip
    parser.add_argument("--runs", type=int, default=5, help="baseline processes and initium seeds per model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--port", type=int, default=0, help="the service's loopback port (default: a free one)")
    parser.add_argument("--disk-gib", type=float, default=4.0, help="size of the disk write measurement")
    add_keep_argument(parser)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    cores, machine, python = os.cpu_count(), platform.machine(), platform.python_version()
    print(f"machine: {cores} cores, {machine}, {ram_mb / 1024:.1f} GiB; python {python}; {load()}")
    with scratch("initium-e2e-disk-", args.keep) as tmp:
        disk = disk_write_gbps(tmp, args.disk_gib)
    print(f"disk sequential write (fsync'd, {args.disk_gib:g} GiB): {disk:.2f} GB/s")
    print(f"{'model':<11} {'run':<13} {'seconds':>8} {'peak RSS MB':>12} {'ratio':>8}  notes")
    for model in args.models:
        with scratch(f"initium-e2e-{model}-", args.keep) as tmp:  # one model's files at a time on the disk
            ours = run_initium(request_for(model), tmp, args)
            needs_mb = ours["bytes"] / 2**20 * 2.2  # the model, plus what saving it holds beside it
            theirs = (
                run_baseline(model, tmp, args.runs)
                if needs_mb < ram_mb
                else (f"not run: needs about {needs_mb / 1024:.0f} GiB, this machine has {ram_mb / 1024:.0f} GiB")
            )
            report_model(model, ours, theirs, disk)
        print(f"{model:<11} ({load()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
