"""Operating a node: `idnode serve` (settings from file, environment and flags; systemd; reload) and the
`idnode backup`, `restore` and `check` subcommands. cli.py registers them with one call to `register`.

The ops commands find the store as every command does (resolver/cli_store.py): --data DIR, else
$IDNODE_DATA_DIR, else the data_dir of --config FILE (or $IDNODE_CONFIG, or /etc/idnode/idnode.toml).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from resolver.cli_errors import CliError

log = logging.getLogger("idnode")


# -- serve ---------------------------------------------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    from resolver import settings

    settings.add_arguments(parser)


def cmd_serve(args: argparse.Namespace) -> int:
    from resolver import logs, settings
    from resolver.server.sockets import bind_problems, describe_bind_problems
    from resolver.server.supervisor import SupervisorError, resolve_port, supervise
    from storage.store import Store, StoreError

    try:
        load = settings.loader_from_args(args)  # reads the flags: a bad flag value is a ConfigError too
        config = load()
    except settings.ConfigError as exc:
        raise CliError(str(exc)) from None
    logs.setup("debug" if args.verbose else config.log_level, config.log_format)
    if "LISTEN_FDS" not in os.environ:  # with socket activation systemd holds the ports, as it should
        udp_tcp = [config.handle_port] + ([config.dns_port] if config.dns_port is not None else [])
        problems = bind_problems(config.binds, udp_tcp, [config.http_port] if config.http_port is not None else [])
        if problems:
            raise CliError(describe_bind_problems(problems))
    try:
        with Store(config.data_dir) as store:
            count = store.count_identifiers()
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    requested_port = config.handle_port
    config.handle_port = resolve_port(config)

    def reload_config():
        fresh = load()
        if requested_port == 0 and fresh.handle_port == 0:
            fresh.handle_port = config.handle_port
        return fresh

    listen = ", ".join(
        f"[{b}]:{config.handle_port}" if ":" in b else f"{b}:{config.handle_port}" for b in config.binds
    )
    log.info(
        "serving %s identifiers from %s on %s (Handle UDP+TCP), %d workers",
        f"{count:,}",
        config.data_dir,
        listen,
        config.workers,
        extra={"event": "serve", "identifiers": count, "port": config.handle_port, "workers": config.workers},
    )
    try:
        return supervise(config, reload_config)
    except SupervisorError as exc:
        raise CliError(str(exc)) from None


# -- finding the store ---------------------------------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> Path:
    from resolver.cli_store import store_dir

    return store_dir(args)


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    from resolver.cli_store import add_store_arguments

    add_store_arguments(parser)


# -- backup, restore, check ----------------------------------------------------------------------------------


def cmd_backup(args: argparse.Namespace) -> int:
    from storage.backup import BackupError, backup_store
    from storage.store import Store, StoreError

    data_dir = _data_dir(args)
    try:
        with Store(data_dir) as store:
            manifest = backup_store(store, Path(args.dest))
    except (StoreError, BackupError, OSError) as exc:
        raise CliError(str(exc)) from None
    print(
        f"backed up {manifest['identifiers']:,} identifiers from {data_dir} to {args.dest} "
        f"({manifest['bytes'] / 1e6:,.1f} MB, sha256 {manifest['sha256'][:16]}…, log position "
        f"{manifest['log_position']:,})",
        file=sys.stderr,
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from resolver.cli_store import store_users
    from storage.backup import BackupError, restore_store

    data_dir = _data_dir(args)
    users = store_users(data_dir)
    live = "; ".join(user.describe() for user in users)
    if live and not args.force:
        raise CliError(
            f"{data_dir} is live: used by {live}. Stop it first (systemctl stop idnode), or give --force to "
            "swap the store underneath it and then reload it (systemctl reload idnode)"
        )
    if not live:
        print(f"no process has {data_dir / 'data.mdb'} open", file=sys.stderr)
    try:
        done = restore_store(Path(args.src), data_dir)
    except (BackupError, OSError) as exc:
        raise CliError(str(exc)) from None
    print(f"restored {done['identifiers']:,} identifiers into {data_dir}", file=sys.stderr)
    if done["replaced"]:
        print(f"the store it replaced is in {done['replaced']} (delete it when satisfied)", file=sys.stderr)
    if live:
        print(
            "the running node still answers from the replaced store: reload it now "
            "(systemctl reload idnode, or kill -HUP the idnode serve process)",
            file=sys.stderr,
        )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from resolver.progress import Progress
    from storage.check import check_store
    from storage.store import Store, StoreError

    data_dir = _data_dir(args)

    try:
        with Store(data_dir) as store, Progress("check", total=store.count_identifiers()) as bar:
            report = check_store(store, max_problems=args.max_problems, progress=bar.update_to)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        for problem in report.problems:
            print(f"problem: {problem}")
        if report.problem_count > len(report.problems):
            print(f"... and {report.problem_count - len(report.problems):,} more problems")
        for note in report.notes:
            print(f"note: {note}")
        verdict = "ok" if report.ok else f"{report.problem_count:,} problems"
        print(
            f"{data_dir}: {report.identifiers:,} identifiers, {report.prefixes:,} prefixes, "
            f"{report.counters:,} counters: {verdict}"
        )
    return 0 if report.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    backup = sub.add_parser("backup", help="write a consistent, compacted copy of the store (while serving)")
    backup.add_argument("dest", help="directory to create (must not exist, or be empty)")
    _add_store_arguments(backup)
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser("restore", help="put a backup in place as the store")
    restore.add_argument("src", help="a directory written by `idnode backup` (or a data.mdb file)")
    _add_store_arguments(restore)
    restore.add_argument("--force", action="store_true", help="even when a running node uses the store")
    restore.set_defaults(func=cmd_restore)

    check = sub.add_parser(
        "check", help="verify every record and counter; exit status 1 when something is wrong"
    )
    _add_store_arguments(check)
    check.add_argument("--json", action="store_true", help="the report as JSON")
    check.add_argument(
        "--max-problems", type=int, default=100, help="problems listed at most (all are counted)"
    )
    check.set_defaults(func=cmd_check)
