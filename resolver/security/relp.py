"""RELP, the Reliable Event Logging Protocol of rsyslog (https://www.rsyslog.com/doc/relp.html), client side,
without I/O: frames to bytes and back, and `ClientSession`, which numbers the commands, keeps those the
collector has not answered yet, and turns its answers into events. The socket side is relp_sender.py.

    RELP-FRAME = TXNR SP COMMAND SP DATALEN [SP DATA] LF      (DATA only when DATALEN > 0)
    rsp DATA   = CODE SP [TEXT] [LF DATA]                      (CODE three digits: 200 ok, 500 error)

A session starts with `open` (offers: relp_version, relp_software, commands=syslog), sends one `syslog`
command per message, and ends with `close`. The collector answers every command with `rsp` carrying the
same TXNR, and may announce that it is going away with `serverclose` (TXNR 0, not answered). A message
counts as delivered only when its `rsp 200` arrived; that is what RELP adds over plain TCP syslog.

Every read is bounded (digits, command length, data length), and anything that is not a RELP frame, or an
answer to no command, raises `RelpError`, the one exception of this layer. Imports only the standard library.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from enum import IntEnum

MAX_TXNR = 999_999_999  #: TXNR is 1*9DIGIT; after it librelp goes on at 1 (relp.h relpEngineNextTXNR)
MAX_DATALEN = 999_999_999  #: DATALEN is 1*9DIGIT too
MAX_COMMAND_CHARS = 32  #: COMMAND = 1*32ALPHA
MAX_RESPONSE_DATA_BYTES = 64 << 10  #: librelp builds a response (status line + offers) in 4 KiB; far beyond
#: that a peer is not speaking RELP, and we stop reading rather than buffer it
MAX_RSP_TEXT_CHARS = 80  #: the human-readable text of a response (librelp scrsp.c reads at most 80)
RELP_VERSION = 0  #: the protocol version librelp speaks and offers (RELP_CURR_PROTOCOL_VERSION)
DEFAULT_WINDOW = 128  #: commands sent and not yet answered, at most: a stopped collector holds this many
#: of ours in its buffers, and a batch of this size keeps a loopback or LAN link busy between answers
HINT_TXNR = 0  #: TXNR of server hints (serverclose), which are never answered


class RspCode(IntEnum):
    """Status of a `rsp` (relp.html, "rsp" command)."""

    OK = 200  #: the command was carried out; for `syslog`, the collector took the message
    ERROR = 500  #: it was not


class RelpError(Exception):
    """Not RELP: a malformed frame or response, an answer to no command, or a collector that refused us."""


class RelpRefused(RelpError):
    """The collector answered a command with an error (`rsp` other than 200)."""

    def __init__(self, command: str, code: int, text: str):
        super().__init__(f"the collector refused {command}: {code} {text}".rstrip())
        self.command, self.code, self.text = command, code, text


@dataclass(frozen=True, slots=True)
class Frame:
    txnr: int
    command: str
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Response:
    code: int
    text: str
    data: bytes = b""  # after the status line: the offers, in an answer to `open`


def encode_frame(frame: Frame) -> bytes:
    """The RELP-FRAME of `frame`; RelpError when a field is out of range."""
    if not 0 <= frame.txnr <= MAX_TXNR:
        raise RelpError(f"TXNR {frame.txnr} out of range")
    if not (
        0 < len(frame.command) <= MAX_COMMAND_CHARS and frame.command.isascii() and frame.command.isalpha()
    ):
        raise RelpError(f"command {frame.command!r} is not 1 to 32 letters")
    if len(frame.data) > MAX_DATALEN:
        raise RelpError(f"{len(frame.data)} bytes of data do not fit DATALEN")
    head = b"%d %s %d" % (frame.txnr, frame.command.encode("ascii"), len(frame.data))
    return head + (b" " + frame.data if frame.data else b"") + b"\n"


_HEADER = re.compile(rb"(\d{1,9}) ([A-Za-z]{1,32}) (\d{1,9})([ \n])")
_HEADER_PREFIX = re.compile(rb"\d{0,9}(?: [A-Za-z]{0,32}(?: \d{0,9})?)?")  # a header not complete yet


class FrameReader:
    """RELP frames out of a byte stream fed in pieces of any size. `next_frame()` returns the next complete
    frame, None when more bytes are needed, and raises RelpError at the first byte that cannot be RELP (the
    frames before it were returned). Data longer than `max_data_bytes` is refused before it is buffered."""

    def __init__(self, max_data_bytes: int = MAX_RESPONSE_DATA_BYTES):
        self.max_data_bytes = max_data_bytes
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> Frame | None:
        buffer = self._buffer
        match = _HEADER.match(buffer)
        if match is None:
            if _HEADER_PREFIX.fullmatch(buffer):
                return None
            raise RelpError(f"not a RELP frame header: {bytes(buffer[:64])!r}")
        txnr, command, datalen = int(match[1]), match[2].decode("ascii"), int(match[3])
        if match[4] == b"\n":
            if datalen:
                raise RelpError(f"DATALEN {datalen} but no data (txnr {txnr} {command})")
            del buffer[: match.end()]
            return Frame(txnr, command)
        if datalen == 0:
            raise RelpError(f"DATALEN 0 followed by a space, not LF (txnr {txnr} {command})")
        if datalen > self.max_data_bytes:
            raise RelpError(f"DATALEN {datalen} beyond {self.max_data_bytes} (txnr {txnr} {command})")
        end = match.end() + datalen
        if len(buffer) <= end:
            return None
        if buffer[end] != 0x0A:
            raise RelpError(f"no LF after {datalen} bytes of data (txnr {txnr} {command})")
        frame = Frame(txnr, command, bytes(buffer[match.end() : end]))
        del buffer[: end + 1]
        return frame

    @property
    def buffered(self) -> int:
        return len(self._buffer)


def encode_response(response: Response) -> bytes:
    """The data of a `rsp` frame (for tests and test collectors)."""
    return b"%03d %s" % (response.code, response.text.encode("ascii")) + (
        b"\n" + response.data if response.data else b""
    )


def decode_response(data: bytes) -> Response:
    """The data of a `rsp` frame: three-digit code, SP, text up to LF (at most 80 characters), then data."""
    if len(data) < 4 or not data[:3].isdigit() or data[3:4] != b" ":
        raise RelpError(f"not a RELP response: {data[:64]!r}")
    text, _, rest = data[4:].partition(b"\n")
    if len(text) > MAX_RSP_TEXT_CHARS:
        raise RelpError(f"response text longer than {MAX_RSP_TEXT_CHARS} characters: {text[:64]!r}")
    return Response(int(data[:3]), text.decode("utf-8", "replace"), rest)


def encode_offers(offers: dict[str, list[str]]) -> bytes:
    """name=value,value LF ... (no LF after the last), as librelp writes them."""
    return b"\n".join(
        name.encode("ascii") + b"=" + b",".join(v.encode("ascii") for v in values)
        for name, values in offers.items()
    )


def decode_offers(data: bytes) -> dict[str, list[str]]:
    """Inverse of `encode_offers`; blank lines are skipped, a line without `=` is an offer without values."""
    out: dict[str, list[str]] = {}
    for line in data.split(b"\n"):
        if not line:
            continue
        name, _, values = line.partition(b"=")
        out[name.decode("ascii", "replace")] = [v.decode("ascii", "replace") for v in values.split(b",") if v]
    return out


# -- the client session --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """The collector accepted the session (its answer to `open`)."""

    offers: dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """`syslog` commands the collector took, oldest first: their tags. Emitted when the oldest commands sent
    are all answered 200, so everything sent before these is acknowledged too."""

    tags: tuple[Hashable, ...]


@dataclass(frozen=True, slots=True)
class ServerClosing:
    """The collector announced that it ends the session (`serverclose`); what it did not answer is not
    acknowledged and must be sent again on a new session."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The collector answered our `close`: the session is over."""


