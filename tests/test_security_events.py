"""SecurityEvents (resolver/security/events.py): what each call queues, aggregation of noisy kinds, the
syslog form of a queued event, and that a broken queue never reaches the caller."""

from __future__ import annotations

import json
import os

import pytest

from resolver.security import events as ev
from resolver.security.config import SecurityLogConfig
from resolver.security.events import (
    Event,
    EventKind,
    SecurityEvents,
    decode_event,
    encode_event,
    format_event,
)
from resolver.security.syslog import MAX_MESSAGE_BYTES, Severity, decode_message
from storage.eventqueue import SecurityQueue
from tests.security_helpers import queued

BIG = 1 << 30
T0_NS = 1_750_000_000 * 10**9


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall_ns = T0_NS

    def monotonic(self) -> float:
        return self.mono

    def ns(self) -> int:
        return self.wall_ns

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall_ns += int(seconds * 1e9)


@pytest.fixture()
def clock():
    return Clock()


@pytest.fixture()
def events(tmp_path, clock):
    queue = SecurityQueue(tmp_path / "q", max_bytes=BIG, max_events=10**6)
    e = SecurityEvents(queue, summary_interval_s=60, clock_ns=clock.ns, monotonic=clock.monotonic)
    yield e
    if e.queue is not None:
        e.queue.close()


def test_disabled_events_do_nothing(tmp_path):
    e = SecurityEvents.open(SecurityLogConfig(), tmp_path)
    assert not e.enabled
    e.auth_failure("u", "1.2.3.4:5", "bad secret")
    e.write("u", "s", "create", "88.1/x")
    e.rate_limited("1.2.3.4", "udp")
    e.malformed("1.2.3.4", "udp")
    e.config_changed("workers", 1, 2)
    e.add_resolutions({"88.1": 3})
    e.tick()
    e.close()
    assert e.emitted == 0
    assert not (tmp_path / "security-queue").exists()


def test_open_uses_the_configured_queue(tmp_path):
    config = SecurityLogConfig(collector="127.0.0.1:6514", queue_dir=str(tmp_path / "spool"))
    e = SecurityEvents.open(config, tmp_path / "data")
    e.auth_failure("88.100.7", "10.0.0.1:5", "bad secret")
    e.close()
    with SecurityQueue(tmp_path / "spool", max_bytes=BIG, max_events=10) as q:
        assert q.stats().events == 1


def test_each_call_queues_its_event(events):
    events.auth_failure("88.100.7", "203.0.113.5:40122", "bad secret")
    events.write("88.100.7", "203.0.113.5:40122", "create", "88.100.7/A", detail={"values": 2})
    events.malformed_burst("198.51.100.1", "udp", 57, window_s=5)
    events.config_changed("workers", 2, 4, by="reload")
    kinds = [e.kind for e in queued(events)]
    assert kinds == [
        EventKind.AUTH_FAILURE,
        EventKind.WRITE,
        EventKind.MALFORMED_BURST,
        EventKind.CONFIG_CHANGED,
    ]
    auth, write, burst, config = (e.data for e in queued(events))
    assert auth == {"identity": "88.100.7", "source": "203.0.113.5:40122", "reason": "bad secret",
                    "transport": "http"}  # fmt: skip
    assert write == {"identity": "88.100.7", "source": "203.0.113.5:40122", "operation": "create",
                     "handle": "88.100.7/A", "outcome": "ok", "detail": {"values": 2}}  # fmt: skip
    assert burst == {"source": "198.51.100.1", "transport": "udp", "count": 57, "window_s": 5}
    assert config == {"key": "workers", "old": 2, "new": 4, "by": "reload"}
    assert all(e.pid == os.getpid() and e.time_ns == T0_NS for e in queued(events))
    assert events.emitted == 4


