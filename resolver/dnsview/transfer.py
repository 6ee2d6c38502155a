"""Zone transfers of the DNS view over TCP: AXFR (RFC 5936) and IXFR (RFC 1995), for configured secondaries.

Sans-IO: a transfer query in, a stream of DNS messages out (the transport frames and sends them as the peer
reads). The zone comes from a snapshot (:class:`ZoneSource`, storage/zonesnapshot.py implements it) opened
when the answer starts and closed when the stream ends or is dropped, so a transfer is consistent however
slowly the secondary reads, and holds no more than one message in memory. Imports no asyncio, socket or lmdb.

- The SOA serial is the write-log position of the last entry that changed the zone, + 1, modulo 2^32 (RFC
  1982): a store never changed through the log has serial 1, the serial the view always had; every write that
  changes what the zone shows makes it newer, and entries that change nothing in it (counters) do not.
- AXFR: SOA, NS, every identifier's TXT and URI records (what the live view answers), SOA.
- IXFR from serial S: one condensed difference (RFC 1995 §4): SOA(new), SOA(S), the records deleted,
  SOA(new), the records added, SOA(new), built from the zone journal: the keys changed after S, their records
  before (the first note after S) and now. The whole zone in AXFR form instead when the journal no longer
  reaches back to S, a bulk load or a prefix change lies in between, more than MAX_IXFR_CHANGED_KEYS keys
  changed, or S is not an earlier serial of this zone. A client already at the current serial gets the SOA.
- Only peers the ACL allows are answered; the others get REFUSED, as every transfer did before.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Protocol

import dnslib

from .apex import Soa, name_wire, soa_rdata
from .constants import (
    HEADER_BYTES,
    MAX_NAME_BYTES,
    MAX_TCP_MESSAGE_BYTES,
    OPCODE_MASK,
    POINTER_TO_QUESTION,
    Flag,
    Rcode,
    RrClass,
    RrType,
)
from .errors import CorruptValues
from .names import NameMap
from .records import IdentifierRecords, render_records, txt_rdata, uri_rdata

log = logging.getLogger(__name__)

SERIAL_MODULUS = 1 << 32  #: RFC 1982 §2: SOA serials are 32-bit sequence numbers
SERIAL_HALF = 1 << 31  #: RFC 1982 §3.2: a serial ahead by less than this is newer
#: An IXFR over more changed identifiers than this is answered with the whole zone: the difference is built
#: from a map of the changed keys, and past this size the full zone costs the secondary little more.
MAX_IXFR_CHANGED_KEYS = 100_000
#: Messages of a transfer stay this large at most: the TCP limit (RFC 1035 §4.2.2), many records each.
MAX_TRANSFER_MESSAGE_BYTES = MAX_TCP_MESSAGE_BYTES
TRANSFER_QTYPES = frozenset((int(RrType.AXFR), int(RrType.IXFR)))

_HEADER = struct.Struct(">HHHHHH")
_QUESTION_TAIL = struct.Struct(">HH")
_RR_HEAD = struct.Struct(">HHIH")  # type, class, ttl, rdlength
_LABEL_TYPE_BITS = 0xC0  # RFC 1035 §4.1.4, RFC 6891 §5: a length byte with either bit set is no plain label


class ZoneSource(Protocol):
    """A consistent snapshot of the zone (storage.zonesnapshot.ZoneSnapshot)."""

    position: int

    def identifiers(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, stored record) of every identifier the zone shows."""
        ...

    def values_tail(self, raw: bytes) -> bytes: ...

    def shown(self, key: bytes) -> bool: ...

    def current(self, key: bytes) -> bytes | None: ...

    def covers(self, after_position: int) -> bool: ...

    def notes_after(self, after_position: int) -> Iterable[object]:
        """Journal notes: objects with `position` and either `key` and `old_raw` (one identifier changed) or
        `first_key` and `last_key` (a bulk change)."""
        ...


OpenZone = Callable[[], AbstractContextManager[ZoneSource]]


