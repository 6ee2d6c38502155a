"""Syslog on the wire: RFC 5424 messages, RFC 6587 octet-counting frames, and the three senders the exporter
uses: plain TCP (RFC 6587), TLS (RFC 5425, same framing) and UDP (RFC 5426, one message a datagram).

`encode_message`/`decode_message` and `encode_frame`/`FrameDecoder` do no I/O. The senders are blocking
sockets (the exporter runs in a thread of its own); each `send` returns only when its messages count as sent,
which for TCP and TLS means written, flushed to the kernel, and acknowledged by the collector's TCP (see
`StreamSender.send`). Imports no other part of the node.
"""

from __future__ import annotations

import datetime
import fcntl
import re
import select
import socket
import ssl
import struct
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

SYSLOG_VERSION = 1  #: RFC 5424 §6.2.2
NILVALUE = "-"  #: RFC 5424 §6
MAX_HOSTNAME = 255  #: RFC 5424 §6.2.4
MAX_APP_NAME = 48  #: RFC 5424 §6.2.5
MAX_PROCID = 128  #: RFC 5424 §6.2.6
MAX_MSGID = 32  #: RFC 5424 §6.2.7
MAX_MESSAGE_BYTES = 8192  #: RFC 5425 §4.3.1: receivers SHOULD take 8192 octets; rsyslog's default limit is 8k
MAX_FRAME_DIGITS = 9  #: a MSG-LEN beyond 999,999,999 is garbage, not a frame (RFC 6587 §3.4.1)
SETTLE_S = 0.3  #: after connecting, how long to watch for a collector that refuses us (StreamSender._settle)
ACK_POLL_S = 0.002  #: how often `send` looks whether the collector's TCP has acknowledged everything
_TCP_ESTABLISHED = 1  #: tcpi_state of a connection both ends still have open (linux/tcp_states.h)


class Severity(IntEnum):
    """RFC 5424 §6.2.1, table 2."""

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFORMATIONAL = 6
    DEBUG = 7


class SyslogFormatError(ValueError):
    """Not an RFC 5424 message, or not an octet-counted frame."""


@dataclass(frozen=True, slots=True)
class SyslogMessage:
    facility: int
    severity: int
    timestamp_us: int | None  # microseconds since the epoch (RFC 5424 allows six fractional digits), UTC
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: str = NILVALUE  # the SD field as text: "-" or one or more [SD-ID param="value"...]
    msg: bytes = b""

    @property
    def pri(self) -> int:
        return self.facility * 8 + self.severity


_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")


def header_field(text: str, max_len: int) -> str:
    """A header field as RFC 5424 allows it: PRINTUSASCII (other characters become `_`), at most `max_len`
    characters, `-` when empty."""
    text = _NOT_PRINTUSASCII.sub("_", text)[:max_len]
    return text or NILVALUE


