"""Syslog over RELP: `RelpSender`, one RELP session on a blocking socket, plain TCP or TLS (librelp's
`tls="on"`: TLS from the first byte, then RELP inside it). The protocol itself is relp.py; this module only
moves its bytes.

Unlike the senders of syslog.py, `send` does not wait: it writes up to `room` syslog commands, each tagged
by the caller (the exporter tags them with their queue sequence number), and `acknowledged` returns the
tags the collector answered `200 OK`, oldest first, each covering every command before it. What was sent
and is not acknowledged when the session breaks (collector gone, stopped, restarted, `serverclose`) is the
caller's to send again on a new session. Imports no other part of the node but relp.py.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Hashable, Sequence

from resolver.security.relp import (
    DEFAULT_WINDOW,
    Acknowledged,
    ClientSession,
    Closed,
    RelpError,
    RelpEvent,
    ServerClosing,
)

RECV_BYTES = 65536  #: per read: a window of answers is 128 × ~15 bytes
CLOSE_ANSWER_S = 1.0  #: on a clean close, how long to wait for the collector's answer to `close`


class RelpSender:
    """Syslog messages over RELP to `host`:`port`, over TLS when given an SSL context. Call `connect()`
    first (again after any error); then `send` and `acknowledged`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_name: str = "",
        connect_timeout_s: float = 5.0,
        send_timeout_s: float = 10.0,
        window: int = DEFAULT_WINDOW,
    ):
        self.host, self.port = host, port
        self._ssl_context = ssl_context
        self._server_name = server_name or host
        self._connect_timeout_s = connect_timeout_s
        self._send_timeout_s = send_timeout_s
        self.window = window
        self._sock: socket.socket | None = None
        self._session = ClientSession(window)
        self._error: Exception | None = None  # seen after acknowledgements that were returned first
        self._waiting_since = 0.0  # when the collector last acknowledged, or was first waited for

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def room(self) -> int:
        """How many messages `send` may take now (a pending error is raised by that `send`)."""
        return self._session.room if self._sock is not None else 0

    @property
    def unacknowledged(self) -> int:
        return self._session.unacknowledged if self._sock is not None else 0

    def connect(self) -> None:
        """A new session: connect (TLS handshake), `open`, and wait for the collector's answer. Raises
        OSError or RelpError (RelpRefused when the collector answered with an error)."""
        self.close()
        sock = socket.create_connection((self.host, self.port), timeout=self._connect_timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self._server_name)
            session = ClientSession(self.window)
            sock.sendall(session.open())
            self._sock, self._session = sock, session
            deadline = time.monotonic() + self._connect_timeout_s
            while not session.is_open:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"the collector did not answer RELP open within {self._connect_timeout_s} s"
                    )
                events, error = self._receive(remaining)
                if any(isinstance(e, ServerClosing) for e in events):
                    raise ConnectionRefusedError(
                        "the collector ended the RELP session right after opening it"
                    )
                if error is not None:
                    raise error
            sock.settimeout(self._send_timeout_s)
        except BaseException:
            self._sock = None
            sock.close()
            raise

    def check(self) -> None:
        """Raise (and close the session) the error that ended it after acknowledgements were returned: a
        session that ended with nothing unanswered is otherwise noticed only at the next send."""
        if self._error is not None:
            self._ready()

    def send(self, messages: Sequence[tuple[Hashable, bytes]]) -> None:
        """Write a `syslog` command for each (tag, message), at most `room` of them. Returns once written to
        the kernel; raises OSError (and closes the session) when that fails within `send_timeout_s`."""
        sock = self._ready()
        if len(messages) > self._session.room:
            raise ValueError(f"{len(messages)} messages, room for {self._session.room}")
        if not messages:
            return
        if self._session.unacknowledged == 0:
            self._waiting_since = time.monotonic()
        data = b"".join(self._session.syslog(message, tag) for tag, message in messages)
        try:
            sock.sendall(data)
        except BaseException:
            self.close()
            raise

    def acknowledged(self, wait_s: float) -> list[Hashable]:
        """The tags of the messages the collector acknowledged since the last call, oldest first; waits up to
        `wait_s` for the first. Raises OSError (TimeoutError when nothing was acknowledged for
        `send_timeout_s` while messages wait) or RelpError, and closes the session; an error that follows
        acknowledgements is raised at the next call, after they were returned."""
        self._ready()
        tags: list[Hashable] = []
        deadline = time.monotonic() + wait_s
        while True:
            events, error = self._receive(max(0.0, deadline - time.monotonic()))
            for event in events:
                if isinstance(event, Acknowledged):
                    tags.extend(event.tags)
                    self._waiting_since = time.monotonic()
                elif isinstance(event, ServerClosing):
                    error = error or ConnectionResetError(
                        "the collector ended the RELP session (serverclose)"
                    )
                else:
                    error = error or RelpError(f"unexpected {type(event).__name__} in an open session")
            if error is not None:
                if tags:
                    self._error = error
                    return tags
                self.close()
                raise error
            if tags or time.monotonic() >= deadline:
                break
        waited = time.monotonic() - self._waiting_since
        if not tags and self._session.unacknowledged and waited > self._send_timeout_s:
            self.close()
            raise TimeoutError(f"the collector acknowledged nothing for {self._send_timeout_s} s")
        return tags

    def close(self) -> None:
        """End the session: with `close` and its answer when the session is open and idle (a collector logs
        an unannounced disconnect as an error), abruptly otherwise."""
        sock, self._sock = self._sock, None
        error, self._error = self._error, None
        if sock is None:
            return
        try:
            if error is None and self._session.is_open and not self._session.unacknowledged:
                sock.settimeout(CLOSE_ANSWER_S)
                sock.sendall(self._session.close())
                self._sock = sock
                deadline = time.monotonic() + CLOSE_ANSWER_S
                while (remaining := deadline - time.monotonic()) > 0:
                    events, failed = self._receive(remaining)
                    if failed is not None or any(isinstance(e, Closed) for e in events):
                        break
        except (OSError, RelpError):
            pass  # going away anyway
        finally:
            self._sock = None
            try:
                sock.close()
            except OSError:
                pass

    # -- inside ----------------------------------------------------------------------------------------------

    def _ready(self) -> socket.socket:
        if self._error is not None:
            error = self._error
            self.close()
            raise error
        if self._sock is None:
            raise ConnectionError("no RELP session: connect() first")
        return self._sock

    def _receive(self, timeout_s: float) -> tuple[list[RelpEvent], Exception | None]:
        """What the collector sent within `timeout_s` (returns at the first read), and the error that ended
        the read, if any: the events before a malformed frame are returned with it."""
        sock = self._sock
        assert sock is not None
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
        if not pending:
            readable, _, _ = select.select([sock], [], [], timeout_s)
            if not readable:
                return [], None
        sock.setblocking(False)
        try:
            data = sock.recv(RECV_BYTES)
        except (BlockingIOError, ssl.SSLWantReadError):
            return [], None  # a TLS record not complete yet, or one handled inside (session ticket)
        except OSError as exc:
            return [], exc
        finally:
            sock.settimeout(self._send_timeout_s)
        if not data:
            return [], ConnectionResetError("the collector closed the connection")
        self._session.receive_data(data)
        events: list[RelpEvent] = []
        try:
            while (event := self._session.next_event()) is not None:
                events.append(event)
        except RelpError as exc:
            return events, exc
        return events, None
