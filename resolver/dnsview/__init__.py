"""The DNS view of the identifier store: identifier <-> DNS name, and answers for the zone.

Sans-IO (bytes in, bytes out): imports no asyncio, socket or lmdb. The scheme is documented in README.md here.
"""

from .apex import Soa, zone_header
from .errors import (
    BadEdnsVersion,
    CorruptValues,
    DnsViewError,
    MalformedQuery,
    NotAnIdentifier,
    NotImplementedQuery,
    NotInZone,
    PrefixNodeName,
    RefusedQuery,
)
from .names import (
    DEFAULT_ZONE,
    DigestName,
    NameMap,
    digest_entry,
    handle_digest,
    handle_key,
    handle_to_name,
    name_to_handle,
)
from .records import IdentifierRecords, render_records, zone_lines
from .view import DnsView, Resolution

__all__ = [
    "DEFAULT_ZONE",
    "BadEdnsVersion",
    "CorruptValues",
    "DigestName",
    "DnsView",
    "DnsViewError",
    "IdentifierRecords",
    "MalformedQuery",
    "NameMap",
    "NotAnIdentifier",
    "NotImplementedQuery",
    "NotInZone",
    "PrefixNodeName",
    "RefusedQuery",
    "Resolution",
    "Soa",
    "digest_entry",
    "handle_digest",
    "handle_key",
    "handle_to_name",
    "name_to_handle",
    "render_records",
    "zone_header",
    "zone_lines",
]