def format_timestamp(timestamp_us: int) -> str:
    """RFC 5424 §6.2.3 TIMESTAMP in UTC with microseconds: 2025-07-01T08:00:00.123456Z."""
    seconds, micros = divmod(timestamp_us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


def encode_message(m: SyslogMessage) -> bytes:
    """The RFC 5424 SYSLOG-MSG (§6): header, structured data, and MSG when there is one."""
    if not 0 <= m.facility <= 23 or not 0 <= m.severity <= 7:
        raise SyslogFormatError(f"facility {m.facility} / severity {m.severity} out of range")
    head = " ".join((
        f"<{m.pri}>{SYSLOG_VERSION}",
        NILVALUE if m.timestamp_us is None else format_timestamp(m.timestamp_us),
        header_field(m.hostname, MAX_HOSTNAME),
        header_field(m.app_name, MAX_APP_NAME),
        header_field(m.procid, MAX_PROCID),
        header_field(m.msgid, MAX_MSGID),
        m.structured_data or NILVALUE,
    ))  # fmt: skip
    return head.encode("ascii") + (b" " + m.msg if m.msg else b"")


_HEADER = re.compile(rb"<(\d{1,3})>(\d{1,2}) (\S+) (\S{1,255}) (\S{1,48}) (\S{1,128}) (\S{1,32}) ")


def decode_message(data: bytes) -> SyslogMessage:
    """Parse an RFC 5424 message (the inverse of `encode_message`; used by tests and tools)."""
    match = _HEADER.match(data)
    if match is None:
        raise SyslogFormatError(f"not an RFC 5424 header: {data[:80]!r}")
    pri, version = int(match[1]), int(match[2])
    if pri > 191 or version != SYSLOG_VERSION:
        raise SyslogFormatError(f"PRI {pri} or VERSION {version} out of range")
    rest = data[match.end() :]
    sd, rest = _split_structured_data(rest)
    if rest and not rest.startswith(b" "):
        raise SyslogFormatError("no space between STRUCTURED-DATA and MSG")
    stamp = match[3].decode("ascii")
    return SyslogMessage(
        facility=pri // 8,
        severity=pri % 8,
        timestamp_us=None if stamp == NILVALUE else _parse_timestamp(stamp),
        hostname=match[4].decode("ascii"),
        app_name=match[5].decode("ascii"),
        procid=match[6].decode("ascii"),
        msgid=match[7].decode("ascii"),
        structured_data=sd,
        msg=rest[1:],
    )


def _parse_timestamp(text: str) -> int:
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise SyslogFormatError(f"TIMESTAMP {text!r}: {exc}") from None
    if moment.tzinfo is None:
        raise SyslogFormatError(f"TIMESTAMP {text!r} has no time zone")
    delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _split_structured_data(data: bytes) -> tuple[str, bytes]:
    """(STRUCTURED-DATA, what follows it): `-`, or SD-ELEMENTs whose quoted values may hold \\" \\\\ \\]."""
    if data.startswith(b"-"):
        return NILVALUE, data[1:]
    if not data.startswith(b"["):
        raise SyslogFormatError("STRUCTURED-DATA is neither - nor [")
    i, in_quotes = 0, False
    while i < len(data):
        c = data[i]
        if in_quotes:
            if c == 0x5C:  # backslash: the next octet is escaped
                i += 1
            elif c == 0x22:
                in_quotes = False
        elif c == 0x22:
            in_quotes = True
        elif c == 0x5D and (i + 1 == len(data) or data[i + 1] != 0x5B):  # "]" not followed by "["
            return data[: i + 1].decode("utf-8"), data[i + 1 :]
        i += 1
    raise SyslogFormatError("STRUCTURED-DATA is not closed")


# -- octet counting (RFC 6587 §3.4.1; RFC 5425 §4.3 frames TLS the same way) -----------------------------------


def encode_frame(message: bytes) -> bytes:
    """SYSLOG-FRAME = MSG-LEN SP SYSLOG-MSG."""
    return b"%d %s" % (len(message), message)


class FrameDecoder:
    """Octet-counted frames out of a byte stream, fed in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while True:
            space = self._buffer.find(b" ", 0, MAX_FRAME_DIGITS + 1)
            if space < 0:
                if len(self._buffer) > MAX_FRAME_DIGITS:
                    raise SyslogFormatError(f"no MSG-LEN at {bytes(self._buffer[:16])!r}")
                return out
            digits = bytes(self._buffer[:space])
            if not digits.isdigit() or digits.startswith(b"0"):
                raise SyslogFormatError(f"MSG-LEN {digits!r} is not a positive decimal")
            end = space + 1 + int(digits)
            if len(self._buffer) < end:
                return out
            out.append(bytes(self._buffer[space + 1 : end]))
            del self._buffer[:end]


# -- senders -------------------------------------------------------------------------------------------------


def make_ssl_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """A client context for RFC 5425: TLS 1.2 or later, the collector's certificate verified against `ca_file`
    (or the system's CAs) and its name checked; `cert_file`/`key_file` when the collector wants ours."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


class StreamSender:
    """Octet-counted syslog over TCP, or over TLS when given an SSL context. Connects on first use."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_name: str = "",
        connect_timeout_s: float = 5.0,
        send_timeout_s: float = 10.0,
    ):
        self.host, self.port = host, port
        self._ssl_context = ssl_context
        self._server_name = server_name or host
        self._connect_timeout_s = connect_timeout_s
        self._send_timeout_s = send_timeout_s
        self._sock: socket.socket | None = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        self.close()
        sock = socket.create_connection((self.host, self.port), timeout=self._connect_timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self._server_name)
            sock.settimeout(self._send_timeout_s)
            self._sock = sock
            self._settle()
        except BaseException:
            self._sock = None
            sock.close()
            raise

    def _settle(self) -> None:
        """Give the collector a moment to refuse us before anything is sent: a TLS 1.3 server checks the
        client certificate after the client's handshake is over, and a collector with a sender allow-list
        accepts and then closes. Data sent before that is acknowledged by its TCP and thrown away. A TLS
        1.3 session ticket (sent once the server accepted us) ends the wait early."""
        sock = self._sock
        assert sock is not None
        deadline = time.monotonic() + SETTLE_S
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], remaining)
            if not readable:
                return
            sock.setblocking(False)
            try:
                data = sock.recv(4096)
            except (BlockingIOError, ssl.SSLWantReadError):
                if self._ssl_context is not None:
                    return  # a post-handshake message (session ticket): the server accepted us
                continue
            except OSError as exc:
                raise ConnectionRefusedError(f"the collector refused the connection: {exc}") from exc
            finally:
                sock.settimeout(self._send_timeout_s)
            if not data:
                raise ConnectionRefusedError("the collector closed the connection right after accepting it")

    def send(self, messages: Sequence[bytes]) -> None:
        """Send `messages` in order. Returns once they are written, flushed to the kernel and acknowledged by
        the collector's TCP; raises OSError (and closes the connection) when that cannot be told, so the
        caller sends them again on a new connection: at least once, never silently lost in a socket buffer
        of a connection the collector had closed."""
        if self._sock is None or not self._still_open():
            self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(b"".join(encode_frame(m) for m in messages))
            self._await_acknowledged()
        except BaseException:
            self.close()
            raise

    def _still_open(self) -> bool:
        """Whether the collector has not closed the connection. A collector never sends us data, so a
        readable socket means EOF, a reset, or (TLS 1.3) a session ticket, which reading consumes."""
        sock = self._sock
        assert sock is not None
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return True
            sock.setblocking(False)
            try:
                data = sock.recv(4096)
            finally:
                sock.settimeout(self._send_timeout_s)
        except (BlockingIOError, ssl.SSLWantReadError):
            return True  # nothing for the application: a TLS record handled inside, the connection is fine
        except OSError:
            data = b""
        if data:
            return True  # unexpected, but not a close; the bytes are dropped
        self.close()
        return False

    def _await_acknowledged(self) -> None:
        """Wait until the kernel's send queue of the socket is empty, i.e. the collector's TCP acknowledged
        every byte (Linux: SIOCOUTQ counts unacknowledged bytes), while the connection stays established."""
        sock = self._sock
        assert sock is not None
        deadline = time.monotonic() + self._send_timeout_s
        fd = sock.fileno()
        while True:
            state = _tcp_state(sock)
            if state is not None and state != _TCP_ESTABLISHED:
                raise ConnectionResetError("the collector closed the connection before acknowledging")
            try:
                unacked = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            except OSError:
                return  # not Linux: written and flushed is as far as we can see
            if unacked == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the collector acknowledged nothing for {self._send_timeout_s} s")
            time.sleep(ACK_POLL_S)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None


def _tcp_state(sock: socket.socket) -> int | None:
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    except (OSError, AttributeError):
        return None


class DatagramSender:
    """Syslog over UDP, one message a datagram (RFC 5426). `send` returns when the datagrams are handed to
    the kernel; nothing tells whether they arrived. A collector port that answers ICMP unreachable raises
    ConnectionRefusedError at the next send (the socket is connected), which the exporter treats as down."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._sock: socket.socket | None = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        self.close()
        family, kind, proto, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def send(self, messages: Sequence[bytes]) -> None:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        try:
            for message in messages:
                self._sock.send(message)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


Sender = StreamSender | DatagramSender
