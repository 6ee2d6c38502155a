"""The exporter: drains the security event queue to the collector, oldest first, and removes an event only
after it was sent. One exporter per queue (an exclusive lock file in the queue directory sees to it).

Where it runs: `idnode seclog export` runs it in a process of its own until SIGTERM; the supervisor starts
that command with `spawn_exporter(config, data_dir)` (fork + exec, so the supervisor never opens the queue,
which py-lmdb would then refuse to open again in the workers it forks). A process that does not fork
afterwards may instead run `Exporter(...).start()`, a thread, sharing its SecurityEvents' queue.

"Sent" means, per transport:
- relp, relp-tls: the collector answered `200 OK` to the event's RELP `syslog` command, and to every one
  before it (relp_sender.RelpSender). Up to a window of events (relp.DEFAULT_WINDOW) is sent ahead of the
  answers; each stays in the queue until its answer came, and when a session breaks (collector gone,
  stopped past `send_timeout_s`, killed, restarted) every unanswered event is sent again on the next one.
  An event is lost only if the collector loses what it acknowledged.
- tcp, tls: the octet-counted frames were written to the socket, flushed to the kernel, and the collector's
  TCP acknowledged every byte while the connection was still established (syslog.StreamSender.send). Before
  each batch the connection is checked for a close by the collector (rsyslog closes its connections when it
  stops), and a batch that cannot be confirmed is sent again on a new connection. The collector's TCP
  acknowledges what sits in its socket buffer unread, so a collector that stops reading and then dies loses
  what was sent meanwhile: at least once only while the collector reads.
- udp: the datagrams were handed to the kernel; nothing is confirmed.

Delivery is therefore at least once, in queue order (one total order over all processes): after a failure,
or a crash between sending and removing, the same events may be sent again with the same `seq`, which the
collector can use to discard duplicates. Events wait in the queue while the collector is away, within the
queue's bound (queue.py: oldest dropped first, counted, and reported to the collector in an `events-dropped`
event).

Reconnects back off from `reconnect_initial_s`, doubling to `reconnect_max_s`. Imports no server code.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from resolver.security.config import TLS_TRANSPORTS, SecurityLogConfig
from resolver.security.events import Event, EventKind, encode_event, format_event, open_queue
from resolver.security.relp import RelpError
from resolver.security.relp_sender import RelpSender
from resolver.security.syslog import DatagramSender, StreamSender, header_field, make_ssl_context
from storage.eventqueue import QueueError, SecurityQueue

log = logging.getLogger(__name__)

BATCH_EVENTS = 256  #: events per send: one TCP write and acknowledgement wait for many events
BATCH_BYTES = 256 << 10  #: bytes per send, about
POLL_INTERVAL_S = 0.2  #: an empty queue is looked at this often (producers in other processes cannot wake us)
DRAIN_TIMEOUT_S = 2.0  #: on stop, how long the exporter keeps sending what is queued
LOCK_NAME = "exporter.lock"  #: in the queue directory; held (flock) by the one exporter of the queue


def _take_lock(directory: Path) -> int:
    """Hold the queue's exporter lock (an flock, released when the process dies); ExporterError if taken."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ExporterError(f"security event queue {directory}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ExporterError(f"another exporter (pid {holder}) drains the queue in {directory}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    return fd


Sender = StreamSender | DatagramSender | RelpSender


def make_sender(config: SecurityLogConfig) -> Sender:
    host, port = config.address
    if config.transport == "udp":
        return DatagramSender(host, port)
    context = (
        make_ssl_context(config.ca_file, config.cert_file, config.key_file)
        if config.transport in TLS_TRANSPORTS
        else None
    )
    kind = RelpSender if config.transport.startswith("relp") else StreamSender
    return kind(
        host, port, ssl_context=context, server_name=config.server_name,
        connect_timeout_s=config.connect_timeout_s, send_timeout_s=config.send_timeout_s,
    )  # fmt: skip


class ExporterError(Exception):
    """The exporter cannot run as asked (another one drains the queue, or the queue cannot be opened)."""


