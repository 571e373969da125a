"""The `initium` command: plan and init against a server (or locally), browse its catalog, or run one.

    initium plan SPEC.json [--policy P] [--seed N] [--dtype D] [--json]
    initium init SPEC.json -o out.safetensors [--report R.json] [--policy P] [--local] [--server URL]
    initium report JOB_ID [--html report.html] [--open] [--json] [--server URL]
    initium presets list | show NAME[@VERSION] [--json] | publish PRESET.json     [--server URL]
    initium schemes [NAME] [--json] [--server URL]
    initium cache [info | prune | clear]
    initium serve [--host H] [--port N] [--data-dir DIR] [--broker URL]   (needs initium-service)
    initium worker --broker URL --data-dir DIR [--device D]              (needs initium-service)

SPEC.json holds a whole request ({"spec", "policy", "seed", "dtype"}) or just a spec; P is a
policy JSON file or a preset name. Exit codes: 0 done, 1 the job or server failed, 2 the input
is wrong (the message says which field), 3 the server cannot be reached.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import textwrap
import webbrowser
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from initium.client._cache import DownloadCache, default_cache_dir
from initium.client._client import Client
from initium.client._errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    ConflictError,
    InitiumError,
    JobFailedError,
    NotFoundError,
    RequestInvalidError,
    RequestTooLargeError,
)
from initium.client._request import build_request
from initium.schemas.catalog import SchemeInfo
from initium.schemas.job import JobStatus, Progress
from initium.schemas.locations import NO_INPUT, json_path
from initium.schemas.plan import Plan
from initium.schemas.presets import Preset
from initium.schemas.report import Report
from initium.schemas.request import InitRequest
from initium.schemas.wording import count

EXIT_FAILED, EXIT_INPUT, EXIT_UNREACHABLE = 1, 2, 3


class InputError(Exception):
    """A file or argument the user gave cannot be used."""


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} file {path} is not valid JSON: {exc}") from None


def load_request(args: argparse.Namespace) -> InitRequest:
    doc = _read_json(args.spec, "spec")
    body: dict[str, Any] = dict(doc) if isinstance(doc, dict) and "spec" in doc else {"spec": doc}
    if args.policy is not None:
        body["policy"] = _read_json(args.policy, "policy") if Path(args.policy).exists() else {"preset": args.policy}
    if "policy" not in body:
        raise InputError("no policy: give --policy FILE.json or --policy PRESET, or put 'policy' in the spec file")
    try:
        return build_request(body, seed=args.seed, dtype=args.dtype)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = json_path(first["loc"], body, first.get("input", NO_INPUT), missing=first["type"] == "missing")
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        raise InputError(f"{where}: {first['msg']}") from None


def format_plan(plan: Plan) -> str:
    lines = [f"{'tensor':<32} {'shape':<16} {'scheme':<18} {'fan_in':>7} {'fan_out':>7} {'E[std]':>10}  rule"]
    for t in plan.tensors:
        scheme = t.init.scheme if t.init else ("(buffer)" if t.rule is None and t.distribution else "(no rule)")
        std = "" if t.expected_std is None else f"{t.expected_std:.4g}"
        lines.append(
            f"{t.name:<32} {t.shape!s:<16} {scheme:<18} {t.fan_in:>7} {t.fan_out:>7} {std:>10}  {t.rule or ''}"
        )
    totals = plan.totals
    lines.append(f"{count(totals.tensors, 'tensor')}, {count(totals.parameters, 'parameter')}, "
                 f"{count(totals.bytes, 'byte')}")  # fmt: skip
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    with Client(args.server) as client:
        plan = client.plan(load_request(args))
    print(plan.model_dump_json(indent=2) if args.json else format_plan(plan))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    request = load_request(args)
    with Client.local() if args.local else Client(args.server) as client:
        result = client.initialize(request, path=args.output, timeout=args.timeout)
        print(wrote_line(args.output, result.status.progress, result.sha256))
        if args.report:  # waits for the report, which the service computes after the weights
            Path(args.report).write_text(result.report.model_dump_json(indent=2))
            print(f"wrote the report to {args.report}")
        elif isinstance(client, Client):
            print(f"report: {report_state(client, result.id)} (initium report {result.id})")
    return 0


def wrote_line(path: str, progress: Progress, sha256: str) -> str:
    """What `initium init` says of the file it wrote: its tensors, bytes and sha256."""
    tensors, size = count(progress.tensors_total, "tensor"), count(progress.bytes_total, "byte")
    return f"wrote {path}: {tensors}, {size}, sha256 {sha256}"


def report_pending_line(status: JobStatus) -> str:
    """What `initium report` says of a report that is not there yet (or failed: its reason)."""
    if status.state != "succeeded":
        return f"report pending: job {status.id} is {status.state}; its weights come first, then its report"
    if status.report_state == "failed":
        reason = status.report_error.message if status.report_error else "no reason recorded"
        return f"report failed: job {status.id}'s weights are ready, its report could not be computed: {reason}"
    return f"report pending: job {status.id}'s weights are ready; its report is still being computed"


def report_state(client: Client, job_id: str) -> str:
    """'ready', or 'pending' while the service computes it after the weights (issue 17), or 'failed'."""
    return client.status(job_id).report_state


def format_report(report: Report) -> str:
    lines = [f"{'tensor':<32} {'scheme':<16} {'E[std]':>10} {'std':>10} {'KS p':>8}  flags"]
    for t in report.tensors:
        ks = "" if t.fit is None or t.fit.ks_pvalue is None else f"{t.fit.ks_pvalue:.3g}"
        expected = "" if t.expected_std is None else f"{t.expected_std:.4g}"
        measured = "" if t.std is None else f"{t.std:.4g}"
        lines.append(f"{t.name:<32} {t.scheme:<16} {expected:>10} {measured:>10} {ks:>8}  {len(t.flags) or ''}")
    totals = report.totals
    lines.append(f"{count(totals.tensors, 'tensor')}, {count(totals.parameters, 'parameter')}, "
                 f"sha256 {report.artifact.sha256}")  # fmt: skip
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    html = args.html or (
        str(Path(tempfile.mkdtemp(prefix="initium-")) / f"{args.job_id[:16]}.html") if args.open else None
    )
    with Client(args.server) as client:
        status = client.status(args.job_id)
        if status.state == "failed":
            raise JobFailedError(status)
        if args.no_wait and (status.state != "succeeded" or status.report_state != "ready"):
            print(report_pending_line(status))
            return 0
        if status.state != "succeeded" or status.report_state == "pending":
            print(f"{report_pending_line(status)}; waiting for it ...", file=sys.stderr)
        report = client.report(args.job_id)
        if html:
            client.report_html(args.job_id, html)
    print(report.model_dump_json(indent=2) if args.json else format_report(report))
    if html:
        print(f"wrote {html}")
    if args.open and html:
        webbrowser.open(Path(html).resolve().as_uri())
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    with Client(args.server) as client:
        if args.action == "list":
            presets = client.presets()
            print(f"{'preset':<28} {'rules':>5}  description")
            for p in presets:
                about = p.description if len(p.description) <= 70 else p.description[:67] + "..."
                print(f"{p.ref:<28} {len(p.rules):>5}  {about}")
        elif args.action == "show":
            if not args.target:
                raise InputError("presets show needs a NAME or NAME@VERSION")
            preset = client.preset(args.target)
            print(preset.model_dump_json(indent=2) if args.json else format_preset(preset))
        else:
            if not args.target:
                raise InputError("presets publish needs a PRESET.json file")
            preset = client.publish_preset(_read_json(args.target, "preset"))
            print(f"published {preset.ref}")
    return 0


def format_preset(preset: Preset) -> str:
    """A preset as a table: a row per rule, its index (the `[i]` in a plan's 'preset:name@v[i]'), the
    match fields it sets, its scheme and the parameters and rule options that differ from their
    defaults. `presets show --json` prints the whole model instead."""
    head = [f"{preset.ref}: {preset.description}"] + ([f"changelog: {preset.changelog}"] if preset.changelog else [])
    rows = [
        (
            str(i),
            _match_text(rule.match.model_dump(exclude_none=True)),
            rule.init.scheme,
            _rule_options(rule.model_dump(exclude_defaults=True)),
        )
        for i, rule in enumerate(preset.rules)
    ]
    match_width = max(len("match"), *(len(r[1]) for r in rows))
    scheme_width = max(len("scheme"), *(len(r[2]) for r in rows))
    lines = [f"{'rule':>4}  {'match':<{match_width}}  {'scheme':<{scheme_width}}  parameters"]
    lines += [
        f"{i:>4}  {match:<{match_width}}  {scheme:<{scheme_width}}  {options}".rstrip()
        for i, match, scheme, options in rows
    ]
    return "\n".join([*head, *lines, f"{count(len(rows), 'rule')}; for each tensor the last matching rule wins"])


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _match_text(match: dict[str, Any]) -> str:
    """'type=linear role=weight'; an empty match matches every tensor."""
    return " ".join(f"{k}={_compact(v)}" for k, v in match.items()) or "(every tensor)"


def _rule_options(rule: dict[str, Any]) -> str:
    """The scheme's parameters and the rule's own fields (fan_axes, packed) that are not their defaults."""
    params = {k: v for k, v in rule.get("init", {}).items() if k != "scheme"}
    fields = {k: v for k, v in rule.items() if k not in ("match", "init")}
    return " ".join(f"{k}={_compact(v)}" for k, v in {**params, **fields}.items())


def cmd_schemes(args: argparse.Namespace) -> int:
    with Client(args.server) as client:
        schemes = client.schemes()
    if args.name:
        chosen = [s for s in schemes if s.name == args.name]
        if not chosen:
            raise InputError(f"no scheme {args.name!r}; known: {', '.join(s.name for s in schemes)}")
        print(chosen[0].model_dump_json(indent=2))
    elif args.json:
        print(json.dumps([s.model_dump(mode="json") for s in schemes], indent=2))
    else:
        print(format_schemes(schemes, width=shutil.get_terminal_size((100, 24)).columns))
    return 0


def scheme_summary(description: str) -> str:
    """A scheme's summary: its docstring's first paragraph on one line. The summaries are wrapped
    over several source lines, so the first line alone ends mid-sentence (issue 18, item 3)."""
    return " ".join(description.split("\n\n", 1)[0].split())


def format_schemes(schemes: list[SchemeInfo], width: int) -> str:
    """One scheme a row: its name, then its whole summary wrapped to `width` columns (at least 60)
    under the summary column."""
    name_width = max((len(s.name) for s in schemes), default=0) + 2
    wrap = textwrap.TextWrapper(width=max(width, 60), subsequent_indent=" " * name_width, break_on_hyphens=False)
    return "\n".join(wrap.fill(f"{s.name:<{name_width}}{scheme_summary(s.description)}") for s in schemes)


def cmd_cache(args: argparse.Namespace) -> int:
    """The client's download cache: what it holds, or prune what only it holds, or clear it."""
    root = default_cache_dir()
    if root is None:
        print("the download cache is off (INITIUM_CACHE_DIR)")
        return 0
    cache = DownloadCache(root)
    if args.action == "info":
        files, size, own = cache.usage()
        print(
            f"{root}: {count(files, 'file')}, {size / 1e6:,.1f} MB, of which {own / 1e6:,.1f} MB only the cache holds"
        )
    else:
        removed, freed = cache.prune(everything=args.action == "clear")
        print(f"{root}: removed {count(removed, 'file')}, freed {freed / 1e6:,.1f} MB")
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    """A new key for a client, and the digest the server is configured with (it never stores keys)."""
    key = "ik_" + secrets.token_urlsafe(32)
    print(f"key:    {key}\nsha256: {hashlib.sha256(key.encode()).hexdigest()}")
    print("give the key to the client (INITIUM_API_KEY); add the sha256 to the server's INITIUM_API_KEY_HASHES")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from initium.service.cli import serve

    return serve(args)


def cmd_worker(args: argparse.Namespace) -> int:
    from initium.service.cli import worker

    return worker(args)


def _add_server_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="base URL (default $INITIUM_BASE_URL or http://127.0.0.1:8000)")


