"""`idnode check`: read every record of a store and say what is wrong with it.

Checks, in one read transaction (consistent while the node serves):
- meta: the case rule is recorded;
- prefixes: each record unpacks, is keyed by its normalized prefix, has a known state, and a referral carries
  an HS_SITE that decodes;
- identifiers: each key is a normalized handle, each record unpacks with this node's schema, its values
  decode one by one with nothing left over, and its "all public" flag matches the values; identifiers under a
  prefix that is not registered (they would be answered SERVER_NOT_RESP) are reported per prefix;
- counters: each key is kind/YYYYMMDD/prefix with a real date not in the future, each value a u64; and per
  prefix, the registrations counted are at least the identifiers held (identifiers are only ever counted
  when created, so fewer registrations than identifiers means lost counts);
- LMDB's own entry counts agree with what was iterated.

Imports the codec's value reader and the store, never the servers.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from resolver.handle.errors import HandleProtocolError
from resolver.handle.values import decode_site, decode_value
from resolver.handle.wire import Reader
from storage.enterprises import REGISTRATIONS_ADMIN
from storage.keys import NA_PREFIX, InvalidHandle, handle_key, normalize_prefix
from storage.records import RecordError, split_values, value_is_public
from storage.store import REGISTRATIONS, PrefixInfo, Store, StoreError
from storage.writes import REGISTRATIONS_CLI, REGISTRATIONS_HTTP

PREFIX_STATES = ("hosted", "referral", "disabled")  #: states a prefix record may have
RESOLUTION_KINDS = (
    "resolutions.handle",
    "resolutions.http",
    "resolutions.dns",
)  #: counter kinds of this node
REGISTRATION_KINDS = (
    REGISTRATIONS,  # idnode load
    REGISTRATIONS_HTTP,  # the HTTP API
    REGISTRATIONS_CLI,  # idnode register, idnode scenario load
    REGISTRATIONS_ADMIN,  # the <prefix>/ADMIN identities
)  #: counter kinds of identifiers created, by where they came from
MAX_FUTURE_DAYS = 1  #: a counter day after tomorrow (UTC) means a wrong clock or a corrupt key
PROGRESS_EVERY = 100_000  #: identifiers between two progress calls


@dataclass
class CheckReport:
    max_problems: int = 100
    identifiers: int = 0
    prefixes: int = 0
    counters: int = 0
    problem_count: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(text)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "identifiers": self.identifiers,
            "prefixes": self.prefixes,
            "counters": self.counters,
            "problem_count": self.problem_count,
            "problems": self.problems,
            "notes": self.notes,
        }


def _show(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


def check_store(
    store: Store, max_problems: int = 100, progress: Callable[[int], None] | None = None, today_utc=None
) -> CheckReport:
    report = CheckReport(max_problems=max_problems)
    today = today_utc or datetime.datetime.now(datetime.UTC).date()
    with store.env.begin() as txn:
        case_flag = txn.get(b"case_sensitive", db=store.meta)
        if case_flag not in (b"0", b"1"):
            report.problem(f"meta: case_sensitive is {case_flag!r}, expected b'0' or b'1'")
        case_sensitive = case_flag == b"1"
        prefixes = _check_prefixes(txn, store, report)
        per_prefix = _check_identifiers(txn, store, report, case_sensitive, progress)
        registrations = _check_counters(txn, store, report, today)
        for name, db, seen in (
            ("identifiers", store.handles, report.identifiers),
            ("prefixes", store.prefixes_db, report.prefixes),
            ("counters", store.counters_db, report.counters),
        ):
            entries = txn.stat(db)["entries"]
            if entries != seen:
                report.problem(f"{name}: LMDB counts {entries} entries, {seen} were read")
    for prefix, n in sorted(per_prefix.items()):
        if prefix != NA_PREFIX and prefix not in prefixes:
            report.problem(f"prefix {_show(prefix)}: {n} identifiers under a prefix that is not registered")
        counted = registrations.get(prefix, 0)
        if counted < n:
            report.problem(
                f"prefix {_show(prefix)}: {n} identifiers held but only {counted} registrations counted"
            )
    return report


def _check_prefixes(txn, store: Store, report: CheckReport) -> set[bytes]:
    keys = set()
    for key, raw in txn.cursor(db=store.prefixes_db):
        report.prefixes += 1
        keys.add(key)
        try:
            info = PrefixInfo.unpack(raw)
        except (StoreError, ValueError, TypeError, KeyError, AttributeError) as exc:
            report.problem(f"prefix {_show(key)}: record does not unpack: {exc}")
            continue
        if normalize_prefix(info.prefix.encode()) != key:
            report.problem(f"prefix {_show(key)}: record names {info.prefix!r}")
        if info.state not in PREFIX_STATES:
            report.problem(f"prefix {_show(key)}: unknown state {info.state!r}")
        if info.state == "referral":
            if not info.site:
                report.problem(f"prefix {_show(key)}: referral without an HS_SITE")
            else:
                try:
                    decode_site(info.site)
                except (HandleProtocolError, ValueError) as exc:
                    report.problem(f"prefix {_show(key)}: referral HS_SITE does not decode: {exc}")
    return keys


def _check_identifiers(txn, store: Store, report: CheckReport, case_sensitive: bool, progress) -> Counter:
    per_prefix: Counter[bytes] = Counter()
    for key, raw in txn.cursor(db=store.handles):
        report.identifiers += 1
        if progress is not None and report.identifiers % PROGRESS_EVERY == 0:
            progress(report.identifiers)
        name = _show(key)
        try:
            key.decode("utf-8")
            if handle_key(key, case_sensitive) != key:
                report.problem(f"{name}: key is not in the node's normalized form")
        except (UnicodeDecodeError, InvalidHandle) as exc:
            report.problem(f"{name}: not a valid handle key: {exc}")
            continue
        per_prefix[key[: key.find(b"/")]] += 1
        try:
            tail, all_public = store.unpack(raw)
            values = split_values(tail)
            for encoded in values:
                reader = Reader(encoded)
                decode_value(reader)
                if not reader.at_end():
                    raise RecordError("value longer than its fields")
        except (RecordError, HandleProtocolError, ValueError, TypeError) as exc:
            report.problem(f"{name}: record does not decode: {exc}")
            continue
        if all_public != all(value_is_public(v) for v in values):
            report.problem(f"{name}: 'all public' flag is {all_public} but the values say otherwise")
    return per_prefix


def _check_counters(txn, store: Store, report: CheckReport, today: datetime.date) -> dict[bytes, int]:
    registrations: Counter[bytes] = Counter()
    unknown_kinds: Counter[str] = Counter()
    for key, raw in txn.cursor(db=store.counters_db):
        report.counters += 1
        name = _show(key)
        parts = key.split(b"/", 2)
        if len(parts) != 3:
            report.problem(f"counter {name}: key is not kind/day/prefix")
            continue
        kind, day, prefix = parts[0].decode("utf-8", "replace"), parts[1].decode("ascii", "replace"), parts[2]
        kind = kind.partition("@")[0]  # a cluster member's counter: kind@node
        if len(raw) != 8:
            report.problem(f"counter {name}: value of {len(raw)} bytes, expected 8")
            continue
        try:
            date = datetime.datetime.strptime(day, "%Y%m%d").date()
        except ValueError:
            report.problem(f"counter {name}: {day!r} is not a date (YYYYMMDD)")
            continue
        if (date - today).days > MAX_FUTURE_DAYS:
            report.problem(f"counter {name}: day {day} is in the future")
        if kind in REGISTRATION_KINDS:
            registrations[prefix] += int.from_bytes(raw, "big")
        elif kind not in RESOLUTION_KINDS:
            unknown_kinds[kind] += 1
    for kind, n in sorted(unknown_kinds.items()):
        report.notes.append(f"{n} counters of kind {kind!r}, which this check does not know (not checked)")
    return registrations
