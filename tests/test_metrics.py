"""Metrics and health: multiprocess Prometheus values merged across processes, the store's figures at
scrape time, the hot-path counting of the transports, what a running node publishes, and the health answers."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from bench.datagen import Dataset
from resolver import metrics
from resolver.client import HandleClient
from resolver.handle.constants import OpCode, ResponseCode
from resolver.server.stats import CODES_AT, NO_ANSWER, QueryStats, code_names
from storage.store import Store
from tests.servers import running_node

DATASET = Dataset(2000, 1, "88.100", 8)


def key(op: int, code: int) -> bytes:
    return op.to_bytes(4, "big") + code.to_bytes(4, "big")


def in_child(work) -> None:
    """Run `work` in a forked process, as a worker would (multiprocess mode stays out of the test process,
    whose open metric files would outlive the test)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0


def samples(body: bytes) -> dict[str, float]:
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_code_names_label_counting_keys():
    assert code_names(key(OpCode.RESOLUTION, ResponseCode.SUCCESS)) == ("resolution", "success")
    assert code_names(key(OpCode.RESOLUTION, ResponseCode.HANDLE_NOT_FOUND)) == (
        "resolution",
        "handle_not_found",
    )
    assert code_names(key(999, 9999)) == ("other", "other")
    assert code_names(NO_ANSWER) == ("none", "dropped")


def test_answers_are_counted_by_the_header_bytes_after_the_envelope():
    answer = bytes(20) + key(OpCode.GET_SITE_INFO, ResponseCode.SUCCESS) + b"rest"
    assert answer[CODES_AT] == key(OpCode.GET_SITE_INFO, ResponseCode.SUCCESS)


def test_take_empties_the_live_dicts_in_place():
    stats = QueryStats()
    counts = stats.counts("handle-udp")
    counts[key(1, 1)] += 3
    stats.sample("handle-udp", 0.001, "127.0.0.1", b"", None)
    answers, latencies = stats.take()
    assert answers == {"handle-udp": {key(1, 1): 3}} and latencies == {"handle-udp": [0.001]}
    assert stats.counts("handle-udp") is counts and not counts and stats.take() == ({}, {})


def test_access_log_share_sets_the_sampling_rate():
    assert QueryStats().access_probability == 0
    rare = QueryStats(access_log_sample=0.001)
    assert rare.sample_every == 64 and rare.access_probability == pytest.approx(0.064)
    everything = QueryStats(access_log_sample=1.0)
    assert everything.sample_every == 1 and everything.access_probability == 1.0


def test_counts_of_every_process_are_merged(tmp_path, store):
    directory = tmp_path / "prom"

    def worker(n: int, restart: bool) -> None:
        metrics.enable(directory)
        stats = QueryStats()
        stats.counts("handle-udp")[key(OpCode.RESOLUTION, ResponseCode.SUCCESS)] += n
        metrics.publish(stats)
        if restart:
            metrics.worker_restarted("exited")

    in_child(lambda: worker(5, False))
    in_child(lambda: worker(7, True))
    body, content_type = metrics.metrics_response(store, directory=directory)
    assert content_type.startswith("text/plain")
    found = samples(body)
    assert found['idnode_queries_total{code="success",op="resolution",transport="handle-udp"}'] == 12
    assert found['idnode_worker_restarts_total{reason="exited"}'] == 1
    assert found["idnode_identifiers"] == 0 and found["idnode_store_file_bytes"] > 0


def test_store_figures_are_read_at_scrape_time(demo_store_dir):
    with Store(demo_store_dir) as store:
        found = samples(metrics.metrics_response(store)[0])
    assert found["idnode_identifiers"] == 2000
    assert found["idnode_registrations_total"] == 2000
    assert (
        found["idnode_store_used_bytes"]
        <= found["idnode_store_file_bytes"]
        <= found["idnode_store_map_bytes"]
    )
    assert found["idnode_data_free_bytes"] > 0


