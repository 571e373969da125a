"""`python -m benchmarks.hostile`: parse the arguments, run the selected probes, print the table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import hostile
from benchmarks._scratch import add_keep_argument, scratch
from benchmarks.hostile.harness import Lab
from benchmarks.hostile.table import TABLE_HEAD, Row, machine, run_probe, selected


def port_range(text: str) -> range:
    low, _, high = text.partition("-")
    return range(int(low), int(high or low) + 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=hostile.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=None, help="probe ids (3a) or item numbers (12)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for development")
    parser.add_argument("--list", action="store_true", help="list the probes and exit")
    parser.add_argument("--root", type=Path, default=None,
                        help="the folder each run's data and logs go in (default: the temporary folder)")  # fmt: skip
    parser.add_argument("--ports", type=port_range, default=range(18800, 19000), help="loopback ports to use: LOW-HIGH")
    add_keep_argument(parser)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.list:
        for entry in selected(None):
            print(f"{entry.id:>4}  {entry.input}\n      must: {entry.must}")
        return 0
    if args.root is not None:
        args.root.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    # The run's folder (its services' data, logs, mounts) goes at the end unless --keep (issue 18, item 6);
    # the processes are killed and the mounts unmounted first, inside the block.
    with scratch("initium-hostile-run-", args.keep, parent=args.root) as folder:
        lab = Lab(folder, args.quick, iter(args.ports))
        try:
            for entry in selected(args.only):
                rows.append(run_probe(lab, entry))
                print(rows[-1].markdown(), file=sys.stderr, flush=True)
        finally:
            lab.cleanup(everything=True)
    logs = f"logs under {folder}" if args.keep else "logs removed (--keep keeps them)"
    print(f"{machine()}; {'--quick' if args.quick else 'full sizes'}; {logs}\n")
    print(TABLE_HEAD)
    print("\n".join(row.markdown() for row in rows))
    held = sum(row.verdict.held is True for row in rows)
    skipped = sum(row.verdict.held is None for row in rows)
    print(f"\n{held} of {len(rows)} held, {skipped} skipped, {len(rows) - held - skipped} fell short")
    return 0 if held + skipped == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
