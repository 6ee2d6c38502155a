"""The DNS view's memos: rendered records per values tail and whole answers replayed for repeated queries.
A replayed answer is the answer the view would give afresh: writes, deletions, the clock and the UDP size all
still show."""

from __future__ import annotations

import tracemalloc

import dns.flags
import dns.rcode
import pytest

from bench.datagen import Dataset
from resolver.dnsview import handle_to_name
from resolver.dnsview.memo import ByteBudgetMemo
from resolver.dnsview.view import _rendered_size

from .test_dns_helpers import ZONE, Store, Value, parse, query, tail_of, txt_strings


def with_id(wire: bytes, qid: int) -> bytes:
    return qid.to_bytes(2, "big") + wire[2:]


def counting_view(store: Store, **kwargs):
    counted: list[bytes] = []
    return store.view(on_resolution=counted.append, **kwargs), counted


# --- the memo itself ------------------------------------------------------------------------------------------
def test_memo_keeps_within_its_budget_evicting_oldest_first():
    memo: ByteBudgetMemo[str, bytes] = ByteBudgetMemo(30, lambda key, value: len(value))
    for key in "abcde":
        memo.put(key, b"x" * 10)
    assert memo.keys() == ["c", "d", "e"] and memo.bytes == 30
    assert memo.get("a") is None and memo.get("e") == b"x" * 10


def test_memo_replacing_an_entry_counts_it_once():
    memo: ByteBudgetMemo[str, bytes] = ByteBudgetMemo(30, lambda key, value: len(value))
    memo.put("a", b"x" * 10)
    memo.put("a", b"y" * 20)
    assert memo.keys() == ["a"] and memo.bytes == 20 and memo.get("a") == b"y" * 20


def test_memo_skips_an_entry_larger_than_the_budget_and_a_zero_budget_keeps_nothing():
    memo: ByteBudgetMemo[str, bytes] = ByteBudgetMemo(30, lambda key, value: len(value))
    memo.put("a", b"x" * 10)
    memo.put("big", b"x" * 31)
    assert memo.keys() == ["a"]
    off: ByteBudgetMemo[str, bytes] = ByteBudgetMemo(0, lambda key, value: len(value))
    off.put("a", b"")
    assert len(off) == 0
    with pytest.raises(ValueError):
        ByteBudgetMemo(-1, lambda key, value: 0)


# --- rendered records -----------------------------------------------------------------------------------------
def test_rendered_records_evict_oldest_first_within_the_budget():
    store = Store()
    tails = [store.add(f"88.1/N{i}", tail_of([Value(1, b"EMAIL", b"%d@x" % i)])) for i in range(6)]
    tails = [store[key] for key in tails]
    entry = _rendered_size(tails[0], ((b"\0" * 28, 1), (b"", 0)))  # "1 EMAIL 0@x" as one TXT record
    view = store.view(memo_bytes=2 * 3 * entry)  # half the budget for rendered records: three of them
    for i in range(6):
        assert txt_strings(parse(view.answer(query(f"n{i}._.1.88.id.test.")))) == [b"1 EMAIL %d@x" % i]
    assert view._rendered.keys() == tails[3:]
    assert txt_strings(parse(view.answer(query("n0._.1.88.id.test.")))) == [b"1 EMAIL 0@x"]
    assert view._rendered.keys()[-1] == tails[0]


# --- whole answers, replayed ----------------------------------------------------------------------------------
def test_a_repeated_query_is_replayed_with_its_own_id_and_counted():
    store = Store()
    store.add("88.1/A", tail_of([Value(1, b"EMAIL", b"a@x"), Value(2, b"URL", b"https://a.example/")]))
    view, counted = counting_view(store)
    wire = query("a._.1.88.id.test.", "URI")
    first = view.answer(with_id(wire, 1))
    replayed = view.answer(with_id(wire, 2))
    assert len(view._answers) == 1
    assert replayed == with_id(first, 2)
    assert parse(replayed).answer[0].to_text().endswith('URI 2 1 "https://a.example/"')
    assert counted == [b"88.1", b"88.1"]  # every answer with the identifier's data is counted, replayed or not


def test_a_write_shows_in_the_next_answer():
    store = Store()
    store.add("88.1/A", tail_of([Value(1, b"EMAIL", b"old@x")]))
    view = store.view()
    wire = query("a._.1.88.id.test.")
    for _ in range(2):
        assert txt_strings(parse(view.answer(wire))) == [b"1 EMAIL old@x"]
    store.add("88.1/A", tail_of([Value(1, b"EMAIL", b"new@x")]))
    assert txt_strings(parse(view.answer(wire))) == [b"1 EMAIL new@x"]
    assert txt_strings(parse(view.answer(wire))) == [b"1 EMAIL new@x"]


