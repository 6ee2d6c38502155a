"""Sending entries to the node's writer (resolver/writer/server.py) and waiting for their results.

- `WriterClient`: asyncio, for a serving worker: one connection multiplexed by request id, so every HTTP
  handler of the worker can wait on its own write. A write waits for a connection at most CONNECT_WAIT_S (a
  writer the supervisor is restarting is back well within it) and for its answer at most WRITE_TIMEOUT_S;
  then, or when the connection breaks before the answer, it raises WriterUnavailable: nothing hangs for
  ever. An unanswered write may or may not have been applied (like a lost HTTP answer): retry it.
- `SyncWriterClient`: blocking, for `idnode` commands and the loader's processes while a node serves the store.
- `ThreadBridge`: lets synchronous write code (storage's `put_identifier(target, ...)`) running in a thread
  submit through a worker's WriterClient on its event loop.

Both clients have `submit(entries, payloads=None) -> results`, the interface of storage.log.LocalLog.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from resolver.writer.protocol import (
    DEFAULT_SOCKET_NAME,
    HEADER_BYTES,
    ProtocolError,
    decode_answer,
    encode_request,
    frame_length,
)
from storage.entries import LogUnavailable, Result, WriterUnavailable  # noqa: F401  # callers catch them from here
from storage.store import Store

T = TypeVar("T")
WRITE_TIMEOUT_S = (
    30.0  #: a group commits in milliseconds, behind a bulk-load chunk in a second; beyond, it is stuck
)
CONNECT_WAIT_S = 10.0  #: the supervisor restarts a dead writer after 0.5-10 s of back-off; then it is down
CONNECT_RETRY_S = 0.05  #: between attempts to reach a writer that is not (yet) listening
SYNC_TIMEOUT_S = 600.0  #: a command waits this long for one answer (a load chunk behind many others)
_LENGTH = struct.Struct(">I")


class WriterClient:
    def __init__(
        self, path: str | Path, timeout_s: float = WRITE_TIMEOUT_S, connect_wait_s: float = CONNECT_WAIT_S
    ):
        self.path = str(path)
        self.timeout_s = timeout_s
        self.connect_wait_s = connect_wait_s
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task | None = None
        self._connecting = asyncio.Lock()

    async def submit(self, entries: Sequence[bytes], payloads: Sequence[Any] | None = None) -> list[Result]:
        """The results of `entries`, once the writer has applied and committed them; WriterUnavailable when it
        cannot be reached within CONNECT_WAIT_S or does not answer within the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        writer = await self._connection(min(deadline, loop.time() + self.connect_wait_s))
        request_id = next(self._ids)
        future = loop.create_future()
        self._pending[request_id] = future
        try:
            writer.write(
                encode_request(request_id, list(entries), None if payloads is None else list(payloads))
            )
            async with asyncio.timeout_at(deadline):
                return await future
        except TimeoutError:
            raise WriterUnavailable(
                f"writer unavailable, retry: no answer within {self.timeout_s:g} s (the write may have been applied)"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    async def _connection(self, deadline: float) -> asyncio.StreamWriter:
        async with self._connecting:
            loop = asyncio.get_running_loop()
            while self._writer is None or self._writer.is_closing():
                try:
                    reader, self._writer = await asyncio.open_unix_connection(self.path)
                except OSError as exc:
                    if loop.time() + CONNECT_RETRY_S > deadline:
                        raise WriterUnavailable(
                            f"writer unavailable, retry: {self.path}: {exc.strerror or exc}"
                        ) from None
                    await asyncio.sleep(CONNECT_RETRY_S)
                    continue
                self._reading = asyncio.create_task(self._read_answers(reader, self._writer))
            return self._writer

    async def _read_answers(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        why = "the writer closed the connection"
        try:
            while True:
                header = await reader.readexactly(HEADER_BYTES)
                request_id, results = decode_answer(await reader.readexactly(frame_length(header)))
                future = self._pending.get(request_id)
                if future is not None and not future.done():
                    future.set_result(results)
        except (asyncio.IncompleteReadError, ConnectionError, ProtocolError) as exc:
            why = f"{why}: {exc}" if isinstance(exc, ProtocolError) else why
        finally:
            writer.close()
            if self._writer is writer:
                self._writer = None
            for future in list(self._pending.values()):
                if not future.done():
                    future.set_exception(WriterUnavailable(
                        f"writer unavailable, retry: {why} before answering (the write may have been applied)"
                    ))  # fmt: skip

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reading is not None:
            self._reading.cancel()
            try:
                await self._reading
            except asyncio.CancelledError:
                pass


class SyncWriterClient:
    """One request at a time over a blocking socket (an `idnode` command, a load process)."""

    def __init__(self, path: str | Path, timeout_s: float = SYNC_TIMEOUT_S):
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(self.path)
        except OSError as exc:
            self._sock.close()
            raise WriterUnavailable(f"writer unavailable: {self.path}: {exc.strerror or exc}") from None
        self._ids = itertools.count(1)

    def submit(self, entries: Sequence[bytes], payloads: Sequence[Any] | None = None) -> list[Result]:
        request_id = next(self._ids)
        try:
            self._sock.sendall(
                encode_request(request_id, list(entries), None if payloads is None else list(payloads))
            )
            answer_id, results = decode_answer(self._read(frame_length(self._read(HEADER_BYTES))))
        except (OSError, ProtocolError) as exc:
            raise WriterUnavailable(f"writer unavailable: {exc} (the write may have been applied)") from None
        if answer_id != request_id:
            raise WriterUnavailable(f"writer answered request {answer_id}, not {request_id}")
        return results

    def _read(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = self._sock.recv(min(n - got, 1 << 20))
            if not chunk:
                raise ConnectionError("the writer closed the connection")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SyncWriterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def writer_listening(path: str | Path) -> bool:
    """Whether a writer takes connections at `path` (a node serves the store)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def socket_for(data_dir: Path, config: Path | None = None) -> Path:
    """The writer's socket of the store in `data_dir`, as a command finds it: $IDNODE_WRITER_SOCKET, else
    `writer_socket` of the configuration file `config`, else writer.sock in the data directory."""
    from resolver import settings

    named = settings.node_setting("writer_socket", config)
    return Path(named) if named else Path(data_dir) / DEFAULT_SOCKET_NAME


@contextlib.contextmanager
def open_for_writes(
    data_dir: Path, socket_path: Path | None = None, **store_kwargs: Any
) -> Iterator[tuple[Store, Any]]:
    """(store, target) for a command that writes: while a node's writer serves the store, the writer's client
    (and the store opened read-only, for reads); else the store opened read-write, which appends and applies
    its entries itself (storage/log.py). `store_kwargs`: Store's `create`, `case_sensitive`."""
    data_dir = Path(data_dir)
    path = socket_path or data_dir / DEFAULT_SOCKET_NAME
    if (data_dir / "data.mdb").exists() and writer_listening(path):
        client = SyncWriterClient(path)
        try:
            with Store(data_dir, readonly=True) as store:
                yield store, client
        finally:
            client.close()
    else:
        with Store(data_dir, **store_kwargs) as store:
            yield store, store


def loader_submitter(path: str, store: Store) -> SyncWriterClient:
    """The loader's `submitter` while a node serves the store (module level: its processes are spawned)."""
    return SyncWriterClient(path)


class ThreadBridge:
    """`submit` for synchronous code in another thread, through a WriterClient on the loop `loop`."""

    def __init__(self, client: WriterClient, loop: asyncio.AbstractEventLoop):
        self.client = client
        self.loop = loop

    def submit(self, entries: Sequence[bytes], payloads: Sequence[Any] | None = None) -> list[Result]:
        return asyncio.run_coroutine_threadsafe(self.client.submit(entries, payloads), self.loop).result()


class WorkerWrites:
    """How a serving worker writes: a storage write function (`put_identifier`, `add_prefix`, ...) runs in a
    thread of its own pool with the target it builds its entry for and submits it to — the node's writer
    (through a ThreadBridge on the worker's loop), or, with no writer, the store itself. The HTTP API and the
    Handle administration both write this way."""

    def __init__(self, store: Store, writer: WriterClient | None, threads: int, name: str):
        self.store = store
        self.writer = writer
        self.threads = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._target: Any = None

    def use(self, writer: WriterClient | None) -> None:
        """Write through `writer` from now on (the owner's writer was replaced)."""
        if writer is not self.writer:
            self.writer, self._target = writer, None

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(target, *args, **kwargs)` in a write thread: its result, or its refusal raised;
        WriterUnavailable when the writer cannot take the write."""
        loop = asyncio.get_running_loop()
        if self._target is None:
            self._target = self.store if self.writer is None else ThreadBridge(self.writer, loop)
        return await loop.run_in_executor(self.threads, functools.partial(fn, self._target, *args, **kwargs))

    def close(self) -> None:
        self.threads.shutdown(wait=False)
