"""Page sessions: who signed in on the login form, kept on the server in the memory the node's workers share
(resolver/server/shared.py), so a request that SO_REUSEPORT hands to another worker finds the same session,
and signing out ends it for every worker at once.

Why shared state rather than signed stateless cookies: a session must end when its user signs out, when the
secret is rotated and when the prefix is disabled; a signed cookie stays valid until it expires unless every
worker also keeps a revocation list, which is shared state again. What is lost: sessions do not outlive the
node's supervisor (a restart signs everyone out, a reload of workers does not), and in a cluster a session
belongs to the member that issued it (pin a browser to one member, or sign in again).

The cookie carries only a random token (32 bytes); the table keeps a keyed digest of it, so reading the
shared memory does not yield tokens. A session records the user, a digest of the credential it was opened
with (auth.py: credential_tag), its CSRF token, and its times: it ends after SESSION_IDLE_S without use or
SESSION_MAX_S after sign-in. The table is bounded: a token hashes to a short run of slots and when they are
all live the least recently used of the run makes room. Cookies are HttpOnly, SameSite=Strict, Path=/,
Secure (with the `__Host-` name) when the page is served over HTTPS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
import time
from dataclasses import dataclass

from aiohttp import web

from resolver.server.shared import SharedMemory

SESSION_SLOTS = 4096  #: live sessions for the whole node (~600 KiB of the shared memory)
SESSION_PROBE_SLOTS = 8  #: slots a token may take, from its hash on; few enough to scan per request
SESSION_IDLE_S = 30 * 60.0  #: a session unused this long ends (a shop-floor PC left signed in)
SESSION_MAX_S = 12 * 3600.0  #: and every session ends this long after sign-in: one working day
TOKEN_BYTES = 32  #: randomness of a session token (the cookie)
CSRF_BYTES = 16  #: randomness of a session's CSRF token (hidden in every form)
DIGEST_BYTES = 16  #: tokens are kept as keyed BLAKE2b digests of this size
MAX_USER_BYTES = 96  #: `300:<prefix>/ADMIN` with a prefix of at most 64 characters fits
LOGIN_COOKIE_MAX_AGE_S = 3600  #: the login form's CSRF cookie lasts this long: a form left open an hour
COOKIE = "idnode_session"
LOGIN_COOKIE = "idnode_login"
# digest, user, credential tag, csrf, started, last used
_SLOT = struct.Struct(f"{DIGEST_BYTES}s{MAX_USER_BYTES}s8s{CSRF_BYTES}sdd")


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    credential_tag: bytes
    csrf: str  # hex, as the forms carry it
    started_s: float


class SessionTable:
    """The node's page sessions in shared memory. `clock` must be one clock for every worker of the node:
    CLOCK_MONOTONIC is the machine's."""

    def __init__(self, memory: SharedMemory, clock=time.monotonic, slots: int = SESSION_SLOTS):
        self.memory = memory
        self.clock = clock
        self.slots = slots
        self._buf = memory.segment("console.sessions", slots * _SLOT.size)

    def open(self, user: str, credential_tag: bytes) -> tuple[str, Session]:
        """A new session of `user`: (the token for the cookie, the session)."""
        raw_user = user.encode()
        if len(raw_user) > MAX_USER_BYTES:
            raise ValueError(f"user names are at most {MAX_USER_BYTES} bytes")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        csrf = secrets.token_bytes(CSRF_BYTES)
        now = self.clock()
        digest = self._digest(token)
        with self.memory.lock():
            slot = self._place(digest, now)
            _SLOT.pack_into(self._buf, slot * _SLOT.size, digest, raw_user, credential_tag, csrf, now, now)
        return token, Session(user, credential_tag, csrf.hex(), now)

    def get(self, token: str | None) -> Session | None:
        """The live session of `token` (its use is noted), or None: unknown, signed out, idle or too old."""
        if not token or len(token) > 2 * TOKEN_BYTES:
            return None
        digest = self._digest(token)
        now = self.clock()
        with self.memory.lock():
            slot = self._find(digest)
            if slot is None:
                return None
            _, user, tag, csrf, started, last = _SLOT.unpack_from(self._buf, slot * _SLOT.size)
            if now - last > SESSION_IDLE_S or now - started > SESSION_MAX_S:
                self._clear(slot)
                return None
            _SLOT.pack_into(self._buf, slot * _SLOT.size, digest, user, tag, csrf, started, now)
        return Session(user.rstrip(b"\0").decode(), tag, csrf.hex(), started)

    def close(self, token: str | None) -> bool:
        """Sign out: the session of `token` ends for every worker. False when there was none."""
        if not token:
            return False
        with self.memory.lock():
            slot = self._find(self._digest(token))
            if slot is None:
                return False
            self._clear(slot)
            return True

    def __len__(self) -> int:
        with self.memory.lock():
            return sum(1 for n in range(self.slots) if self._head(n) != bytes(DIGEST_BYTES))

    # -- slots ---------------------------------------------------------------------------------------------

    def _digest(self, token: str) -> bytes:
        return hashlib.blake2b(token.encode(), digest_size=DIGEST_BYTES, key=self.memory.key).digest()

    def _run(self, digest: bytes) -> list[int]:
        first = int.from_bytes(digest[:8], "big") % self.slots
        return [(first + step) % self.slots for step in range(min(SESSION_PROBE_SLOTS, self.slots))]

    def _head(self, slot: int) -> bytes:
        return bytes(self._buf[slot * _SLOT.size : slot * _SLOT.size + DIGEST_BYTES])

    def _find(self, digest: bytes) -> int | None:
        for slot in self._run(digest):
            if hmac.compare_digest(self._head(slot), digest):
                return slot
        return None

    def _place(self, digest: bytes, now: float) -> int:
        """A free or expired slot of the run, else its least recently used one."""
        victim, victim_last = None, float("inf")
        for slot in self._run(digest):
            head, _, _, _, started, last = _SLOT.unpack_from(self._buf, slot * _SLOT.size)
            if head == bytes(DIGEST_BYTES) or now - last > SESSION_IDLE_S or now - started > SESSION_MAX_S:
                return slot
            if last < victim_last:
                victim, victim_last = slot, last
        assert victim is not None
        return victim

    def _clear(self, slot: int) -> None:
        self._buf[slot * _SLOT.size : (slot + 1) * _SLOT.size] = bytes(_SLOT.size)