class Exporter:
    """Drains the queue of `config` to its collector. `start()` runs it in a daemon thread; `run(stop)` runs
    it in the caller's thread until `stop` is set. Pass `queue` to share one already open in this process
    (a SecurityEvents'); the exporter then leaves it open when it stops."""

    def __init__(
        self,
        config: SecurityLogConfig,
        data_dir: str | Path,
        *,
        queue: SecurityQueue | None = None,
        sender: Sender | None = None,
    ):
        if not config.enabled:
            raise ValueError("security_log.collector: not set, nothing to export to")
        self.config = config
        self._lock_fd = _take_lock(config.queue_path(data_dir))
        self._owns_queue = queue is None
        try:
            self.queue = queue or open_queue(config, data_dir)
            self._sender = sender or make_sender(config)
        except BaseException as exc:
            os.close(self._lock_fd)
            if isinstance(exc, QueueError | OSError):  # a queue we cannot open, TLS files we cannot read
                raise ExporterError(str(exc)) from exc
            raise
        self.hostname = header_field(config.hostname or socket.gethostname(), 255)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._synced_at = time.monotonic()
        self._down_since: float | None = None
        self._drain_s = 0.0
        self._sent_through = 0  # relp: the newest event sent in this session
        self.sent = 0  #: events sent since start
        self.failures = 0  #: failed connection or send attempts since start
        self.last_error = ""  #: the latest failure, for status and metrics

    # -- running ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run, args=(self._stop,), name="security-exporter", daemon=True
        )
        self._thread.start()

    def stop(self, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Stop the thread and close the queue; first keep sending for up to `drain_timeout_s` while the
        collector takes events. What is left stays queued for the next start."""
        if self._thread is None:
            self.close()
            return
        self._drain_s = drain_timeout_s
        self._stop.set()
        self._thread.join(drain_timeout_s + self.config.send_timeout_s + self.config.connect_timeout_s)
        if self._thread.is_alive():  # stuck in a socket call past its timeouts: leave the queue to exit
            log.error("security exporter did not stop in time; queued events stay for the next start")
            return
        self._thread = None
        self.close()

    def close(self) -> None:
        self._sender.close()
        try:
            self.queue.sync()
            if self._owns_queue:
                self.queue.close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1

    def run(self, stop: threading.Event, drain_timeout_s: float | None = None) -> None:
        """Export until `stop` is set; then go on while events are queued and the collector takes them, for
        at most `drain_timeout_s` (default: the time given to `stop()`)."""
        if drain_timeout_s is not None:
            self._drain_s = drain_timeout_s
        log.info("security log upload to %s over %s", self.config.collector, self.config.transport,
                 extra={"event": "security_export_start"})  # fmt: skip
        drain_until: float | None = None
        while True:
            if stop.is_set():
                if drain_until is None:
                    drain_until = time.monotonic() + self._drain_s
                if time.monotonic() >= drain_until or self._backoff_s:
                    break
            try:
                busy = self.export_once()
            except Exception:  # never let the thread die: log, back off, go on
                log.exception("security exporter: unexpected error")
                self._failed("unexpected error")
                busy = False
            self._maybe_sync()
            if busy:
                continue
            if stop.is_set():
                break  # draining, and the queue is empty or the collector is away
            stop.wait(
                max(POLL_INTERVAL_S, self._retry_at - time.monotonic())
                if self._backoff_s
                else POLL_INTERVAL_S
            )
        self._sender.close()

    def export_once(self) -> bool:
        """Send one batch if the collector may be tried now; True when something was sent or acknowledged, or
        (relp) answers are awaited: more may follow at once."""
        if self._backoff_s and time.monotonic() < self._retry_at:
            return False
        if isinstance(self._sender, RelpSender):
            return self._export_windowed(self._sender)
        batch = self.queue.peek(BATCH_EVENTS, BATCH_BYTES)
        if not batch:
            return False
        try:
            self._sender.send(self._format(batch))
        except (OSError, ssl.SSLError) as exc:  # ssl.SSLError is an OSError; named for the reader
            self._failed(f"{type(exc).__name__}: {exc}")
            return False
        self._delivered(len(batch), batch[-1][0])
        return True

    def _export_windowed(self, sender: RelpSender) -> bool:
        """RELP: keep up to the sender's window of events sent ahead of the collector's answers; remove an
        event from the queue only once it and every event before it were answered 200. A new session starts
        from the oldest queued event, so whatever the last one left unanswered is sent again."""
        try:
            sender.check()
            if not sender.connected:
                self._sent_through = 0
                sender.connect()
            batch = []
            if sender.room:
                batch = self.queue.peek(min(sender.room, BATCH_EVENTS), BATCH_BYTES, after=self._sent_through)
                if batch:
                    sender.send(list(zip([seq for seq, _ in batch], self._format(batch), strict=True)))
                    self._sent_through = batch[-1][0]
            if not sender.unacknowledged:
                return False
            # Wait for answers only when nothing more can be sent now; the wait ends at the first answer.
            acknowledged = sender.acknowledged(0.0 if batch and sender.room else POLL_INTERVAL_S)
        except (OSError, RelpError) as exc:  # RelpError: the collector refused us, or does not speak RELP
            self._failed(f"{type(exc).__name__}: {exc}")
            return False
        if acknowledged:
            last = acknowledged[-1]
            assert isinstance(last, int)  # the tags are the sequence numbers given to send
            self._delivered(len(acknowledged), last)
        return True

    def _format(self, batch: list[tuple[int, bytes]]) -> list[bytes]:
        now_ns = time.time_ns()
        return [
            format_event(seq, raw, facility=self.config.facility_code, hostname=self.hostname,
                         node_id=self.config.node_id, now_ns=now_ns)
            for seq, raw in batch
        ]  # fmt: skip

    def _delivered(self, count: int, last_seq: int) -> None:
        """`count` events, the oldest queued through `last_seq`, reached the collector: out of the queue."""
        self.queue.remove_through(last_seq)
        self.sent += count
        self.queue.append_drop_report(_drop_report)  # only now: a report queued while away could itself drop
        if self._down_since is not None:
            log.info("security log collector %s reachable again after %.1f s", self.config.collector,
                     time.monotonic() - self._down_since, extra={"event": "security_export_up"})  # fmt: skip
            self._down_since = None
        self._backoff_s = 0.0

    # -- inside ----------------------------------------------------------------------------------------------

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        self._sender.close()
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("security log collector %s unreachable (%s); events wait in the queue",
                        self.config.collector, reason, extra={"event": "security_export_down"})  # fmt: skip
        self._backoff_s = min(self.config.reconnect_max_s,
                              self._backoff_s * 2 if self._backoff_s else self.config.reconnect_initial_s)  # fmt: skip
        self._retry_at = time.monotonic() + self._backoff_s

    def _maybe_sync(self) -> None:
        interval = self.config.fsync_interval_s
        if interval and time.monotonic() - self._synced_at >= interval:
            self.queue.sync()
            self._synced_at = time.monotonic()


def _drop_report(count: int, total: int) -> bytes:
    return encode_event(
        Event(EventKind.EVENTS_DROPPED, time.time_ns(), os.getpid(), {"count": count, "total": total})
    )


def exporter_command(config: SecurityLogConfig, data_dir: str | Path) -> list[str]:
    """The command line of `idnode seclog export` for `config` (every setting as a flag)."""
    return [
        sys.executable,
        "-m",
        "resolver.cli",
        "seclog",
        "export",
        "--data",
        str(data_dir),
        *config.to_args(),
    ]


def spawn_exporter(config: SecurityLogConfig, data_dir: str | Path, **popen_kwargs: Any) -> subprocess.Popen:
    """Start the exporter as a process of its own (fork + exec: nothing of the caller is inherited but the
    environment and stdout/stderr). Stop it with SIGTERM (it drains for DRAIN_TIMEOUT_S, then exits 0);
    if `poll()` finds it gone, start it again (events wait in the queue meanwhile)."""
    popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(exporter_command(config, data_dir), close_fds=True, **popen_kwargs)