def _add_request_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="JSON file: a whole request, or only the spec")
    p.add_argument("--policy", help="policy JSON file, or a preset name (see GET /v1/presets)")
    p.add_argument("--seed", type=int, help="overrides the file's seed")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16", "float64"], help="overrides the file's dtype")
    _add_server_argument(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="initium", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="show the resolved plan; generates nothing")
    _add_request_arguments(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("init", help="initialize and download the weights")
    _add_request_arguments(p)
    p.add_argument("-o", "--output", required=True, help="where to write the .safetensors file")
    p.add_argument("--report", help="also write the report JSON here")
    p.add_argument("--timeout", type=float, help="seconds to wait for the job")
    p.add_argument(
        "--local", action="store_true", help="no server: run here on this GPU or CPU (needs initium-service)"
    )
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("report", help="print a finished job's report as a table, or save its HTML page")
    p.add_argument("job_id", help="the id POST /v1/initializations returned")
    p.add_argument("--html", help="also save the self-contained HTML report here")
    p.add_argument("--open", action="store_true", help="open the HTML report in a browser")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-wait", action="store_true",
                   help="while the report is still being computed after the weights, say so and exit")  # fmt: skip
    _add_server_argument(p)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("presets", help="list, show or publish presets (platform policies)")
    p.add_argument("action", choices=["list", "show", "publish"])
    p.add_argument("target", nargs="?", help="show: NAME or NAME@VERSION; publish: a preset JSON file")
    p.add_argument("--json", action="store_true", help="show: print the preset as JSON")
    _add_server_argument(p)
    p.set_defaults(func=cmd_presets)
    p = sub.add_parser("schemes", help="the initialization schemes, or one with its parameters")
    p.add_argument("name", nargs="?", help="one scheme's details as JSON")
    p.add_argument("--json", action="store_true", help="every scheme as JSON")
    _add_server_argument(p)
    p.set_defaults(func=cmd_schemes)
    p = sub.add_parser("cache", help="the client's download cache: info, prune (files only it holds), clear")
    p.add_argument("action", nargs="?", default="info", choices=["info", "prune", "clear"])
    p.set_defaults(func=cmd_cache)
    p = sub.add_parser("api-key", help="generate an API key and the digest to configure on the server")
    p.set_defaults(func=cmd_api_key)
    serve = sub.add_parser("serve", help="run the service with its embedded worker (needs initium-service)")
    worker = sub.add_parser("worker", help="run a Celery worker for a scaled-out service (needs initium-service)")
    try:
        from initium.service.cli import add_serve_arguments, add_worker_arguments
    except ImportError:
        for p, name in ((serve, "serve"), (worker, "worker")):
            message = f"initium {name} needs the service: pip install initium-service"
            p.set_defaults(func=lambda _, message=message: _fail(EXIT_INPUT, message))
    else:
        add_serve_arguments(serve)
        serve.set_defaults(func=cmd_serve)
        add_worker_arguments(worker)
        worker.set_defaults(func=cmd_worker)
    return parser


def _fail(code: int, message: str) -> int:
    print(f"initium: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokenPipeError:  # `initium presets list | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except InputError as exc:
        return _fail(EXIT_INPUT, str(exc))
    except (RequestInvalidError, RequestTooLargeError, NotFoundError) as exc:
        return _fail(EXIT_INPUT, str(exc))
    except AuthenticationError as exc:
        return _fail(EXIT_INPUT, f"{exc}; set INITIUM_API_KEY to a key the server accepts (`initium api-key`)")
    except ConflictError as exc:
        # 409 "conflict" is the user's input (a preset name and version published with other rules);
        # the other 409s (a failed job, a report that could not be computed) are the job's failure.
        return _fail(EXIT_INPUT if exc.type == "conflict" else EXIT_FAILED, str(exc))
    except APIConnectionError as exc:
        return _fail(EXIT_UNREACHABLE, f"{exc}; is `initium serve` running there?")
    except (APIStatusError, InitiumError) as exc:
        return _fail(EXIT_FAILED, str(exc))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
