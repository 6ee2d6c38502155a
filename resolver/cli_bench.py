"""`idnode bench udp|tcp|dns|http`: the load generator (bench/loadgen.py) from the command line. The flags map
one to one onto bench.load.spec.LoadSpec; the generator itself is imported only when a run starts."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from resolver.cli_errors import CliError
from resolver.config import DEFAULT_HANDLE_PORT, DEFAULT_NODE_PREFIX

#: Where each protocol's listener is by default: the Handle port, `serve --dns-port` as the README runs it, and
#: `make run`'s HTTP port.
DEFAULT_PORTS = {"udp": DEFAULT_HANDLE_PORT, "tcp": DEFAULT_HANDLE_PORT, "dns": 8053, "http": 8000}
_HELP = {
    "udp": "Handle resolutions over UDP",
    "tcp": "Handle resolutions over TCP, pipelined on keep-alive connections",
    "dns": "DNS queries (TXT, URI) for the identifiers' names in the node's DNS view",
    "http": "GET /api/handles/{handle} over keep-alive HTTP/1.1 connections",
}


def _checked(convert, accept, rule: str):
    """An argparse type: ``convert`` the text, then refuse a value ``accept`` does not take, saying ``rule``."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {convert.__name__}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text} {rule}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "is not positive")
_positive_float = _checked(float, lambda v: v > 0, "is not positive")
_share = _checked(float, lambda v: 0.0 <= v <= 1.0, "is not between 0 and 1")


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to ask for")
    what.add_argument(
        "--dataset-count", type=_positive_int, help="identifiers in the store (`idnode gen --count`)"
    )
    what.add_argument("--seed", type=int, default=1, help="`idnode gen --seed`; seeds the requests too")
    what.add_argument("--prefix", default=DEFAULT_NODE_PREFIX, help="`idnode gen --prefix` of the store")
    what.add_argument("--enterprises", type=_positive_int, default=32, help="`idnode gen --enterprises`")
    what.add_argument("--handles", help="file of handles to ask for, one a line (instead of --dataset-count)")
    what.add_argument(
        "--missing", type=_share, default=0.0, help="share of requests for absent identifiers (0..1)"
    )
    what.add_argument("--popularity", choices=("uniform", "zipf"), default="uniform",
                      help="every identifier alike, or Zipf ranks (a few very often)")  # fmt: skip
    what.add_argument("--zipf-s", type=_positive_float, default=1.0, help="the Zipf exponent (default 1.0)")
    how = parser.add_argument_group("how hard and how long")
    bound = how.add_mutually_exclusive_group()
    bound.add_argument("--duration", type=_positive_float, help="measured seconds (default 10)")
    bound.add_argument("--count", type=_positive_int, help="stop after this many measured answers instead")
    how.add_argument("--warmup", type=float, default=2.0, help="seconds before the measurement, not counted")
    how.add_argument("--processes", type=_positive_int, default=1, help="generator processes")
    how.add_argument("--sockets", type=_positive_int,
                     help="UDP sockets or TCP connections (source ports) per process; default by protocol")  # fmt: skip
    loop = how.add_mutually_exclusive_group()
    loop.add_argument("--window", type=_positive_int,
                      help="closed loop (the default): requests outstanding per socket; default by protocol")  # fmt: skip
    loop.add_argument("--rate", type=_positive_float,
                      help="open loop: requests per second over all processes, sent whatever the answers do")  # fmt: skip
    how.add_argument(
        "--timeout", type=_positive_float, default=1.0, help="seconds before a request counts as lost"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--server-pid", type=int, action="append", help="report its CPU use (repeatable)")
    out.add_argument("--json", help="also write the result (with the machine and the command) as JSON to this file")
    out.add_argument("--md", help="also write a short markdown summary (machine, commit, command, figures)")
    out.add_argument(
        "--png", help="also draw answers/s over time and the latency distribution (needs matplotlib)"
    )
    out.add_argument("--quiet", action="store_true", help="no progress line (drawn only when stderr is a terminal)")


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="load-test a running node (see bench/loadgen.py)")
    protocols = bench.add_subparsers(dest="bench_kind", required=True, metavar="{udp,tcp,dns,http}")
    for name, port in DEFAULT_PORTS.items():
        parser = protocols.add_parser(name, help=_HELP[name], description=_HELP[name])
        _add_common_arguments(parser)
        parser.add_argument(
            "--server", default=f"127.0.0.1:{port}", help=f"HOST:PORT (default 127.0.0.1:{port})"
        )
        if name == "dns":
            parser.add_argument("--zone", default="id.test.", help="the node's --dns-zone (default id.test.)")
            parser.add_argument("--qtype", choices=("TXT", "URI", "alternate"), default="alternate",
                                help="query type; alternate: TXT and URI by turns")  # fmt: skip
        parser.set_defaults(func=cmd_bench)


