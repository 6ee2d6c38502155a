"""Memory the worker processes of one node share: a memfd mapped by every worker, made by the supervisor before
it forks them (`prepare_for_workers`), so what one worker counts the others see at once (failed logins, the
disk-full episode) and a reload's new workers inherit it. Nothing of it is kept on disk: it lasts as long as
the supervisor.

One lock guards it all: a POSIX record lock on the memfd, which the kernel releases when its holder dies, so a
worker killed while holding it cannot stall the others. Users take named segments (`segment(name, size)`); the
table of segments lives in the memory itself, so every process finds a segment at the same place whatever
order it asks for them in. A process not forked from a supervisor (in-process tests, tools) gets private
memory from `for_workers()` instead. Imports neither aiohttp nor lmdb.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import secrets
import struct
import threading
import weakref
from collections.abc import Iterator

SHARED_BYTES = 8 << 20  #: the failed-login tables need ~4 MiB; a memfd only uses the pages that are touched
MAX_SEGMENTS = 32  #: named segments the table of contents has room for
NAME_BYTES = 32  #: a segment's name, NUL-padded
KEY_BYTES = 32  #: random key of the memory, for users that hash names into it (unpredictable placement)
_ENTRY = struct.Struct(f"{NAME_BYTES}sQQ")  # name, offset, size
_COUNT = struct.Struct("Q")
_HEADER_BYTES = KEY_BYTES + _COUNT.size + MAX_SEGMENTS * _ENTRY.size
_ALIGN = 64  #: segments start on a cache line

_node: SharedMemory | None = None


class SharedMemoryError(Exception):
    """The shared memory has no room for a segment asked for."""


class SharedMemory:
    def __init__(self, size: int = SHARED_BYTES):
        # CLOEXEC: forked workers inherit the descriptor; programs the node executes (the exporter) do not.
        self._fd = os.memfd_create("idnode-shared", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, size)
        self.buf = mmap.mmap(self._fd, size)  # MAP_SHARED: forked children see the same pages
        self.size = size
        self._threads = threading.Lock()  # record locks are per process: threads of one process need this too
        self.buf[:KEY_BYTES] = secrets.token_bytes(KEY_BYTES)
        weakref.finalize(self, os.close, self._fd)  # the mapping itself goes with `buf`

    @property
    def key(self) -> bytes:
        return bytes(self.buf[:KEY_BYTES])

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the memory, across the node's processes and this process's threads."""
        with self._threads:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def segment(self, name: str, size: int) -> memoryview:
        """The segment `name` (zero-filled when first made), the same memory in every process of the node."""
        raw = name.encode()
        if len(raw) > NAME_BYTES:
            raise SharedMemoryError(f"segment name {name!r} is longer than {NAME_BYTES} bytes")
        with self.lock():
            (count,) = _COUNT.unpack_from(self.buf, KEY_BYTES)
            end = _HEADER_BYTES
            for n in range(count):
                entry_name, offset, entry_size = _ENTRY.unpack_from(self.buf, KEY_BYTES + _COUNT.size + n * _ENTRY.size)
                if entry_name.rstrip(b"\0") == raw:
                    if entry_size != size:
                        raise SharedMemoryError(f"segment {name!r} is {entry_size} bytes, not {size}")
                    return memoryview(self.buf)[offset : offset + size]
                end = max(end, offset + entry_size)
            offset = -(-end // _ALIGN) * _ALIGN
            if count >= MAX_SEGMENTS or offset + size > self.size:
                raise SharedMemoryError(f"no room for segment {name!r} ({size} bytes) in the shared memory")
            _ENTRY.pack_into(self.buf, KEY_BYTES + _COUNT.size + count * _ENTRY.size, raw, offset, size)
            _COUNT.pack_into(self.buf, KEY_BYTES, count + 1)
            return memoryview(self.buf)[offset : offset + size]


def prepare_for_workers() -> SharedMemory:
    """Make the node's shared memory; the supervisor calls this once, before it forks any worker."""
    global _node
    if _node is None:
        _node = SharedMemory()
    return _node


def for_workers() -> SharedMemory:
    """The node's shared memory in a worker; private memory in a process no supervisor forked, so that two
    in-process applications of a test do not count each other's failures."""
    return _node if _node is not None else SharedMemory()
