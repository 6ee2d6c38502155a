"""HTTP Basic authentication with the Handle.Net user form: `300:<prefix>/ADMIN` for an enterprise (the
administrator of its prefix), `operator` for the node's operator.

Secrets are checked against their salted scrypt hash (storage/enterprises.py). scrypt is slow on purpose, so
a verified (user, secret) pair is remembered per worker, keyed by a keyed hash of the secret, as long as the
stored credential is the same; rotating a secret invalidates it at once. Repeated failures for one user are
answered 429 without hashing, so guessing is slow and cannot tie up a worker. Failures are counted per
source address and user, and per source address over all users: an abusive source is slowed without
locking anyone else out of an identity (a per-user count would let any stranger lock an enterprise out).
IPv6 sources count per /64, which a single client usually holds whole. The counts are the node's, shared by
its workers, in bounded tables (throttle.py). A disabled prefix is refused before its secret is looked at, so
the answer is the same for a right and a wrong secret. Every authenticated enterprise call marks the
enterprise as seen, persisted at most once a minute per enterprise per worker.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web

from resolver.handle.constants import ResponseCode
from resolver.http.common import HttpError
from resolver.http.throttle import AUTH_FAILURE_WINDOW_S, LoginThrottle
from resolver.server.shared import SharedMemory, for_workers
from storage.enterprises import get_credential, mark_seen, prefix_of_user, user_key
from storage.store import PrefixInfo, Store, StoreFullError

log = logging.getLogger(__name__)

AUTH_CACHE_ENTRIES = 4096  #: verified (user, secret) pairs remembered per worker
IPV6_SOURCE_PREFIX = 64  #: IPv6 failures count per /64: one client can rotate addresses within it
SEEN_WRITE_INTERVAL_S = 60.0  #: last-seen times are persisted at most this often per enterprise per worker
MAX_AUTH_HEADER_BYTES = 4096  #: an Authorization header longer than this is not a Basic credential
CREDENTIAL_TAG_BYTES = 8  #: of a credential's digest a page session keeps to notice a rotated secret
REALM = 'Basic realm="idnode", charset="UTF-8"'


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made an authenticated request: an enterprise's administrator (`prefix` set) or the operator."""

    user: str
    prefix: bytes | None  # normalized prefix key; None for the operator

    @property
    def is_operator(self) -> bool:
        return self.prefix is None

    def administers(self, prefix_key: bytes) -> bool:
        return self.prefix is None or self.prefix == prefix_key


def _unauthorized(message: str, code: ResponseCode = ResponseCode.AUTHENTICATION_FAILED) -> HttpError:
    return HttpError(401, code, message, headers={"WWW-Authenticate": REALM})


def _throttled() -> HttpError:
    return HttpError(
        429, ResponseCode.SERVER_TOO_BUSY,
        f"too many failed logins from this address; try again in {AUTH_FAILURE_WINDOW_S:.0f} s",
        headers={"Retry-After": str(int(AUTH_FAILURE_WINDOW_S))},
    )  # fmt: skip


def split_basic(header: str) -> tuple[str, str]:
    """(user, secret) of a Basic Authorization header. The user `300:88.100.7/ADMIN` contains a colon: pyhandle
    sends it percent-encoded (300%3A...), curl -u sends it as is; both are understood."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded or len(header) > MAX_AUTH_HEADER_BYTES:
        raise _unauthorized("the Authorization header is not HTTP Basic")
    try:
        text = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _unauthorized("the Basic credential is not base64 of UTF-8 user:secret") from exc
    head, sep, rest = text.partition(":")
    if not sep:
        raise _unauthorized("the Basic credential has no ':' between user and secret")
    if head.isdigit() and ":" in rest:  # index:handle:secret, the user written without percent-encoding
        handle, _, secret = rest.partition(":")
        return f"{head}:{handle}", secret
    return unquote(head), rest


def source_of(request: web.Request) -> str:
    """The address failures are counted against: the peer's IPv4 address, or its IPv6 /64."""
    remote = request.remote or ""
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote  # a Unix socket or an unknown peer: one bucket
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_SOURCE_PREFIX}", strict=False))
    return str(address)


