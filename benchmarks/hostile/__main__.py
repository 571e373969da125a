"""`python -m benchmarks.hostile`: parse the arguments, run the selected probes, print the table."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks import hostile
from benchmarks.hostile.harness import Lab
from benchmarks.hostile.table import TABLE_HEAD, Row, machine, run_probe, selected


def port_range(text: str) -> range:
    low, _, high = text.partition("-")
    return range(int(low), int(high or low) + 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=hostile.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=None, help="probe ids (3a) or item numbers (12)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for development")
    parser.add_argument("--list", action="store_true", help="list the probes and exit")
    parser.add_argument("--root", type=Path, default=None, help="where data and logs go (default: a temporary dir)")
    parser.add_argument("--ports", type=port_range, default=range(18800, 19000), help="loopback ports to use: LOW-HIGH")
    args = parser.parse_args()
    if args.list:
        for entry in selected(None):
            print(f"{entry.id:>4}  {entry.input}\n      must: {entry.must}")
        return 0
    root = args.root or Path(tempfile.mkdtemp(prefix="initium-hostile-"))
    root.mkdir(parents=True, exist_ok=True)
    lab = Lab(Path(tempfile.mkdtemp(dir=root, prefix="run-")), args.quick, iter(args.ports))
    rows: list[Row] = []
    try:
        for entry in selected(args.only):
            rows.append(run_probe(lab, entry))
            print(rows[-1].markdown(), file=sys.stderr, flush=True)
    finally:
        lab.cleanup(everything=True)
    print(f"{machine()}; {'--quick' if args.quick else 'full sizes'}; logs under {lab.root}\n")
    print(TABLE_HEAD)
    print("\n".join(row.markdown() for row in rows))
    held = sum(row.verdict.held is True for row in rows)
    skipped = sum(row.verdict.held is None for row in rows)
    print(f"\n{held} of {len(rows)} held, {skipped} skipped, {len(rows) - held - skipped} fell short")
    return 0 if held + skipped == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
