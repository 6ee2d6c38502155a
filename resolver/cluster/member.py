"""A cluster member's write log: what the node's writer uses instead of the embedded log when `cluster.nats`
is set (resolver/writer/server.py).

Taking a write: the entries of a group are checked (a bad one is refused before the log), given message ids,
and published to the JetStream stream (resolver/cluster/jetstream.py); each is answered once JetStream's quorum
has it AND this node's apply loop has applied it, with the result the apply gave. That is the cluster's
read-your-writes: the worker that asked sees its write at once, the other members within their apply lag.

Applying: one loop consumes the stream in order and applies each batch of entries into this node's store in one
LMDB transaction with the applied position (storage/apply.py), in the writer's commit thread, so it is
exactly-once however the process dies. An entry this node cannot apply (a kind it does not know, an apply that
raises) stops the loop there with a clear error, everything before it applied and nothing of it: the node keeps
serving what it holds and refuses writes until an operator upgrades it or restores a store.

NATS away (at start or later): the node serves reads from its store and refuses writes with LogUnavailable
("cluster log unreachable"), reconnecting by itself; writes are taken again as soon as NATS answers.

A load chunk logged by reference (the embedded log's shortcut, storage/loader.py) names a file only this
machine has, so its records are put into the entry before it is published: every member gets them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from resolver.cluster.jetstream import ClusterLogError, JetStreamLog, LogGapError
from resolver.cluster.status import CONNECTING, READY, STATUS_FILE, STOPPED, write_status
from storage import entries
from storage.apply import ApplyError, EntryFailed, apply_batch_in
from storage.entries import (
    BAD_ENTRY,
    FAILED,
    LOG_UNAVAILABLE,
    EntryError,
    Result,
    decode_entry,
    encode_entry,
    entry_prefix,
    refusal,
)
from storage.members import Member, join_cluster, member_entry_args, members
from storage.store import Store, StoreFullError

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD = 1 << 20  #: NATS's default max_payload, until the server says its own
PART_FILL = 0.9  #: a load chunk's parts fill at most this share of a message (framing, headers)
APPLY_WAIT_S = 25.0  #: a logged write waits this long for the local apply (the client gives up at 30 s)
CONNECT_RETRY_S = 1.0  #: NATS unreachable at start: try again this often (reads are served meanwhile)
STORE_FULL_RETRY_S = 5.0  #: the disk is full: the apply loop waits, then tries the same batch again
STATUS_INTERVAL_S = 1.0  #: the member's state (applied position, lag) is written this often


class ApplyStopped(Exception):
    """The apply loop stopped at an entry this node cannot apply; the message says which and why."""


class ClusterLog:
    """The writer's log in cluster mode: `submit_async` takes a group, `run` keeps the member applying."""

    def __init__(self, store: Store, stream: JetStreamLog, me: Member, commit: concurrent.futures.Executor):
        self.store = store
        self.stream = stream
        self.me = me
        self._commit = commit
        self.state = CONNECTING
        self.problem = ""  #: why the member is not READY (NATS unreachable, apply stopped)
        self.stream_last = 0  #: the stream's last position when last asked (for the lag)
        self._waiting: dict[str, asyncio.Future] = {}  # message id -> the result of our entry, once applied
        self._task: asyncio.Task | None = None
        self._status_path = store.path / STATUS_FILE

    # -- running ------------------------------------------------------------------------------------------

    def start(self) -> None:
        join_cluster(self.store, self.me.node)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self.stream.close()

    async def _run(self) -> None:
        status = asyncio.create_task(self._report_status())
        try:
            await self._connect()
            announce = asyncio.create_task(self._announce())
            try:
                await self.stream.consume(self.store.applied_position, self._apply)
            finally:
                announce.cancel()
        except (ApplyStopped, LogGapError) as stopped:
            self.state, self.problem = STOPPED, str(stopped)
            log.error("cluster member %s stopped applying the log: %s", self.me.node, stopped,
                      extra={"event": "cluster_apply_stopped"})  # fmt: skip
            self._fail_waiting(refusal(FAILED, f"this node stopped applying the cluster's log: {stopped}"))
            await self._write_status()
            await asyncio.Future()  # stays stopped (serving reads) until the operator acts
        finally:
            status.cancel()

    async def _connect(self) -> None:
        warned = False
        while True:
            try:
                await self.stream.connect()
                break
            except ClusterLogError as error:
                self.problem = str(error)
                if not warned:
                    log.warning("cluster log unreachable, reads are served and writes refused until it answers: %s",
                                error, extra={"event": "cluster_log_unreachable"})  # fmt: skip
                    warned = True
                await asyncio.sleep(CONNECT_RETRY_S)
        self.state, self.problem = READY, ""
        log.info("cluster member %s connected to its log (applied position %d)", self.me.node,
                 self.store.applied_position(), extra={"event": "cluster_connected"})  # fmt: skip

    async def _announce(self) -> None:
        """Publish this member's record (address, ports) when the cluster's copy differs: every member's
        HS_SITE then lists it."""
        known = {member.node: member for member in members(self.store)}
        mine = known.get(self.me.node)
        if mine is not None and {**member_entry_args(mine), "joined_s": 0} == {**member_entry_args(self.me),
                                                                              "joined_s": 0}:  # fmt: skip
            return
        joined = mine.joined_s if mine is not None else int(time.time())
        entry = encode_entry(entries.SET_MEMBER, {**member_entry_args(self.me), "joined_s": joined})
        while True:
            result = (await self.submit_async([entry]))[0]
            if result[0] == entries.OK:
                return
            await asyncio.sleep(CONNECT_RETRY_S)

    # -- taking writes ------------------------------------------------------------------------------------

    async def submit_async(
        self, group: Sequence[bytes], payloads: Sequence[Any] | None = None
    ) -> list[Result]:
        """The result of every entry of a group, in order, each once logged and applied here."""
        out: list[Result | None] = [None] * len(group)
        parts: dict[int, list[tuple[str | None, bytes, str]]] = {}  # entry -> what is published for it
        limit = self.stream.max_payload or DEFAULT_MAX_PAYLOAD
        for n, entry in enumerate(group):
            try:
                published = replicable(entry, payloads[n] if payloads else None, limit)
            except EntryError as exc:
                out[n] = refusal(BAD_ENTRY, str(exc))
                continue
            prefix = entry_prefix(entry)
            parts[n] = [(prefix, part, secrets.token_hex(12)) for part in published]
        if not parts:
            return out  # type: ignore[return-value]
        if self.state == STOPPED:
            return self._refuse_all(
                out, parts, refusal(FAILED, f"this node stopped applying: {self.problem}")
            )
        if not self.stream.connected:
            why = f"cluster log unreachable ({self.problem or 'NATS not connected'}): retry"
            return self._refuse_all(out, parts, refusal(LOG_UNAVAILABLE, why))
        loop = asyncio.get_running_loop()
        futures = {msg_id: loop.create_future() for published in parts.values() for _, _, msg_id in published}
        self._waiting.update(futures)
        try:
            try:
                positions = await self.stream.append(
                    [part for published in parts.values() for part in published]
                )
            except ClusterLogError as error:
                return self._refuse_all(out, parts, refusal(LOG_UNAVAILABLE, f"{error}: retry"))
            at = iter(positions)
            for n, published in parts.items():
                results = [await self._applied(futures[msg_id], next(at)) for _, _, msg_id in published]
                out[n] = results[0] if len(results) == 1 else _joined(results)
            return out  # type: ignore[return-value]
        finally:
            for msg_id in futures:
                self._waiting.pop(msg_id, None)

    @staticmethod
    async def _applied(future: asyncio.Future, position: int) -> Result:
        try:
            return await asyncio.wait_for(asyncio.shield(future), APPLY_WAIT_S)
        except TimeoutError:
            return refusal(FAILED, f"the write is in the cluster's log (position {position}) but this node has "
                                   "not applied it yet; it will be: read it back later")  # fmt: skip

    @staticmethod
    def _refuse_all(out: list, parts: dict, result: Result) -> list[Result]:
        for n in parts:
            out[n] = result
        return out

    def _fail_waiting(self, result: Result) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_result(result)

    # -- applying -----------------------------------------------------------------------------------------

    async def _apply(self, batch: list[tuple[int, bytes, str]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                results = await loop.run_in_executor(self._commit, self._apply_in_store, batch)
                break
            except StoreFullError as exc:
                self.problem = f"disk full, applying waits: {exc}"
                log.error(
                    "cluster member %s cannot apply: %s", self.me.node, exc, extra={"event": "store_full"}
                )
                await asyncio.sleep(STORE_FULL_RETRY_S)
        self.problem = ""
        for (_, _, msg_id), result in zip(batch, results, strict=True):
            future = self._waiting.get(msg_id)
            if future is not None and not future.done() and result is not None:
                future.set_result(result)

    def _apply_in_store(self, batch: list[tuple[int, bytes, str]]) -> list[Result | None]:
        """Apply a batch in one transaction; when one entry cannot be applied, apply the ones before it and
        stop at it (ApplyStopped), nothing of it stored."""
        items = [(position, entry) for position, entry, _ in batch]
        try:
            return self.store.write(lambda txn: apply_batch_in(self.store, txn, items))
        except (ApplyError, EntryFailed):
            pass
        results: list[Result | None] = []
        for item in items:
            try:
                results += self.store.write(lambda txn, i=item: apply_batch_in(self.store, txn, [i]))
            except (ApplyError, EntryFailed) as exc:
                cause = exc.cause if isinstance(exc, EntryFailed) else exc
                raise ApplyStopped(
                    f"the entry at log position {item[0]} cannot be applied here: {cause}"
                ) from exc
        return results

    # -- status -------------------------------------------------------------------------------------------

    async def _report_status(self) -> None:
        while True:
            try:
                if self.stream.connected:
                    self.stream_last = await self.stream.last_position()
            except (
                ClusterLogError,
                TimeoutError,
                Exception,
            ) as error:  # a status pass never stops the member
                log.debug("cluster status: %s", error)
            await self._write_status()
            await asyncio.sleep(STATUS_INTERVAL_S)

    def status(self) -> dict:
        applied = self.store.applied_position()
        state = STOPPED if self.state == STOPPED else READY if self.stream.connected else CONNECTING
        return {
            "node": self.me.node,
            "state": state,
            "problem": self.problem,
            "applied": applied,
            "stream_last": self.stream_last,
            "lag": max(0, self.stream_last - applied),
            "time": time.time(),
        }

    async def _write_status(self) -> None:
        """The status file (atomic replace): workers export it in /metrics, `idnode cluster status` reads it."""
        await asyncio.get_running_loop().run_in_executor(None, write_status, self._status_path, self.status())


def replicable(entry: bytes, payload: Any, limit: int) -> list[bytes]:
    """The entry as every member can apply it, in parts the log takes (each at most `limit` bytes).

    A load chunk logged by reference (a file only this machine has) gets its records in, cut into parts when
    they are too many for one message; only the last part carries the chunk's checkpoint, so a load that
    stops between parts resumes at the chunk's start (records are replaced whole: a part applied twice is
    harmless). Any other entry larger than `limit` is refused (EntryError)."""
    kind, args = decode_entry(entry)
    if kind == entries.LOAD_CHUNK and "ref" in args:
        if payload is None:
            raise EntryError("a load chunk logged by reference came without its records")
        items, shared = payload
        base = {key: value for key, value in args.items() if key != "ref"}
        return _load_parts(base, [list(item) for item in items], shared, limit)
    if len(entry) > limit:
        raise EntryError(f"a write of {len(entry)} bytes is larger than the cluster log takes ({limit} bytes, "
                         "NATS max_payload): send it in smaller parts")  # fmt: skip
    return [entry]


def _load_parts(base: dict, items: list, shared: dict, limit: int) -> list[bytes]:
    budget = int(limit * PART_FILL) - len(
        encode_entry(entries.LOAD_CHUNK, {**base, "items": [], "shared": {}})
    )
    groups: list[list] = [[]]
    size = sum(len(k) + len(v) + 8 for k, v in shared.items())
    for item in items:
        item_size = len(item[0]) + len(item[1]) + 8
        if groups[-1] and size + item_size > budget:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item_size
    parts = []
    for n, chunk in enumerate(groups):
        args = {**base, "items": chunk, "shared": shared if n == 0 else {}, "count": len(chunk)}
        if n < len(groups) - 1:
            args["checkpoint"] = None  # the chunk is done only with its last part
        part = encode_entry(entries.LOAD_CHUNK, args)
        if len(part) > limit:
            raise EntryError(f"one record of the load is larger than the cluster log takes ({limit} bytes)")
        parts.append(part)
    return parts


def _joined(results: list[Result]) -> Result:
    """One result for an entry published in parts: the first refusal, else the sum of the parts' values."""
    for result in results:
        if result[0] != entries.OK:
            return result
    return [entries.OK, sum(result[1] or 0 for result in results)]