def test_deletion_and_creation_show_in_the_next_answer():
    store = Store()
    key = store.add("88.1/A", tail_of([Value(1, b"EMAIL", b"a@x")]))
    view, counted = counting_view(store)
    wire = query("a._.1.88.id.test.")
    assert parse(view.answer(wire)).rcode() == dns.rcode.NOERROR
    del store[key]
    for _ in range(2):  # the NXDOMAIN is replayed too, and counts nothing
        assert parse(view.answer(wire)).rcode() == dns.rcode.NXDOMAIN
    assert counted == [b"88.1"]
    store.add("88.1/A", tail_of([Value(1, b"EMAIL", b"back@x")]))
    assert txt_strings(parse(view.answer(wire))) == [b"1 EMAIL back@x"]


def test_a_store_failure_after_a_replayable_answer_is_servfail():
    store = Store()
    store.add("88.1/A", tail_of([Value(1, b"EMAIL", b"a@x")]))
    failing = [False]

    def lookup(key: bytes) -> bytes | None:
        if failing[0]:
            raise OSError("disk on fire")
        return store.get(key)

    from resolver.dnsview import DnsView

    view = DnsView(ZONE, lookup)
    wire = query("a._.1.88.id.test.")
    view.answer(wire)
    failing[0] = True
    assert parse(view.answer(wire)).rcode() == dns.rcode.SERVFAIL


def test_clock_dependent_answers_are_not_replayed():
    now = [1_700_000_000.0]
    store = Store()
    store.add("88.1/ABS", tail_of([Value(1, b"EMAIL", b"x@y", ttl_type=1, ttl=1_700_000_600)]))
    view = store.view(clock=lambda: now[0])
    wire = query("abs._.1.88.id.test.")
    assert parse(view.answer(wire)).answer[0].ttl == 600
    now[0] += 100
    assert parse(view.answer(wire)).answer[0].ttl == 500
    assert len(view._answers) == 0


def test_a_truncated_answer_is_not_replayed_over_tcp():
    store = Store()
    store.add("88.1/BIG", tail_of([Value(i, b"DESC", b"d" * 200) for i in range(1, 8)]))
    view = store.view()
    wire = query("big._.1.88.id.test.", edns=None)  # 512 bytes at most over UDP
    assert parse(view.answer(wire, "udp")).flags & dns.flags.TC
    full = parse(view.answer(wire, "tcp"))
    assert not full.flags & dns.flags.TC and len(txt_strings(full)) == 7
    assert parse(view.answer(wire, "udp")).flags & dns.flags.TC
    assert len(view._answers) == 0


def test_answers_replayed_equal_answers_built_afresh():
    dataset = Dataset(300, seed=3)
    store = Store()
    for i in range(dataset.count):
        store.add(dataset.handle_at(i), tail_of([Value(1, b"URL", b"https://x.example/%d" % i),
                                                 Value(2, b"EMAIL", b"%d@x.example" % i)]))  # fmt: skip
    memo_view, fresh_view = store.view(), store.view(memo_bytes=0)
    for _ in range(2):
        for i in range(0, dataset.count, 7):
            for rdtype, edns in (("TXT", None), ("URI", 0), ("TXT", 0)):
                wire = query(handle_to_name(dataset.handle_at(i), ZONE), rdtype, edns=edns)
                assert memo_view.answer(wire) == fresh_view.answer(wire)
    assert len(memo_view._answers) > 0 and len(fresh_view._answers) == 0


def test_the_budget_covers_what_the_memos_really_hold():
    """The per-entry overheads in the size estimates are not below what Python really allocates (bytes that
    both memos hold are counted by both, so the estimate errs on the safe side)."""
    dataset = Dataset(2000, seed=5)
    store = Store()
    for i in range(dataset.count):
        store.add(dataset.handle_at(i), tail_of([Value(1, b"URL", b"https://x.example/p/%d" % i),
                                                 Value(2, b"EMAIL", b"owner%d@x.example" % i),
                                                 Value(3, b"DESC", b"batch %d of brake discs" % i)]))  # fmt: skip
    wires = [query(handle_to_name(dataset.handle_at(i), ZONE), t, edns=None)
             for i in range(dataset.count) for t in ("TXT", "URI")]  # fmt: skip
    view = store.view()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for wire in wires:
        view.answer(wire)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(view._answers) == len(wires)
    accounted = view._rendered.bytes + view._answers.bytes
    assert held <= accounted <= 2 * held, (held, accounted)  # honest, and not so cautious it wastes the budget


def test_the_node_default_is_the_views_default():
    from resolver.config import DNS_MEMO_MB
    from resolver.dnsview.constants import DNS_MEMO_BYTES

    assert DNS_MEMO_MB << 20 == DNS_MEMO_BYTES
