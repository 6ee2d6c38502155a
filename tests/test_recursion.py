"""Recursion to enterprise nodes and their probing, over real sockets: a second `idnode serve` on loopback is
the enterprise node of prefix 88.100.7; another prefix points at a dead node (sockets bound that never
answer); a third is referred by the node to itself (a loop). Checked: REC requests answered with the
enterprise node's values over UDP and TCP (signed when CT asks), 302 without REC, the cache (a second
question does not reach the enterprise node), the dead node's timeout without holding up other answers,
the loop stopped by the recursion count, counting, and the probe results in `idnode prefix list`,
/metrics and the acceptance report."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from unittest import mock

import pytest

from resolver.client import HandleClient
from resolver.handle.constants import OpCode, OpFlag, ResponseCode
from resolver.handle.message import (
    ResolutionRequest,
    decode_resolution_response_body,
    encode_resolution_request,
    encode_site_info_request,
)
from resolver.recursion.cache import AnswerCache
from resolver.recursion.recursor import MAX_RECURSION_COUNT, Recursor
from storage.enterprises import site_from_address
from storage.loader import load_files
from storage.store import PrefixInfo, Store
from tests.conftest import copy_demo_store
from tests.servers import free_port, idnode, running_node, wait_until
from tests.test_certified import rebuild, verify_with_site_key

REC = int(OpFlag.REC | OpFlag.PO)
NO_REC = int(OpFlag.PO)
CT_REC = int(OpFlag.CT | OpFlag.REC | OpFlag.PO)
TIMEOUT_S = 1.5  #: recursion_timeout_s of the node under test: the dead node costs this much per question
ENTERPRISE_RECORDS = [
    {"handle": f"88.100.7/X{i}", "values": [{"index": 1, "type": "URL", "data": f"https://ent.example/x{i}"}]}
    for i in range(1, 6)
]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, demo_store_dir):
    """(node A under test with HTTP, enterprise node E, A's data dir, E's data dir)."""
    base = tmp_path_factory.mktemp("recursion")
    ent_dir = base / "enterprise"
    records = base / "ent.ndjson"
    records.write_text("".join(json.dumps(r) + "\n" for r in ENTERPRISE_RECORDS))
    with Store(ent_dir, create=True) as store:
        load_files(store, [records])
        store.put_prefix(PrefixInfo("88.100.7", org="Enterprise 7"))
    # A dead node: UDP bound but never read, TCP listening but never accepting.
    dead_port = free_port()
    dead_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead_udp.bind(("127.0.0.1", dead_port))
    dead_tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    dead_tcp.bind(("127.0.0.1", dead_port))
    dead_tcp.listen(64)
    try:
        a_dir = copy_demo_store(demo_store_dir, base / "a")
        with running_node(ent_dir, workers=1) as ent:
            with Store(a_dir) as store:
                store.put_prefix(
                    PrefixInfo("88.100.7", state="referral", site=site_from_address(f"127.0.0.1:{ent.port}"))
                )
                store.put_prefix(
                    PrefixInfo("88.100.8", state="referral", site=site_from_address(f"127.0.0.1:{dead_port}"))
                )
                # The loop: 88.100.9 referred to this very node, which asks itself again and again.
                a_port = free_port()
                store.put_prefix(
                    PrefixInfo("88.100.9", state="referral", site=site_from_address(f"127.0.0.1:{a_port}"))
                )
            http_port = free_port()
            extra = (
                "--http-port",
                str(http_port),
                "--recursion-timeout",
                str(TIMEOUT_S),
                "--probe-interval",
                "0.5",
            )
            with (
                mock.patch("tests.servers.free_port", return_value=a_port),
                running_node(a_dir, workers=1, extra=extra) as a,
            ):
                a.http = f"http://127.0.0.1:{http_port}"
                yield a, ent, a_dir, ent_dir
    finally:
        dead_udp.close()
        dead_tcp.close()


async def _resolve(host, port, handle, flags, tcp=False, timeout_s=10.0):
    async with HandleClient(host, port, tcp=tcp, timeout_s=timeout_s) as client:
        return await client.resolve(handle, op_flags=flags)


def resolve(node, handle, flags=REC, tcp=False):
    return asyncio.run(_resolve(node.host, node.port, handle, flags, tcp))


def metric(node, name: str) -> float:
    """The value of one sample line of the node's /metrics (0 when absent)."""
    text = urllib.request.urlopen(f"{node.http}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_rec_requests_get_the_enterprise_nodes_values_over_udp_and_tcp(nodes):
    a, ent, _, _ = nodes
    for tcp in (False, True):
        answer = resolve(a, "88.100.7/X1", REC, tcp)
        assert answer.response_code == ResponseCode.SUCCESS, answer.message
        assert [(v.index, v.type, v.data) for v in answer.values] == [(1, "URL", b"https://ent.example/x1")]
        assert not answer.raw.header.op_flags & OpFlag.AT  # passed on, not this node's own record
    missing = resolve(a, "88.100.7/NOPE", REC)
    assert missing.response_code == ResponseCode.HANDLE_NOT_FOUND


def test_without_rec_the_answer_is_still_a_referral(nodes):
    a, _, _, _ = nodes
    answer = resolve(a, "88.100.7/X1", NO_REC)
    assert answer.response_code == ResponseCode.SERVICE_REFERRAL and answer.referral == "0.NA/88.100.7"


def test_a_second_question_is_answered_from_the_cache(nodes, tmp_path):
    """X5 is asked once, then changed at the enterprise node: this node keeps answering the cached value
    (within its TTL) while the enterprise node answers the new one; /metrics counts the hits."""
    a, ent, _, ent_dir = nodes
    first = resolve(a, "88.100.7/X5")
    assert first.values[0].data == b"https://ent.example/x5"
    changed = tmp_path / "changed.ndjson"
    record = {
        "handle": "88.100.7/X5",
        "values": [{"index": 1, "type": "URL", "data": "https://ent.example/new"}],
    }
    changed.write_text(json.dumps(record) + "\n")
    registered = idnode("register", str(changed), "--data", str(ent_dir))
    assert registered.returncode == 0, registered.stderr
    wait_until(lambda: resolve(ent, "88.100.7/X5", NO_REC).values[0].data == b"https://ent.example/new",
               "the new value at the enterprise node", 10)  # fmt: skip
    hits = metric(a, 'idnode_recursions_total{outcome="hit"}')
    for _ in range(3):
        assert resolve(a, "88.100.7/X5").values[0].data == b"https://ent.example/x5"
    wait_until(
        lambda: metric(a, 'idnode_recursions_total{outcome="hit"}') >= hits + 3, "cache hits in /metrics", 10
    )


def test_a_certified_recursive_answer_is_signed_by_this_node(nodes):
    a, _, _, _ = nodes

    async def go():
        async with HandleClient(a.host, a.port, timeout_s=10) as client:
            site = await client.request(OpCode.GET_SITE_INFO, encode_site_info_request(), 0)
            body = encode_resolution_request(ResolutionRequest(b"88.100.7/X3"))
            return site.body, await client.request(OpCode.RESOLUTION, body, CT_REC)

    site, answer = asyncio.run(go())
    assert answer.header.response_code == ResponseCode.SUCCESS
    assert decode_resolution_response_body(answer.body, False)[2][0].data == b"https://ent.example/x3"
    verify_with_site_key(rebuild(answer), site)


def test_a_dead_enterprise_node_times_out_without_holding_up_other_answers(nodes):
    a, _, _, _ = nodes

    async def go():
        dead = asyncio.create_task(_resolve(a.host, a.port, "88.100.8/ANY", REC, timeout_s=10))
        await asyncio.sleep(0)  # sent first
        local = await _resolve(a.host, a.port, "88.100.1/BATCH-2024-000001", NO_REC)
        assert not dead.done(), "the local answer came after the dead node's: the worker waited"
        return local, await dead

    local, dead = asyncio.run(go())
    assert local.response_code == ResponseCode.SUCCESS
    assert dead.response_code == ResponseCode.SERVER_NOT_RESP and "did not answer" in dead.message


def test_a_referral_loop_is_stopped_by_the_recursion_count(nodes):
    a, _, _, _ = nodes

    answer = resolve(a, "88.100.9/X", REC)
    assert answer.response_code == ResponseCode.RECURSION_COUNT_TOO_HIGH, answer.message
    assert "referral loop" in answer.message


def test_recursions_are_counted_for_the_prefix(nodes):
    a, _, a_dir, _ = nodes

    def counted():
        stats = json.loads(idnode("stats", "--data", str(a_dir), "--json").stdout)
        return stats["resolutions"]["per_prefix"].get("88.100.7", 0)

    before = counted()
    assert resolve(a, "88.100.7/X4").response_code == ResponseCode.SUCCESS
    wait_until(lambda: counted() > before, "the recursion counted for 88.100.7", 15)


def test_probes_show_up_and_down_in_prefix_list_metrics_and_report(nodes):
    a, _, a_dir, _ = nodes

    def listed():
        rows = json.loads(idnode("prefix", "list", "--json", "--data", str(a_dir)).stdout)
        nodes_ = {r["prefix"]: r["node"] for r in rows if r.get("node")}
        return nodes_ if {"88.100.7", "88.100.8"} <= set(nodes_) else None

    probed = wait_until(listed, "probe results in idnode prefix list", 20)
    assert probed["88.100.7"]["up"] and probed["88.100.7"]["latency_ms"] > 0
    assert probed["88.100.7"]["last_answer"]["code"] == ResponseCode.SUCCESS
    assert not probed["88.100.8"]["up"] and probed["88.100.8"]["error"]
    table = idnode("prefix", "list", "--data", str(a_dir)).stdout
    assert "up " in table and "down since" in table
    assert metric(a, 'idnode_enterprise_node_up{prefix="88.100.7"}') == 1.0
    assert metric(a, 'idnode_enterprise_node_up{prefix="88.100.8"}') == 0.0
    report = json.loads(idnode("report", "--json", "--data", str(a_dir)).stdout)
    text = json.dumps(report, ensure_ascii=False)
    assert "probed up" in text
    stats = json.loads(idnode("stats", "--data", str(a_dir), "--json").stdout)
    assert stats["enterprises"]["nodes_up"] >= 1 and stats["enterprises"]["connected"] >= 1


# -- in process: the decision and the bounds -------------------------------------------------------------------


class _Service:
    case_sensitive = False

    def prefix_info(self, prefix):
        return None


def test_recursion_modes_decide_which_requests_recurse():
    assert Recursor(_Service(), "on-request").wanted(REC) and not Recursor(_Service(), "on-request").wanted(0)
    assert Recursor(_Service(), "always").wanted(0)
    assert not Recursor(_Service(), "off").wanted(REC)
    with pytest.raises(ValueError):
        Recursor(_Service(), "sometimes")
    assert MAX_RECURSION_COUNT >= 2


def test_the_cache_is_bounded_and_expires():
    cache = AnswerCache(max_entries=3, max_bytes=10_000)
    for i in range(5):
        cache.put(i, 1, b"x" * 10, ttl_s=10, now_s=0)
    assert len(cache) == 3 and cache.get(0, 1) is None and cache.get(4, 1) is not None
    assert cache.get(4, 11) is None  # expired
    cache.put("big", 1, b"x" * 20_000, ttl_s=10, now_s=0)
    assert cache.get("big", 1) is None
    small = AnswerCache(max_entries=100, max_bytes=1_000)
    for i in range(10):
        small.put(i, 1, b"x" * 200, ttl_s=10, now_s=0)
    assert small.bytes <= 1_000 and len(small) < 10