def _spec(args: argparse.Namespace):
    from bench.loadgen import DatasetSpec, LoadSpec
    from resolver.cli import _parse_server

    host, port = _parse_server(args.server, DEFAULT_PORTS[args.bench_kind])
    if args.handles:
        try:
            with open(args.handles, encoding="utf-8") as f:
                handles = [line.strip() for line in f if line.strip()]
        except OSError as exc:
            raise CliError(f"--handles: {exc}") from None
    elif args.dataset_count:
        handles = DatasetSpec(args.dataset_count, args.seed, args.prefix, args.enterprises)
    else:
        raise CliError("give --dataset-count (the store was built with `idnode gen`) or --handles FILE")
    return LoadSpec(
        args.bench_kind, host, port, handles, duration_s=args.duration, count=args.count, warmup_s=args.warmup,
        processes=args.processes, sockets=args.sockets, window=args.window, rate=args.rate,
        missing_ratio=args.missing, popularity=args.popularity, zipf_s=args.zipf_s, seed=args.seed,
        timeout_s=args.timeout, dns_zone=getattr(args, "zone", "id.test."),
        dns_qtype=getattr(args, "qtype", "alternate"),
    )  # fmt: skip


def _check_server(spec) -> str:
    what = "DNS" if spec.protocol == "dns" else "HTTP" if spec.protocol == "http" else "Handle"
    return f"is `idnode serve` running there, and is {spec.port} its {what} port?"


def _one_line(message: str) -> str:
    """A generator process's failure arrives as its whole traceback: keep the error it ends with, without the
    exception's class."""
    lines = [line for line in message.splitlines() if line.strip()]
    last = lines[-1] if lines else message
    head, sep, text = last.partition(": ")
    if sep and "Error" in head and " " not in head:  # "bench.load.spec.LoadGenError: cannot connect ..."
        last = text
    return last


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.load.report import summary_rows
    from bench.loadgen import LoadGenError, format_result, plot_result, run_load
    from bench.results_io import machine_facts, write_summary
    from resolver.progress import StatusLine

    spec = _spec(args)
    try:
        # The live answers/s line is rewritten in place on a terminal; a log or a pipe gets only the result.
        with StatusLine(enabled=not args.quiet) as status:
            progress = status.show if status.shown else None
            result = run_load(spec, server_pids=args.server_pid or (), progress=progress)
    except LoadGenError as exc:
        why = _one_line(str(exc))
        if "Connection refused" in why or "cannot connect" in why:
            why += f": {_check_server(spec)}"
        raise CliError(why) from None
    if not result["answers"]:
        raise CliError(
            f"nothing answered: no answer from {args.server} over {spec.protocol.upper()} in "
            f"{result['elapsed_s']:g} s: {_check_server(spec)}"
        )
    result["command"] = shlex.join(["idnode", *args.argv])
    result["machine"] = machine_facts()
    print(format_result(result))
    if args.md:
        title = f"idnode bench {spec.protocol}: {result['answers_per_s']:,.0f} answers/s"
        write_summary(Path(args.md), title, result, summary_rows(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.png:
        why_not = plot_result(result, Path(args.png))
        if why_not:
            print(f"idnode bench: {why_not}", file=sys.stderr)
    return 0
