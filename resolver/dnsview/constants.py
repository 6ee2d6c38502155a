"""Wire constants and limits of the DNS view.

Pure data: imports no asyncio, socket or lmdb. RFC sections are cited beside each value.
"""

from enum import IntEnum, IntFlag


class Rcode(IntEnum):
    """Response codes (RFC 1035 §4.1.1; BADVERS from RFC 6891 §9, carried partly in the OPT record)."""

    NOERROR = 0  #: RFC 1035 §4.1.1 (also NODATA: no answer, SOA in authority, RFC 2308 §2.2)
    FORMERR = 1  #: RFC 1035 §4.1.1
    SERVFAIL = 2  #: RFC 1035 §4.1.1
    NXDOMAIN = 3  #: RFC 1035 §4.1.1 ("name error"), RFC 2308 §2.1
    NOTIMP = 4  #: RFC 1035 §4.1.1
    REFUSED = 5  #: RFC 1035 §4.1.1
    BADVERS = 16  #: RFC 6891 §6.1.3: the upper 8 bits live in the OPT record's extended rcode


class Opcode(IntEnum):
    """Header opcodes (RFC 1035 §4.1.1); only QUERY is served."""

    QUERY = 0  #: RFC 1035 §4.1.1


class RrType(IntEnum):
    """Record types the view answers or treats specially (RFC 1035 §3.2.2-3.2.3 unless noted)."""

    NS = 2  #: RFC 1035 §3.2.2
    SOA = 6  #: RFC 1035 §3.2.2
    TXT = 16  #: RFC 1035 §3.2.2
    OPT = 41  #: RFC 6891 §6.1.1: a pseudo-record, never a question type
    IXFR = 251  #: RFC 1995: zone transfers are not served (use `idnode export-zone`)
    AXFR = 252  #: RFC 5936
    MAILB = 253  #: RFC 1035 §3.2.3: obsolete meta type
    MAILA = 254  #: RFC 1035 §3.2.3: obsolete meta type
    ANY = 255  #: RFC 1035 §3.2.3 ("*")
    URI = 256  #: RFC 7553 §4.5


class RrClass(IntEnum):
    """Classes (RFC 1035 §3.2.4); the zone exists in IN only."""

    IN = 1  #: RFC 1035 §3.2.4
    ANY = 255  #: RFC 1035 §3.2.5 ("*"), answered as IN


class Flag(IntFlag):
    """Bits of the header's second 16-bit word (RFC 1035 §4.1.1, AD/CD from RFC 4035 §3.2)."""

    NONE = 0
    QR = 0x8000  #: RFC 1035 §4.1.1: response
    AA = 0x0400  #: RFC 1035 §4.1.1: authoritative answer
    TC = 0x0200  #: RFC 1035 §4.1.1: truncated
    RD = 0x0100  #: RFC 1035 §4.1.1: recursion desired (copied into the answer)
    RA = 0x0080  #: RFC 1035 §4.1.1: recursion available (never set: the view is authoritative only)
    Z = 0x0040  #: RFC 1035 §4.1.1: reserved, must be zero
    AD = 0x0020  #: RFC 4035 §3.2.3: authentic data (never set: the zone is unsigned)
    CD = 0x0010  #: RFC 4035 §3.2.2: checking disabled (copied into the answer, RFC 6840 §5.9)


OPCODE_SHIFT = 11  #: RFC 1035 §4.1.1: opcode is bits 11-14 of the flags word
OPCODE_MASK = 0x7800  #: RFC 1035 §4.1.1
RCODE_MASK = 0x000F  #: RFC 1035 §4.1.1: low 4 bits; the rest of an extended rcode goes in OPT
#: Flags a common query has clear: QR, opcode, AA, TC, Z and rcode. RD, AD, CD and RA may be set
#: (dig sets AD by default); anything else takes the careful path.
FAST_QUERY_CLEAR_MASK = Flag.QR | OPCODE_MASK | Flag.AA | Flag.TC | Flag.Z | RCODE_MASK
#: Bits of a query copied into its answer (RFC 1035 §4.1.1 RD, RFC 6840 §5.9 CD).
COPIED_FLAGS = Flag.RD | Flag.CD
EDNS_DO = 0x8000  #: RFC 3225 §3: DNSSEC OK bit of the OPT TTL field, copied into the answer

# --- sizes fixed by the wire format -------------------------------------------------------------
HEADER_BYTES = 12  #: RFC 1035 §4.1.1
MAX_LABEL_BYTES = 63  #: RFC 1035 §2.3.4
MAX_NAME_BYTES = 255  #: RFC 1035 §2.3.4, wire form including the root label
MAX_CHARACTER_STRING_BYTES = 255  #: RFC 1035 §3.3: one length byte
POINTER_TO_QUESTION = b"\xc0\x0c"  #: RFC 1035 §4.1.4: the question name starts right after the header

# --- limits --------------------------------------------------------------------------------------
PLAIN_UDP_BYTES = 512  #: RFC 1035 §4.2.1: largest UDP answer to a query without EDNS
#: Advertised in our OPT record and the cap on any UDP answer, whatever the client advertises: the
#: DNS flag day 2020 size, which avoids IP fragmentation (RFC 9715).
EDNS_UDP_BYTES = 1232
MAX_TCP_MESSAGE_BYTES = 65_535  #: RFC 1035 §4.2.2: a message is framed by a two-byte length
MIN_TTL_S = 0  #: a value's ttl below this (negative, or an expired absolute ttl) is served as this
#: Cap on every TTL served: an edited value reaches every resolver within a day, whatever its Handle ttl.
MAX_TTL_S = 86_400
#: A value whose TXT text is longer is left out of the view: it could not share a 64 KiB message with a
#: question and an OPT record. Such values (certificates, large blobs) are for the Handle protocol or HTTP.
MAX_TXT_TEXT_BYTES = 60_000
URI_WEIGHT = 1  #: RFC 7553 §4.3: every URL value gets the same weight; the index orders them (priority)
MAX_URI_PRIORITY = 0xFFFF  #: RFC 7553 §4.2: u16; larger value indexes share the last priority
#: Memory for the DNS view's memos, per worker: half for encoded records per values tail, half for whole
#: answers to replay. Hot identifiers (QR-code scans of the same products) are answered by copying bytes; at
#: about 1 KB per identifier asked for both TXT and URI, 256 MiB keeps the answers of some 250,000 of them.
DNS_MEMO_BYTES = 256 << 20  #: the node sets it from `dns_memo_mb` (resolver.config, same default)
#: What an entry costs beyond its bytes' lengths (object headers, tuples, the dict slot), measured with
#: tracemalloc on generated identifiers (tests/test_dns_memo.py keeps the budget honest).
RENDER_MEMO_ENTRY_BYTES = 320
ANSWER_MEMO_ENTRY_BYTES = 280
MAX_CACHED_TAIL_BYTES = 2048  #: larger tails (rare) are rendered for every answer instead
