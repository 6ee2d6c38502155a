"""kill -9 of a NATS server and of an idnode member during a stream of writes (issue 12, item 6), on a cluster
of its own: 3 NATS servers and 3 members that nothing else has touched."""

from __future__ import annotations

import threading

import pytest

from tests.servers import wait_until
from tests.test_cluster_nodes import CATCH_UP_S, ent7, members, nats, put  # noqa: F401, F811  # fixtures too

pytestmark = pytest.mark.slow


def test_kill_9_of_a_nats_server_and_of_a_member_during_writes_loses_no_acknowledged_write(
    nats,  # noqa: F811  # the fixtures imported above
    members,  # noqa: F811
    ent7,  # noqa: F811
):
    a, b, c = members
    acknowledged: list[str] = []
    stop = threading.Event()

    def write_stream():
        n = 0
        while not stop.is_set():
            handle = f"88.100.7/STREAM-{n:05d}"
            target = a if n % 2 else c
            try:
                if put(target, handle, f"https://example.com/s{n}", ent7) == 201:
                    acknowledged.append(handle)
            except OSError:
                pass  # a refused or reset connection is no acknowledgement
            n += 1

    writer = threading.Thread(target=write_stream, daemon=True)
    writer.start()
    try:
        wait_until(lambda: len(acknowledged) >= 20, "writes flow")
        nats.servers[0].kill()
        b.kill()
        count = len(acknowledged)
        wait_until(
            lambda: len(acknowledged) >= count + 20, "writes go on without one NATS server and member b"
        )
    finally:
        stop.set()
        writer.join(30)
    nats.restart(nats.servers[0])
    b.start()
    for member in members:
        wait_until(lambda m=member: m.get(acknowledged[-1]).status == 200, f"{member.name} has the last write",
                   timeout_s=CATCH_UP_S)  # fmt: skip
        missing = [handle for handle in acknowledged if member.get(handle).status != 200]
        assert missing == [], f"member {member.name} lost acknowledged writes"
