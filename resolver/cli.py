"""The `idnode` command: serve, load, gen, resolve, stats. Each subcommand imports what it needs, so a client
call does not pay for the server's imports."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from resolver.cli_errors import CliError  # one class for __main__ and the subcommand modules
from resolver.config import DEFAULT_HANDLE_PORT, DEFAULT_NODE_PREFIX

log = logging.getLogger("idnode")

#: `idnode load` into a store a node serves runs at this nice value unless --nice says otherwise: its parse
#: workers then take the CPU the node's workers leave (the writer applies its chunks at normal priority).
LOAD_NICE_SERVED = 10

#: 128 + SIGPIPE: what a shell reports for a writer whose reader left (`yes | head -1`), so `set -o pipefail`
#: still sees that the output was cut short, while nothing is printed about it
EXIT_BROKEN_PIPE = 141


class _VersionAction(argparse.Action):
    """--version: the package version and the commit it was built from, looked up only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from resolver.buildinfo import describe

        print(describe())
        parser.exit()


def _cmd_serve(args: argparse.Namespace) -> int:
    from resolver.cli_ops import cmd_serve  # settings from file, environment and flags; systemd; reload

    return cmd_serve(args)


def _node_writer_cpus(args) -> str:
    """The serving node's writer_cpus (environment, else --config), which a load into its store shares."""
    from resolver import settings

    return str(settings.node_setting("writer_cpus", getattr(args, "config", None)) or "")


def _cmd_load(args: argparse.Namespace) -> int:
    import functools
    import os

    from resolver.cli_store import open_store, store_dir
    from resolver.cpus import parse_cpu_list, pin
    from resolver.progress import Progress
    from resolver.writer.client import WriterUnavailable, loader_submitter, socket_for, writer_listening
    from storage.loader import LoadError, load_files

    data_dir = store_dir(args)
    socket = socket_for(data_dir, getattr(args, "config", None))
    served = (data_dir / "data.mdb").exists() and writer_listening(socket)
    submitter = functools.partial(loader_submitter, str(socket)) if served else None
    nice = args.nice if args.nice is not None else (LOAD_NICE_SERVED if served else 0)
    if nice:
        os.nice(nice)  # the parse workers inherit it: a node serving the store keeps its share of the CPU
    cpus = args.cpus if args.cpus is not None else (_node_writer_cpus(args) if served else "")
    try:
        pin(parse_cpu_list(cpus, "--cpus"))  # the write plane's CPUs: a served store's answers keep theirs
    except ValueError as exc:
        raise CliError(str(exc)) from None
    kwargs = {"readonly": True} if served else {"create": True, "case_sensitive": args.case_sensitive}
    with open_store(args, **kwargs) as store:
        try:
            with Progress("load", enabled=not args.quiet) as bar:  # on a terminal only (resolver/progress.py)
                progress = (lambda path, n, _s: bar.update_to(n, path)) if bar.shown else None
                report = load_files(store, [Path(p) for p in args.files], progress=progress, submitter=submitter)
        except (LoadError, WriterUnavailable) as exc:
            raise CliError(str(exc)) from exc
        total = store.count_identifiers()
    resumed = f", resumed after {report.skipped_lines:,} committed lines" if report.skipped_lines else ""
    print(
        f"loaded {report.records:,} identifiers ({report.new:,} new) in {report.seconds:.1f} s, "
        f"{report.rate_per_s:,.0f}/s{resumed}; the store holds {total:,}",
        file=sys.stderr,
    )
    return 0


def _cmd_gen(args: argparse.Namespace) -> int:
    from bench.datagen import generate_lines, write_ndjson

    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        write_ndjson(generate_lines(args.count, args.seed, args.prefix, args.enterprises), out)
    finally:
        if args.output:
            out.close()
    return 0


def _parse_server(text: str, default_port: int = DEFAULT_HANDLE_PORT) -> tuple[str, int]:
    """--server HOST[:PORT] ([V6]:PORT for IPv6); without a port, `default_port` (the Handle port)."""
    from resolver.client import parse_address

    try:
        return parse_address(text, default_port)
    except ValueError as exc:
        raise CliError(f"--server: {exc}") from None


def _cmd_resolve(args: argparse.Namespace) -> int:
    import asyncio

    from resolver.cli_hints import explain_resolve_failure
    from resolver.client import HandleClient, ResolveError
    from storage.jsonvalues import value_to_json

    host, port = _parse_server(args.server)

    async def go():
        async with HandleClient(host, port, tcp=args.tcp, timeout_s=args.timeout) as client:
            return await client.resolve(args.handle, types=args.type or (), indexes=args.index or ())

    try:
        result = asyncio.run(go())
    except (ResolveError, OSError, TimeoutError) as exc:
        why = explain_resolve_failure(exc, host, port, args.tcp, args.handle)
        raise CliError(f"{args.handle}: {why}") from None
    if args.json:
        print(json.dumps(result.to_json(value_to_json), ensure_ascii=False, indent=2))
    else:
        print(result.describe())
    return 0 if result.ok else 1


