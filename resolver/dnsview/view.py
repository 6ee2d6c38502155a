"""Answers for the DNS view of the identifier zone: DNS query bytes in, answer bytes out (or None: drop).

The common query (TXT or URI, one question, class IN, plain flags, at most an OPT record) is parsed and
answered by hand (:meth:`DnsView.answer_fast`); everything else goes through dnslib
(:meth:`DnsView.answer_general`), which also gives every error its careful answer. Both share the
resolution itself (:meth:`DnsView.resolve`), so they answer alike; the tests compare them.

Sans-IO: imports no asyncio, socket or lmdb. The transport adds TCP's two-byte length framing.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import dnslib

from .apex import Soa, default_ns, soa_rdata
from .constants import (
    ANSWER_MEMO_ENTRY_BYTES,
    COPIED_FLAGS,
    DNS_MEMO_BYTES,
    EDNS_DO,
    EDNS_UDP_BYTES,
    FAST_QUERY_CLEAR_MASK,
    HEADER_BYTES,
    MAX_CACHED_TAIL_BYTES,
    MAX_CHARACTER_STRING_BYTES,
    MAX_LABEL_BYTES,
    MAX_NAME_BYTES,
    MAX_TCP_MESSAGE_BYTES,
    MAX_TTL_S,
    MAX_TXT_TEXT_BYTES,
    MAX_URI_PRIORITY,
    MIN_TTL_S,
    OPCODE_MASK,
    OPCODE_SHIFT,
    PLAIN_UDP_BYTES,
    POINTER_TO_QUESTION,
    RCODE_MASK,
    RENDER_MEMO_ENTRY_BYTES,
    URI_WEIGHT,
    Flag,
    Opcode,
    Rcode,
    RrClass,
    RrType,
)
from .errors import (
    BadEdnsVersion,
    DnsViewError,
    MalformedQuery,
    NotImplementedQuery,
    NotInZone,
    RefusedQuery,
)
from .memo import ByteBudgetMemo
from .names import (
    _NAME_PLAIN,
    _UPPER,
    FULL_CHUNK_MIN_BYTES,
    SEPARATOR,
    NameKind,
    NameMap,
    _is_utf8,
    text_labels,
)
from .records import (
    _MIN_VALUE_BYTES,
    _U32,
    _VALUE_HEAD,
    BASE64_TAG,
    PUBLIC_READ,
    TTL_ABSOLUTE,
    URL_TYPE,
    IdentifierRecords,
    render_records,
    split_strings,
    txt_field,
    txt_rdata,
    txt_text,
    uri_rdata,
)

log = logging.getLogger(__name__)

#: The store: the values tail of a handle key, or None when the identifier does not exist.
Lookup = Callable[[bytes], "bytes | None"]
#: The digest index: the handle key whose digest name this is (names.digest_entry), or None.
DigestLookup = Callable[[bytes], "bytes | None"]
#: Told the (normalized) prefix of every identifier whose data an answer carries.
OnResolution = Callable[[bytes], None]

_HEADER = struct.Struct(">HHHHHH")
_FLAGS = struct.Struct(">HH")
_QUESTION_TAIL = struct.Struct(">HH")  # qtype, qclass
_RR_HEAD = struct.Struct(">HHIH")  # type, class, ttl, rdlength
_OPT_FIXED = struct.Struct(">HHBBHH")  # after the root owner: type, size, ext rcode, version, flags, rdlen
_OPT_BYTES = 1 + _OPT_FIXED.size
_OPTION_HEAD = struct.Struct(">HH")  # option code, length
_TTL_RDLENGTH = struct.Struct(">IH")
_POINTER = struct.Struct(">H")
_POINTER_BITS = 0xC000  # RFC 1035 §4.1.4
_RCODE_EXT_SHIFT = 4  # RFC 6891 §6.1.3: the OPT record holds the upper 8 of the 12 rcode bits
# Answer records owned by the question name: pointer, type and class fixed, then TTL and rdlength.
_TXT_OWNER = POINTER_TO_QUESTION + _FLAGS.pack(RrType.TXT, RrClass.IN)
_URI_OWNER = POINTER_TO_QUESTION + _FLAGS.pack(RrType.URI, RrClass.IN)

# Plain ints for the hot path: arithmetic on IntFlag members costs a microsecond a query.
_FAST_QTYPES = frozenset((int(RrType.TXT), int(RrType.URI)))
_TXT = int(RrType.TXT)
_OPT = int(RrType.OPT)
_IN = int(RrClass.IN)
_QR = int(Flag.QR)
_AA = int(Flag.AA)
_TC = int(Flag.TC)
_COPIED = int(COPIED_FLAGS)
_FAST_CLEAR = int(FAST_QUERY_CLEAR_MASK)
_REFUSED = int(Rcode.REFUSED)
_NOERROR = int(Rcode.NOERROR)

_ANCOUNT_IN_HEAD = 4  # in the header without its id: flags, qdcount, then ancount
#: Negative answers (NXDOMAIN, NODATA) get 1/NEGATIVE_SHARE of the answers' memo: they carry the SOA, so every
#: change of its serial (every write) empties their memo, while answers with data stay.
NEGATIVE_SHARE = 4

#: A values tail's (TXT, URI) answer records in wire form, each with its record count.
_Rendered = tuple[tuple[bytes, int], tuple[bytes, int]]
#: An answer to replay: handle key, the values tail it was built from (None: the identifier did not exist),
#: the header without its id, where the question ends, and what follows the question.
_Answer = tuple[bytes, "bytes | None", bytes, int, bytes]


def _rendered_size(tail: bytes, rendered: _Rendered) -> int:
    return len(tail) + len(rendered[0][0]) + len(rendered[1][0]) + RENDER_MEMO_ENTRY_BYTES


def _answer_size(query_key: bytes, answer: _Answer) -> int:
    return len(query_key) + len(answer[0]) + len(answer[4]) + ANSWER_MEMO_ENTRY_BYTES


_NOT_SERVED_QTYPES = {RrType.AXFR: RefusedQuery, RrType.IXFR: RefusedQuery}
_UNIMPLEMENTED_QTYPES = (RrType.MAILA, RrType.MAILB)


class Resolution(NamedTuple):
    """The outcome of one question, before it is encoded."""

    rcode: int
    authoritative: bool
    #: (type, ttl, items): TXT items are string tuples, URI items (priority, weight, target), SOA a
    #: :class:`Soa`, NS a name.
    rrsets: list[tuple[int, int, Sequence[Any]]]
    negative: bool  #: no answer: the SOA goes in the authority section (RFC 2308)
    key: bytes | None  #: the handle key whose data the answer carries, for counting


class DnsView:
    """The DNS face of the identifier store for one zone.

    ``lookup(handle_key)`` gives the values tail or None. ``digest_lookup(digest)`` gives the key of an
    identifier that only has a digest name (without it, digest names are NXDOMAIN). ``on_resolution(prefix)``
    is called for every answer that carries an identifier's data (not for truncated UDP answers: the client
    asks again over TCP).
    """

    def __init__(
        self,
        zone: str,
        lookup: Lookup,
        case_sensitive: bool = False,
        soa: Soa | None = None,
        ns: Sequence[str] | None = None,
        *,
        digest_lookup: DigestLookup | None = None,
        on_resolution: OnResolution | None = None,
        max_udp_bytes: int = EDNS_UDP_BYTES,
        clock: Callable[[], float] = time.time,
        memo_bytes: int = DNS_MEMO_BYTES,
    ) -> None:
        self.names = NameMap(zone, case_sensitive)
        self.zone = self.names.zone
        self.soa = (soa or Soa()).for_zone(self.zone)
        self.ns = tuple(ns) if ns else default_ns(self.soa)
        self._lookup = lookup
        self._digest_lookup = digest_lookup
        self._on_resolution = on_resolution
        if not PLAIN_UDP_BYTES <= max_udp_bytes <= MAX_TCP_MESSAGE_BYTES:
            raise ValueError(
                f"max_udp_bytes {max_udp_bytes} outside {PLAIN_UDP_BYTES}..{MAX_TCP_MESSAGE_BYTES}"
            )
        self.max_udp_bytes = max_udp_bytes
        self._clock = clock
        # Half the budget for the records of each values tail, half for whole answers (see _replay); of that
        # half, a quarter for negative answers, which carry the SOA and so are forgotten when its serial moves.
        answer_bytes = memo_bytes // 2
        self._rendered: ByteBudgetMemo[bytes, _Rendered] = ByteBudgetMemo(memo_bytes // 2, _rendered_size)
        self._answers: ByteBudgetMemo[bytes, _Answer] = ByteBudgetMemo(
            answer_bytes - answer_bytes // NEGATIVE_SHARE, _answer_size
        )
        self._negative: ByteBudgetMemo[bytes, _Answer] = ByteBudgetMemo(
            answer_bytes // NEGATIVE_SHARE, _answer_size
        )
        self._answer_heads: dict[bytes, bytes] = {}  # one copy of each distinct flags-and-counts header
        self._zone_list = list(self.names.zone_labels)
        self._zone_count = len(self._zone_list)
        self._set_soa(self.soa)
        # Our OPT record (RFC 6891 §6.1.2): root owner, our UDP size, rcode 0, version 0, DO copied.
        opt_head = b"\x00" + _FLAGS.pack(RrType.OPT, self.max_udp_bytes)
        self._opt = (opt_head + _TTL_RDLENGTH.pack(0, 0), opt_head + _TTL_RDLENGTH.pack(EDNS_DO, 0))

    def _set_soa(self, soa: Soa) -> None:
        self.soa = soa
        self._soa_rdata = soa_rdata(soa)
        self._soa_tail = (
            _RR_HEAD.pack(RrType.SOA, _IN, soa.negative_ttl_s, len(self._soa_rdata)) + self._soa_rdata
        )

    def set_serial(self, serial: int) -> None:
        """Answer with this SOA serial from now on (the server keeps it at the store's write-log position).
        Negative answers remembered with the old serial are forgotten; answers with data carry no SOA."""
        if serial != self.soa.serial:
            self._set_soa(replace(self.soa, serial=serial))
            self._negative.clear()

    # --- the entry point -------------------------------------------------------------------------
    def answer(self, query: bytes, transport: str = "udp") -> bytes | None:
        """The answer to one DNS message (without TCP framing), or None when it must be dropped."""
        tcp = _is_tcp(transport)
        replayed = self._replay(query)
        if replayed is not None:
            return replayed
        try:
            reply = self._fast(query, tcp)
        except Exception:  # the fast path never decides an error: the careful path answers it
            log.debug("fast path failed; answering on the careful path", exc_info=True)
            reply = None
        if reply is None:
            return self._general(query, tcp)
        return reply

    def answer_fast(self, query: bytes, transport: str = "udp") -> bytes | None:
        """The hand-built answer to a common query, or None when the query needs the careful path."""
        return self._fast(query, _is_tcp(transport))

    def answer_general(self, query: bytes, transport: str = "udp") -> bytes | None:
        """The dnslib-built answer to any query, or None when it must be dropped."""
        return self._general(query, _is_tcp(transport))

    # --- resolution, shared by both paths --------------------------------------------------------
    def locate(self, below: list[bytes]) -> tuple[int, bytes | None, bytes | None]:
        """(rcode, key, values tail) for a name below the apex, given its lower-cased labels left of the zone.

        The tail is None when the name has no data: the rcode then says NXDOMAIN, or NOERROR (NODATA) for a
        prefix node or a name that names of identifiers may lie below (RFC 8020).
        """
        key = _plain_key(below)
        if key is not None:  # the common name, decoded without the general rules (names.classify)
            kind, payload, interior = NameKind.IDENTIFIER, key, len(below[0]) >= FULL_CHUNK_MIN_BYTES
        else:
            kind, payload, interior = self.names.classify(below)
        if kind is NameKind.IDENTIFIER:
            key: bytes | None = payload
        elif kind is NameKind.DIGEST:
            key = self._key_of_digest(payload, below)
        elif kind is NameKind.NODE:
            return Rcode.NOERROR, None, None
        else:
            key = None
        if key is None:
            return Rcode.NXDOMAIN, None, None
        tail = self._lookup(key)
        if tail is None:
            return (Rcode.NOERROR if interior else Rcode.NXDOMAIN), key, None
        return Rcode.NOERROR, key, tail

    def resolve(self, below: list[bytes], qtype: int) -> Resolution:
        """The outcome of a question for a name in the zone, given its lower-cased labels left of the zone."""
        if not below:
            return self._resolve_apex(qtype)
        rcode, key, tail = self.locate(below)
        if tail is None:
            return Resolution(rcode, True, [], True, None)
        records = self.records(tail)
        rrsets: list[tuple[int, int, Sequence[Any]]] = []
        if (qtype == RrType.TXT or qtype == RrType.ANY) and records.txt:
            rrsets.append((RrType.TXT, records.txt_ttl_s, records.txt))
        if (qtype == RrType.URI or qtype == RrType.ANY) and records.uri:
            rrsets.append((RrType.URI, records.uri_ttl_s, records.uri))
        return Resolution(Rcode.NOERROR, True, rrsets, not rrsets, key if rrsets else None)

    def records(self, tail: bytes) -> IdentifierRecords:
        """The records of a values tail (raises CorruptValues, answered as SERVFAIL)."""
        return render_records(tail, self._clock())

    def _resolve_apex(self, qtype: int) -> Resolution:
        rrsets: list[tuple[int, int, Sequence[Any]]] = []
        if qtype == RrType.SOA or qtype == RrType.ANY:
            rrsets.append((RrType.SOA, self.soa.ttl_s, (self.soa,)))
        if qtype == RrType.NS or qtype == RrType.ANY:
            rrsets.append((RrType.NS, self.soa.ttl_s, self.ns))
        return Resolution(Rcode.NOERROR, True, rrsets, not rrsets, None)

    def _key_of_digest(self, digest: bytes, below: list[bytes]) -> bytes | None:
        if self._digest_lookup is None:
            return None
        key = self._digest_lookup(digest)
        # The index says which identifier hashes so; only its own name (under its own prefix) names it.
        if key is None or self.names.labels_of_key(key) != below + self._zone_list:
            return None
        return key

    def _count(self, key: bytes | None) -> None:
        if self._on_resolution is not None and key is not None:
            self._on_resolution(key[: key.find(b"/")])

    def _resolve_guarded(self, below: list[bytes], qtype: int) -> Resolution:
        try:
            return self.resolve(below, qtype)
        except DnsViewError as exc:
            log.debug("cannot resolve: %s", exc)
            return Resolution(exc.rcode, False, [], False, None)
        except Exception:  # a store failure must not take the server down with it
            log.debug("lookup failed", exc_info=True)
            return Resolution(Rcode.SERVFAIL, False, [], False, None)

    def _encoded(self, tail: bytes) -> tuple[tuple[bytes, int], tuple[bytes, int]]:
        """(TXT, URI) answer records of a values tail in wire form, owned by the question name (0xC00C),
        each with its record count; memoized per tail, so a hot identifier is answered by copying bytes."""
        hit = self._rendered.get(tail)
        if hit is not None:
            return hit
        encoded = encode_common(tail)
        if encoded is None:  # an absolute expiry, or a tail to check value by value: the general rendering
            records = self.records(tail)
            txt = []
            for strings in records.txt:
                rdata = bytes((len(strings[0]),)) + strings[0] if len(strings) == 1 else txt_rdata(strings)
                txt.append(_TXT_OWNER + _TTL_RDLENGTH.pack(records.txt_ttl_s, len(rdata)) + rdata)
            uri = []
            for item in records.uri:
                rdata = uri_rdata(*item)
                uri.append(_URI_OWNER + _TTL_RDLENGTH.pack(records.uri_ttl_s, len(rdata)) + rdata)
            encoded = ((b"".join(txt), len(txt)), (b"".join(uri), len(uri)))
            if records.clock_dependent:
                return encoded  # its TTLs follow the clock: never memoized
        if len(tail) <= MAX_CACHED_TAIL_BYTES:
            self._rendered.put(tail, encoded)
        return encoded

    # --- the fast path ---------------------------------------------------------------------------
    def _fast(self, query: bytes, tcp: bool) -> bytes | None:
        n = len(query)
        if n < HEADER_BYTES + 5:
            return None
        qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(query)
        if flags & _FAST_CLEAR or qdcount != 1 or ancount or nscount or arcount > 1:
            return None
        pos = HEADER_BYTES
        labels = []
        length = query[pos]
        while length:
            if length > MAX_LABEL_BYTES:
                return None  # a pointer or an unassigned label type: the careful path
            end = pos + 1 + length
            labels.append(query[pos + 1 : end])
            pos = end
            if pos >= n:
                return None
            length = query[pos]
        pos += 1  # the root label
        if pos - HEADER_BYTES > MAX_NAME_BYTES or pos + 4 > n:
            return None
        qtype, qclass = _QUESTION_TAIL.unpack_from(query, pos)
        if qclass != _IN or qtype not in _FAST_QTYPES:
            return None
        question_end = pos + 4
        opt = b""
        udp_limit = PLAIN_UDP_BYTES
        if arcount:
            if n < question_end + _OPT_BYTES or query[question_end] != 0:
                return None
            rtype, payload, ext_rcode, version, edns_flags, rdlen = _OPT_FIXED.unpack_from(
                query, question_end + 1
            )
            opt_end = question_end + _OPT_BYTES
            if rtype != _OPT or version or ext_rcode or opt_end + rdlen != n:
                return None
            while opt_end < n:  # options are ignored (RFC 6891 §6.1.2), but must be well formed
                if opt_end + 4 > n:
                    return None
                opt_end += 4 + _OPTION_HEAD.unpack_from(query, opt_end)[1]
            if opt_end != n:
                return None
            opt = self._opt[1 if edns_flags & EDNS_DO else 0]
            udp_limit = min(max(payload, PLAIN_UDP_BYTES), self.max_udp_bytes)
        elif question_end != n:
            return None
        if not b"".join(labels).isascii():
            return None  # dnslib's rule for such names (FORMERR unless UTF-8) lives on the careful path

        k = self._zone_count
        lowered = [label.lower() for label in labels]
        rflags = _QR | (flags & _COPIED)
        key = None
        count = 0
        authority = b""
        if len(lowered) < k or (k and lowered[-k:] != self._zone_list):
            rflags |= _REFUSED
            records = b""
        else:
            below = lowered[: len(lowered) - k]
            rcode, key, tail = self.locate(below) if below else (_NOERROR, None, None)
            records = b""
            if tail is not None:
                records, count = self._encoded(tail)[0 if qtype == _TXT else 1]
            if not count:
                zone_at = HEADER_BYTES + sum(len(label) + 1 for label in labels[: len(labels) - k])
                authority = _POINTER.pack(_POINTER_BITS | zone_at) + self._soa_tail
            rflags |= _AA | rcode
        question = query[HEADER_BYTES:question_end]
        reply = b"".join(
            (
                _HEADER.pack(qid, rflags, 1, count, 1 if authority else 0, 1 if opt else 0),
                question,
                records,
                authority,
                opt,
            )
        )
        if len(reply) > (MAX_TCP_MESSAGE_BYTES if tcp else udp_limit):
            if tcp:
                return None  # over 64 KiB: the careful path trims it
            return _HEADER.pack(qid, rflags | _TC, 1, 0, 0, 1 if opt else 0) + question + opt
        if count:
            self._count(key)
        if key is not None and len(reply) <= udp_limit:
            self._remember(query, reply, question_end, key, tail)
        return reply

    # --- whole answers, replayed -----------------------------------------------------------------
    def _remember(self, query: bytes, reply: bytes, question_end: int, key: bytes, tail: bytes | None) -> None:
        """Keep the answer to this exact query (all but its id) for :meth:`_replay`.

        Only answers that fit the query's UDP size are kept, so a replay is right over UDP and TCP alike, and
        only answers that depend on nothing but the identifier's values tail (not on the clock): a tail's
        records not in the memo of rendered records (their TTLs follow the clock, or not kept) are not kept here.
        """
        body = reply[question_end:]
        if tail is not None:
            rendered = self._rendered.get(tail)
            if rendered is None:
                return
            for records, _n in rendered:  # share the rendered records' bytes when the answer is just them
                if records == body:
                    body = records
        head = reply[2:HEADER_BYTES]
        head = self._answer_heads.setdefault(head, head)
        negative = not (head[_ANCOUNT_IN_HEAD] or head[_ANCOUNT_IN_HEAD + 1])  # no answer: the SOA in authority
        (self._negative if negative else self._answers).put(query[2:], (key, tail, head, question_end, body))

    def _replay(self, query: bytes) -> bytes | None:
        """The answer given before to a query of exactly these bytes (but the id), if the identifier's values
        are still the ones it was built from; None otherwise.

        A DNS client asks for a popular identifier again and again with the same bytes; replaying skips
        reading the name and rendering the records, half of what an answer costs, while the store lookup that
        checks the values keeps every write visible to the next answer, as without the memo.
        """
        entry = self._answers.get(query[2:])
        if entry is None:
            entry = self._negative.get(query[2:])
            if entry is None:
                return None
        key, tail, head, question_end, body = entry
        try:
            if self._lookup(key) != tail:
                return None  # written or deleted since (or its prefix no longer hosted): answered afresh
        except Exception:
            return None  # the careful path answers a store failure
        if head[_ANCOUNT_IN_HEAD] or head[_ANCOUNT_IN_HEAD + 1]:  # the answer carries the identifier's data
            self._count(key)
        return b"".join((query[:2], head, query[HEADER_BYTES:question_end], body))

    # --- the careful path ------------------------------------------------------------------------
    def _general(self, query: bytes, tcp: bool) -> bytes | None:
        if len(query) < HEADER_BYTES:
            return None  # not even an id to answer to
        qid, flags = _FLAGS.unpack_from(query)
        if flags & _QR:
            return None  # never answer an answer: two servers could bounce errors forever
        base_flags = _QR | (flags & (OPCODE_MASK | _COPIED))
        try:
            return self._general_answer(query, qid, flags, base_flags, tcp)
        except Exception:  # a bug or a dnslib surprise: the client still gets an answer, the server goes on
            log.debug("no answer could be built; answering SERVFAIL", exc_info=True)
            return _pack_error(qid, base_flags, Rcode.SERVFAIL)

    def _general_answer(self, query: bytes, qid: int, flags: int, base_flags: int, tcp: bool) -> bytes:
        try:
            record = _parse(query)
        except Exception as exc:  # dnslib raises DNSError, and others (RecursionError) on hostile input
            log.debug("unparsable query: %s", exc)
            return _pack_error(qid, base_flags, Rcode.FORMERR)
        question = record.questions[0] if len(record.questions) == 1 else None
        query_opcode = (flags & OPCODE_MASK) >> OPCODE_SHIFT
        # The sections of other opcodes (UPDATE's zone section...) mean other things: echo only a QUERY's.
        name_ok = question is not None and _valid_name(question.qname.label)
        echo = question if name_ok and query_opcode == Opcode.QUERY else None
        opts = [rr for rr in record.ar if rr.rtype == RrType.OPT]
        opt = opts[0] if len(opts) == 1 and not opts[0].rname.label else None
        try:
            if len(opts) > 1 or (opts and opt is None):
                raise MalformedQuery(
                    "more than one OPT record, or one not owned by the root (RFC 6891 §6.1.1)"
                )
            if query_opcode != Opcode.QUERY:
                raise NotImplementedQuery("only QUERY is implemented")
            if question is None:
                raise MalformedQuery("a query has exactly one question")
            if not name_ok:
                raise MalformedQuery("a label over 63 bytes or a name over 255 bytes")
            if opt is not None and opt.edns_ver != 0:
                raise BadEdnsVersion("only EDNS version 0 is implemented")
            return self._general_question(record, question, opt, base_flags, tcp)
        except DnsViewError as exc:
            log.debug("query answered %s: %s", exc.rcode.name, exc)
            reply = dnslib.DNSRecord(dnslib.DNSHeader(id=qid, bitmap=base_flags | (exc.rcode & RCODE_MASK)))
            if echo is not None:
                reply.add_question(echo)
            if opt is not None:
                reply.add_ar(self._dnslib_opt(opt, exc.rcode))
            return bytes(reply.pack())

    def _general_question(
        self, record: dnslib.DNSRecord, question: dnslib.DNSQuestion, opt: Any, base_flags: int, tcp: bool
    ) -> bytes:
        labels = list(question.qname.label)
        if question.qclass not in (RrClass.IN, RrClass.ANY):
            raise RefusedQuery("the zone exists in class IN only")
        qtype = question.qtype
        if qtype == RrType.OPT:
            raise MalformedQuery("OPT is not a question type")
        if qtype in _NOT_SERVED_QTYPES:
            raise _NOT_SERVED_QTYPES[qtype]("zone transfers are not served")
        if qtype in _UNIMPLEMENTED_QTYPES:
            raise NotImplementedQuery("MAILA and MAILB are not implemented")
        below = self.names.below_zone([label.lower() for label in labels])
        if below is None:
            raise NotInZone()
        resolution = self._resolve_guarded(below, qtype)

        rflags = base_flags | resolution.rcode
        if resolution.authoritative:
            rflags |= Flag.AA
        reply = dnslib.DNSRecord(dnslib.DNSHeader(id=record.header.id, bitmap=rflags), q=question)
        qname = question.qname
        for rtype, ttl, items in resolution.rrsets:
            for item in items:
                reply.add_answer(dnslib.RR(qname, rtype, _IN, ttl, self._dnslib_rdata(rtype, item)))
        if resolution.negative:
            zone_name = dnslib.DNSLabel(labels[len(labels) - len(self._zone_list) :])
            reply.add_auth(
                dnslib.RR(
                    zone_name,
                    RrType.SOA,
                    _IN,
                    self.soa.negative_ttl_s,
                    self._dnslib_rdata(RrType.SOA, self.soa),
                )
            )
        if opt is not None:
            reply.add_ar(self._dnslib_opt(opt, Rcode.NOERROR))
        packed = bytes(reply.pack())
        if tcp:
            while len(packed) > MAX_TCP_MESSAGE_BYTES and reply.rr:
                reply.rr.pop()
                reply.header.tc = 1
                packed = bytes(reply.pack())
        else:
            limit = PLAIN_UDP_BYTES
            if opt is not None:
                limit = min(max(opt.edns_len, PLAIN_UDP_BYTES), self.max_udp_bytes)
            if len(packed) > limit:
                reply.rr = []
                reply.auth = []
                reply.header.tc = 1
                return bytes(reply.pack())
        if not reply.header.tc:
            self._count(resolution.key)
        return packed

    def _dnslib_rdata(self, rtype: int, item: Any) -> dnslib.RD:
        if rtype == RrType.TXT:
            return dnslib.TXT(list(item))
        if rtype == RrType.URI:
            return dnslib.RD(uri_rdata(*item))  # dnslib has no URI class: the generic RD carries the rdata
        if rtype == RrType.SOA:
            return dnslib.SOA(
                _dnslib_name(item.mname),
                _dnslib_name(item.rname),
                (item.serial, item.refresh_s, item.retry_s, item.expire_s, item.minimum_s),
            )
        return dnslib.NS(_dnslib_name(item))

    def _dnslib_opt(self, query_opt: Any, rcode: int) -> dnslib.RR:
        return dnslib.EDNS0(
            ext_rcode=rcode >> _RCODE_EXT_SHIFT,
            udp_len=self.max_udp_bytes,
            flags="do" if query_opt.ttl & EDNS_DO else "",
        )


# --- the common case, without the general machinery ------------------------------------------------------
#: Fields made only of these show as themselves in TXT text (a subset of what records.txt_field keeps).
_PLAIN_TYPE = bytes(range(0x21, 0x7F))
_PLAIN_DATA = bytes(range(0x20, 0x7F))
_RDLENGTH = struct.Struct(">H")
_ONE_STRING = MAX_CHARACTER_STRING_BYTES  # a text this long or shorter is one character-string


def _plain_key(below: list[bytes]) -> bytes | None:
    """The handle key of ``<suffix>._.<prefix labels>`` when every label is plain (letters, digits, ``-``):
    what :meth:`NameMap.classify` gives for such a name, without its general rules. None for anything else.

    Plain labels are canonical on either kind of node (a letter stands for its upper-case key byte), so no
    check beyond "plain" is needed; a test compares this with ``classify`` on random names.
    """
    if len(below) < 3 or below[1] != SEPARATOR:
        return None
    suffix = below[0]
    labels = below[2:]
    if not suffix or (suffix + b"".join(labels)).translate(None, _NAME_PLAIN) or not all(labels):
        return None
    return b".".join(labels[::-1]).translate(_UPPER) + b"/" + suffix.translate(_UPPER)


def encode_common(tail: bytes) -> tuple[tuple[bytes, int], tuple[bytes, int]] | None:
    """(TXT, URI) answer records of a values tail, as :meth:`DnsView._encoded` builds them from
    :func:`render_records`, in one pass and without intermediate objects: the miss path of the memo.

    Covers tails whose values have relative TTLs; returns None for anything else (an absolute expiry, a length
    that does not add up), which the general rendering then answers or refuses. A test compares the two on
    random tails.
    """
    end = len(tail)
    if end < _U32.size:
        return None
    (count,) = _U32.unpack_from(tail, 0)
    if count * _MIN_VALUE_BYTES > end - _U32.size:
        return None
    pos = _U32.size
    txt: list[bytes] = []
    uri: list[bytes] = []
    txt_ttl = uri_ttl = MAX_TTL_S
    head = _VALUE_HEAD.unpack_from
    u32 = _U32.unpack_from
    for _ in range(count):
        if pos + _MIN_VALUE_BYTES > end:
            return None
        index, _timestamp, ttl_type, ttl, permissions, n = head(tail, pos)
        pos += _VALUE_HEAD.size
        vtype = tail[pos : pos + n]
        pos += n
        if pos + 4 > end:
            return None
        (n,) = u32(tail, pos)
        pos += 4
        data = tail[pos : pos + n]
        pos += n
        if pos + 4 > end:
            return None
        (refs,) = u32(tail, pos)
        pos += 4
        for _ in range(refs):
            if pos + 4 > end:
                return None
            pos += 8 + u32(tail, pos)[0]
        if pos > end or ttl_type == TTL_ABSOLUTE:
            return None
        if not permissions & PUBLIC_READ:
            continue
        ttl_s = MIN_TTL_S if ttl < MIN_TTL_S else MAX_TTL_S if ttl > MAX_TTL_S else ttl
        if vtype.translate(None, _PLAIN_TYPE) or vtype.startswith(BASE64_TAG):
            text = txt_text(index, vtype, data)
        elif data.translate(None, _PLAIN_DATA) or data.startswith(BASE64_TAG):
            text = b"%d %s %s" % (index, vtype, txt_field(data))
        else:
            text = b"%d %s %s" % (index, vtype, data)
        n = len(text)
        if n <= _ONE_STRING:
            txt.append(bytes((n,)) + text)
        elif n <= MAX_TXT_TEXT_BYTES:
            txt.append(txt_rdata(split_strings(text)))
        else:
            n = 0
        if n and ttl_s < txt_ttl:
            txt_ttl = ttl_s
        if data and vtype.upper() == URL_TYPE and (data.isascii() or _is_utf8(data)):
            uri.append(uri_rdata(index if index < MAX_URI_PRIORITY else MAX_URI_PRIORITY, URI_WEIGHT, data))
            if ttl_s < uri_ttl:
                uri_ttl = ttl_s
    if pos != end:
        return None
    txt_head = _TXT_OWNER + _U32.pack(txt_ttl)
    uri_head = _URI_OWNER + _U32.pack(uri_ttl)
    return (
        (b"".join([txt_head + _RDLENGTH.pack(len(r)) + r for r in txt]), len(txt)),
        (b"".join([uri_head + _RDLENGTH.pack(len(r)) + r for r in uri]), len(uri)),
    )


def _is_tcp(transport: str) -> bool:
    if transport == "udp":
        return False
    if transport == "tcp":
        return True
    raise ValueError(f"transport is 'udp' or 'tcp', not {transport!r}")


def _valid_name(labels: Sequence[bytes]) -> bool:
    """Labels of at most 63 bytes, and at most 255 bytes in all (RFC 1035 §2.3.4); dnslib checks neither."""
    return all(len(label) <= MAX_LABEL_BYTES for label in labels) and (
        sum(len(label) + 1 for label in labels) + 1 <= MAX_NAME_BYTES
    )


def _dnslib_name(name: str) -> dnslib.DNSLabel:
    return dnslib.DNSLabel(text_labels(name))


def _parse(query: bytes) -> dnslib.DNSRecord:
    """dnslib's parse, refusing trailing bytes, which it lets through. (It also reads the unassigned label
    types 01 and 10 as labels of 64-191 bytes: :func:`_valid_name` refuses those.)"""
    buffer = dnslib.DNSBuffer(query)
    header = dnslib.DNSHeader.parse(buffer)
    questions = [dnslib.DNSQuestion.parse(buffer) for _ in range(header.q)]
    answers = [dnslib.RR.parse(buffer) for _ in range(header.a)]
    authority = [dnslib.RR.parse(buffer) for _ in range(header.auth)]
    additional = [dnslib.RR.parse(buffer) for _ in range(header.ar)]
    if buffer.remaining():
        raise MalformedQuery(f"{buffer.remaining()} bytes after the last record")
    return dnslib.DNSRecord(header, questions, answers, auth=authority, ar=additional)


def _pack_error(qid: int, flags: int, rcode: int) -> bytes:
    """An answer of header only: for queries whose question cannot be read."""
    return _HEADER.pack(qid, flags | rcode, 0, 0, 0, 0)
