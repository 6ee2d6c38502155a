"""Pending Handle challenges, shared by every worker of a node.

The reference client answers a 402 challenge on a NEW TCP connection (handle-admin.md §1), which SO_REUSEPORT
may hand to any worker, so a challenge cannot live in one worker's memory. Each is a small file in a directory
of the node (mode 0700): named by its session id, the source's hash and its expiry, holding the challenged
request and nonce. Taking one renames it away first, which succeeds for exactly one taker: an answer can be
used once, a replayed answer finds nothing. Bounds: MAX_PENDING in all, MAX_PENDING_PER_SOURCE per address,
CHALLENGE_TTL_S each; expired files are swept whenever a challenge is issued. No asyncio, no lmdb.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import msgpack

CHALLENGE_TTL_S = 60.0  #: the reference's max_auth_time: a challenge must be answered within it
MAX_PENDING = 4096  #: pending challenges of the whole node; a flood beyond this is refused, not stored
MAX_PENDING_PER_SOURCE = 32  #: per client address: one client cannot use up the node's table
SESSION_ID_MAX = 0x7FFF_FFFF  #: session ids are positive i32 (Java clients read them signed)
DIRECTORY_NAME = "challenges"  #: under the data directory


class Pending(NamedTuple):
    """A challenge waiting for its answer."""

    session_id: int
    source: str
    request: bytes  # the whole challenged message
    nonce: bytes
    digest: bytes  # hash-type byte + digest, as sent
    expires_s: float


def source_tag(source: str) -> str:
    return hashlib.blake2b(source.encode(), digest_size=6).hexdigest()


class PendingChallenges:
    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        ttl_s: float = CHALLENGE_TTL_S,
        max_pending: int = MAX_PENDING,
        max_per_source: int = MAX_PENDING_PER_SOURCE,
        clock: Callable[[], float] = time.time,
        new_session: Callable[[], int] | None = None,
        new_nonce: Callable[[], bytes] | None = None,
    ):
        """`directory`: shared by the node's workers (None: a private temporary one, for tests and tools).
        `new_session`/`new_nonce`: for replaying captured exchanges (fixed numbers); random by default."""
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="idnode-challenges-")
            directory = self._tmp.name
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self.max_per_source = max_per_source
        self.clock = clock
        self.new_session = new_session or (lambda: 1 + secrets.randbelow(SESSION_ID_MAX))
        self.new_nonce = new_nonce or (lambda: secrets.token_bytes(16))

    def _names(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.directory) if not n.startswith(".")]
        except FileNotFoundError:
            return []

    def _sweep(self, now: float) -> list[str]:
        """Remove expired challenges; the names of the live ones."""
        live = []
        for name in self._names():
            try:
                expires = float(name.rsplit(".", 1)[1])
            except (IndexError, ValueError):
                expires = 0.0
            if expires < now:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.directory / name)
            else:
                live.append(name)
        return live

    def issue(self, source: str, request: bytes, digest: bytes) -> Pending | None:
        """A new pending challenge for `request` from `source`, or None when the node's or the source's
        bound is reached (the caller answers SERVER_TOO_BUSY)."""
        now = self.clock()
        live = self._sweep(now)
        tag = source_tag(source)
        if (
            len(live) >= self.max_pending
            or sum(1 for n in live if n.split(".")[1] == tag) >= self.max_per_source
        ):
            return None
        nonce = self.new_nonce()
        expires = now + self.ttl_s
        data = msgpack.packb([source, request, nonce, digest, expires], use_bin_type=True)
        for _ in range(8):  # a clash of random session ids is rare; fixed ones (replays) take what they get
            session_id = self.new_session()
            name = f"{session_id:08x}.{tag}.{int(expires) + 1}"
            if any(n.startswith(f"{session_id:08x}.") for n in live):
                continue
            try:
                fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            return Pending(session_id, source, request, nonce, digest, expires)
        return None

    def take(self, session_id: int, source: str) -> Pending | None:
        """The pending challenge `session_id` issued to `source`, removed so it cannot be answered again; None
        when there is none (never issued, expired, already answered) or it was issued to another address."""
        prefix = f"{session_id:08x}.{source_tag(source)}."
        for name in self._names():
            if not name.startswith(prefix):
                continue
            claimed = self.directory / f".taken-{name}-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                os.rename(self.directory / name, claimed)  # exactly one taker wins
            except FileNotFoundError:
                return None
            try:
                src, request, nonce, digest, expires = msgpack.unpackb(claimed.read_bytes(), raw=False)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(claimed)
            if expires < self.clock() or src != source:
                return None
            return Pending(session_id, src, request, nonce, digest, expires)
        return None

    def __len__(self) -> int:
        return len(self._names())