def _cmd_stats(args: argparse.Namespace) -> int:
    from resolver.cli_store import open_store
    from resolver.reports import collect_stats

    with open_store(args) as store:
        stats = collect_stats(store)
    if args.json:
        print(json.dumps(stats, indent=2))  # in collect_stats' order: prefixes as numbers, not as text
        return 0
    print(f"identifiers   {stats['identifiers']:>14,}")
    print(f"prefixes      {stats['prefixes']:>14,}")
    enterprises = stats["enterprises"]
    print(f"connected     {enterprises['connected']:>14,}  enterprise nodes seen in the last 24 h")
    for kind in ("registrations", "resolutions"):
        block = stats[kind]
        print(f"{kind:<14}{block['total']:>14,}")
        for protocol, n in block["per_protocol"].items():  # each block comes sorted from collect_stats
            print(f"  via {protocol:<8}{n:>14,}")
        for day, n in block["per_day"].items():
            print(f"  {day}    {n:>14,}")
        for prefix, n in block["per_prefix"].items():
            print(f"  {prefix:<12}{n:>14,}")
        for node, n in block.get("per_node", {}).items():
            print(f"  node {node or '(alone)':<7}{n:>14,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idnode", description="Identifier resolution node (Handle protocol)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    parser.add_argument("--version", action=_VersionAction, help="print the version and build commit, and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    from resolver.cli_store import add_store_arguments

    serve = sub.add_parser("serve", help="run the node")
    from resolver.cli_ops import add_serve_arguments, register

    add_serve_arguments(serve)
    serve.set_defaults(func=_cmd_serve)

    load = sub.add_parser("load", help="bulk-register identifiers from NDJSON or CSV files")
    add_store_arguments(load, help_text="store directory (created if missing)")
    load.add_argument("--case-sensitive", action="store_true", help="a new store keeps suffix case")
    load.add_argument("--quiet", action="store_true", help="no progress line")
    load.add_argument(
        "--nice", type=int, default=None,
        help=f"CPU priority of the load (nice(1) increment; default {LOAD_NICE_SERVED} into a store a node serves, else 0)",
    )  # fmt: skip
    load.add_argument(
        "--cpus", default=None,
        help="CPUs the load runs on, as taskset writes them (default: the node's writer_cpus into a store a node "
             "serves, else any)",
    )  # fmt: skip
    load.add_argument("files", nargs="+", help="NDJSON files, or CSV files ending in .csv")
    load.set_defaults(func=_cmd_load)

    gen = sub.add_parser("gen", help="write synthetic identifiers as sorted NDJSON")
    gen.add_argument("--count", type=int, required=True)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--prefix", default=DEFAULT_NODE_PREFIX)
    gen.add_argument("--enterprises", type=int, default=32)
    gen.add_argument("-o", "--output", help="file to write (default: stdout)")
    gen.set_defaults(func=_cmd_gen)

    resolve = sub.add_parser("resolve", help="resolve a handle over the Handle protocol")
    resolve.add_argument("handle")
    resolve.add_argument(
        "--server",
        default=f"127.0.0.1:{DEFAULT_HANDLE_PORT}",
        help=f"HOST[:PORT], [IPV6][:PORT] (port default {DEFAULT_HANDLE_PORT})",
    )
    resolve.add_argument("--tcp", action="store_true", help="use TCP instead of UDP")
    resolve.add_argument("--type", action="append", help="only values of this type (repeatable)")
    resolve.add_argument("--index", action="append", type=int, help="only the value at this index (repeatable)")
    resolve.add_argument("--json", action="store_true", help="print the REST API's JSON form")
    resolve.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    resolve.set_defaults(func=_cmd_resolve)

    stats = sub.add_parser("stats", help="identifier and resolution counts of a store")
    add_store_arguments(stats)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=_cmd_stats)

    from resolver.cli_bench import register as register_bench

    register_bench(sub)  # bench udp|tcp|dns|http
    register(sub)  # backup, restore, check
    from resolver.cli_admin import register as register_admin

    register_admin(sub)  # prefix, operator, template, trace, report
    from resolver.cli_security import register as register_security

    register_security(sub)  # audit, seclog
    from resolver.cli_dns import register as register_dns

    register_dns(sub)  # export-zone, dns-name
    from resolver.cli_key import register as register_key

    register_key(sub)  # key show|rotate
    from resolver.cli_cluster import register as register_cluster

    register_cluster(sub)  # cluster status|remove
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for results that record their command
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, where a reader that left is caught, rather than in the interpreter's exit
        return status
    except CliError as exc:
        print(f"idnode {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # a socket or a file, not the reader of our output: a real failure
        # `idnode gen | head -1`: the reader has what it wanted. Point stdout at /dev/null so that the
        # interpreter's own flush at exit does not complain a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _stdout_gone() -> bool:
    """Whether the reader of stdout has closed it (the kernel flags a pipe without readers POLLERR)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