RelpEvent = Opened | Acknowledged | ServerClosing | Closed


class _State(IntEnum):
    NEW = 0
    OPENING = 1
    OPEN = 2
    CLOSING = 3
    CLOSED = 4


@dataclass(slots=True)
class _Pending:
    command: str
    tag: Hashable
    answered: bool = False


class ClientSession:
    """One RELP session, client side, no I/O: `open()`, `syslog()`, `close()` return the bytes to write;
    `receive_data()` takes what the collector sent, `next_event()` returns what it means. At most `window`
    commands are unanswered at a time (`room` says how many more may be sent)."""

    def __init__(self, window: int = DEFAULT_WINDOW, *, software: str = "idnode"):
        if window < 1:
            raise ValueError("window: at least 1")
        self.window = window
        self.software = software
        self._state = _State.NEW
        self._txnr = 0  # the last one used
        self._pending: OrderedDict[int, _Pending] = OrderedDict()  # txnr -> command, in the order sent
        self._reader = FrameReader()

    @property
    def is_open(self) -> bool:
        return self._state == _State.OPEN

    @property
    def unacknowledged(self) -> int:
        """`syslog` commands sent and not acknowledged (answered ones behind an unanswered one count)."""
        return sum(1 for p in self._pending.values() if p.command == "syslog")

    @property
    def room(self) -> int:
        """How many `syslog` commands may be sent now."""
        return self.window - len(self._pending) if self._state == _State.OPEN else 0

    def open(self) -> bytes:
        if self._state != _State.NEW:
            raise RelpError("open: the session was opened already")
        self._state = _State.OPENING
        offers = {
            "relp_version": [str(RELP_VERSION)],
            "relp_software": [self.software],
            "commands": ["syslog"],
        }
        return self._command("open", encode_offers(offers), None)

    def syslog(self, message: bytes, tag: Hashable) -> bytes:
        """The `syslog` command for `message`; `tag` comes back in the Acknowledged event that covers it."""
        if self._state != _State.OPEN:
            raise RelpError("syslog: the session is not open")
        if not self.room:
            raise RelpError(f"syslog: {self.window} commands unanswered already")
        if not message:
            raise RelpError("syslog: an empty message")
        return self._command("syslog", message, tag)

    def close(self) -> bytes:
        if self._state != _State.OPEN:
            raise RelpError("close: the session is not open")
        self._state = _State.CLOSING
        return self._command("close", b"", None)

    def _command(self, command: str, data: bytes, tag: Hashable) -> bytes:
        self._txnr = self._txnr + 1 if self._txnr < MAX_TXNR else 1
        out = encode_frame(Frame(self._txnr, command, data))
        self._pending[self._txnr] = _Pending(command, tag)
        return out

    def receive_data(self, data: bytes) -> None:
        self._reader.receive_data(data)

    def next_event(self) -> RelpEvent | None:
        """The next thing the collector said, None when more bytes are needed. Raises RelpError for what is
        not RELP, RelpRefused for an error answer."""
        while (frame := self._reader.next_frame()) is not None:
            event = self._handle(frame)
            if event is not None:
                return event
        return None

    def _handle(self, frame: Frame) -> RelpEvent | None:
        if frame.txnr == HINT_TXNR:
            if frame.command == "serverclose":
                self._state = _State.CLOSED
                return ServerClosing()
            raise RelpError(f"unknown hint {frame.command!r} from the collector")
        if frame.command != "rsp":
            raise RelpError(f"the collector sent the command {frame.command!r} (txnr {frame.txnr})")
        pending = self._pending.get(frame.txnr)
        if pending is None or pending.answered:
            raise RelpError(f"an answer to txnr {frame.txnr}, which is not waiting for one")
        if pending.command == "close":  # librelp answers close with no data at all
            self._pending.clear()
            self._state = _State.CLOSED
            return Closed()
        response = decode_response(frame.data)
        if response.code != RspCode.OK:
            self._state = _State.CLOSED
            raise RelpRefused(pending.command, response.code, response.text)
        pending.answered = True
        if pending.command == "open":
            del self._pending[frame.txnr]
            offers = decode_offers(response.data)
            if "syslog" not in offers.get("commands", []):
                self._state = _State.CLOSED
                raise RelpRefused("open", response.code, "the collector does not offer the syslog command")
            self._state = _State.OPEN
            return Opened(offers)
        tags = []
        while self._pending:
            txnr, oldest = next(iter(self._pending.items()))
            if not oldest.answered:
                break
            del self._pending[txnr]
            tags.append(oldest.tag)
        return Acknowledged(tuple(tags)) if tags else None
