"""The zone apex: SOA and NS data, their wire rdata, and the zone-file header for ``idnode export-zone``.

Imports no asyncio, socket or lmdb.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .names import DEFAULT_ZONE, name_map, text_labels

_SOA_TIMERS = struct.Struct(">IIIII")


@dataclass(frozen=True, slots=True)
class Soa:
    """The zone's SOA record (RFC 1035 §3.3.13). Empty names default to ``ns1.<zone>`` and
    ``hostmaster.<zone>``."""

    mname: str = ""  #: primary name server (absolute)
    rname: str = ""  #: mailbox of the zone's operator, ``@`` written as the first dot (absolute)
    serial: int = 1  #: bump on every export so that secondaries transfer the new zone
    refresh_s: int = 3600
    retry_s: int = 600
    expire_s: int = 1_209_600
    minimum_s: int = 300  #: negative-caching TTL (RFC 2308 §4)
    ttl_s: int = 3600  #: TTL of the SOA and NS records themselves

    def for_zone(self, zone: str) -> Soa:
        """This SOA with its empty names filled in for ``zone``."""
        origin = name_map(zone).zone.lstrip(".")  # "" for the root zone, so names do not end in ".."
        return Soa(
            self.mname or "ns1." + origin,
            self.rname or "hostmaster." + origin,
            self.serial,
            self.refresh_s,
            self.retry_s,
            self.expire_s,
            self.minimum_s,
            self.ttl_s,
        )

    @property
    def negative_ttl_s(self) -> int:
        """TTL of the SOA in a negative answer: the lower of its TTL and its minimum (RFC 2308 §3)."""
        return min(self.ttl_s, self.minimum_s)


def absolute(name: str) -> str:
    """``name`` with its trailing dot, lower-cased."""
    return ".".join(label.decode("ascii") for label in text_labels(name)) + "."


def name_wire(name: str) -> bytes:
    """Uncompressed wire form of a text name."""
    return b"".join(bytes((len(label),)) + label for label in text_labels(name)) + b"\x00"


def soa_rdata(soa: Soa) -> bytes:
    """Wire rdata of the SOA record, names uncompressed."""
    return (
        name_wire(soa.mname)
        + name_wire(soa.rname)
        + _SOA_TIMERS.pack(soa.serial, soa.refresh_s, soa.retry_s, soa.expire_s, soa.minimum_s)
    )


def default_ns(soa: Soa) -> tuple[str, ...]:
    return (soa.mname,)


def zone_header(
    zone: str = DEFAULT_ZONE, soa: Soa | None = None, ns: Sequence[str] | None = None
) -> list[str]:
    """Master-file lines that open an exported zone: ``$ORIGIN``, ``$TTL``, the SOA and the NS records."""
    origin = name_map(zone).zone
    soa = (soa or Soa()).for_zone(zone)
    servers = tuple(ns) if ns else default_ns(soa)
    lines = [
        f"$ORIGIN {origin}",
        f"$TTL {soa.ttl_s}",
        f"{origin} {soa.ttl_s} IN SOA {absolute(soa.mname)} {absolute(soa.rname)} "
        f"{soa.serial} {soa.refresh_s} {soa.retry_s} {soa.expire_s} {soa.minimum_s}",
    ]
    lines += [f"{origin} {soa.ttl_s} IN NS {absolute(server)}" for server in servers]
    return lines
