"""Shared helpers of the DNS view tests: value encoding (checked against the reference vectors), stores,
and dnspython queries. Holds the tests of the helpers themselves."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.message
import dns.rdatatype

from resolver.dnsview import DnsView, digest_entry, handle_key
from tests.vectors import VECTORS

#: The five value vectors: URL (1), EMAIL (2), UTF-8 DESC with a reference (3), HS_ADMIN (100), and a value
#: without PUBLIC_READ (200).
VECTOR_VALUES = [
    VECTORS[f"value_{i}_{t}"] for i, t in enumerate(["URL", "EMAIL", "DESC", "HS_ADMIN", "INTERNAL"])
]

HANDLE = "88.100.7/BRAKE-2025-000123"
ZONE = "id.test."
PUBLIC_READ = 0x02
DEFAULT_PERMISSIONS = 0x0E  # admin read, admin write, public read


@dataclass(frozen=True)
class Value:
    index: int
    type: bytes
    data: bytes
    ttl: int = 86400
    ttl_type: int = 0
    permissions: int = DEFAULT_PERMISSIONS
    timestamp: int = 0x65000000
    references: tuple[tuple[bytes, int], ...] = ()

    def encode(self) -> bytes:
        out = struct.pack(">IIBiB", self.index, self.timestamp, self.ttl_type, self.ttl, self.permissions)
        out += struct.pack(">I", len(self.type)) + self.type
        out += struct.pack(">I", len(self.data)) + self.data
        out += struct.pack(">I", len(self.references))
        for handle, index in self.references:
            out += struct.pack(">I", len(handle)) + handle + struct.pack(">I", index)
        return out


def tail_of(values: list[Value] | list[bytes]) -> bytes:
    """A values tail: u32 count then the encoded values."""
    encoded = [v if isinstance(v, bytes) else v.encode() for v in values]
    return struct.pack(">I", len(encoded)) + b"".join(encoded)


VECTOR_TAIL = tail_of(VECTOR_VALUES)
FOUR_VALUE_TAIL = tail_of(VECTOR_VALUES[:4])


class Store(dict):
    """An in-memory store keyed like the real one, with a digest index for identifiers that need one."""

    def __init__(self, case_sensitive: bool = False, zone: str = ZONE) -> None:
        super().__init__()
        self.case_sensitive = case_sensitive
        self.zone = zone
        self.digests: dict[bytes, bytes] = {}
        self.lookups = 0

    def add(self, handle: str, tail: bytes) -> bytes:
        key = handle_key(handle, self.case_sensitive)
        self[key] = tail
        digest = digest_entry(handle, self.zone, self.case_sensitive)
        if digest is not None:
            self.digests[digest] = key
        return key

    def lookup(self, key: bytes) -> bytes | None:
        self.lookups += 1
        return self.get(key)

    def view(self, **kwargs) -> DnsView:
        return DnsView(self.zone, self.lookup, self.case_sensitive, digest_lookup=self.digests.get, **kwargs)


def query(
    name: str, rdtype: str | int = "TXT", *, edns: int | None = 0, payload: int = 1232, **kwargs
) -> bytes:
    """A query as dnspython (a real client) sends it; ``edns=None`` sends no OPT record."""
    if edns is None:
        msg = dns.message.make_query(name, rdtype, use_edns=False, **kwargs)
    else:
        msg = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload, **kwargs)
    return msg.to_wire()


def parse(wire: bytes | None) -> dns.message.Message:
    assert wire is not None, "the query was dropped"
    return dns.message.from_wire(wire)


def txt_strings(msg: dns.message.Message) -> list[bytes]:
    """The joined text of every TXT record in the answer, in order."""
    return [b"".join(rd.strings) for rrset in msg.answer for rd in rrset if rrset.rdtype == dns.rdatatype.TXT]


def test_value_encoder_matches_the_reference_vectors():
    assert Value(1, b"URL", b"https://example.com/a").encode() == VECTORS["value_0_URL"]
    assert Value(2, b"EMAIL", b"qa@example.com").encode() == VECTORS["value_1_EMAIL"]
    desc = Value(
        3, b"DESC", "汽车零部件 批次 2025-07".encode(), ttl=3600, references=((b"88.100.1/LOT-7", 1),)
    )
    assert desc.encode() == VECTORS["value_2_DESC"]
    assert Value(200, b"INTERNAL", b"secret", permissions=0x0C).encode() == VECTORS["value_4_INTERNAL"]


def test_store_indexes_only_identifiers_with_digest_names():
    store = Store()
    store.add(HANDLE, FOUR_VALUE_TAIL)
    store.add("88.100.7/" + "X" * 400, FOUR_VALUE_TAIL)
    assert len(store) == 2 and len(store.digests) == 1