def test_a_running_node_publishes_its_counts_and_latencies(tmp_path, demo_store_copy):
    data = demo_store_copy
    directory = tmp_path / "node-metrics"
    with running_node(data, workers=2, extra=("--metrics-dir", str(directory))) as node:

        async def ask() -> None:
            async with HandleClient(node.host, node.port, timeout_s=3) as udp:
                for i in range(200):
                    await udp.resolve(DATASET.handle_at(i))
                await udp.resolve("88.100.1/NO-SUCH-THING")
            async with HandleClient(node.host, node.port, tcp=True, timeout_s=3) as tcp:
                for i in range(70):
                    await tcp.resolve(DATASET.handle_at(i))

        asyncio.run(ask())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # housekeeping publishes once a second
            found = samples(metrics.metrics_response(directory=directory)[0])
            udp_ok = found.get(
                'idnode_queries_total{code="success",op="resolution",transport="handle-udp"}', 0
            )
            tcp_ok = found.get(
                'idnode_queries_total{code="success",op="resolution",transport="handle-tcp"}', 0
            )
            if udp_ok >= 200 and tcp_ok >= 70:
                break
            time.sleep(0.2)
        assert udp_ok == 200 and tcp_ok == 70, found
        missing = 'idnode_queries_total{code="handle_not_found",op="resolution",transport="handle-udp"}'
        assert found[missing] == 1
        assert found['idnode_query_duration_seconds_count{transport="handle-udp"}'] >= 3  # one in 64 timed
        assert found["idnode_workers"] == 2


def test_healthz_fails_only_when_housekeeping_is_stuck():
    state = metrics.WorkerHealth()
    now = time.monotonic()
    assert metrics.healthz(state, now).status == 200
    state.housekeeping_s = now - metrics.HOUSEKEEPING_STALE_S - 1
    answer = metrics.healthz(state, now)
    assert answer.status == 503 and json.loads(answer.body())["status"] == "fail"
    assert answer.content_type == "application/json"


def test_readyz_follows_listening_draining_and_the_store(store):
    state = metrics.WorkerHealth(flush_interval_s=2.0)
    now = time.monotonic()
    assert metrics.readyz(state, store, now).status == 503  # not listening yet
    state.listening = True
    ready = metrics.readyz(state, store, now)
    assert ready.status == 200 and ready.checks["store"] == "ok" and "degraded" not in ready.checks
    state.flushed_s, state.flush_error = now - 100, "MDB_MAP_FULL"
    degraded = metrics.readyz(state, store, now)
    assert degraded.status == 200 and "MDB_MAP_FULL" in degraded.checks["degraded"][0]
    state.draining = True
    assert metrics.readyz(state, store, now).status == 503
    state.draining = False
    store.close()
    unreadable = metrics.readyz(state, store, now)
    assert unreadable.status == 503 and unreadable.checks["store"].startswith("unreadable")


def test_a_worker_keeps_counts_it_cannot_flush_logs_once_and_reports_recovery(tmp_path, caplog):
    import asyncio

    import lmdb

    from resolver.config import ServeConfig
    from resolver.server.worker import Worker
    from resolver.writer.client import WriterUnavailable
    from storage.entries import decode_entry, ok

    Store(tmp_path / "store", create=True).close()
    worker = Worker(ServeConfig(tmp_path / "store", workers=1))
    try:
        with pytest.raises(lmdb.ReadonlyError):  # a worker never writes the store itself
            worker.store.env.begin(write=True)
        sent: list[bytes] = []

        class Writer:  # the writer's client: down, then back
            down = True

            async def submit(self, entries, payloads=None):
                sent.append(entries[0])
                if self.down:
                    raise WriterUnavailable("writer unavailable, retry: not running")
                return [ok("applied")]

        writer = worker.counts.client = Writer()
        worker.service.counter.count(b"88.100.1")
        asyncio.run(worker.flush())
        worker.service.counter.count(b"88.100.1")
        asyncio.run(worker.flush())
        assert worker.health.flush_error.startswith("writer unavailable")
        assert worker.counts.unsent == 2  # kept for the next flush
        assert [r.event for r in caplog.records].count("flush_failed") == 1  # not once per pass
        writer.down = False
        asyncio.run(worker.flush())
        assert worker.health.flush_error == "" and worker.counts.unsent == 0
        assert [r.event for r in caplog.records if hasattr(r, "event")][-1] == "flush_recovered"
        # The delta that was not acknowledged went again as the same entry (the writer counts it once), then
        # what was counted meanwhile as the next one.
        assert sent[0] == sent[1] == sent[2] != sent[3]
        assert [decode_entry(e)[1]["seq"] for e in sent] == [1, 1, 1, 2]
    finally:
        worker.store.close()
