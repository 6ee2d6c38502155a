"""The cluster's write log as a NATS JetStream stream: append entries, consume them in order.

Cluster mode replaces the embedded log's local append with this: an entry is published to the stream (file
storage, three replicas) and is part of the log once JetStream's quorum has acknowledged it; its stream
sequence is its log position on every member. Every member consumes the whole stream in order through its own
durable consumer and applies each entry into its own store (the apply itself is the writer's business, not
this module's). Imports no lmdb: positions come in and go out as integers.

Why one subject per prefix (``idnode.log.<prefix>``): an operator can see and mirror one enterprise's writes
with the standard `nats` tools; node-wide entries (counters, the operator secret) go to ``idnode.log._node``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import nats
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

STREAM_NAME = "IDNODE_LOG"
SUBJECT_ROOT = "idnode.log"
DEFAULT_REPLICAS = 3  #: survives the loss of one NATS server with a quorum of two
DEFAULT_RETENTION_S = 7 * 86400  #: how long entries stay for catching-up members, IXFR and new nodes
PUBLISH_TIMEOUT_S = 5.0  #: one quorum ack; beyond this the cluster is not answering and the write is refused
PUBLISH_DEADLINE_S = (
    10.0  #: retried with the same message id (the duplicate window drops a repeat) until then
)
APPEND_DEADLINE_S = 20.0  #: a group not in the log by then is refused (the writer's client waits 30 s in all)
#: entries pulled per round trip, applied in one transaction: a load part is up to max_payload (1-8 MB), so
#: this bounds a catching-up member's memory
FETCH_BATCH = 64
FETCH_WAIT_S = 1.0  #: a fetch waits this long for new entries before the loop looks around again
ACK_WAIT_S = 60.0  #: an entry fetched, not acknowledged (its member died mid-apply) is redelivered after this
CONNECT_DEADLINE_S = 5.0  #: a first connection that has not succeeded by then is reported as unreachable
CLOSE_DEADLINE_S = 5.0  #: closing the connection gives up after this
RECONNECT_WAIT_S = 1.0  #: between attempts to reach NATS; the node keeps serving reads meanwhile


class ClusterLogError(Exception):
    """The cluster's log (NATS JetStream) cannot take the write now."""


class LogGapError(ClusterLogError):
    """The stream no longer holds the entries this member must apply next: restore a recent backup."""


@dataclass(frozen=True, slots=True)
class StreamSettings:
    servers: tuple[str, ...]
    replicas: int = DEFAULT_REPLICAS
    retention_s: float = DEFAULT_RETENTION_S
    stream: str = STREAM_NAME
    subject_root: str = ""  #: default: subject_root_of(stream)

    def __post_init__(self) -> None:
        if not self.subject_root:
            object.__setattr__(self, "subject_root", subject_root_of(self.stream))


def subject_root_of(stream: str) -> str:
    """The subjects a stream takes: `idnode.log.>` for the default one; another stream (a second cluster on
    the same NATS servers) gets a root of its own, since two streams may not share subjects."""
    return SUBJECT_ROOT if stream == STREAM_NAME else f"idnode_{stream.lower()}.log"


def subject_for(prefix: str | None, root: str = SUBJECT_ROOT) -> str:
    """The subject an entry goes to: its prefix's, or the node-wide one (wildcard characters made plain)."""
    tokens = [token for token in (prefix or "").replace("*", "_").replace(">", "_").split(".") if token]
    return ".".join([root, *tokens]) if tokens else f"{root}._node"


MSG_ID = "Nats-Msg-Id"  #: JetStream's de-duplication header; also how a member finds its own entries
ApplyBatch = Callable[[list[tuple[int, bytes, str]]], Awaitable[None]]


def durable_name(node_id: str) -> str:
    """The durable consumer of a member: its acknowledged floor is the position the member has applied."""
    return f"idnode-{node_id}"