class Authenticator:
    def __init__(
        self,
        store: Store,
        clock=time.monotonic,
        memory: SharedMemory | None = None,
        seen: Callable[[bytes], None] | None = None,
    ):
        """`memory`: where failed logins are counted, by default the node's (shared by its workers). `seen`:
        where last-seen marks go (a worker's feed to the writer), by default written to `store` here."""
        self.store = store
        self.seen = seen or (lambda prefix: mark_seen(store, prefix))
        self.clock = clock
        self._pepper = secrets.token_bytes(32)  # the cache keys secrets by HMAC under this per-process key
        self._verified: OrderedDict[tuple[bytes, bytes], bytes] = OrderedDict()
        self.throttle = LoginThrottle(memory or for_workers(), clock)
        self._seen_written: dict[bytes, float] = {}

    async def identify(self, request: web.Request) -> Identity | None:
        """The identity of the request's credential; None without an Authorization header; HttpError when
        the credential is wrong (401), throttled (429) or its prefix disabled (403). Error messages name the
        user, never the secret."""
        header = request.headers.get("Authorization")
        if header is None:
            return None
        source = source_of(request)
        if self.throttle.source_throttled(source):
            raise _throttled()
        try:
            user, secret = split_basic(header)
        except HttpError:
            self.throttle.fail(source)
            raise
        return await self.verify(request, user, secret)

    async def verify(self, request: web.Request, user: str, secret: str) -> Identity:
        """The identity of (`user`, `secret`) sent by `request`, however they came (Basic header, the pages'
        login form): the same throttle, checks and errors as `identify`."""
        source = source_of(request)
        if self.throttle.source_throttled(source):
            raise _throttled()
        key = user_key(user)
        if key is None:
            self.throttle.fail(source)
            raise _unauthorized(
                f"unknown user {user!r}: enterprises are 300:<prefix>/ADMIN, the operator 'operator'"
            )
        prefix = prefix_of_user(key)
        if prefix is not None:
            # Before the secret is looked at: a right and a wrong one get the same answer, no oracle.
            self._check_prefix(prefix)
        attempt = self.throttle.attempt(source, key)  # counted as failed until the secret is found right
        if attempt is None:
            raise _throttled()
        credential = get_credential(self.store, key)
        if credential is None:
            raise _unauthorized(f"no credential is issued for {user}")
        tag = hmac.new(self._pepper, secret.encode(), hashlib.sha256).digest()
        if self._verified.get((key, tag)) != credential.digest:
            ok = await asyncio.get_running_loop().run_in_executor(None, credential.verify, secret)
            if not ok:
                raise _unauthorized(f"wrong secret for {user}")
            self._remember(key, tag, credential.digest)
        self.throttle.succeeded(source, key, attempt)
        if prefix is not None:
            self._check_prefix(prefix, known=True)  # removed since its credential was issued
            self._mark_seen(prefix)
        return Identity(user, prefix)

    def credential_tag(self, user: str) -> bytes | None:
        """A short digest of `user`'s stored credential (None: none issued). A page session keeps it, so
        rotating the secret ends the user's sessions at their next request."""
        key = user_key(user)
        credential = get_credential(self.store, key) if key is not None else None
        if credential is None:
            return None
        return hashlib.sha256(credential.digest).digest()[:CREDENTIAL_TAG_BYTES]

    def resume(self, user: str, tag: bytes) -> Identity | None:
        """The identity of a page session opened as `user` when its credential had `tag`; None when the
        secret was rotated since, or the prefix disabled or removed. An enterprise is marked seen, as by an
        API call."""
        key = user_key(user)
        if key is None or self.credential_tag(user) != tag:
            return None
        prefix = prefix_of_user(key)
        if prefix is not None:
            if self._prefix_state(prefix) in (None, "disabled"):
                return None
            self._mark_seen(prefix)
        return Identity(user, prefix)

    async def require(self, request: web.Request) -> Identity:
        identity = await self.identify(request)
        if identity is None:
            raise _unauthorized(
                "this request needs HTTP Basic credentials", ResponseCode.AUTHENTICATION_NEEDED
            )
        return identity

    async def require_operator(self, request: web.Request) -> Identity:
        identity = await self.require(request)
        if not identity.is_operator:
            raise HttpError(403, ResponseCode.INSUFFICIENT_PERMISSIONS, "only the operator may do this")
        return identity

    def _prefix_state(self, prefix: bytes) -> str | None:
        with self.store.env.begin(db=self.store.prefixes_db) as txn:
            raw = txn.get(prefix)
        return None if raw is None else PrefixInfo.unpack(raw).state

    def _check_prefix(self, prefix: bytes, known: bool = False) -> None:
        """403 when the prefix is disabled; with `known`, also when this node does not know it."""
        state = self._prefix_state(prefix)
        if state == "disabled" or (known and state is None):
            raise HttpError(
                403,
                ResponseCode.INSUFFICIENT_PERMISSIONS,
                f"prefix {prefix.decode()} is disabled on this node",
            )

    def _remember(self, key: bytes, tag: bytes, digest: bytes) -> None:
        self._verified[(key, tag)] = digest
        while len(self._verified) > AUTH_CACHE_ENTRIES:
            self._verified.popitem(last=False)

    def _mark_seen(self, prefix: bytes) -> None:
        now = self.clock()
        last = self._seen_written.get(prefix)
        if last is not None and now - last < SEEN_WRITE_INTERVAL_S:
            return
        self._seen_written[prefix] = now
        try:
            self.seen(prefix)
        except StoreFullError as exc:  # the writes report a full disk, once per episode; retried in a minute
            log.debug("could not record that %s was seen: %s", prefix.decode(), exc)
        except Exception:  # being seen is bookkeeping; the request itself must not fail for it
            log.exception("could not record that %s was seen", prefix.decode())