# -- cookies and CSRF ----------------------------------------------------------------------------------------


def cookie_name(request: web.Request, base: str = COOKIE) -> str:
    """`__Host-<base>` over HTTPS (the browser then insists on Secure, Path=/ and no Domain), else `base`."""
    return f"__Host-{base}" if request.secure else base


def set_cookie(response: web.StreamResponse, request: web.Request, base: str, value: str,
               max_age: int | None = None) -> None:  # fmt: skip
    response.set_cookie(
        cookie_name(request, base), value, path="/", httponly=True, samesite="Strict", secure=request.secure,
        max_age=max_age,
    )  # fmt: skip


def clear_cookie(response: web.StreamResponse, request: web.Request, base: str) -> None:
    response.del_cookie(cookie_name(request, base), path="/", secure=request.secure, httponly=True,
                        samesite="Strict")  # fmt: skip


def read_cookie(request: web.Request, base: str = COOKIE) -> str | None:
    return request.cookies.get(cookie_name(request, base))


def same_token(expected: str, given: object) -> bool:
    """Whether a form's CSRF token is the expected one (constant time)."""
    return (
        isinstance(given, str) and bool(expected) and hmac.compare_digest(expected.encode(), given.encode())
    )


def same_origin(request: web.Request) -> bool:
    """False when the request names another origin than this node's (Origin, else Referer): a cross-site
    POST, whatever its token. Requests that name none (old browsers, privacy settings) pass: the CSRF token
    and SameSite=Strict are the defence; this is a second one."""
    origin = request.headers.get("Origin")
    if origin is None:
        referer = request.headers.get("Referer")
        if referer is None:
            return True
        origin = "/".join(referer.split("/", 3)[:3])
    if origin == "null":
        return False
    return origin == f"{request.scheme}://{request.host}"
