"""Requests out, answers in, for each protocol the generator speaks: Handle over UDP and TCP, the DNS view over
UDP, and the REST API over HTTP/1.1. Encoding runs before the clock starts; reading an answer runs in the hot
loop, so it looks at fixed offsets (or, for HTTP, the head only) and never decodes a whole message.

Each :class:`Protocol` also names its answer codes and says which answer an existing identifier gets (``found``)
and which a missing one gets (``missing``: HANDLE_NOT_FOUND, NXDOMAIN, HTTP 404). Those two are expected
answers; every other code is an error. Imports no socket and nothing of the server; the DNS name mapping
(resolver.dnsview) is imported only when DNS requests are built.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from resolver.handle.constants import ENVELOPE_BYTES, MAX_MESSAGE_BYTES, OpCode, OpFlag, ResponseCode
from resolver.handle.message import ResolutionRequest, encode_request, encode_resolution_request

REQUEST_LIFETIME_S = 86_400  #: ExpirationTime of the pre-encoded Handle requests (a run is far shorter)
#: The reference client's defaults (resolver.client).
HANDLE_REQUEST_FLAGS = int(OpFlag.REC | OpFlag.CA | OpFlag.PO)
EDNS_PAYLOAD_BYTES = 1232  #: the EDNS buffer size of DNS Flag Day 2020: answers of a few values fit, no TC
MAX_HTTP_HEAD_BYTES = 16_384  #: an answer head longer than this is not the node's: the stream is out of step

#: DNS RCODEs, RFC 1035 § 4.1.1 and RFC 2136 § 2.2 (the four bits a header carries).
DNS_RCODES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
}  # fmt: skip
DNS_QTYPE_CODES = {"TXT": 16, "URI": 256}  #: RFC 1035 § 3.2.2; RFC 7553 § 5
_DNS_TC = 0x0200  # the truncation bit of the flags word (RFC 1035 § 4.1.1)
_DNS_RCODE_MASK = 0x000F
_DNS_HEADER = struct.Struct(">HHHHHH")
_DNS_QUESTION_TAIL = struct.Struct(">HH")  # QTYPE, QCLASS
# Root name, TYPE OPT (41), UDP payload size, TTL (extended RCODE and flags), RDLENGTH.
_DNS_OPT = struct.Struct(">BHHIH")

_U32 = struct.Struct(">I")
_HANDLE_LENGTH_AT = 16  # envelope offset of MessageLength
_HANDLE_CODE_AT = ENVELOPE_BYTES + 4  # after the envelope: OpCode u32, then ResponseCode u32
_HANDLE_ANSWER_MIN_BYTES = ENVELOPE_BYTES + 8


class AnswerError(ValueError):
    """A stream carried something that is not an answer of the protocol: the connection is out of step."""


@dataclass(frozen=True, slots=True)
class Protocol:
    """How one protocol's requests are built and its answers read, and what its answer codes mean.

    Datagram protocols (``datagram``) match answers to requests by an id patched into each request: ``id_struct``
    at ``id_at``, ids below ``id_space``; ``answer`` unpacks (id, continuation, code) from the first
    ``min_answer_bytes`` of an answer, and a non-empty continuation marks a later piece of a chunked Handle answer,
    which carries no code of its own. Stream protocols answer in order, so ``read_answers`` only cuts the codes
    of the whole answers off the front of the bytes received so far; ``pipelined`` says whether a connection may
    carry the next request before the last one is answered.
    """

    name: str
    label: str
    datagram: bool
    found: str  #: the code name of an answer for an existing identifier
    missing: str  #: the code name of an answer for a missing identifier
    code_name: Callable[[int], str]
    encode: Callable[[Sequence[str], dict], list[bytearray]]  #: names, options -> requests (id 0)
    id_struct: struct.Struct | None = None
    id_at: int = 0
    id_space: int = 0
    answer: struct.Struct | None = None
    min_answer_bytes: int = 0
    read_answers: Callable[[bytearray], list[int]] | None = None
    pipelined: bool = False  #: a stream may carry many requests before their answers (Handle TCP; not HTTP)

    def outcome(self, name: str) -> str:
        """The outcome of an answer code name: "found", "missing" or "error"."""
        return "found" if name == self.found else "missing" if name == self.missing else "error"


# --- Handle -------------------------------------------------------------------------------------------------


def handle_code_name(code: int) -> str:
    try:
        return ResponseCode(code).name
    except ValueError:
        return f"CODE_{code}"


def encode_handle_requests(names: Sequence[str], options: dict) -> list[bytearray]:
    """OC_RESOLUTION requests, request id 0 (the datagram loop patches its own in place)."""
    expiration = int(time.time()) + REQUEST_LIFETIME_S
    return [
        bytearray(
            encode_request(
                OpCode.RESOLUTION,
                encode_resolution_request(ResolutionRequest(name.encode())),
                request_id=0,
                expiration=expiration,
                op_flags=HANDLE_REQUEST_FLAGS,
            )
        )
        for name in names
    ]


def read_handle_answers(inbox: bytearray) -> list[int]:
    """The response codes of the whole Handle messages at the front of ``inbox``, which loses them."""
    codes = []
    start, size = 0, len(inbox)
    while size - start >= ENVELOPE_BYTES:
        (length,) = _U32.unpack_from(inbox, start + _HANDLE_LENGTH_AT)
        if length > MAX_MESSAGE_BYTES or length < _HANDLE_ANSWER_MIN_BYTES - ENVELOPE_BYTES:
            raise AnswerError(f"a Handle answer of MessageLength {length}")
        end = start + ENVELOPE_BYTES + length
        if end > size:
            break
        codes.append(_U32.unpack_from(inbox, start + _HANDLE_CODE_AT)[0])
        start = end
    del inbox[:start]
    return codes


# --- DNS ----------------------------------------------------------------------------------------------------


def dns_code_name(flags: int) -> str:
    """The RCODE of a header's flags word; a truncated answer is named apart (``NOERROR/TC``): it is not whole."""
    rcode = flags & _DNS_RCODE_MASK
    name = DNS_RCODES.get(rcode, f"RCODE_{rcode}")
    return f"{name}/TC" if flags & _DNS_TC else name