def test_a_batch_is_one_event_per_write_in_order(events):
    events.writes("operator", "cli", [("create", f"88.1/{i}") for i in range(50)])
    assert [e.data["handle"] for e in queued(events)] == [f"88.1/{i}" for i in range(50)]


def test_secret_settings_are_redacted_and_long_text_cut(events):
    events.config_changed("operator_secret", "old-secret", "new-secret")
    events.write("u", "s", "create", "88.1/" + "x" * 5000)
    config, write = (e.data for e in queued(events))
    assert config["old"] == config["new"] == ev.REDACTED
    assert len(write["handle"]) == ev.MAX_FIELD_CHARS + 3


def test_rate_limit_trips_are_aggregated_per_source_and_window(events, clock):
    for _ in range(5):
        events.rate_limited("10.0.0.1", "udp")
    events.rate_limited("10.0.0.2", "udp")
    assert [(e.data["source"], e.data["count"]) for e in queued(events)] == [("10.0.0.1", 1), ("10.0.0.2", 1)]
    events.tick()  # the window has not ended
    assert len(queued(events)) == 2
    clock.advance(ev.RATE_EVENT_WINDOW_S)
    events.tick()
    assert [(e.data["source"], e.data["count"]) for e in queued(events)][2:] == [("10.0.0.1", 4)]
    events.rate_limited("10.0.0.1", "udp")  # a new window: reported at once again
    assert queued(events)[-1].data["count"] == 1


def test_malformed_packets_make_a_burst_event(events, clock):
    for _ in range(ev.MALFORMED_BURST_PACKETS - 1):
        events.malformed("10.0.0.9", "udp")
    assert queued(events) == []
    events.malformed("10.0.0.9", "udp")
    [burst] = queued(events)
    assert burst.kind == EventKind.MALFORMED_BURST and burst.data["count"] == ev.MALFORMED_BURST_PACKETS
    for _ in range(7):
        events.malformed("10.0.0.9", "udp")
    assert len(queued(events)) == 1
    clock.advance(ev.MALFORMED_WINDOW_S)
    events.tick()
    assert [e.data["count"] for e in queued(events)] == [ev.MALFORMED_BURST_PACKETS, 7]
    for _ in range(3):  # a few in a later window are no burst
        events.malformed("10.0.0.9", "udp")
    clock.advance(ev.MALFORMED_WINDOW_S)
    events.tick()
    assert len(queued(events)) == 2


def test_resolution_summaries_every_interval_and_at_close(events, clock):
    events.add_resolutions({b"88.100.7": 10, "88.100.8": 1})
    clock.advance(30)
    events.add_resolutions({"88.100.7": 5})
    events.tick()
    assert queued(events) == []
    clock.advance(30)
    events.tick()
    [summary] = queued(events)
    assert summary.kind == EventKind.RESOLUTION_SUMMARY
    assert summary.data["per_prefix"] == {"88.100.7": 15, "88.100.8": 1}
    assert summary.data["total"] == 16 and (summary.data["part"], summary.data["parts"]) == (1, 1)
    assert summary.data["period_start"] == "2025-06-15T15:06:40.000Z"
    assert summary.data["period_end"] == "2025-06-15T15:07:40.000Z"
    events.add_resolutions({"88.100.9": 2})
    queue = events.queue
    events.close()  # the partial period is sent, not lost
    with SecurityQueue(queue.path, max_bytes=BIG, max_events=10**6) as q:
        last = decode_event(q.peek(10, BIG)[-1][1])
    assert last.data["per_prefix"] == {"88.100.9": 2}


def test_a_large_summary_is_split(events):
    per_prefix = {f"88.100.{i}": i for i in range(250)}
    events.resolution_summary(per_prefix)
    parts = queued(events)
    assert [(p.data["part"], p.data["parts"]) for p in parts] == [(1, 3), (2, 3), (3, 3)]
    merged = {k: v for p in parts for k, v in p.data["per_prefix"].items()}
    assert merged == per_prefix
    for seq, raw in events.queue.peek(10, BIG):
        assert len(format_event(seq, raw, facility=10, hostname="h")) < MAX_MESSAGE_BYTES