class JetStreamLog:
    """One member's connection to the replicated log: publish entries, consume the stream in order."""

    def __init__(self, settings: StreamSettings, node_id: str):
        self.settings = settings
        self.node_id = node_id
        self.durable = durable_name(node_id)
        self._nc: nats.NATS | None = None
        self._js = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self) -> None:
        """Connect and make sure the stream exists; raises ClusterLogError when NATS cannot be reached.

        The connection is kept (and `connected` true) only once the stream is there: a write that came
        in between would otherwise be published on a connection that is then closed under it."""
        try:
            # nats-py retries an unreachable first connection as it would a lost one (forever, with
            # max_reconnect_attempts=-1): a deadline of our own turns that into an answer
            nc = await asyncio.wait_for(self._open(), CONNECT_DEADLINE_S)
        except (TimeoutError, NatsError, OSError) as error:
            servers = ", ".join(self.settings.servers)
            raise ClusterLogError(f"NATS unreachable at {servers}: {error!r}") from error
        js = nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
        try:
            await self._ensure_stream(js)
        except (TimeoutError, NatsError) as error:
            await _close_bounded(nc)
            raise ClusterLogError(
                f"the stream {self.settings.stream} cannot be found or made: {error!r}"
            ) from error
        self._nc, self._js = nc, js

    async def _open(self) -> nats.NATS:
        return await nats.connect(
            list(self.settings.servers),
            name=f"idnode {self.node_id}",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_S,
            connect_timeout=2,
            error_cb=self._on_error,
        )

    async def _on_error(self, error: Exception) -> None:
        log.debug("NATS connection: %s", error)

    async def _ensure_stream(self, js) -> None:
        config = StreamConfig(
            name=self.settings.stream,
            subjects=[f"{self.settings.subject_root}.>"],
            storage=StorageType.FILE,
            num_replicas=self.settings.replicas,
            max_age=self.settings.retention_s,
        )
        try:
            await js.stream_info(self.settings.stream)
        except NotFoundError:
            await js.add_stream(config)

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            await _close_bounded(nc)

    async def append(self, entries: Sequence[tuple[str | None, bytes, str]]) -> list[int]:
        """Publish entries (prefix, payload, message id); their positions once the quorum has them, in order.

        The entries go out pipelined, in order, on one connection, so the stream keeps their order; an entry
        whose acknowledgement does not come is published again with the same message id (the stream's
        duplicate window keeps it once) until PUBLISH_DEADLINE_S. ClusterLogError when the log cannot take
        them; entries acknowledged before the failure stay in the log."""
        js = self._js  # this append's own: a close meanwhile fails its publishes, it does not pull it away
        if js is None or not self.connected:
            raise ClusterLogError(
                "not connected to NATS: writes are refused until the cluster log is reachable"
            )
        try:
            async with asyncio.timeout(APPEND_DEADLINE_S):
                return await self._append(js, entries)
        except TimeoutError as error:
            raise ClusterLogError(
                f"the cluster log did not take the write in {APPEND_DEADLINE_S:.0f} s"
            ) from error

    async def _append(self, js, entries: Sequence[tuple[str | None, bytes, str]]) -> list[int]:
        root = self.settings.subject_root
        pending = []
        try:
            for prefix, payload, msg_id in entries:
                future = await js.publish_async(
                    subject_for(prefix, root), payload, wait_stall=PUBLISH_TIMEOUT_S, headers={MSG_ID: msg_id}
                )
                pending.append(future)
        except (TimeoutError, NatsError) as error:
            for future in pending:
                future.cancel()
            raise ClusterLogError(f"the cluster log did not take the write: {error!r}") from error
        positions = []
        for future, (prefix, payload, msg_id) in zip(pending, entries, strict=True):
            try:
                ack = await asyncio.wait_for(future, PUBLISH_TIMEOUT_S)
                positions.append(ack.seq)
            except (TimeoutError, NatsError):
                positions.append(await self._publish_again(js, subject_for(prefix, root), payload, msg_id))
        return positions

    async def _publish_again(self, js, subject: str, payload: bytes, msg_id: str) -> int:
        last_error: Exception | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_DEADLINE_S
        while loop.time() < deadline:
            try:
                ack = await js.publish(subject, payload, headers={MSG_ID: msg_id})
                return ack.seq
            except (TimeoutError, NatsError) as error:
                last_error = error
                await asyncio.sleep(RECONNECT_WAIT_S / 4)
        raise ClusterLogError(f"the cluster log did not acknowledge the write: {last_error!r}")

    @property
    def max_payload(self) -> int:
        """The largest message the NATS servers take (their `max_payload`, 1 MiB unless configured)."""
        return self._nc.max_payload if self._nc is not None else 0

    async def last_position(self) -> int:
        """The stream's last sequence: the position every member will reach."""
        if self._js is None:
            raise ClusterLogError("not connected to NATS")
        info = await self._js.stream_info(self.settings.stream)
        return info.state.last_seq

    async def consumers(self) -> list:
        """ConsumerInfo of every consumer of the stream (each member's durable one among them)."""
        if self._js is None:
            raise ClusterLogError("not connected to NATS")
        return await self._js.consumers_info(self.settings.stream)

    async def delete_consumer(self, name: str) -> None:
        """Delete a durable consumer of the stream (NotFoundError when there is none)."""
        if self._js is None:
            raise ClusterLogError("not connected to NATS")
        await self._js.delete_consumer(self.settings.stream, name)

    async def first_position(self) -> int:
        if self._js is None:
            raise ClusterLogError("not connected to NATS")
        info = await self._js.stream_info(self.settings.stream)
        return info.state.first_seq

    async def _subscription(self, applied: int):
        """This member's durable consumer, made anew to start right after what its store has applied.

        The store's applied position is the truth (it commits with the changes); the consumer's own state may
        be behind it (a crash between apply and ack), ahead of it (the store was restored from an older
        backup) or hold entries delivered to a process that died (redelivered only after ACK_WAIT_S), so it
        is never trusted: it is replaced at the store's position whenever the member (re)starts consuming."""
        try:
            await self._js.delete_consumer(self.settings.stream, self.durable)
        except NotFoundError:
            pass
        config = ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=applied + 1,
            ack_policy=AckPolicy.ALL,
            ack_wait=ACK_WAIT_S,
            max_ack_pending=-1,
        )
        return await self._js.pull_subscribe(
            f"{self.settings.subject_root}.>",
            durable=self.durable,
            stream=self.settings.stream,
            config=config,
        )

    async def consume(self, applied_position: Callable[[], int], apply_batch: ApplyBatch) -> None:
        """Apply the stream in order, forever: fetch a batch, hand it over as (position, entry, message id),
        acknowledge it once applied.

        Entries at or below the applied position are acknowledged and skipped. An entry out of order (a
        redelivery) makes the consumer start again at the applied position; LogGapError when the stream no
        longer holds the entries this member needs."""
        subscription = await self._subscription(applied_position())
        while True:
            try:
                messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_WAIT_S)
            except TimeoutError:
                continue
            except NatsError as error:
                log.debug("fetch: %s", error)
                await asyncio.sleep(RECONNECT_WAIT_S)
                continue
            applied = applied_position()
            batch = []
            for message in messages:
                position = message.metadata.sequence.stream
                if position <= applied + len(batch):
                    continue
                if position != applied + 1 + len(batch):
                    break
                batch.append((position, message.data, (message.headers or {}).get(MSG_ID, "")))
            if batch:
                await apply_batch(batch)
            if len(batch) < len([m for m in messages if m.metadata.sequence.stream > applied]):
                subscription = await self._restart_after_gap(subscription, applied_position())
            elif messages:
                await messages[-1].ack()

    async def _restart_after_gap(self, subscription, applied: int):
        first = await self.first_position()
        if first > applied + 1:
            raise LogGapError(
                f"the log now starts at position {first}, after {applied + 1}, the next this member must apply: "
                "entries were trimmed before it applied them; restore a recent backup of another member"
            )
        log.info("cluster log: entries out of order after position %d; consuming again from there", applied)
        await subscription.unsubscribe()
        return await self._subscription(applied)


async def _close_bounded(nc: nats.NATS) -> None:
    try:
        # bounded: nats-py's close flushes and drains, which can wait on a connection in reconnect
        await asyncio.wait_for(nc.close(), CLOSE_DEADLINE_S)
    except Exception:  # closing a half-open connection; nothing to keep
        pass
