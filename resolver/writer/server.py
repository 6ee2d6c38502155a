"""The node's one writer: a process under the supervisor that takes write-log entries on a Unix socket (in the
data directory, or `writer_socket`) and commits them in groups.

Group commit: every request queued while the last commit ran is taken at once; in ONE LMDB write transaction
their entries are appended to the log, applied one by one and the applied position stored (storage/log.py),
then the transaction commits (and syncs), and only then is each request answered with its results — a write
is answered after it is applied (read-your-writes for the worker that asked). One fsync serves the whole
group. Commits run in one thread of their own, so the event loop keeps reading requests (they form the next
group) and sending heartbeats to the supervisor during a long commit (a bulk-load chunk).

The socket is created mode 0600: whoever can connect can write, so only the node's user (and root) may.
Nothing else in the node takes LMDB's write lock while it serves: workers open the store read-only.

One writer serves a store at a time: it holds an exclusive lock on `<socket>.lock` (released by the kernel
however it dies). The writer of a second node started on the same store waits in standby, its node's workers
writing through the one that serves, and takes over (removes the dead socket, listens) when that one is gone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import uvloop

from resolver.config import ServeConfig
from resolver.cpus import parse_cpu_list, pin
from resolver.recursion.probe import start_prober
from resolver.server.lifecycle import WorkerLink
from resolver.writer.protocol import (
    DEFAULT_SOCKET_NAME,
    HEADER_BYTES,
    ProtocolError,
    decode_request,
    encode_answer,
    frame_length,
)
from storage.entries import FAILED, STORE_FULL, Result, Submitter, refusal
from storage.log import LocalLog, Retention
from storage.store import Store, StoreFullError

log = logging.getLogger(__name__)

MAX_GROUP_REQUESTS = 1000  #: requests committed in one transaction at most: a group's answers wait for all of it
HEARTBEAT_S = 1.0  #: the writer tells the supervisor it is alive this often (its hang check waits 30 s)
STOP_WAIT_S = 5.0  #: at SIGTERM, requests already queued get this long to be committed and answered
PROCESS_NAME = b"idnode-writer"  #: its name in ps and /proc/PID/comm (tests tell it from the workers by it)
MAX_UNIX_PATH_BYTES = 107  #: sun_path holds 108 bytes with its NUL
STANDBY_POLL_S = 0.2  #: a standby writer tries this often to take over from the one that serves
_PR_SET_NAME = 15  #: prctl(2) option: the calling thread's name


@runtime_checkable
class AsyncSubmitter(Protocol):
    """A log that takes a group in the event loop (the cluster's, resolver/cluster/member.py)."""

    async def submit_async(self, entries: Sequence[bytes], payloads: Sequence[Any] | None = None) -> list[Result]: ...


class WriterSetupError(Exception):
    """The writer cannot start (the message says why)."""


def socket_path(config: ServeConfig) -> Path:
    """Where the node's writer listens: `writer_socket`, else `writer.sock` in the data directory."""
    return Path(config.writer_socket) if config.writer_socket else config.data_dir / DEFAULT_SOCKET_NAME


def _name_process() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(PROCESS_NAME), 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _check_path(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_UNIX_PATH_BYTES:
        raise WriterSetupError(f"writer_socket: {path} is longer than a Unix socket path may be; set a shorter one")


class WriterServer:
    def __init__(
        self, store: Store, path: Path, retention: Retention | None = None,
        log: Submitter | AsyncSubmitter | None = None,
    ):  # fmt: skip
        """`log`: what appends and applies a group (default: the embedded log, storage/log.py); a cluster log
        that publishes entries and answers once they are applied here can take its place."""
        self.store = store
        self.path = path
        self.log = log or LocalLog(store, retention)
        self._queue: list[tuple[list[bytes], list[Any] | None, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="commit")
        self._server: asyncio.AbstractServer | None = None
        self._committer: asyncio.Task | None = None
        self.commit_thread = self._thread  # a cluster log applies in it too: one thread writes the store
        self._connections: set[asyncio.StreamWriter] = set()
        self.committed_groups = 0
        self.committed_entries = 0
        self._lock_fd = -1
        self._standby: asyncio.Task | None = None

    async def start(self) -> None:
        """Listen now, or, while another writer serves the store, stand by and take over when it is gone."""
        _check_path(self.path)
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if self._take_lock():
            await self._listen()
        else:
            log.info("another writer serves %s; this one stands by", self.path, extra={"event": "writer_standby"})
            self._standby = asyncio.create_task(self._stand_by())

    @property
    def listening(self) -> bool:
        return self._server is not None

    def _take_lock(self) -> bool:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    async def _stand_by(self) -> None:
        while not self._take_lock():
            await asyncio.sleep(STANDBY_POLL_S)
        log.info("writer %d takes over on %s", os.getpid(), self.path, extra={"event": "writer_takeover"})
        await self._listen()

    async def _listen(self) -> None:
        try:
            self.path.unlink()  # left by a writer that died: the lock says nobody serves it
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)  # the socket is born 0600: no moment where others may connect
        try:
            self._server = await asyncio.start_unix_server(self._serve_connection, path=str(self.path))
        finally:
            os.umask(old_umask)
        self._committer = asyncio.create_task(self._commit_loop())

    async def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Stop taking connections, commit and answer what is queued (bounded), then close."""
        if self._standby is not None:
            self._standby.cancel()
        if self._server is None:  # stood by: nothing of the serving writer's to remove
            self._thread.shutdown(wait=True)
            os.close(self._lock_fd)
            return
        self._server.close()
        try:
            async with asyncio.timeout(wait_s):
                while self._queue or self._wake.is_set():
                    await asyncio.sleep(0.01)
        except TimeoutError:
            log.warning("writer stopping with %d requests unanswered", len(self._queue))
        if self._committer is not None:
            self._committer.cancel()
        for writer in list(self._connections):
            writer.close()
        self._thread.shutdown(wait=True)  # a commit in progress finishes: LMDB never sees half of one
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._lock_fd)  # after the socket is gone: a standby writer takes over from here

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        loop = asyncio.get_running_loop()
        try:
            while True:
                header = await reader.readexactly(HEADER_BYTES)
                body = await reader.readexactly(frame_length(header))
                request_id, entries, payloads = decode_request(body)
                future = loop.create_future()
                future.add_done_callback(lambda f, rid=request_id: self._answer(writer, rid, f))
                self._queue.append((entries, payloads, future))
                self._wake.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed: its pending answers go nowhere, their entries commit all the same
        except ProtocolError as exc:
            log.warning("writer: dropping a connection that does not speak its protocol: %s", exc)
        finally:
            self._connections.discard(writer)
            writer.close()

    def _answer(self, writer: asyncio.StreamWriter, request_id: int, future: asyncio.Future) -> None:
        if future.cancelled() or writer.is_closing():
            return
        writer.write(encode_answer(request_id, future.result()))

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            while self._queue:
                group, self._queue = self._queue[:MAX_GROUP_REQUESTS], self._queue[MAX_GROUP_REQUESTS:]
                entries = [entry for request in group for entry in request[0]]
                payloads = None
                if any(request[1] is not None for request in group):
                    payloads = [p for r in group for p in (r[1] if r[1] is not None else [None] * len(r[0]))]
                if isinstance(self.log, AsyncSubmitter):  # the cluster's log: publish, then wait for the apply
                    results = await self._submit_async(entries, payloads)
                else:
                    results = await loop.run_in_executor(self._thread, self._commit, entries, payloads)
                self.committed_groups += 1
                self.committed_entries += len(entries)
                start = 0
                for request_entries, _, future in group:
                    if not future.done():
                        future.set_result(results[start : start + len(request_entries)])
                    start += len(request_entries)
            self._wake.clear()

    async def _submit_async(self, entries: list[bytes], payloads: list[Any] | None) -> list[Result]:
        """A group through an async log; whatever goes wrong is every entry's result, never the end of the
        commit loop (which would leave every later write unanswered)."""
        try:
            return await self.log.submit_async(entries, payloads)  # type: ignore[union-attr]
        except Exception as exc:
            log.exception("writer: a group of %d entries could not be logged", len(entries),
                          extra={"event": "writer_commit_failed"})  # fmt: skip
            return [refusal(FAILED, f"the writer could not log the write: {exc!r}")] * len(entries)

    def _commit(self, entries: list[bytes], payloads: list[Any] | None) -> list[Result]:
        """Append, apply and commit one group (in the commit thread); a failure of the whole transaction is
        every entry's result, nothing of the group being stored."""
        try:
            return self.log.submit(entries, payloads)
        except StoreFullError as exc:
            return [refusal(STORE_FULL, str(exc))] * len(entries)
        except Exception as exc:
            log.exception("writer: a group of %d entries could not be committed", len(entries),
                          extra={"event": "writer_commit_failed"})  # fmt: skip
            return [refusal(FAILED, f"the writer could not commit: {exc!r}")] * len(entries)


async def _serve(config: ServeConfig, link: WorkerLink) -> None:
    store = Store(config.data_dir)  # read-write: the only one while the node serves; creates missing databases
    retention = Retention(config.log_retention_entries, config.log_retention_s)
    server = WriterServer(store, socket_path(config), retention)
    cluster = None
    if config.clustered:
        from resolver.cluster.setup import cluster_log  # nats-py is imported only by cluster members

        cluster = server.log = cluster_log(config, store, server.commit_thread)
    try:
        await server.start()
    except (WriterSetupError, OSError):
        store.close()
        raise
    if cluster is not None:
        cluster.start()
    # One prober per node: the enterprise nodes' GET_SITE_INFO probes (resolver/recursion/probe.py).
    prober = start_prober(config, store, server._thread)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    link.ready()
    log.info("writer %d %s %s (applied position %d)", os.getpid(),
             "ready on" if server.listening else "standing by for", server.path, store.applied_position(),
             extra={"event": "writer_ready"})  # fmt: skip
    try:
        while not stop.is_set():
            link.heartbeat()
            try:
                await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
            except TimeoutError:
                pass
    finally:
        if prober is not None:
            prober.cancel()
        await server.stop()
        if cluster is not None:
            await cluster.stop()
        store.close()


def run_writer(config: ServeConfig, link_fd: int | None = None) -> None:
    """Entry point of the writer process (forked by the supervisor): `link_fd` is its pipe to the supervisor."""
    _name_process()
    pin(parse_cpu_list(config.writer_cpus, "writer_cpus"))  # before any thread: the commit threads inherit it
    if config.writer_nice:
        os.nice(config.writer_nice)  # the workers' resolutions first; writes take what they leave
    uvloop.run(_serve(config, WorkerLink(link_fd)))
