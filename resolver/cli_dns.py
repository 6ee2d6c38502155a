"""The DNS view from the command line: `idnode export-zone` (the store as a master zone file that NSD, Knot or
BIND serve with the rdata of the live view) and `idnode dns-name` (the DNS name of an identifier, and back).
cli.py registers them with one call to `register`.

The export walks the identifiers of each hosted prefix through one store snapshot (storage/zonesnapshot.py, which
zone transfers read too) and writes as it goes, so its memory does not grow with the store.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from resolver.cli_errors import CliError
from resolver.config import DEFAULT_DNS_ZONE

WRITE_BUFFER_BYTES = 1 << 20  #: zone text is written in pieces of about this size
PROGRESS_EVERY = 10_000  #: identifiers between two progress calls (the bar redraws at most twice a second)
MAX_SKIPPED_SHOWN = 5  #: undecodable records named in the warning; the rest are only counted
MAX_SERIAL = 0xFFFF_FFFF  #: RFC 1035 §3.3.13: the SOA serial is a u32


@dataclass
class ExportReport:
    """What an export wrote."""

    identifiers: int = 0  #: identifiers under hosted prefixes, read from the store
    with_records: int = 0  #: of those, identifiers with at least one public value (the others have no name)
    records: int = 0  #: TXT and URI records written
    prefixes: int = 0  #: hosted prefixes walked
    skipped: int = 0  #: undecodable records left out (the live view answers SERVFAIL for them)
    skipped_keys: list[bytes] | None = None
    seconds: float = 0.0


def export_zone(
    store,
    out: TextIO,
    zone: str = DEFAULT_DNS_ZONE,
    serial: int | None = None,
    ns: list[str] | None = None,
    now_s: float | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> ExportReport:
    """Write the zone of ``store`` to ``out``: the header (``$ORIGIN``, ``$TTL``, SOA, NS), then the TXT and URI
    records of every identifier under a prefix hosted here, in key order. Identifiers under referred or disabled
    prefixes are left out, as the live view leaves them out.

    ``serial`` defaults to the Unix time, so that every new export is newer for secondaries. ``now_s`` (default:
    now) fixes the TTLs of values that expire at an absolute time.
    """
    from resolver.dnsview import Soa, zone_header, zone_lines
    from storage.zonesnapshot import ZoneSnapshot

    started = time.monotonic()
    now_s = time.time() if now_s is None else now_s
    serial = int(now_s) & MAX_SERIAL if serial is None else serial
    report = ExportReport(skipped_keys=[])
    case_sensitive = store.case_sensitive
    out.write("\n".join(zone_header(zone, Soa(serial=serial), ns or None)) + "\n")
    pending: list[str] = []
    pending_chars = 0
    # The identifiers zone transfers send, in their order: the snapshot walks the hosted prefixes (one rule).
    with ZoneSnapshot(store) as snapshot:
        report.prefixes = len(snapshot.hosted)
        for key, raw in snapshot.identifiers():
            report.identifiers += 1
            try:
                lines = zone_lines(key, snapshot.values_tail(raw), zone, case_sensitive, now_s)
            except Exception:  # RecordError, CorruptValues: one bad record must not stop the export
                report.skipped += 1
                if len(report.skipped_keys) < MAX_SKIPPED_SHOWN:
                    report.skipped_keys.append(key)
                continue
            if lines:
                report.with_records += 1
                report.records += len(lines)
                pending.extend(lines)
                pending_chars += sum(map(len, lines))
                if pending_chars >= WRITE_BUFFER_BYTES:
                    pending.append("")
                    out.write("\n".join(pending))
                    pending.clear()
                    pending_chars = 0
            if progress is not None and report.identifiers % PROGRESS_EVERY == 0:
                progress(report.identifiers, time.monotonic() - started)
    if pending:
        pending.append("")
        out.write("\n".join(pending))
    report.seconds = time.monotonic() - started
    return report


def cmd_export_zone(args: argparse.Namespace) -> int:
    from resolver.cli_store import open_store
    from resolver.dnsview.names import NameMap
    from resolver.progress import Progress

    try:
        NameMap(args.zone)
    except ValueError as exc:
        raise CliError(f"--zone: {exc}") from None
    if args.serial is not None and not 0 <= args.serial <= MAX_SERIAL:
        raise CliError(f"--serial: {args.serial} is not between 0 and {MAX_SERIAL}")
    store = open_store(args)
    to_file = args.output not in (None, "-")
    target = Path(args.output) if to_file else None
    # A file is written beside its destination and renamed over it at the end, so a server reloading the zone
    # never reads half an export.
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp") if target is not None else None
    # A bar on a terminal only, and never while the zone itself goes to the terminal (stdout).
    bar = Progress("export-zone", enabled=to_file and not args.quiet)
    progress = (lambda n, _s: bar.update_to(n)) if bar.shown else None
    try:
        with store, bar:
            if partial is not None:
                with open(partial, "w", encoding="ascii", buffering=WRITE_BUFFER_BYTES) as out:
                    report = export_zone(store, out, args.zone, args.serial, args.ns, progress=progress)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(partial, target)
            else:
                report = export_zone(store, sys.stdout, args.zone, args.serial, args.ns)
                sys.stdout.flush()
    except BrokenPipeError:
        raise  # the reader (`| head`) went away: main() ends quietly, as for every command
    except OSError as exc:
        raise CliError(str(exc)) from exc
    finally:
        if partial is not None and partial.exists():
            partial.unlink()
    if report.skipped:
        shown = ", ".join(k.decode("utf-8", "replace") for k in report.skipped_keys or [])
        print(
            f"idnode export-zone: warning: {report.skipped:,} undecodable records left out ({shown}); "
            "run `idnode check`",
            file=sys.stderr,
        )
    where = f" to {target}" if target is not None else ""
    print(
        f"exported {report.with_records:,} identifiers ({report.records:,} TXT and URI records) of "
        f"{report.prefixes:,} hosted prefixes{where} in {report.seconds:.1f} s"
        + (f"; {report.identifiers - report.with_records - report.skipped:,} without public values"
           if report.identifiers - report.with_records - report.skipped else ""),
        file=sys.stderr,
    )  # fmt: skip
    return 0


def cmd_dns_name(args: argparse.Namespace) -> int:
    from resolver.cli_store import open_store, store_dir
    from resolver.dnsview import DigestName, DnsViewError, handle_to_name, name_to_handle

    case_sensitive = args.case_sensitive
    # The store is optional here (it only tells the case rule): named by --data, --config or IDNODE_DATA_DIR,
    # but not taken from the default configuration file, which a user without access to the store would trip.
    if not case_sensitive and store_dir(args, required=False, default_file=False) is not None:
        with open_store(args) as store:
            case_sensitive = store.case_sensitive
    failed = 0
    for text in args.items:
        try:
            if args.reverse:
                found = name_to_handle(text, args.zone, case_sensitive)
                if isinstance(found, DigestName):
                    under = f" under {found.prefix}" if found.prefix else ""
                    print(f"digest:{found.digest.hex()}{under}")
                else:
                    print(found)
            else:
                print(handle_to_name(text, args.zone, case_sensitive))
        except (DnsViewError, ValueError) as exc:
            print(f"idnode dns-name: {text}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    from resolver.cli_store import add_store_arguments

    export = sub.add_parser(
        "export-zone", help="write the DNS view of the store as a master zone file (for NSD, Knot, BIND)"
    )
    add_store_arguments(export)
    export.add_argument(
        "--zone", default=DEFAULT_DNS_ZONE, help=f"zone of the DNS view (default {DEFAULT_DNS_ZONE})"
    )
    export.add_argument(
        "-o", "--output", help="zone file to write (default: stdout); replaced at the end, whole"
    )
    export.add_argument("--serial", type=int, help="SOA serial (default: the Unix time of the export)")
    export.add_argument(
        "--ns", action="append", help="name server of the zone (repeatable; default: ns1.<zone>)"
    )
    export.add_argument("--quiet", action="store_true", help="no progress line")
    export.set_defaults(func=cmd_export_zone)

    name = sub.add_parser(
        "dns-name", help="the DNS name of an identifier in the DNS view (or, with --reverse, back)"
    )
    name.add_argument("items", nargs="+", metavar="HANDLE", help="identifiers (names with --reverse)")
    name.add_argument(
        "--zone", default=DEFAULT_DNS_ZONE, help=f"zone of the DNS view (default {DEFAULT_DNS_ZONE})"
    )
    rule = name.add_mutually_exclusive_group()
    rule.add_argument("--case-sensitive", action="store_true", help="names for a node created case-sensitive")
    add_store_arguments(name, help_text="take the case rule from this store", data_group=rule)
    name.add_argument("--reverse", action="store_true", help="DNS names in, identifiers (store-key form) out")
    name.set_defaults(func=cmd_dns_name)