# --- serials ------------------------------------------------------------------------------------------------
def serial_of(position: int) -> int:
    """The SOA serial of the zone last changed at a write-log position."""
    return (position + 1) % SERIAL_MODULUS


def position_of(serial: int, current_position: int) -> int | None:
    """The write-log position, at or before `current_position`, whose serial is `serial`: None when `serial` is
    not an earlier serial of this zone (ahead of ours in RFC 1982 terms, or before position 0)."""
    behind = (serial_of(current_position) - serial) % SERIAL_MODULUS
    if behind >= SERIAL_HALF or behind > current_position:
        return None
    return current_position - behind


# --- who may transfer ---------------------------------------------------------------------------------------
class TransferAcl:
    """Addresses or networks allowed to transfer the zone (`dns_transfer_allow`); empty: nobody."""

    def __init__(self, allowed: Sequence[str] = ()):
        self.networks = tuple(ipaddress.ip_network(item, strict=False) for item in allowed)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d
        return any(ip in network for network in self.networks)


# --- the query ----------------------------------------------------------------------------------------------
def transfer_qtype(message: bytes) -> int | None:
    """AXFR or IXFR when `message` is a query whose single question asks for one, else None (the view answers
    it). Reads only the header and the question; the question name must be uncompressed, as queries send it."""
    end = _question_end(message)
    if end is None:
        return None
    qtype = _QUESTION_TAIL.unpack_from(message, end - 4)[0]
    return qtype if qtype in TRANSFER_QTYPES else None


def _question_end(message: bytes) -> int | None:
    """Where the question of a one-question QUERY ends, or None."""
    n = len(message)
    if n < HEADER_BYTES + 5:
        return None
    _qid, flags, qdcount, _an, _ns, _ar = _HEADER.unpack_from(message)
    if flags & (Flag.QR | OPCODE_MASK) or qdcount != 1:
        return None
    pos = HEADER_BYTES
    while True:
        if pos >= n:
            return None
        length = message[pos]
        if length & _LABEL_TYPE_BITS:
            return None
        pos += 1 + length
        if length == 0:
            break
    if pos - HEADER_BYTES > MAX_NAME_BYTES or pos + 4 > n:
        return None
    return pos + 4


