"""`idnode` subcommands of the security work (issue #7):

    idnode audit            the audit trail of writes (storage/audit.py), filtered by prefix and time
    idnode seclog status    the security log upload queue: events waiting, dropped (storage/eventqueue.py)
    idnode seclog export    send queued events to the collector until SIGTERM (resolver/security/exporter.py)

Registered from resolver/cli.py's parser by `register(sub)`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time
from pathlib import Path

DEFAULT_AUDIT_LIMIT = 100  #: `idnode audit` shows the newest this many matches unless told otherwise
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now_s: float | None = None) -> float:
    """Unix seconds from `30m`/`24h`/`7d` (that long ago), Unix seconds, or ISO 8601 (a date or a date and
    time; without an offset it is UTC). Raises ValueError."""
    text = text.strip()
    now = time.time() if now_s is None else now_s
    match = _RELATIVE.match(text)
    if match:
        return now - float(match[1]) * _UNIT_S[match[2]]
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _data_dir(args: argparse.Namespace) -> Path:
    from resolver.cli_store import store_dir  # --data, --config or IDNODE_DATA_DIR, as every command

    return store_dir(args)


def cmd_audit(args: argparse.Namespace) -> int:
    from resolver.cli_errors import CliError
    from resolver.cli_store import open_store
    from storage.audit import query

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        raise CliError(f"--since/--until: {exc} (give 24h, 7d, Unix seconds or ISO 8601)") from None
    limit = args.limit or None
    with open_store(args) as store:
        entries = query(store, prefix=args.prefix, since=since, until=until, limit=limit, newest=True)
    for entry in entries:
        if args.json:
            print(json.dumps(entry.to_json(), ensure_ascii=False, separators=(",", ":")))
        else:
            detail = " " + json.dumps(entry.detail, ensure_ascii=False) if entry.detail else ""
            print(f"{entry.to_json()['time']}  {entry.operation:<14} {entry.handle}  "
                  f"by {entry.identity or '-'} from {entry.source or '-'}{detail}")  # fmt: skip
    if limit is not None and len(entries) == limit:
        print(f"(the newest {limit} matches; --limit 0 shows all)", file=sys.stderr)
    return 0


def _queue_dir(args: argparse.Namespace) -> Path | None:
    """security_log.queue_dir as `idnode serve` takes it (--queue-dir > IDNODE_SECURITY_LOG_QUEUE_DIR > the
    [security_log] table of --config or $IDNODE_CONFIG), or None: the queue is then DATA/security-queue."""
    from resolver import settings
    from resolver.cli_errors import CliError

    if args.queue_dir:
        return Path(args.queue_dir)
    if os.environ.get("IDNODE_SECURITY_LOG_QUEUE_DIR"):
        return Path(os.environ["IDNODE_SECURITY_LOG_QUEUE_DIR"])
    path = args.config or os.environ.get(settings.CONFIG_ENV)
    if path:
        try:
            table = settings.read_file(Path(path)).get("security_log", {})
        except settings.ConfigError as exc:
            raise CliError(str(exc)) from None
        if table.get("queue_dir"):
            return Path(table["queue_dir"])
    return None


def cmd_seclog_status(args: argparse.Namespace) -> int:
    from resolver.security.config import DEFAULT_QUEUE_SUBDIR
    from storage.eventqueue import read_stats

    directory = _queue_dir(args) or _data_dir(args) / DEFAULT_QUEUE_SUBDIR
    stats = read_stats(directory)
    if stats is None:
        stats_json = {"queue": str(directory), "exists": False}
    else:
        stats_json = {"queue": str(directory), "exists": True, "events": stats.events, "bytes": stats.bytes,
                      "dropped": stats.dropped, "appended": stats.appended, "nextSeq": stats.next_seq}  # fmt: skip
    if args.json:
        print(json.dumps(stats_json, indent=2))
    elif stats is None:
        print(f"no security event queue at {directory} (the upload is off, or nothing was queued yet)")
    else:
        print(f"queue     {directory}")
        print(f"waiting   {stats.events:>12,} events, {stats.bytes:,} bytes")
        print(f"dropped   {stats.dropped:>12,} events (the bound removed them unsent)")
        print(f"appended  {stats.appended:>12,} events since the queue was created")
    return 0


def _export_settings(args: argparse.Namespace):
    """(SecurityLogConfig, data_dir): the [security_log] table of --config, then the flags; the store directory
    by the rule of every command (--data > IDNODE_DATA_DIR > data_dir of the file)."""
    import tomllib

    from resolver.cli_errors import CliError
    from resolver.cli_store import store_dir
    from resolver.security.config import SecurityLogConfig

    base = None
    try:
        if args.config:
            with open(args.config, "rb") as f:
                document = tomllib.load(f)
            base = SecurityLogConfig.from_mapping(document.get("security_log", {}))
        config = SecurityLogConfig.from_args(args, base)
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if not config.enabled:
        raise CliError("no collector: give --collector HOST:PORT (or security_log.collector in --config)")
    data_dir = store_dir(args, required=not config.queue_dir)
    return config, Path(data_dir or ".")


def cmd_seclog_export(args: argparse.Namespace) -> int:
    import signal
    import threading

    from resolver.cli_errors import CliError
    from resolver.security.exporter import DRAIN_TIMEOUT_S, Exporter, ExporterError

    config, data_dir = _export_settings(args)
    try:
        exporter = Exporter(config, data_dir)
    except ExporterError as exc:
        raise CliError(str(exc)) from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        exporter.run(stop, drain_timeout_s=DRAIN_TIMEOUT_S)
    finally:
        exporter.close()
    print(f"sent {exporter.sent:,} events; {exporter.failures:,} failed attempts", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from resolver.cli_store import add_store_arguments

    audit = sub.add_parser("audit", help="the audit trail of writes: who wrote what, when, from where")
    add_store_arguments(audit)
    audit.add_argument("--prefix", help="only handles under this prefix or its sub-prefixes (0.NA/P too)")
    audit.add_argument(
        "--since", help="from this time on: 24h, 7d, Unix seconds, ISO 8601 (UTC unless an offset)"
    )
    audit.add_argument("--until", help="before this time (same forms)")
    audit.add_argument(
        "--limit", type=int, default=DEFAULT_AUDIT_LIMIT, help="the newest N matches (0: all; default 100)"
    )
    audit.add_argument("--json", action="store_true", help="one JSON object a line (NDJSON)")
    audit.set_defaults(func=cmd_audit)

    seclog = sub.add_parser("seclog", help="the security log upload")
    seclog_sub = seclog.add_subparsers(dest="seclog_command", required=True)
    status = seclog_sub.add_parser("status", help="events waiting in the upload queue, and dropped ones")
    add_store_arguments(status, help_text="store directory: the queue is DATA/security-queue")
    status.add_argument("--queue-dir", help="the queue directory (security_log.queue_dir)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_seclog_status)

    from resolver.security.config import SecurityLogConfig

    export = seclog_sub.add_parser(
        "export", help="send queued security events to the collector until SIGTERM"
    )
    export.add_argument("--data", type=Path, help="store directory: the queue is DATA/security-queue")
    export.add_argument(
        "--config", type=Path, help="read data_dir and the [security_log] table of this TOML file"
    )
    SecurityLogConfig.add_arguments(export)
    export.set_defaults(func=cmd_seclog_export)
