"""One resolution, the chain every protocol calls: prefix check (hosted, referred, unknown) → store → filters,
with counting on the way. Knows nothing of wire formats beyond the stored values tail, and nothing of sockets.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from resolver.handle.constants import ResponseCode
from resolver.handle.signature import with_server_key
from resolver.handle.values import AdminData, HandleValue, encode_admin, encode_values
from storage.counters import PROTOCOLS, ResolutionCounter
from storage.keys import NA_PREFIX, InvalidHandle, handle_key, normalize_prefix
from storage.records import RecordError, select_values
from storage.store import PrefixInfo, Store

PREFIX_ADMIN_INDEX = (
    200  #: HS_ADMIN of a prefix handle points at index 200 of itself, as the national system does
)
PREFIX_VALUE_TTL_S = 86400  #: how long clients may cache a prefix handle's values
UNKNOWN_PREFIX = (
    b"-"  #: counter bucket for prefixes this node does not know, so garbage cannot grow the counters
)
HS_SITE_INDEX = 1  #: index of the HS_SITE value of a prefix handle
HS_ADMIN_INDEX = 100  #: conventional index of HS_ADMIN (handle-protocol.md)

SUCCESS = ResponseCode.SUCCESS
HANDLE_NOT_FOUND = ResponseCode.HANDLE_NOT_FOUND
VALUES_NOT_FOUND = ResponseCode.VALUES_NOT_FOUND
SERVER_NOT_RESP = ResponseCode.SERVER_NOT_RESP
SERVICE_REFERRAL = ResponseCode.SERVICE_REFERRAL
INVALID_HANDLE = ResponseCode.INVALID_HANDLE
NO_VALUES = (0, b"\x00\x00\x00\x00")
#: Outcomes read from what this node holds (a hosted prefix's identifiers, the prefix handles it keeps): the
#: answer of the primary for the handle, so it carries AT. Referrals, unknown or disabled prefixes and
#: errors do not.
AUTHORITATIVE = frozenset({SUCCESS, HANDLE_NOT_FOUND, VALUES_NOT_FOUND})


class ResolutionService:
    """Resolves handles against a store for one worker. Not thread-safe; one per event loop."""

    _server_key = b""  # the node's public key in its HS_SITE (publish_key); empty: none published
    _raw_site = b""

    @property
    def site_data(self) -> bytes:
        """The node's HS_SITE, with the server key published in it."""
        return self._site_data

    @site_data.setter
    def site_data(self, raw: bytes) -> None:
        self._raw_site = raw
        self._site_data = with_server_key(raw, self._server_key) if raw and self._server_key else raw

    def publish_key(self, public_key_hs: bytes) -> None:
        """Publish the server key (Handle encoding) in the node's HS_SITE, now and after every rebuild;
        the prefix handles' values are built again with it."""
        self._server_key = public_key_hs
        self.site_data = self._raw_site
        self._prefixes_version = b"unset"
        self.reload_prefixes()

    def __init__(self, store: Store, node_prefix: str, site_data: bytes | Callable[[], bytes]):
        """`site_data`: the node's HS_SITE, or what builds it from the store when the prefix table changes
        (a cluster's members are kept in the store and change its version)."""
        self.store = store
        self.case_sensitive = store.case_sensitive
        self.node_prefix = node_prefix.upper().encode()
        self._site_source = site_data if callable(site_data) else None
        self.site_data = site_data if isinstance(site_data, bytes) else b""  # built by reload_prefixes
        # One counter per protocol, so the statistics can say where resolutions came from.
        self.counters = {protocol: ResolutionCounter(protocol) for protocol in PROTOCOLS}
        self.counter = self.counters["handle"]
        self._view = store.read_view()
        self._get = self._view.get
        self._unpack = store.unpack
        self._prefixes: dict[bytes, PrefixInfo] = {}
        #: prefixes whose identifiers this node answers from its store (neither referred nor disabled)
        self.served_prefixes: frozenset[bytes] = frozenset()
        self._prefix_tails: dict[bytes, bytes] = {}
        self._referral_tails: dict[bytes, bytes] = {}
        self._prefixes_version: bytes | None = b"unset"
        self.reload_prefixes()

    # -- keeping current ------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """See writes committed since the last refresh; call once per batch of requests."""
        self._view.refresh()
        self._get = self._view.get

    @property
    def record_reader(self) -> Callable[[bytes], bytes | None]:
        """The stored record of a store key, in the view of the last refresh (what `resolve` reads)."""
        return self._get

    def reload_prefixes(self) -> None:
        """Re-read the prefix table if it changed (cheap when it did not); call every second or so."""
        version = self.store.prefixes_version()
        if version == self._prefixes_version:
            return
        self._prefixes_version = version
        if self._site_source is not None:
            self.site_data = self._site_source()
        self._prefixes = self.store.prefixes()
        self.served_prefixes = frozenset(
            key for key, info in self._prefixes.items() if info.state not in ("referral", "disabled")
        )
        self._prefix_tails = {}
        self._referral_tails = {}
        for key, info in self._prefixes.items():
            values = self._prefix_handle_values(info)
            self._prefix_tails[key] = encode_values(values)
            if info.state == "referral":
                self._referral_tails[key] = encode_values(values[:1])
        if self.node_prefix not in self._prefix_tails:
            own = PrefixInfo(self.node_prefix.decode())
            self._prefix_tails[self.node_prefix] = encode_values(self._prefix_handle_values(own))

    def _prefix_handle_values(self, info: PrefixInfo) -> list[HandleValue]:
        """Values of `0.NA/<prefix>`: the HS_SITE that serves the prefix (ours, or the enterprise's node for a
        referral) and an HS_ADMIN naming the prefix handle itself. A referral answer carries the HS_SITE alone."""
        now_s = int(time.time())
        site = info.site if info.state == "referral" and info.site else self.site_data
        handle = f"0.NA/{info.prefix}"
        return [
            HandleValue(
                HS_SITE_INDEX, "HS_SITE", site, timestamp=info.created_s or now_s, ttl=PREFIX_VALUE_TTL_S
            ),
            HandleValue(
                HS_ADMIN_INDEX,
                "HS_ADMIN",
                encode_admin(AdminData(handle, PREFIX_ADMIN_INDEX, 0x0FFF)),
                timestamp=info.created_s or now_s,
                ttl=PREFIX_VALUE_TTL_S,
            ),
        ]

    def prefix_info(self, prefix: bytes) -> PrefixInfo | None:
        return self._prefixes.get(prefix)

    # -- resolving ------------------------------------------------------------------------------------------

    def flush_counts(self, into: dict[bytes, int] | None = None) -> int:
        """Persist every protocol's resolution counts; returns how many were written. `into`, when given,
        receives the per-prefix counts written, all protocols together (the security log's summaries)."""
        return sum(counter.flush(self.store, into=into) for counter in self.counters.values())

    def resolve(
        self,
        handle: bytes,
        indexes: tuple[int, ...] = (),
        types: tuple[bytes, ...] = (),
        public_only: bool = True,
        counter: ResolutionCounter | None = None,
    ) -> tuple[ResponseCode, bytes]:
        """(response code, payload): for SUCCESS the values tail (u32 count + encoded values); for
        SERVICE_REFERRAL the values tail of the prefix handle that says where to go; else empty.
        The resolution is counted on `counter` (default: the Handle protocol's)."""
        count = (counter or self.counter).count
        try:
            key = handle_key(handle, self.case_sensitive)
        except InvalidHandle:
            if not handle or b"/" in handle:
                return INVALID_HANDLE, b""
            # A bare prefix (`88.100.1`): a national SDK's global resolver asks so where the prefix is
            # served. Answered from its prefix handle, as the reference server does (the answer names the
            # handle as asked).
            key = NA_PREFIX + b"/" + normalize_prefix(handle)
            return self._resolve_prefix_handle(key, indexes, types, public_only, count)
        prefix = key[: key.find(b"/")]
        if prefix == NA_PREFIX:
            return self._resolve_prefix_handle(key, indexes, types, public_only, count)
        info = self._prefixes.get(prefix)
        if info is None or info.state == "disabled":
            count(UNKNOWN_PREFIX)
            return SERVER_NOT_RESP, b""
        count(prefix)
        if info.state == "referral":
            return SERVICE_REFERRAL, self._referral_tails[prefix]
        raw = self._get(key)
        if raw is None:
            return HANDLE_NOT_FOUND, b""
        try:
            tail, all_public = self._unpack(raw)
        except RecordError:
            return ResponseCode.ERROR, b""
        return self._select(tail, all_public, indexes, types, public_only)

    def _select(self, tail, all_public, indexes, types, public_only) -> tuple[ResponseCode, bytes]:
        count, selected = select_values(tail, all_public, indexes, types, public_only)
        if count == 0:
            return VALUES_NOT_FOUND, b""
        return SUCCESS, selected

    def _resolve_prefix_handle(self, key, indexes, types, public_only, count) -> tuple[ResponseCode, bytes]:
        named = key[len(NA_PREFIX) + 1 :]
        count(named if named in self._prefix_tails else UNKNOWN_PREFIX)
        raw = self._get(key)  # a prefix handle registered explicitly wins over the synthesised one
        if raw is not None:
            tail, all_public = self._unpack(raw)
            return self._select(tail, all_public, indexes, types, public_only)
        tail = self._prefix_tails.get(named)
        if tail is not None:
            return self._select(tail, True, indexes, types, public_only)
        if named == self.node_prefix or named.startswith(self.node_prefix + b"."):
            return HANDLE_NOT_FOUND, b""
        return SERVER_NOT_RESP, b""

    def values_tail(self, key: bytes) -> bytes | None:
        """The stored values tail of a handle key under a prefix hosted here (the DNS view's lookup), else
        None. Values are not filtered: the caller shows only the public ones."""
        slash = key.find(b"/")
        info = self._prefixes.get(key[:slash]) if slash > 0 else None
        if info is None or info.state != "hosted":
            return None
        raw = self._get(key)
        return None if raw is None else self._unpack(raw)[0]

    def referral_handle(self, handle: bytes) -> bytes:
        """The prefix handle a SERVICE_REFERRAL answer names for `handle`."""
        return b"0.NA/" + handle[: handle.find(b"/")]
