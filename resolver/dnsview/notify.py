"""NOTIFY (RFC 1996) of the DNS view: the message that tells a secondary the zone changed, and the check of its
answer. Sans-IO: imports no asyncio, socket or lmdb (resolver/server/dns.py sends them over UDP).

The message carries the zone's SOA with the new serial in its answer section (RFC 1996 §3.7), so a secondary
that is already at that serial need not even ask for the SOA.
"""

from __future__ import annotations

import struct

from .apex import Soa, soa_rdata
from .constants import HEADER_BYTES, OPCODE_MASK, OPCODE_SHIFT, RCODE_MASK, Flag, Rcode, RrClass, RrType
from .names import NameMap

NOTIFY_OPCODE = 4  #: RFC 1996 §3.1: the opcode of NOTIFY
_HEADER = struct.Struct(">HHHHHH")
_QUESTION_TAIL = struct.Struct(">HH")
_RR_HEAD = struct.Struct(">HHIH")  # type, class, ttl, rdlength


def notify_message(qid: int, names: NameMap, soa: Soa) -> bytes:
    """A NOTIFY for the zone of `names` announcing `soa` (its serial): AA set, question <zone> SOA IN (RFC 1996
    §3.7), the SOA in the answer section, its owner a pointer to the question name."""
    zone = b"".join(bytes((len(label),)) + label for label in names.zone_labels) + b"\x00"
    flags = (NOTIFY_OPCODE << OPCODE_SHIFT) | Flag.AA
    rdata = soa_rdata(soa)
    return b"".join((
        _HEADER.pack(qid, flags, 1, 1, 0, 0),
        zone,
        _QUESTION_TAIL.pack(RrType.SOA, RrClass.IN),
        b"\xc0\x0c" + _RR_HEAD.pack(RrType.SOA, RrClass.IN, soa.ttl_s, len(rdata)) + rdata,
    ))  # fmt: skip


def notify_acknowledged(message: bytes, qid: int) -> bool:
    """Whether `message` answers our NOTIFY `qid`: a response with the NOTIFY opcode and NOERROR (RFC 1996
    §4.7). Any other rcode (NOTAUTH, REFUSED: the secondary does not take NOTIFY from us) is no acknowledgment."""
    if len(message) < HEADER_BYTES:
        return False
    rid, flags = struct.unpack_from(">HH", message)
    return (
        rid == qid
        and bool(flags & Flag.QR)
        and (flags & OPCODE_MASK) >> OPCODE_SHIFT == NOTIFY_OPCODE
        and flags & RCODE_MASK == Rcode.NOERROR
    )


def notify_rcode(message: bytes) -> int | None:
    """The rcode of an answer (for the log), or None when it is too short to have one."""
    return struct.unpack_from(">H", message, 2)[0] & RCODE_MASK if len(message) >= HEADER_BYTES else None
