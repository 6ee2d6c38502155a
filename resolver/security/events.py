"""Security events: their kinds, their stored form, their syslog form, and `SecurityEvents`, the small API the
rest of the node calls when something security-relevant happens.

A call only appends to the local queue (one short LMDB transaction, no fsync, no network) and never raises:
a queue that cannot be written is counted in `failed` and logged at most once a minute, and the caller's
request goes on. Noisy kinds are aggregated here so that a flood costs a dictionary update per packet and
one event per source and window: rate-limit trips (`rate_limited`) and malformed packets (`malformed`, which
reports a burst once a source sent MALFORMED_BURST_PACKETS in a window). Resolution counts are accumulated
(`add_resolutions`) and sent as per-prefix summaries every `summary_interval_s`; `tick()` (call it every few
seconds) sends what windows and summaries have due, `close()` sends the rest.

Imports no server code and no socket code; the exporter (exporter.py) turns queued events into syslog.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgpack

from resolver.security.config import SecurityLogConfig
from resolver.security.syslog import MAX_MESSAGE_BYTES, Severity, SyslogMessage, encode_message
from storage.eventqueue import QueueStats, SecurityQueue

log = logging.getLogger(__name__)

APP_NAME = "idnode"  #: APP-NAME of every message (RFC 5424 §6.2.5)
EVENT_VERSION = 1  #: version of the stored event record
MAX_FIELD_CHARS = 2048  #: text fields are cut here (a handle is at most 2048 bytes): events stay < 8 KiB
RATE_EVENT_WINDOW_S = 10.0  #: one rate-limit event per source and window; later trips are counted
MALFORMED_WINDOW_S = 10.0  #: malformed packets are counted per source in windows this long
MALFORMED_BURST_PACKETS = 20  #: this many malformed packets from one source in a window make a burst event
MAX_TRACKED_SOURCES = 4096  #: sources aggregated at once; beyond it pending counts are sent early
SUMMARY_PREFIXES_PER_EVENT = 100  #: a resolution summary is split so one message stays ~3 KiB
FAILURE_LOG_INTERVAL_S = 60.0  #: a queue that cannot be written is logged at most this often
REDACTED = "***"  #: shown instead of the value of a setting whose name looks secret
_SECRET_WORDS = ("secret", "password", "passwd", "token", "credential", "private")


class EventKind(StrEnum):
    """What happened; the value is the `event` field of the JSON, `msgid` the RFC 5424 MSGID."""

    AUTH_FAILURE = "auth-failure"  #: a request with missing or wrong credentials, or beyond its rights
    WRITE = "write"  #: an identifier or prefix written: who, what, from where
    RATE_LIMITED = "rate-limited"  #: a client went over its rate limit (aggregated per source and window)
    MALFORMED_BURST = "malformed-burst"  #: many malformed packets from one source in a short time
    CONFIG_CHANGED = "config-changed"  #: a setting changed (reload, operator command)
    RESOLUTION_SUMMARY = "resolution-summary"  #: resolutions per prefix over a period
    EVENTS_DROPPED = "events-dropped"  #: the queue's bound dropped unsent events (sent by the exporter)
    UNREADABLE = "unreadable"  #: a queued record that could not be decoded (sent instead of it)

    @property
    def msgid(self) -> str:
        return _MSGIDS[self]

    @property
    def severity(self) -> Severity:
        return _SEVERITIES[self]


_MSGIDS = {
    EventKind.AUTH_FAILURE: "AUTHFAIL",
    EventKind.WRITE: "WRITE",
    EventKind.RATE_LIMITED: "RATELIMIT",
    EventKind.MALFORMED_BURST: "MALFORMED",
    EventKind.CONFIG_CHANGED: "CONFIG",
    EventKind.RESOLUTION_SUMMARY: "RESOLUTIONS",
    EventKind.EVENTS_DROPPED: "DROPPED",
    EventKind.UNREADABLE: "UNREADABLE",
}
_SEVERITIES = {
    EventKind.AUTH_FAILURE: Severity.WARNING,
    EventKind.WRITE: Severity.NOTICE,
    EventKind.RATE_LIMITED: Severity.WARNING,
    EventKind.MALFORMED_BURST: Severity.WARNING,
    EventKind.CONFIG_CHANGED: Severity.NOTICE,
    EventKind.RESOLUTION_SUMMARY: Severity.INFORMATIONAL,
    EventKind.EVENTS_DROPPED: Severity.WARNING,
    EventKind.UNREADABLE: Severity.ERROR,
}


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    time_ns: int
    pid: int
    data: dict[str, Any]


def encode_event(event: Event) -> bytes:
    """The queued form: msgpack [version, kind, time_ns, pid, data]."""
    return msgpack.packb([EVENT_VERSION, event.kind.value, event.time_ns, event.pid, event.data])


def decode_event(raw: bytes) -> Event:
    """Inverse of `encode_event`; raises ValueError for anything else."""
    try:
        version, kind, time_ns, pid, data = msgpack.unpackb(raw)
        if version != EVENT_VERSION or not isinstance(data, dict):
            raise ValueError(f"event record version {version!r}")
        return Event(EventKind(kind), int(time_ns), int(pid), data)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"not a security event record: {exc}") from None


def format_event(
    seq: int, raw: bytes, *, facility: int, hostname: str, node_id: str = "", now_ns: int | None = None
) -> bytes:
    """The RFC 5424 message of queued event `seq`: PROCID the producing pid, MSGID by kind, no structured
    data, MSG a JSON object (ASCII only, so no BOM is needed: RFC 5424 §6.4) with `event`, `seq`, `time`,
    `node` when configured, `pid` and the event's fields. `seq` grows by one per queued event, so a collector
    sees drops and duplicates."""
    try:
        event = decode_event(raw)
    except ValueError as exc:
        event = Event(EventKind.UNREADABLE, now_ns or time.time_ns(), os.getpid(), {"error": str(exc)})
    head: dict[str, Any] = {"event": event.kind.value, "seq": seq, "time": _iso(event.time_ns)}
    if node_id:
        head["node"] = node_id
    head["pid"] = event.pid
    body = {**head, **{k: v for k, v in event.data.items() if k not in head}}  # the fixed fields win
    message = SyslogMessage(
        facility=facility,
        severity=event.kind.severity,
        timestamp_us=event.time_ns // 1000,
        hostname=hostname,
        app_name=APP_NAME,
        procid=str(event.pid),
        msgid=event.kind.msgid,
        msg=_json(body),
    )
    out = encode_message(message)
    if len(out) > MAX_MESSAGE_BYTES:  # cannot happen for events made here; a collector would cut it anyway
        head["truncated"] = len(out)
        out = encode_message(SyslogMessage(**{**_fields(message), "msg": _json(head)}))
    return out


def _fields(message: SyslogMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in SyslogMessage.__slots__}


def _json(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), default=str).encode("ascii")


def _iso(time_ns: int) -> str:
    seconds, rest = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1_000_000:03d}Z"


def _text(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + "..."


def _setting(key: str, value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if any(word in key.lower() for word in _SECRET_WORDS):
        return REDACTED
    return _text(value)


def open_queue(config: SecurityLogConfig, data_dir: str | Path) -> SecurityQueue:
    """The queue `config` names, opened in this process."""
    return SecurityQueue(
        config.queue_path(data_dir),
        max_bytes=config.queue_max_bytes,
        max_events=config.queue_max_events,
        sync=config.fsync_interval_s == 0,
    )


@dataclass(slots=True)
class _Window:
    start_s: float
    count: int = 0  # since the window started
    reported: int = 0  # of those, already in an event


class SecurityEvents:
    """The node's security events. One per process, made after fork (`open`); a disabled one (no queue)
    accepts every call and does nothing, so callers never check.

    The queue is an LMDB environment, which must not be open in a process that forks children that open it
    too (py-lmdb refuses the second open; LMDB forbids it). A process that forks (the supervisor) therefore
    uses `open(..., keep_open=False)`: each append opens and closes the queue (~0.2 ms, fine for its rare
    events), so it is never open at a fork."""

    def __init__(
        self,
        queue: SecurityQueue | None,
        *,
        opener: Callable[[], SecurityQueue] | None = None,
        summary_interval_s: float = 300.0,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.queue = queue  # kept open; or None with `opener`: opened for each append
        self._opener = opener
        self.summary_interval_s = summary_interval_s
        self._clock_ns = clock_ns
        self._monotonic = monotonic
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._rate: dict[tuple[str, str], _Window] = {}
        self._malformed: dict[tuple[str, str], _Window] = {}
        self._resolutions: dict[str, int] = {}
        self._summary_start_ns = clock_ns()
        self._summary_due_s = monotonic() + summary_interval_s
        self._failure_logged_s = -FAILURE_LOG_INTERVAL_S
        self.emitted = 0  #: events appended by this process
        self.failed = 0  #: events lost because the queue could not be written
        self.dropped = 0  #: old events the queue's bound dropped to make room for ours

    @classmethod
    def open(
        cls, config: SecurityLogConfig | None, data_dir: str | Path, *, keep_open: bool = True
    ) -> SecurityEvents:
        """The events of this process: disabled when `config` is None or names no collector. Raises
        QueueError when the queue cannot be opened. `keep_open=False` for a process that forks."""
        if config is None or not config.enabled:
            return cls(None)
        opener = functools.partial(open_queue, config, data_dir)
        if keep_open:
            return cls(opener(), summary_interval_s=config.summary_interval_s)
        opener().close()  # fail now, not at the first event, when the queue cannot be opened
        return cls(None, opener=opener, summary_interval_s=config.summary_interval_s)

    @property
    def enabled(self) -> bool:
        return self.queue is not None or self._opener is not None

    def queue_stats(self) -> QueueStats | None:
        """The queue's counters (events waiting, dropped, ...) for metrics; None when disabled. Use this,
        not queue.read_stats, in a process that has the queue open."""
        if self.queue is not None:
            return self.queue.stats()
        if self._opener is not None:
            with self._opener() as queue:
                return queue.stats()
        return None

    # -- the calls -------------------------------------------------------------------------------------------

    def auth_failure(self, identity: str, source: str, reason: str, *, transport: str = "http") -> None:
        """A request was refused for its credentials or rights. `identity`: the user it claimed ("" when
        none); `source`: the client's address (host:port)."""
        self._emit(EventKind.AUTH_FAILURE, {"identity": _text(identity), "source": _text(source),
                                            "reason": _text(reason), "transport": transport})  # fmt: skip

    def write(
        self,
        identity: str,
        source: str,
        operation: str,
        handle: str,
        *,
        outcome: str = "ok",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """A write: `identity` who (enterprise user, "operator", "cli:<user>"), `source` from where,
        `operation` what (create, replace, update, remove-values, delete, prefix-add, ...) on `handle`."""
        self.writes(identity, source, [(operation, handle)], outcome=outcome, detail=detail)

    def writes(
        self,
        identity: str,
        source: str,
        items: Iterable[tuple[str, str]],
        *,
        outcome: str = "ok",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Several writes of one request (a batch): one event per (operation, handle), one queue append."""
        if not self.enabled:
            return
        base: dict[str, Any] = {"identity": _text(identity), "source": _text(source), "outcome": outcome}
        if detail:
            base["detail"] = {str(k): _setting(str(k), v) for k, v in detail.items()}
        self._append([
            (EventKind.WRITE, {**base, "operation": operation, "handle": _text(handle)})
            for operation, handle in items
        ])  # fmt: skip

    def rate_limited(self, source: str, transport: str) -> None:
        """A request from `source` (its address without the port, so one client is one source) was refused
        by a rate limit. The first trip of a window is sent at once; later ones are counted and sent when
        the window ends (`tick`)."""
        if not self.enabled:
            return
        now = self._monotonic()
        with self._lock:
            window = self._rate.get((source, transport))
            if window is not None and now - window.start_s < RATE_EVENT_WINDOW_S:
                window.count += 1
                return
            carried = window.count - window.reported if window is not None else 0
            if len(self._rate) >= MAX_TRACKED_SOURCES:
                self._flush_windows(force=True)
            self._rate[(source, transport)] = _Window(now, 1, 1)
        self._emit_rate_limited((source, transport), 1 + carried)

    def malformed(self, source: str, transport: str) -> None:
        """One malformed packet or request from `source` (address without port). Cheap: counts it, and
        sends a malformed-burst event when the source reaches MALFORMED_BURST_PACKETS in a window."""
        if not self.enabled:
            return
        now = self._monotonic()
        with self._lock:
            key = (source, transport)
            window = self._malformed.get(key)
            if window is None or now - window.start_s >= MALFORMED_WINDOW_S:
                if window is not None and window.count > window.reported and window.reported:
                    self._emit_burst(key, window.count - window.reported)
                if len(self._malformed) >= MAX_TRACKED_SOURCES:
                    self._flush_windows(force=True)
                window = self._malformed[key] = _Window(now)
            window.count += 1
            if window.count < MALFORMED_BURST_PACKETS or window.reported:
                return
            window.reported = window.count
        self.malformed_burst(source, transport, window.count)

    def malformed_burst(
        self, source: str, transport: str, count: int, *, window_s: float = MALFORMED_WINDOW_S
    ):
        """`count` malformed packets from `source` within `window_s` (for callers that count themselves)."""
        self._emit(EventKind.MALFORMED_BURST, {"source": _text(source), "transport": transport,
                                               "count": count, "window_s": window_s})  # fmt: skip

    def config_changed(self, key: str, old: object, new: object, *, by: str = "") -> None:
        """Setting `key` changed from `old` to `new` (`by`: "reload", "cli:<user>", ...). Values of settings
        whose name says secret, password, token or credential are replaced by ***."""
        self._emit(EventKind.CONFIG_CHANGED, {"key": _text(key), "old": _setting(key, old),
                                              "new": _setting(key, new), "by": _text(by)})  # fmt: skip

    def add_resolutions(self, per_prefix: Mapping[str | bytes, int]) -> None:
        """Add resolution counts (e.g. each counter flush's); `tick` sends them as a summary when due."""
        if not self.enabled:
            return
        with self._lock:
            for prefix, n in per_prefix.items():
                name = prefix.decode("utf-8", "replace") if isinstance(prefix, bytes) else prefix
                self._resolutions[name] = self._resolutions.get(name, 0) + n

    def resolution_summary(self, per_prefix: Mapping[str, int], *, start_ns: int | None = None) -> None:
        """Send resolutions per prefix since `start_ns` (default: the last summary) now, split into events of
        at most SUMMARY_PREFIXES_PER_EVENT prefixes each (`part` of `parts`, same `period_start`)."""
        end_ns = self._clock_ns()
        start = self._summary_start_ns if start_ns is None else start_ns
        names = sorted(per_prefix)
        chunks = [
            names[i : i + SUMMARY_PREFIXES_PER_EVENT]
            for i in range(0, len(names), SUMMARY_PREFIXES_PER_EVENT)
        ]
        total = sum(per_prefix.values())
        self._append([
            (EventKind.RESOLUTION_SUMMARY, {
                "period_start": _iso(start), "period_end": _iso(end_ns), "total": total,
                "part": i + 1, "parts": len(chunks),
                "per_prefix": {_text(name): int(per_prefix[name]) for name in chunk},
            })
            for i, chunk in enumerate(chunks or [[]])
        ])  # fmt: skip

    def tick(self) -> None:
        """Send what is due: counts of rate-limit and malformed windows that ended, and the resolution
        summary every `summary_interval_s`. Call every few seconds (e.g. with the counter flush)."""
        if not self.enabled:
            return
        with self._lock:
            self._flush_windows(force=False)
        if self._monotonic() >= self._summary_due_s:
            self._send_summary()

    def close(self) -> None:
        """Send everything pending (window counts, the partial summary) and close the queue."""
        if not self.enabled:
            return
        with self._lock:
            self._flush_windows(force=True)
        if self._resolutions:
            self._send_summary()
        if self.queue is not None:
            self.queue.close()
        self.queue = self._opener = None

    # -- inside ----------------------------------------------------------------------------------------------

    def _send_summary(self) -> None:
        with self._lock:
            counts, self._resolutions = self._resolutions, {}
            start = self._summary_start_ns
            self._summary_start_ns = self._clock_ns()
            self._summary_due_s = self._monotonic() + self.summary_interval_s
        if counts:
            self.resolution_summary(counts, start_ns=start)

    def _flush_windows(self, *, force: bool) -> None:
        """Under the lock: report unreported counts of ended (or, forced, all) windows and forget them."""
        now = self._monotonic()
        for key, window in list(self._rate.items()):
            if force or now - window.start_s >= RATE_EVENT_WINDOW_S:
                del self._rate[key]
                if window.count > window.reported:
                    self._emit_rate_limited(key, window.count - window.reported)
        for key, window in list(self._malformed.items()):
            if force or now - window.start_s >= MALFORMED_WINDOW_S:
                del self._malformed[key]
                if window.reported and window.count > window.reported:
                    self._emit_burst(key, window.count - window.reported)

    def _emit_burst(self, key: tuple[str, str], count: int) -> None:
        self.malformed_burst(key[0], key[1], count)

    def _emit_rate_limited(self, key: tuple[str, str], count: int) -> None:
        source, transport = key
        self._emit(EventKind.RATE_LIMITED, {"source": _text(source), "transport": transport, "count": count,
                                            "window_s": RATE_EVENT_WINDOW_S})  # fmt: skip

    def _emit(self, kind: EventKind, data: dict[str, Any]) -> None:
        self._append([(kind, data)])

    def _append(self, items: list[tuple[EventKind, dict[str, Any]]]) -> None:
        if not items or not self.enabled:
            return
        now = self._clock_ns()
        try:
            records = [encode_event(Event(kind, now, self._pid, data)) for kind, data in items]
            if self.queue is not None:
                self.dropped += self.queue.append(records)
            else:
                assert self._opener is not None
                with self._opener() as queue:
                    self.dropped += queue.append(records)
            self.emitted += len(items)
        except Exception as exc:  # a security event must never fail the request that caused it
            self.failed += len(items)
            if self._monotonic() - self._failure_logged_s >= FAILURE_LOG_INTERVAL_S:
                self._failure_logged_s = self._monotonic()
                log.error("security events not queued (%d lost so far): %s", self.failed, exc,
                          extra={"event": "security_queue_error"})  # fmt: skip


#: A disabled SecurityEvents, shared by code that was given none (tests, tools): every call does nothing.
NO_EVENTS = SecurityEvents(None)
