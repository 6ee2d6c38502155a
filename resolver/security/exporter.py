"""The exporter: one thread (in the supervisor, or any single process) that drains the security event queue to
the collector, oldest first, and removes an event only after it was sent.

"Sent" means, per transport:
- tcp, tls: the octet-counted frames were written to the socket, flushed to the kernel, and the collector's
  TCP acknowledged every byte while the connection was still established (syslog.StreamSender.send). Before
  each batch the connection is checked for a close by the collector (rsyslog closes its connections when it
  stops), and a batch that cannot be confirmed is sent again on a new connection.
- udp: the datagrams were handed to the kernel; nothing is confirmed.

Delivery is therefore at least once, in queue order (one total order over all processes): after a failure,
or a crash between sending and removing, the same events may be sent again with the same `seq`, which the
collector can use to discard duplicates. What is not covered is a collector that acknowledged at the TCP
level and then lost the messages itself (crash before writing them; plain syslog has no application-level
acknowledgement, RELP would). Events wait in the queue while the collector is away, within the queue's
bound (queue.py: oldest dropped first, counted, and reported to the collector in an `events-dropped` event).

Reconnects back off from `reconnect_initial_s`, doubling to `reconnect_max_s`. Imports no server code.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from pathlib import Path

from resolver.security.config import SecurityLogConfig
from resolver.security.events import Event, EventKind, encode_event, format_event
from resolver.security.queue import SecurityQueue
from resolver.security.syslog import DatagramSender, Sender, StreamSender, header_field, make_ssl_context

log = logging.getLogger(__name__)

BATCH_EVENTS = 256  #: events per send: one TCP write and acknowledgement wait for many events
BATCH_BYTES = 256 << 10  #: bytes per send, about
POLL_INTERVAL_S = 0.2  #: an empty queue is looked at this often (producers in other processes cannot wake us)
DRAIN_TIMEOUT_S = 2.0  #: on stop, how long the exporter keeps sending what is queued


def make_sender(config: SecurityLogConfig) -> Sender:
    host, port = config.address
    if config.transport == "udp":
        return DatagramSender(host, port)
    context = (
        make_ssl_context(config.ca_file, config.cert_file, config.key_file)
        if config.transport == "tls"
        else None
    )
    return StreamSender(
        host, port, ssl_context=context, server_name=config.server_name,
        connect_timeout_s=config.connect_timeout_s, send_timeout_s=config.send_timeout_s,
    )  # fmt: skip


class Exporter:
    """Drains `queue` to the collector of `config`. `start()` runs it in a daemon thread; `run(stop)` runs it
    in the caller's thread until `stop` is set. Open it in the process that runs it (after fork)."""

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
        self.queue = queue or SecurityQueue(
            config.queue_path(data_dir), max_bytes=config.queue_max_bytes, max_events=config.queue_max_events,
            sync=config.fsync_interval_s == 0,
        )  # fmt: skip
        self._sender = sender or make_sender(config)
        self.hostname = header_field(config.hostname or socket.gethostname(), 255)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._synced_at = time.monotonic()
        self._dropped_seen = self.queue.stats().dropped
        self._down_since: float | None = None
        self._drain_s = 0.0
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
        finally:
            self.queue.close()

    def run(self, stop: threading.Event) -> None:
        """Export until `stop` is set; then go on while events are queued and the collector takes them, for
        at most the drain time given to `stop()` (0 when run directly)."""
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
        """Send one batch if the collector may be tried now; True when something was sent (more may wait)."""
        if self._backoff_s and time.monotonic() < self._retry_at:
            return False
        self._report_drops()
        batch = self.queue.peek(BATCH_EVENTS, BATCH_BYTES)
        if not batch:
            return False
        now_ns = time.time_ns()
        messages = [
            format_event(seq, raw, facility=self.config.facility_code, hostname=self.hostname,
                         node_id=self.config.node_id, now_ns=now_ns)
            for seq, raw in batch
        ]  # fmt: skip
        try:
            self._sender.send(messages)
        except (OSError, ssl.SSLError) as exc:  # ssl.SSLError is an OSError; named for the reader
            self._failed(f"{type(exc).__name__}: {exc}")
            return False
        self.queue.remove_through(batch[-1][0])
        self.sent += len(batch)
        if self._down_since is not None:
            log.info("security log collector %s reachable again after %.1f s", self.config.collector,
                     time.monotonic() - self._down_since, extra={"event": "security_export_up"})  # fmt: skip
            self._down_since = None
        self._backoff_s = 0.0
        return True

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

    def _report_drops(self) -> None:
        """Queue an events-dropped event when the bound dropped events since we last looked."""
        dropped = self.queue.stats().dropped
        if dropped > self._dropped_seen:
            data = {"count": dropped - self._dropped_seen, "total": dropped}
            self._dropped_seen = dropped
            self.queue.append(
                [encode_event(Event(EventKind.EVENTS_DROPPED, time.time_ns(), os.getpid(), data))]
            )

    def _maybe_sync(self) -> None:
        interval = self.config.fsync_interval_s
        if interval and time.monotonic() - self._synced_at >= interval:
            self.queue.sync()
            self._synced_at = time.monotonic()
