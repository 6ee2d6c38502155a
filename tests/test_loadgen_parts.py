"""The load generator's parts without a server: request pools, Zipf popularity, the answer readers, the schedule,
the meter's phases, the merged figures and the command line's refusals (the plot is drawn by the real runs of
tests/test_loadgen.py)."""

from __future__ import annotations

import struct
import sys
from collections import Counter
from random import Random

import dnslib
import pytest

from bench.datagen import Dataset
from bench.load.meter import TIMELINE_INTERVAL_S, Meter
from bench.load.popularity import RankOrder, ZipfSampler
from bench.load.protocols import AnswerError, dns_code_name, read_handle_answers, read_http_answers
from bench.load.report import latency_histogram, percentiles
from bench.load.requests import draw_names, request_pool
from bench.load.schedule import Schedule
from bench.loadgen import DatasetSpec, LoadGenError, LoadSpec
from resolver.cli import main as idnode_main
from resolver.dnsview import name_to_handle
from resolver.handle.message import decode_request, decode_resolution_request

SPEC = DatasetSpec(2000, seed=1, prefix="88.100", enterprises=8)
DATASET = Dataset(SPEC.count, SPEC.seed, SPEC.prefix, SPEC.enterprises)
PRESENT = frozenset(DATASET.handle_at(i) for i in range(DATASET.count))


# --- requests -----------------------------------------------------------------------------------------------


def test_request_pool_is_seeded_and_exact():
    pool, names = request_pool(SPEC, 1000, 0.25, seed="x")
    again, names_again = request_pool(SPEC, 1000, 0.25, seed="x")
    assert pool == again and names == names_again
    assert sum(name not in PRESENT for name in names) == 250
    message = decode_request(bytes(pool[0]))
    assert decode_resolution_request(message.body).handle == names[0].encode()
    assert struct.unpack_from(">I", pool[0], 8) == (0,)  # the request id the generator patches


def test_dns_pool_asks_for_the_identifiers_names():
    options = {"dns_zone": "id.test.", "dns_qtype": "alternate"}
    pool, names = request_pool(SPEC, 200, 0.1, seed=1, protocol="dns", options=options)
    for i, (query, handle) in enumerate(zip(pool, names, strict=True)):
        record = dnslib.DNSRecord.parse(bytes(query))
        assert record.header.id == 0 and record.header.rd == 0
        assert dnslib.QTYPE[record.q.qtype] == ("TXT" if i % 2 == 0 else "URI")
        assert name_to_handle(str(record.q.qname)) == handle
        assert record.ar[0].rtype == dnslib.QTYPE.OPT


def test_http_pool_gets_the_rest_resolution():
    pool, names = request_pool(["88.100.1/A B"], 4, 0.0, seed=1, protocol="http",
                               options={"host": "127.0.0.1", "port": 8000})  # fmt: skip
    assert bytes(pool[0]) == b"GET /api/handles/88.100.1/A%20B HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"


# --- popularity ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [0.8, 1.0, 1.5])
def test_zipf_draws_follow_the_distribution(s):
    n, draws = 20, 100_000
    sampler = ZipfSampler(n, s)
    rng = Random(7)
    counts = Counter(sampler.draw(rng.random) for _ in range(draws))
    norm = sum(r**-s for r in range(1, n + 1))
    for rank in range(1, n + 1):
        assert counts[rank] / draws == pytest.approx(rank**-s / norm, abs=0.006)