# --- the answer ---------------------------------------------------------------------------------------------
class ZoneTransfers:
    """Answers AXFR and IXFR for the zone of `names`, with the apex the live view answers (`soa` less its
    serial, `ns`), to peers `acl` allows, from snapshots `open_zone` gives."""

    def __init__(
        self,
        names: NameMap,
        soa: Soa,
        ns: Sequence[str],
        open_zone: OpenZone,
        acl: TransferAcl,
        clock: Callable[[], float],
        max_changed_keys: int = MAX_IXFR_CHANGED_KEYS,
    ):
        self.names = names
        self.soa = soa
        self.ns = tuple(ns)
        self.open_zone = open_zone
        self.acl = acl
        self.clock = clock
        self.max_changed_keys = max_changed_keys
        self._zone_count = len(names.zone_labels)

    def messages(self, query: bytes, peer: str) -> Iterator[bytes] | None:
        """The messages answering a transfer query from `peer` (an IP address), produced as they are consumed;
        None when `query` is not a well-formed transfer query (the view then answers it, FORMERR or REFUSED)."""
        end = _question_end(query)
        if end is None:
            return None
        qtype, qclass = _QUESTION_TAIL.unpack_from(query, end - 4)
        if qtype not in TRANSFER_QTYPES:
            return None
        qid, flags = struct.unpack_from(">HH", query)
        question = query[HEADER_BYTES:end]
        base = int(Flag.QR) | (flags & int(Flag.RD))
        labels = _labels(question)
        if qclass != RrClass.IN or [label.lower() for label in labels] != list(self.names.zone_labels):
            return iter((_error(qid, base, Rcode.REFUSED, question),))  # not a zone of ours
        if not self.acl.allows(peer):
            log.info("zone transfer refused to %s: not in dns_transfer_allow", peer)
            return iter((_error(qid, base, Rcode.REFUSED, question),))
        client_serial = None
        if qtype == RrType.IXFR:
            client_serial = _ixfr_serial(query)
            if client_serial is None:
                return iter((_error(qid, base, Rcode.FORMERR, question),))  # RFC 1995 §3: SOA in authority
        return self._stream(qid, base | int(Flag.AA), question, client_serial, peer)

    def _stream(
        self, qid: int, flags: int, question: bytes, client_serial: int | None, peer: str
    ) -> Iterator[bytes]:
        try:
            zone_cm = self.open_zone()
            zone = zone_cm.__enter__()
        except Exception:
            log.exception("cannot open the store for a zone transfer to %s", peer)
            yield _error(qid, flags & ~int(Flag.AA), Rcode.SERVFAIL, question)
            return
        try:
            serial = serial_of(zone.position)
            records = self._records(zone, serial, client_serial, peer)
            yield from _pack(qid, flags, question, records)
        finally:
            zone_cm.__exit__(None, None, None)

    def _records(
        self, zone: ZoneSource, serial: int, client_serial: int | None, peer: str
    ) -> Iterator[bytes]:
        soa = self._soa_rr(serial)
        if client_serial is None:
            log.info("AXFR of %s at serial %d to %s", self.names.zone, serial, peer)
            return self._full(zone, soa)
        if client_serial == serial:
            log.info("IXFR of %s to %s: already at serial %d", self.names.zone, peer, serial)
            return iter((soa,))
        since = position_of(client_serial, zone.position)
        changed = self._changed_keys(zone, since) if since is not None else None
        if changed is None:
            log.info("IXFR of %s from serial %d to %s: the whole zone at serial %d", self.names.zone,
                     client_serial, peer, serial)  # fmt: skip
            return self._full(zone, soa)
        log.info("IXFR of %s from serial %d to %d to %s: %d identifiers changed", self.names.zone, client_serial,
                 serial, peer, len(changed))  # fmt: skip
        return self._difference(zone, soa, self._soa_rr(client_serial), changed)

    # --- AXFR form ----------------------------------------------------------------------------------------
    def _full(self, zone: ZoneSource, soa: bytes) -> Iterator[bytes]:
        yield soa
        for ns in self.ns:
            rdata = name_wire(ns)
            yield (
                POINTER_TO_QUESTION + _RR_HEAD.pack(RrType.NS, RrClass.IN, self.soa.ttl_s, len(rdata)) + rdata
            )
        now_s = self.clock()
        for key, raw in zone.identifiers():
            yield from self._identifier_rrs(zone, key, raw, now_s)
        yield soa

    # --- IXFR form ----------------------------------------------------------------------------------------
    def _changed_keys(self, zone: ZoneSource, since: int) -> dict[bytes, bytes | None] | None:
        """key -> its record at position `since` (None: absent), for every key changed after it; None when
        only the whole zone can answer (journal too short, a bulk change, too many keys)."""
        if not zone.covers(since):
            return None
        changed: dict[bytes, bytes | None] = {}
        for note in zone.notes_after(since):
            key = getattr(note, "key", None)
            if key is None:
                return None  # a bulk load or a prefix change: not noted key by key
            if key not in changed:  # notes come in position order: the first holds the record at `since`
                if len(changed) >= self.max_changed_keys:
                    return None
                changed[key] = note.old_raw  # type: ignore[attr-defined]
        return changed

    def _difference(
        self, zone: ZoneSource, soa: bytes, old_soa: bytes, changed: dict[bytes, bytes | None]
    ) -> Iterator[bytes]:
        keys = sorted(changed)
        now_s = self.clock()

        def before_and_after(key: bytes) -> tuple[list[bytes], list[bytes]]:
            # The prefix's state did not change in between (that would be a bulk note): shown then as now.
            old_raw = changed[key] if zone.shown(key) else None
            old = self._identifier_rrs(zone, key, old_raw, now_s) if old_raw is not None else []
            new_raw = zone.current(key)
            new = self._identifier_rrs(zone, key, new_raw, now_s) if new_raw is not None else []
            return old, new

        yield soa
        yield old_soa
        for key in keys:  # two passes over the keys rather than every record held until the additions
            old, new = before_and_after(key)
            kept = set(new)
            yield from (rr for rr in old if rr not in kept)
        yield soa
        for key in keys:
            old, new = before_and_after(key)
            had = set(old)
            yield from (rr for rr in new if rr not in had)
        yield soa

    # --- records ------------------------------------------------------------------------------------------
    def _soa_rr(self, serial: int) -> bytes:
        rdata = soa_rdata(replace(self.soa, serial=serial))
        return POINTER_TO_QUESTION + _RR_HEAD.pack(RrType.SOA, RrClass.IN, self.soa.ttl_s, len(rdata)) + rdata

    def _identifier_rrs(self, zone: ZoneSource, key: bytes, raw: bytes, now_s: float) -> list[bytes]:
        """The TXT and URI records of one identifier in wire form, owned by its name (the zone part a pointer
        to the question): what the live view answers for it. An undecodable record gives none (the live view
        answers SERVFAIL for it; `idnode export-zone` leaves it out the same way)."""
        try:
            records = render_records(zone.values_tail(raw), now_s)
        except (CorruptValues, ValueError) as exc:
            log.warning("zone transfer: %s left out, its record does not decode: %s",
                        key.decode("utf-8", "replace"), exc)  # fmt: skip
            return []
        if not records.txt and not records.uri:
            return []
        labels = self.names.labels_of_key(key)
        owner = b"".join(bytes((len(label),)) + label for label in labels[: len(labels) - self._zone_count])
        return _wire_records(owner + POINTER_TO_QUESTION, records)


