"""`idnode backup`, `restore` and `check`, and the log output: a backup taken while the node serves and
registers is consistent and restorable; restore refuses a live store without --force; check finds what is
wrong and exits non-zero; JSON log lines carry their fields."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from pathlib import Path

import msgpack
import pytest

from bench.datagen import Dataset
from resolver import logs
from resolver.client import HandleClient
from resolver.server.lifecycle import DataDirLock, lock_holder
from storage.backup import MANIFEST, live_readers
from storage.check import check_store
from storage.enterprises import add_prefix, issue_credential
from storage.jsonvalues import ValueEncoder
from storage.loader import load_files
from storage.store import PrefixInfo, Store, counter_key
from storage.writes import parse_batch_item, put_batch
from tests.servers import idnode, running_node

DATASET = Dataset(2000, 1, "88.100", 8)


@pytest.fixture()
def data(tmp_path, demo_ndjson) -> Path:
    path = tmp_path / "store"
    with Store(path, create=True) as store:
        load_files(store, [demo_ndjson])
    return path


def write_more(path: Path, stop: threading.Event) -> None:
    """Register identifiers until told to stop (a writer running during the backup)."""
    from resolver.handle.values import HandleValue
    from storage.records import pack_record

    with Store(path) as store:
        n = 0
        while not stop.is_set():
            items = [
                (
                    store.key_of(f"88.100.1/LIVE-{n + i:06d}"),
                    pack_record([HandleValue(1, "URL", b"https://x")]),
                )
                for i in range(50)
            ]
            store.put_records(items)
            n += 50


def test_backup_while_serving_and_writing_then_restore(data, tmp_path):
    stop = threading.Event()
    writer = threading.Thread(target=write_more, args=(data, stop))
    with running_node(data, workers=1) as node:
        writer.start()
        try:
            result = idnode("backup", str(tmp_path / "b1"), "--data", str(data))
        finally:
            stop.set()
            writer.join()
        assert result.returncode == 0, result.stderr
        assert "backed up" in result.stderr
        manifest = json.loads((tmp_path / "b1" / MANIFEST).read_text())
        assert manifest["identifiers"] >= 2000 and len(manifest["sha256"]) == 64
        assert sorted(p.name for p in (tmp_path / "b1").iterdir()) == ["backup.json", "data.mdb"]

        # The store is live: a restore onto it is refused, naming the server.
        refused = idnode("restore", str(tmp_path / "b1"), "--data", str(data))
        assert (
            refused.returncode == 2
            and "is live" in refused.stderr
            and str(node.process.pid) in refused.stderr
        )
    # The copy is consistent: every record decodes and registrations match identifiers.
    restored = tmp_path / "restored"
    result = idnode("restore", str(tmp_path / "b1"), "--data", str(restored))
    assert result.returncode == 0, result.stderr
    check = idnode("check", "--data", str(restored))
    assert check.returncode == 0, check.stdout + check.stderr
    with Store(restored) as store:
        assert store.count_identifiers() == manifest["identifiers"]
    with running_node(restored, workers=1) as node:

        async def ask():
            async with HandleClient(node.host, node.port, timeout_s=3) as client:
                return await client.resolve(DATASET.handle_at(5))

        assert asyncio.run(ask()).ok


def test_backup_refuses_an_existing_destination(data, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = idnode("backup", str(tmp_path / "full"), "--data", str(data))
    assert result.returncode == 2 and "not an empty directory" in result.stderr


def test_restore_over_a_stopped_store_keeps_the_replaced_one(data, tmp_path):
    assert idnode("backup", str(tmp_path / "b"), "--data", str(data)).returncode == 0
    result = idnode("restore", str(tmp_path / "b"), "--data", str(data))
    assert result.returncode == 0, result.stderr
    replaced = [p for p in data.iterdir() if p.name.startswith("replaced-")]
    assert len(replaced) == 1 and (replaced[0] / "data.mdb").exists()
    assert "delete it when satisfied" in result.stderr


def test_restore_force_swaps_a_live_store(data, tmp_path):
    assert idnode("backup", str(tmp_path / "b"), "--data", str(data)).returncode == 0
    lock = DataDirLock(data)
    lock.acquire()  # as a running server would hold it
    try:
        assert lock_holder(data) is not None
        refused = idnode("restore", str(tmp_path / "b"), "--data", str(data))
        assert refused.returncode == 2 and "--force" in refused.stderr
        forced = idnode("restore", str(tmp_path / "b"), "--data", str(data), "--force")
        assert forced.returncode == 0 and "reload it now" in forced.stderr
    finally:
        lock.release()
    assert lock_holder(data) is None


def test_restore_refuses_a_damaged_backup(data, tmp_path):
    assert idnode("backup", str(tmp_path / "b"), "--data", str(data)).returncode == 0
    with open(tmp_path / "b" / "data.mdb", "r+b") as f:
        f.seek(5000)
        f.write(b"\xff" * 16)
    result = idnode("restore", str(tmp_path / "b"), "--data", str(tmp_path / "new"))
    assert result.returncode == 2 and "differs from the manifest" in result.stderr
    assert not (tmp_path / "new" / "data.mdb").exists()


def test_live_readers_sees_a_process_with_a_read_transaction(data):
    with running_node(data, workers=1):
        assert live_readers(data)  # the worker's long-lived read transaction


def test_check_of_a_good_store(demo_store_dir):
    with Store(demo_store_dir) as store:
        report = check_store(store)
    assert report.ok, report.problems
    assert (report.identifiers, report.prefixes) == (2000, 8) and report.counters >= 8


def test_check_counts_registrations_from_every_source(tmp_path):
    """Identifiers created over the API, by `idnode register` and as <prefix>/ADMIN are counted under kinds of
    their own; the check adds them all up against the identifiers held."""
    with Store(tmp_path / "store", create=True) as store:
        add_prefix(store, "88.100.7", "Org")
        issue_credential(store, "88.100.7")  # registrations.admin
        for source in ("http", "cli"):
            items = [parse_batch_item(1, {"handle": f"88.100.7/{source}", "values": []}, ValueEncoder(0), store)]
            put_batch(store, items, counter_kind=f"registrations.{source}")
        report = check_store(store)
    assert report.ok and report.identifiers == 3, report.problems
    assert not any("registrations" in note for note in report.notes), report.notes


def test_check_finds_what_is_wrong(data):
    with Store(data) as store:
        key = store.key_of(DATASET.handle_at(3))

        def damage(txn):
            txn.put(key, b"\x93\x01", db=store.handles)  # truncated msgpack
            txn.put(b"88.100.1/lower-case", msgpack.packb([1, b"\x00\x00\x00\x00", True]), db=store.handles)
            txn.put(b"77.1/ORPHAN", msgpack.packb([1, b"\x00\x00\x00\x00", True]), db=store.handles)
            txn.put(b"resolutions.handle/2024133/88.100.1", (1).to_bytes(8, "big"), db=store.counters_db)
            txn.put(b"resolutions.handle/20990101/88.100.1", (1).to_bytes(8, "big"), db=store.counters_db)
            txn.put(counter_key("resolutions.handle", "20250101", b"88.100.2"), b"\x01", db=store.counters_db)
            txn.put(b"88.100.9", PrefixInfo("88.100.9", state="referral").pack(), db=store.prefixes_db)

        store.write(damage)
        report = check_store(store)
    text = "\n".join(report.problems)
    assert not report.ok
    assert f"{key.decode()}: record does not decode" in text
    assert "88.100.1/lower-case: key is not in the node's normalized form" in text
    assert "prefix 77.1: 1 identifiers under a prefix that is not registered" in text
    assert "prefix 77.1: 1 identifiers held but only 0 registrations counted" in text
    assert "'2024133' is not a date" in text
    assert "day 20990101 is in the future" in text
    assert "value of 1 bytes, expected 8" in text
    assert "prefix 88.100.9: referral without an HS_SITE" in text
    assert report.problem_count == 9, text

    result = idnode("check", "--data", str(data), "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["problem_count"] == 9
    plain = idnode("check", "--data", str(data), "--max-problems", "2")
    assert plain.returncode == 1 and "... and 7 more problems" in plain.stdout


def test_ops_commands_find_the_store_through_the_config_file(data, tmp_path):
    config = tmp_path / "idnode.toml"
    config.write_text(f'data_dir = "{data}"\n')
    result = idnode("check", "--config", str(config))
    assert result.returncode == 0 and f"{data}: 2,000 identifiers" in result.stdout
    missing = idnode("check", env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert missing.returncode == 2 and "give --data DIR or --config FILE" in missing.stderr


def test_json_log_lines_carry_their_fields():
    out = io.StringIO()
    logs.setup("info", "json", stream=out)
    try:
        log = logging.getLogger("idnode.test")
        log.info("worker %d exited", 42, extra={"event": "worker_exited", "worker": 42})
        log.debug("not shown at info")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first["msg"] == "worker 42 exited" and first["event"] == "worker_exited" and first["worker"] == 42
    assert first["level"] == "info" and first["logger"] == "idnode.test" and first["ts"].endswith("Z")
    assert "ValueError: boom" in lines[1]["exc"]


def test_sampled_access_log_lines(caplog):
    from resolver.handle.constants import OpCode
    from resolver.handle.message import ResolutionRequest, encode_request, encode_resolution_request
    from resolver.server.stats import QueryStats

    stats = QueryStats(access_log_sample=1.0)
    request = encode_request(
        OpCode.RESOLUTION,
        encode_resolution_request(ResolutionRequest(b"88.100.1/X")),
        request_id=1,
        expiration=1,
    )
    answer = bytes(20) + (1).to_bytes(4, "big") + (100).to_bytes(4, "big")
    with caplog.at_level(logging.INFO, logger="idnode.access"):
        stats.sample("handle-udp", 0.000_05, "192.0.2.1", request, answer)
    record = caplog.records[0]
    assert record.event == "access" and record.handle == "88.100.1/X" and record.code == "handle_not_found"
    assert record.duration_us == 50 and record.client == "192.0.2.1"