def test_zipf_names_are_skewed_and_seeded():
    names = draw_names(SPEC, 20_000, 0.0, seed=1, popularity="zipf", zipf_s=1.0, order_seed=5)
    assert names == draw_names(SPEC, 20_000, 0.0, seed=1, popularity="zipf", zipf_s=1.0, order_seed=5)
    ranked = Counter(names).most_common()
    top = ranked[0][1]
    median = ranked[len(ranked) // 2][1]
    assert top > 50 * median  # rank 1 of 2,000 against a middle one: ~1,000 times as likely at s = 1
    uniform = Counter(draw_names(SPEC, 20_000, 0.0, seed=1)).most_common(1)[0][1]
    assert uniform < top / 20
    # The same order seed makes every process agree on which identifier is the most popular.
    other_process = draw_names(SPEC, 20_000, 0.0, seed=2, popularity="zipf", zipf_s=1.0, order_seed=5)
    assert Counter(other_process).most_common(1)[0][0] == ranked[0][0]


def test_rank_order_is_a_permutation():
    for n in (1, 2, 97, 1000):
        order = RankOrder(n, seed=3)
        assert sorted(order.position(r) for r in range(1, n + 1)) == list(range(n))


# --- answers ------------------------------------------------------------------------------------------------


def _handle_answer(code: int, body: bytes = b"") -> bytes:
    payload = struct.pack(">II", 1, code) + body  # OpCode, ResponseCode, ...
    return struct.pack(">BBHIIII", 2, 10, 0, 0, 7, 0, len(payload)) + payload


def test_handle_answers_are_cut_from_a_stream_in_pieces():
    stream = _handle_answer(1, b"x" * 30) + _handle_answer(100) + _handle_answer(1, b"y" * 5)
    inbox, codes = bytearray(), []
    for i in range(0, len(stream), 7):
        inbox += stream[i : i + 7]
        codes += read_handle_answers(inbox)
    assert codes == [1, 100, 1] and inbox == b""
    with pytest.raises(AnswerError):
        read_handle_answers(bytearray(struct.pack(">BBHIIII", 2, 10, 0, 0, 7, 0, 1 << 30)))


def test_http_answers_are_cut_from_a_stream_in_pieces():
    ok = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n{"a"'
    missing = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}"
    stream = ok + missing + ok
    inbox, codes = bytearray(), []
    for i in range(0, len(stream), 5):
        inbox += stream[i : i + 5]
        codes += read_http_answers(inbox)
    assert codes == [200, 404, 200] and inbox == b""


@pytest.mark.parametrize(
    "garbage",
    [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd", b"SSH-2.0-OpenSSH\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", b"HTTP/1.1 2xx OK\r\n\r\n"],
)  # fmt: skip
def test_http_reader_refuses_what_it_cannot_follow(garbage):
    with pytest.raises(AnswerError):
        read_http_answers(bytearray(garbage))


def test_dns_codes_are_named_and_truncation_shows():
    assert dns_code_name(0x8400) == "NOERROR"
    assert dns_code_name(0x8403) == "NXDOMAIN"
    assert dns_code_name(0x8605) == "REFUSED/TC"
    assert dns_code_name(0x800F) == "RCODE_15"


# --- schedule, meter, figures -------------------------------------------------------------------------------


def test_schedule_does_not_drift():
    schedule = Schedule(3.0, start_ns=1000)
    due = [schedule.take() for _ in range(4)]
    assert due == [1000, 1000 + 333_333_333, 1000 + 666_666_666, 1_000_001_000]
    for _ in range(2_999_996):
        schedule.take()
    assert schedule.next_ns == 1000 + 1_000_000 * 1_000_000_000  # three million requests: a million seconds


def test_meter_forgets_the_warm_up_and_ends_on_time():
    s = 1_000_000_000
    reports = []
    meter = Meter(0, warmup_s=1.0, duration_s=2.0, count=None, progress=reports.append)
    assert meter.start(0) == (s, sys.maxsize)  # the warm-up end and the first progress report coincide
    meter.latencies.extend([5, 6, 7])
    meter.codes[1] = 3
    meter.lost = 2
    assert meter.event(s, sent=10) == s + s // 2  # measuring now; the first interval ends half a second on
    assert reports[0]["measuring"] is False and reports[0]["answers"] == 3
    assert len(meter.latencies) == 0 and meter.codes == {} and meter.lost == 0
    t = s + int(TIMELINE_INTERVAL_S * s)
    while t:  # one answer an interval, each event called when the meter asked for it
        meter.latencies.append(100)
        t = meter.event(t, sent=20)
    result = meter.result(3 * s, sent=30, outstanding=4)
    assert result["stopped_by"] == "duration" and result["sent"] == 20
    assert result["timeline"] == [1, 1, 1, 1]  # the last interval ends with the run and is counted


def test_percentiles_nearest_rank():
    values = list(range(1, 1001))
    assert percentiles(values, (50, 90, 99, 99.9, 100)) == {50: 500, 90: 900, 99: 990, 99.9: 999, 100: 1000}
    assert percentiles([7], (50, 99.9)) == {50: 7, 99.9: 7}


def test_latency_histogram_holds_every_sample_in_log_bins():
    samples = sorted([800, 1_000, 1_500, 50_000, 50_000, 2_000_000, 9_999_999])  # ns
    histogram = latency_histogram(samples)
    assert sum(histogram["counts"]) == len(samples)
    uppers = histogram["upper_us"]
    assert uppers[0] <= 0.8 and uppers[-1] >= 9_999.999
    assert all(
        b / a == pytest.approx(10 ** (1 / 20), rel=1e-3) for a, b in zip(uppers, uppers[1:], strict=False)
    )
    assert latency_histogram([]) == {"bins_per_decade": 20, "upper_us": [], "counts": []}


# --- refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"protocol": "smtp"}, "protocol 'smtp'"), ({"protocol": "http", "window": 4}, "not pipelined"),
     ({"count": 1, "processes": 2}, "below the 2 processes"), ({"rate": -5.0}, "rate must"),
     ({"pool_size": 1000}, "power of two"), ({"duration_s": 0.0}, "duration"), ({"missing_ratio": 1.5}, "missing"),
     ({"popularity": "pareto"}, "popularity"), ({"handles": []}, "no handles"), ({"count": 0}, "count must")],
)  # fmt: skip
def test_spec_refuses_bad_settings(changes, message):
    settings = {"protocol": "udp", "host": "127.0.0.1", "port": 9, "handles": SPEC} | changes
    with pytest.raises(LoadGenError, match=message):
        LoadSpec(**settings).check()


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["udp", "--rate", "100", "--window", "3"], "not allowed with argument"),
     (["udp", "--count", "-3"], "-3 is not positive"), (["udp", "--count", "0"], "0 is not positive"),
     (["udp", "--duration", "5", "--count", "10"], "not allowed with argument"),
     (["smtp"], "invalid choice: 'smtp'"), (["dns", "--missing", "1.5"], "not between 0 and 1"),
     (["udp", "--popularity", "pareto"], "invalid choice: 'pareto'")],
)  # fmt: skip
def test_cli_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        idnode_main(["bench", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["udp"], "give --dataset-count"),
        (["http", "--dataset-count", "10", "--window", "2"], "not pipelined"),
    ],
)
def test_cli_names_what_is_missing_or_wrong(argv, message, capsys):
    assert idnode_main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err
