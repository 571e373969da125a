"""In place in the training process: `initialize_` against transformers' own init (issue 17, item 2).

    .venv/bin/python -m benchmarks.inplace [--runs 5] [--data-dir DIR] [--keep]

Each measurement is its own fresh python process, as a training job meets the call: torch,
transformers and initium.client are imported before the clock starts; everything after is timed,
so the first call's one-time costs (the service code initialize_ imports lazily, numba loading its
kernels from the on-disk cache, the fast path's self-check against the torch reference) count.
One warm-up process runs first and is not counted: it fills numba's on-disk cache, as the first
use after installation does. Rows, each the median of --runs processes (seeds 0..runs-1):

  transformers   GPT2LMHeadModel(GPT2Config()) on cpu: transformers' own init
  initium meta   GPT2LMHeadModel built on the meta device, then initialize_(m, policy="gpt2", seed=s)
                 (both timed; the build alone is printed beside it)
  initium cpu    initialize_ on a GPT2LMHeadModel already on cpu (only the call is timed)

Peak RSS is the process's ru_maxrss; "after imports" is its resident set when the clock starts, so
the difference is what the measured step itself added. "CPU s" is the step's user + system time
over all its threads (median), a check on the wall times when the machine is not quiet. The
target (issue 17): initium meta at most 0.6 of transformers. initialize_'s data_dir is --data-dir,
or a temporary folder the run's processes share, removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks._scratch import add_keep_argument, scratch

KINDS = ("transformers", "initium meta", "initium cpu")
TARGET = 0.6


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_seconds() -> float:
    """This process's user + system CPU time, all threads: less sensitive than wall time to others' load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(kind: str, seed: int, data_dir: str | None) -> dict[str, Any]:
    """One measurement in this (fresh) process: seconds, peak and after-import RSS in MiB."""
    import torch
    import transformers

    from initium.client import initialize_

    # transformers imports a model's module when its class is first named: resolved before the clock.
    model_class, config_class = transformers.GPT2LMHeadModel, transformers.GPT2Config

    def gpt2() -> torch.nn.Module:
        module: torch.nn.Module = model_class(config_class())  # type: ignore[no-untyped-call]
        return module

    marks: list[float] = []

    def meta() -> None:
        with torch.device("meta"):
            module = gpt2()
        marks.append(time.perf_counter())
        initialize_(module, policy="gpt2", seed=seed, data_dir=data_dir)

    steps: dict[str, Callable[[], object]] = {"transformers": gpt2, "initium meta": meta}
    if kind == "initium cpu":
        on_cpu = gpt2()  # built (transformers' init) outside the clock: only the call is timed
        steps[kind] = lambda: initialize_(on_cpu, policy="gpt2", seed=seed, data_dir=data_dir)
    before, cpu = _rss_mb(), _cpu_seconds()
    t = time.perf_counter()
    steps[kind]()
    seconds = time.perf_counter() - t
    cpu = _cpu_seconds() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    build = marks[0] - t if marks else 0.0
    return {"seconds": seconds, "cpu": cpu, "build": build, "rss_mb": peak, "imports_mb": before}


def spawn(kind: str, seed: int, data_dir: str | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.inplace", "--child", kind, "--seed", str(seed)]
    if data_dir is not None:
        command += ["--data-dir", data_dir]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} seed {seed} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def versions() -> str:
    import numba
    import torch
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}, numba {numba.__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="processes per row (median); seeds 0..runs-1")
    parser.add_argument("--data-dir", help="initialize_'s data_dir (kept; default: a temporary one)")
    add_keep_argument(parser)
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.seed, args.data_dir)))
        return 0
    # Not Client.local()'s default (~/.cache/initium/local): a benchmark leaves nothing behind (issue 18).
    with scratch("initium-inplace-", args.keep, given=args.data_dir) as data_dir:
        return run(args.runs, str(data_dir))


def run(runs: int, data_dir: str) -> int:
    """The warm-up, then `runs` interleaved processes per row, each with initialize_(data_dir=data_dir)."""
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}; python {platform.python_version()}; {versions()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    spawn("initium meta", 0, data_dir)  # the warm-up: fills numba's on-disk cache; not counted
    rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for seed in range(runs):  # interleaved, so a burst of load on the machine hits every row alike
        for kind in KINDS:
            rows[kind].append(spawn(kind, seed, data_dir))
    base = statistics.median(r["seconds"] for r in rows["transformers"])
    print(f"{'run':<14} {'median s':>9} {'min s':>7} {'max s':>7} {'CPU s':>6} {'peak RSS MB':>12} "
          f"{'after imports':>14} {'/transformers':>14}  notes")  # fmt: skip
    for kind, results in rows.items():
        seconds = [r["seconds"] for r in results]
        median = statistics.median(seconds)
        notes = f"meta build {statistics.median(r['build'] for r in results):.3f} s" if kind == "initium meta" else ""
        if kind == "initium meta":
            notes += f"; target <= {TARGET}: {'met' if median / base <= TARGET else 'missed'}"
        print(f"{kind:<14} {median:>9.3f} {min(seconds):>7.3f} {max(seconds):>7.3f} "
              f"{statistics.median(r['cpu'] for r in results):>6.2f} "
              f"{statistics.median(r['rss_mb'] for r in results):>12.0f} "
              f"{statistics.median(r['imports_mb'] for r in results):>14.0f} "
              f"{median / base:>14.2f}  {notes}")  # fmt: skip
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
