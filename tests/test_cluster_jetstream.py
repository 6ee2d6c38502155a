"""The JetStream log against a real three-server NATS cluster on loopback: order, exactly-once apply, faults."""

from __future__ import annotations

import asyncio

import pytest

from resolver.cluster.jetstream import ClusterLogError, JetStreamLog, StreamSettings, subject_for
from tests.nats_cluster import nats_cluster, require_nats_server

pytestmark = pytest.mark.slow
TEST_DEADLINE_S = 120.0  #: a test that has not finished by then has hung on NATS: fail, never block CI


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_nats_server()
    with nats_cluster(tmp_path_factory.mktemp("nats")) as running:
        yield running


def test_subjects_name_the_prefix_and_cannot_be_wildcards():
    assert subject_for("88.100.7") == "idnode.log.88.100.7"
    assert subject_for(None) == "idnode.log._node"
    assert subject_for("88.*.>") == "idnode.log.88._._"


class Applier:
    """A stand-in store: the applied position and the entries, kept as the writer keeps them."""

    def __init__(self, applied: int = 0):
        self.applied = applied
        self.entries: list[tuple[int, bytes]] = []

    async def apply(self, batch):
        assert batch[0][0] == self.applied + 1
        self.entries.extend((position, data) for position, data, _ in batch)
        self.applied = batch[-1][0]


async def consume_until(log: JetStreamLog, applier: Applier, position: int, timeout_s: float = 10.0):
    task = asyncio.create_task(log.consume(lambda: applier.applied, applier.apply))
    try:
        async with asyncio.timeout(timeout_s):
            while applier.applied < position:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_entries_are_applied_in_order_once_by_every_member(cluster, tmp_path):
    async def run():
        settings = StreamSettings(tuple(cluster.urls), stream="ORDER", subject_root="order")
        writer, member = JetStreamLog(settings, "a"), JetStreamLog(settings, "b")
        await writer.connect()
        await member.connect()
        positions = await writer.append([("88.100.1", b"e%d" % i, f"id-{i}") for i in range(50)])
        assert positions == list(range(positions[0], positions[0] + 50))
        first = Applier()
        await consume_until(member, first, positions[-1])
        assert [data for _, data in first.entries] == [b"e%d" % i for i in range(50)]
        # a member that restarts after applying 20 (its durable consumer acked more) resumes at 21
        again = Applier(applied=positions[19])
        await consume_until(member, again, positions[-1])
        assert [data for _, data in again.entries] == [b"e%d" % i for i in range(20, 50)]
        await writer.close()
        await member.close()

    asyncio.run(asyncio.wait_for(run(), TEST_DEADLINE_S))


def test_a_write_survives_the_loss_of_one_nats_server(cluster):
    async def run():
        settings = StreamSettings(tuple(cluster.urls), stream="FAULT", subject_root="fault")
        writer = JetStreamLog(settings, "a")
        await writer.connect()
        before = await writer.append([("88.100.2", b"before", "before")])
        cluster.servers[0].kill()
        try:
            after = await writer.append([("88.100.2", b"after", "after")])
            assert after[0] == before[0] + 1
            assert await writer.last_position() == after[0]
        finally:
            cluster.restart(cluster.servers[0])
            await writer.close()

    asyncio.run(asyncio.wait_for(run(), TEST_DEADLINE_S))


def test_unreachable_nats_is_a_clear_error():
    async def run():
        log = JetStreamLog(StreamSettings(("nats://127.0.0.1:1",)), "a")
        with pytest.raises(ClusterLogError, match="NATS unreachable"):
            await log.connect()
        with pytest.raises(ClusterLogError, match="not connected"):
            await log.append([(None, b"x", "x")])

    asyncio.run(asyncio.wait_for(run(), TEST_DEADLINE_S))