def _wire_records(owner: bytes, records: IdentifierRecords) -> list[bytes]:
    out = []
    for strings in records.txt:
        rdata = txt_rdata(strings)
        out.append(owner + _RR_HEAD.pack(RrType.TXT, RrClass.IN, records.txt_ttl_s, len(rdata)) + rdata)
    for item in records.uri:
        rdata = uri_rdata(*item)
        out.append(owner + _RR_HEAD.pack(RrType.URI, RrClass.IN, records.uri_ttl_s, len(rdata)) + rdata)
    return out


def _pack(qid: int, flags: int, question: bytes, records: Iterable[bytes]) -> Iterator[bytes]:
    """Messages of as many records as fit (each message repeats the question, which owner names point into:
    RFC 5936 §2.2 allows it)."""
    room = MAX_TRANSFER_MESSAGE_BYTES - HEADER_BYTES - len(question)
    batch: list[bytes] = []
    size = 0
    for rr in records:
        if batch and size + len(rr) > room:
            yield _HEADER.pack(qid, flags, 1, len(batch), 0, 0) + question + b"".join(batch)
            batch, size = [], 0
        batch.append(rr)
        size += len(rr)
    if batch:
        yield _HEADER.pack(qid, flags, 1, len(batch), 0, 0) + question + b"".join(batch)


def _error(qid: int, flags: int, rcode: int, question: bytes) -> bytes:
    return _HEADER.pack(qid, flags | rcode, 1, 0, 0, 0) + question


def _labels(question: bytes) -> list[bytes]:
    labels = []
    pos = 0
    while question[pos]:
        length = question[pos]
        labels.append(question[pos + 1 : pos + 1 + length])
        pos += 1 + length
    return labels


def _ixfr_serial(query: bytes) -> int | None:
    """The client's serial: the SOA in the authority section of an IXFR query (RFC 1995 §3), or None."""
    try:
        record = dnslib.DNSRecord.parse(query)
    except Exception:  # dnslib raises DNSError and others on hostile input
        return None
    for rr in record.auth:
        if rr.rtype == RrType.SOA:
            return int(rr.rdata.times[0])
    return None