def test_a_broken_queue_never_reaches_the_caller(events, caplog):
    class Broken:
        def append(self, values):
            raise OSError(28, "No space left on device")

    real = events.queue
    events.queue = Broken()
    events.auth_failure("u", "s", "r")
    events.write("u", "s", "create", "88.1/x")
    assert events.failed == 2 and events.emitted == 0
    assert len([r for r in caplog.records if "not queued" in r.getMessage()]) == 1  # logged once a minute
    events.queue = real


def test_format_event_is_rfc5424_with_json(events):
    events.auth_failure("88.100.7", "203.0.113.5:40122", "bad secret")
    [(seq, raw)] = events.queue.peek(10, BIG)
    message = decode_message(format_event(seq, raw, facility=10, hostname="node-1", node_id="88.100"))
    assert (message.facility, message.severity) == (10, Severity.WARNING)
    assert (message.hostname, message.app_name, message.procid, message.msgid) == (
        "node-1", "idnode", str(os.getpid()), "AUTHFAIL",
    )  # fmt: skip
    assert message.timestamp_us == T0_NS // 1000 and message.structured_data == "-"
    assert message.msg.isascii()
    body = json.loads(message.msg)
    assert body == {"event": "auth-failure", "seq": 1, "time": "2025-06-15T15:06:40.000Z", "node": "88.100",
                    "pid": os.getpid(), "identity": "88.100.7", "source": "203.0.113.5:40122",
                    "reason": "bad secret", "transport": "http"}  # fmt: skip


def test_format_event_non_ascii_is_escaped():
    raw = encode_event(Event(EventKind.WRITE, T0_NS, 7, {"identity": "重庆制造", "handle": "88.1/刹车盘"}))
    body = json.loads(decode_message(format_event(3, raw, facility=16, hostname="h")).msg)
    assert body["identity"] == "重庆制造" and body["handle"] == "88.1/刹车盘"


def test_format_event_of_an_unreadable_record():
    message = decode_message(format_event(9, b"\xc1garbage", facility=10, hostname="h", now_ns=T0_NS))
    assert message.msgid == "UNREADABLE" and message.severity == Severity.ERROR
    assert json.loads(message.msg)["seq"] == 9


def test_format_event_keeps_within_the_message_limit():
    raw = encode_event(Event(EventKind.WRITE, T0_NS, 7, {"handle": "x" * 20_000}))
    out = format_event(4, raw, facility=10, hostname="h")
    assert len(out) <= MAX_MESSAGE_BYTES
    body = json.loads(decode_message(out).msg)
    assert body["seq"] == 4 and body["truncated"] > MAX_MESSAGE_BYTES


def test_decode_event_refuses_other_records():
    with pytest.raises(ValueError):
        decode_event(b"\x93\x01\x02\x03")


def test_a_process_that_forks_keeps_the_queue_closed(tmp_path):
    """py-lmdb refuses to open in a forked child an environment its parent has open: the supervisor's
    events (keep_open=False) open the queue only for each append, so its workers can open it."""
    config = SecurityLogConfig(collector="127.0.0.1:1", queue_dir=str(tmp_path / "q"))
    parent = SecurityEvents.open(config, tmp_path, keep_open=False)
    assert parent.enabled and parent.queue is None
    parent.config_changed("workers", 1, 2, by="reload")
    pid = os.fork()
    if pid == 0:  # a worker
        code = 1
        try:
            child = SecurityEvents.open(config, tmp_path)
            child.auth_failure("u", "10.0.0.1:1", "bad secret")
            child.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    parent.rate_limited("10.0.0.2", "udp")
    stats = parent.queue_stats()
    assert (stats.events, stats.appended) == (3, 3)
    parent.close()
    assert not parent.enabled and parent.queue_stats() is None