def encode_dns_query(name: str, qtype: int) -> bytearray:
    """A query for ``name`` (absolute, ASCII) with id 0, no RD (the node is authoritative) and an EDNS OPT record."""
    labels = [label.encode("ascii") for label in name.rstrip(".").split(".")]
    qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    header = _DNS_HEADER.pack(0, 0, 1, 0, 0, 1)
    return bytearray(
        header + qname + _DNS_QUESTION_TAIL.pack(qtype, 1) + _DNS_OPT.pack(0, 41, EDNS_PAYLOAD_BYTES, 0, 0)
    )


def encode_dns_queries(names: Sequence[str], options: dict) -> list[bytearray]:
    """Queries for the identifiers' names in ``options["dns_zone"]``; ``dns_qtype`` TXT, URI or alternate."""
    from resolver.dnsview.names import handle_to_name  # the node's own mapping; imported only for DNS

    zone, qtype = options["dns_zone"], options["dns_qtype"]
    types = (
        [DNS_QTYPE_CODES["TXT"], DNS_QTYPE_CODES["URI"]] if qtype == "alternate" else [DNS_QTYPE_CODES[qtype]]
    )
    return [
        encode_dns_query(handle_to_name(name, zone), types[i % len(types)]) for i, name in enumerate(names)
    ]


# --- HTTP ---------------------------------------------------------------------------------------------------


def http_code_name(status: int) -> str:
    return f"HTTP_{status}"


def encode_http_requests(names: Sequence[str], options: dict) -> list[bytearray]:
    """``GET /api/handles/{handle}`` on a keep-alive HTTP/1.1 connection (the default of 1.1)."""
    host = options["host"]
    authority = f"[{host}]:{options['port']}" if ":" in host else f"{host}:{options['port']}"
    return [
        bytearray(
            f"GET /api/handles/{quote(name, safe='/')} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("ascii")
        )
        for name in names
    ]


def _content_length(head: bytes) -> int:
    lowered = head.lower()
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        if b"\r\ntransfer-encoding:" in lowered:
            raise AnswerError("a chunked HTTP answer: only answers with Content-Length are read")
        return 0  # no body (204, 304) or none announced
    end = lowered.find(b"\r\n", at + 2)
    try:
        return int(lowered[at + 17 : end if end >= 0 else None])
    except ValueError:
        raise AnswerError("an HTTP answer with an unreadable Content-Length") from None


def read_http_answers(inbox: bytearray) -> list[int]:
    """The status codes of the whole HTTP/1.1 answers at the front of ``inbox``, which loses them."""
    codes = []
    start = 0
    while True:
        head_end = inbox.find(b"\r\n\r\n", start)
        if head_end < 0:
            if len(inbox) - start > MAX_HTTP_HEAD_BYTES:
                raise AnswerError("no end of an HTTP answer head")
            break
        if inbox[start : start + 5] != b"HTTP/":
            raise AnswerError("an HTTP answer that does not start with a status line")
        end = head_end + 4 + _content_length(bytes(inbox[start:head_end]))
        if end > len(inbox):
            break
        try:
            codes.append(int(inbox[start + 9 : start + 12]))
        except ValueError:
            raise AnswerError("an HTTP status line without a status code") from None
        start = end
    del inbox[:start]
    return codes


# --- the four -----------------------------------------------------------------------------------------------

_HANDLE_ANSWER = struct.Struct(">8xII8xI")  # RequestId, SequenceNumber, ...; ResponseCode after the OpCode
# The same shape for DNS: id, an always-empty field where Handle has its sequence number, and the flags word
# (whose low four bits are the RCODE), so one loop reads both without a branch.
_DNS_ANSWER = struct.Struct(">H0sH")

PROTOCOLS: dict[str, Protocol] = {
    "udp": Protocol(
        "udp", "Handle UDP", True, "SUCCESS", "HANDLE_NOT_FOUND", handle_code_name, encode_handle_requests,
        id_struct=_U32, id_at=8, id_space=1 << 32, answer=_HANDLE_ANSWER, min_answer_bytes=_HANDLE_ANSWER_MIN_BYTES,
    ),
    "tcp": Protocol(
        "tcp", "Handle TCP", False, "SUCCESS", "HANDLE_NOT_FOUND", handle_code_name, encode_handle_requests,
        read_answers=read_handle_answers, pipelined=True,
    ),
    "dns": Protocol(
        "dns", "DNS UDP", True, "NOERROR", "NXDOMAIN", dns_code_name, encode_dns_queries,
        id_struct=struct.Struct(">H"), id_at=0, id_space=1 << 16, answer=_DNS_ANSWER,
        min_answer_bytes=_DNS_HEADER.size,
    ),
    "http": Protocol(
        "http", "HTTP", False, "HTTP_200", "HTTP_404", http_code_name, encode_http_requests,
        read_answers=read_http_answers,
    ),
}  # fmt: skip
