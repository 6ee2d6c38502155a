"""The security event queue (storage/eventqueue.py): order, bounds and drops, removal of sent events,
restart, several processes appending at once."""

from __future__ import annotations

import multiprocessing

import pytest

from storage.eventqueue import ENTRY_OVERHEAD_BYTES, SecurityQueue, read_stats

BIG = 1 << 30


def values(queue: SecurityQueue) -> list[bytes]:
    return [v for _, v in queue.peek(10**9, BIG)]


def test_append_peek_remove_in_order(tmp_path):
    with SecurityQueue(tmp_path / "q", max_bytes=BIG, max_events=10**6) as q:
        q.append([b"a", b"b"])
        q.append([b"c"])
        batch = q.peek(2, BIG)
        assert batch == [(1, b"a"), (2, b"b")]
        assert q.peek(10, BIG) == [(1, b"a"), (2, b"b"), (3, b"c")]
        assert q.remove_through(2) == 2
        assert q.peek(10, BIG) == [(3, b"c")]
        stats = q.stats()
        assert (stats.events, stats.bytes, stats.appended, stats.dropped, stats.next_seq) == (
            1, 1 + ENTRY_OVERHEAD_BYTES, 3, 0, 4,
        )  # fmt: skip


def test_peek_respects_bytes_but_returns_at_least_one(tmp_path):
    with SecurityQueue(tmp_path / "q", max_bytes=BIG, max_events=10**6) as q:
        q.append([b"x" * 100, b"y" * 100, b"z"])
        assert [seq for seq, _ in q.peek(10, 150)] == [1]
        assert [seq for seq, _ in q.peek(10, 50)] == [1]
        assert [seq for seq, _ in q.peek(10, 201)] == [1, 2, 3]


def test_peek_after_a_sequence_number(tmp_path):
    """The RELP exporter reads past its window of events sent and not yet acknowledged (still queued)."""
    with SecurityQueue(tmp_path / "q", max_bytes=BIG, max_events=3) as q:
        q.append([b"a", b"b", b"c", b"d"])  # the bound drops 1
        assert q.peek(2, BIG, after=0) == [(2, b"b"), (3, b"c")]
        assert q.peek(10, BIG, after=2) == [(3, b"c"), (4, b"d")]
        assert q.peek(10, BIG, after=4) == []
        q.remove_through(3)
        assert q.peek(10, BIG, after=1) == [(4, b"d")]


def test_event_bound_drops_oldest_and_counts(tmp_path):
    with SecurityQueue(tmp_path / "q", max_bytes=BIG, max_events=5) as q:
        assert q.append([b"%d" % i for i in range(1, 9)]) == 3
        assert values(q) == [b"4", b"5", b"6", b"7", b"8"]
        assert q.append([b"9"]) == 1
        stats = q.stats()
        assert (stats.events, stats.dropped, stats.appended) == (5, 4, 9)
        assert [seq for seq, _ in q.peek(10, BIG)] == [5, 6, 7, 8, 9]  # sequence numbers show the gap


def test_byte_bound_drops_oldest(tmp_path):
    entry = 100 + ENTRY_OVERHEAD_BYTES
    with SecurityQueue(tmp_path / "q", max_bytes=3 * entry, max_events=10**6) as q:
        for i in range(5):
            q.append([bytes([65 + i]) * 100])
        assert [v[:1] for v in values(q)] == [b"C", b"D", b"E"]
        assert q.stats().bytes == 3 * entry
        assert q.stats().dropped == 2


def test_remove_through_after_the_bound_dropped_part_of_the_batch(tmp_path):
    """The exporter sends 1-5 while producers push 1-3 out: removing through 5 removes only 4 and 5."""
    with SecurityQueue(tmp_path / "q", max_bytes=BIG, max_events=5) as q:
        q.append([b"%d" % i for i in range(1, 6)])
        batch = q.peek(5, BIG)
        q.append([b"6", b"7", b"8"])  # drops 1, 2, 3
        assert q.remove_through(batch[-1][0]) == 2
        assert values(q) == [b"6", b"7", b"8"]
        assert q.stats().bytes == 3 * (1 + ENTRY_OVERHEAD_BYTES)
        assert q.remove_through(100) == 3
        assert q.stats().events == q.stats().bytes == 0
        assert q.remove_through(100) == 0


def test_survives_reopening(tmp_path):
    with SecurityQueue(tmp_path / "q", max_bytes=BIG, max_events=100) as q:
        q.append([b"a", b"b", b"c"])
        q.remove_through(1)
        q.sync()
    with SecurityQueue(tmp_path / "q", max_bytes=BIG, max_events=100) as q:
        assert q.peek(10, BIG) == [(2, b"b"), (3, b"c")]
        q.append([b"d"])
        assert q.peek(10, BIG)[-1] == (4, b"d")


def test_read_stats_without_creating(tmp_path):
    assert read_stats(tmp_path / "none") is None
    assert not (tmp_path / "none").exists()
    with SecurityQueue(tmp_path / "q", max_bytes=BIG, max_events=2) as q:
        q.append([b"a", b"b", b"c"])
    stats = read_stats(tmp_path / "q")
    assert (stats.events, stats.dropped, stats.appended, stats.next_seq) == (2, 1, 3, 4)


def _produce(path: str, producer: int, count: int) -> None:
    with SecurityQueue(path, max_bytes=BIG, max_events=10**6) as q:
        for i in range(count):
            q.append([b"%d:%d" % (producer, i)])


def test_several_processes_append_at_once(tmp_path):
    path = str(tmp_path / "q")
    SecurityQueue(path, max_bytes=BIG, max_events=10**6).close()
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_produce, args=(path, p, 300)) for p in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    with SecurityQueue(path, max_bytes=BIG, max_events=10**6) as q:
        batch = q.peek(10**6, BIG)
    assert [seq for seq, _ in batch] == list(range(1, 1201))  # one total order, no gaps
    per_producer: dict[int, list[int]] = {}
    for _, value in batch:
        producer, i = map(int, value.split(b":"))
        per_producer.setdefault(producer, []).append(i)
    assert per_producer == {p: list(range(300)) for p in range(4)}  # each process's own order kept


@pytest.mark.parametrize("bad", ["", "not a dir"])
def test_unusable_directory_is_a_queue_error(tmp_path, bad):
    from storage.eventqueue import QueueError

    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(QueueError):
        SecurityQueue(target / bad if bad else target, max_bytes=BIG, max_events=1)


def test_drop_report_is_queued_once(tmp_path):
    def report(n: int, total: int) -> bytes:
        return b"dropped %d of %d" % (n, total)

    with SecurityQueue(tmp_path / "q", max_bytes=BIG, max_events=3) as q:
        assert q.append_drop_report(report) == 0  # nothing dropped yet
        q.append([b"%d" % i for i in range(6)])  # 0, 1, 2 dropped
        assert q.append_drop_report(report) == 4  # room for the report: 3 dropped too, and counted in it
        assert values(q) == [b"4", b"5", b"dropped 4 of 4"]
        assert q.append_drop_report(report) == 0
        assert q.stats().dropped == 4
