"""The audit trail (storage/audit.py): recorded inside the writer's transaction, append-only, queried by
prefix and time; and `idnode audit`."""

from __future__ import annotations

import json

import pytest

from resolver.cli import main
from resolver.cli_security import parse_time
from storage import audit
from storage.store import Store

T0 = 1_750_000_000 * 10**9  # 2025-06-15T15:06:40Z


class Refused(Exception):
    pass


def test_an_entry_commits_with_the_write(store):
    key = store.key_of("88.100.7/A")

    def work(txn):
        txn.put(key, b"record", db=store.handles)
        audit.record(store, txn, "88.100.7", "203.0.113.5:40122", audit.CREATE, "88.100.7/A", {"values": 2})

    store.write(work)
    [entry] = audit.query(store)
    assert (entry.identity, entry.source, entry.operation, entry.handle) == (
        "88.100.7", "203.0.113.5:40122", "create", "88.100.7/A",
    )  # fmt: skip
    assert entry.detail == {"values": 2}
    assert store.get("88.100.7/A") == b"record"


def test_an_entry_is_rolled_back_with_its_write(store):
    """A refused write leaves neither the record nor its audit entry."""
    key = store.key_of("88.100.7/B")

    def work(txn):
        txn.put(key, b"record", db=store.handles)
        audit.record(store, txn, "88.100.7", "203.0.113.5:1", audit.CREATE, "88.100.7/B")
        raise Refused

    with pytest.raises(Refused):
        store.write(work)
    assert store.get("88.100.7/B") is None
    assert audit.query(store) == []
    assert audit.count(store) == 0


def test_keys_grow_in_commit_order_even_when_the_clock_steps_back(store):
    times = [T0, T0, T0 - 5_000, T0 + 1]
    keys = [
        store.write(
            lambda txn, t=t, i=i: audit.record(store, txn, "op", "cli", "update", f"88.1/{i}", now_ns=t)
        )
        for i, t in enumerate(times)
    ]
    assert keys == sorted(keys) and len(set(keys)) == 4
    entries = audit.query(store)
    assert [e.handle for e in entries] == ["88.1/0", "88.1/1", "88.1/2", "88.1/3"]
    assert [e.time_ns for e in entries] == [T0, T0, T0, T0 + 1]  # the step back takes the time before it
    assert [e.seq for e in entries] == [0, 1, 2, 0]


def test_many_entries_in_one_transaction(store):
    def work(txn):
        for i in range(500):
            audit.record(store, txn, "88.100.7", "10.0.0.1:1", audit.CREATE, f"88.100.7/{i:04d}", now_ns=T0)

    store.write(work)
    entries = audit.query(store)
    assert [e.handle for e in entries] == [f"88.100.7/{i:04d}" for i in range(500)]


@pytest.fixture()
def trail(store):
    rows = [
        (T0 + 0, "88.100.7/A", audit.CREATE),
        (T0 + 10**9, "88.100.70/B", audit.CREATE),  # another prefix that merely starts alike
        (T0 + 2 * 10**9, "88.100.7.1/C", audit.UPDATE),  # a sub-prefix
        (T0 + 3 * 10**9, "0.NA/88.100.7", audit.PREFIX_DISABLE),
        (T0 + 4 * 10**9, "88.100.8/D", audit.DELETE),
    ]
    for t, handle, op in rows:
        store.write(lambda txn, t=t, h=handle, op=op: audit.record(store, txn, "u", "s", op, h, now_ns=t))
    return store


def test_query_by_prefix_takes_sub_prefixes_and_the_prefix_handle(trail):
    handles = [e.handle for e in audit.query(trail, prefix="88.100.7")]
    assert handles == ["88.100.7/A", "88.100.7.1/C", "0.NA/88.100.7"]
    assert [e.handle for e in audit.query(trail, prefix="88.100.8")] == ["88.100.8/D"]


def test_query_by_time_and_limit(trail):
    t = T0 / 1e9
    assert [e.handle for e in audit.query(trail, since=t + 2)] == [
        "88.100.7.1/C",
        "0.NA/88.100.7",
        "88.100.8/D",
    ]
    assert [e.handle for e in audit.query(trail, since=t + 1, until=t + 3)] == ["88.100.70/B", "88.100.7.1/C"]
    assert [e.handle for e in audit.query(trail, limit=2)] == ["88.100.7/A", "88.100.70/B"]
    assert [e.handle for e in audit.query(trail, limit=2, newest=True)] == ["0.NA/88.100.7", "88.100.8/D"]
    newest_before = audit.query(trail, until=t + 3, limit=2, newest=True)
    assert [e.handle for e in newest_before] == ["88.100.70/B", "88.100.7.1/C"]
    assert [e.handle for e in audit.query(trail, since=t + 3, limit=5, newest=True)] == [
        "0.NA/88.100.7", "88.100.8/D",
    ]  # fmt: skip
    assert audit.query(trail, since=t + 100) == []
    assert audit.query(trail, until=t - 100, newest=True) == []


def test_the_trail_survives_reopening(tmp_path):
    with Store(tmp_path / "s", create=True) as s:
        s.write(lambda txn: audit.record(s, txn, "operator", "cli", audit.PREFIX_ADD, "0.NA/88.100.9"))
    with Store(tmp_path / "s") as s:
        assert [e.operation for e in audit.query(s)] == ["prefix-add"]


def test_parse_time():
    assert parse_time("24h", now_s=100_000) == 100_000 - 86_400
    assert parse_time("30m", now_s=10_000) == 10_000 - 1800
    assert parse_time("1750000000") == 1_750_000_000
    assert parse_time("2025-06-15T15:06:40Z") == 1_750_000_000
    assert parse_time("2025-06-15T23:06:40+08:00") == 1_750_000_000
    assert parse_time("2025-06-15") == 1_749_945_600  # a date without an offset is UTC midnight
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_cli_audit(tmp_path, capsys):
    data = tmp_path / "s"
    with Store(data, create=True) as s:
        for i, prefix in enumerate(["88.100.7", "88.100.8", "88.100.7"]):
            s.write(lambda txn, i=i, p=prefix: audit.record(
                s, txn, p, f"10.0.0.{i}:99", audit.CREATE, f"{p}/X{i}", now_ns=T0 + i * 10**9))  # fmt: skip
    assert main(["audit", "--data", str(data), "--prefix", "88.100.7", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["handle"], x["identity"], x["source"]) for x in lines] == [
        ("88.100.7/X0", "88.100.7", "10.0.0.0:99"), ("88.100.7/X2", "88.100.7", "10.0.0.2:99"),
    ]  # fmt: skip
    assert lines[0]["time"] == "2025-06-15T15:06:40.000000Z" and lines[0]["operation"] == "create"

    assert main(["audit", "--data", str(data), "--since", "2025-06-15T15:06:41Z"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "88.100.8/X1" in out[0] and "by 88.100.8 from 10.0.0.1:99" in out[0]

    assert main(["audit", "--data", str(data), "--limit", "1"]) == 0
    captured = capsys.readouterr()
    assert "88.100.7/X2" in captured.out and "newest 1" in captured.err

    assert main(["audit", "--data", str(data), "--since", "soon"]) == 2
