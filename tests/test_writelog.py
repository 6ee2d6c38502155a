"""The write log (storage/log.py, storage/apply.py): every change an entry, appended and applied in one
transaction with the applied position; refusals are results; bad entries are refused before the log, fatal
when met in it; a failing entry leaves nothing behind; replays apply nothing twice; the log is trimmed; and a
second store applying the same log reaches the same state."""

from __future__ import annotations

import json
import time

import lmdb
import pytest

from resolver.handle.constants import ResponseCode
from resolver.handle.values import HandleValue
from resolver.templates import set_templates
from storage import apply, entries, zonejournal
from storage.apply import ApplyError, apply_batch, apply_batch_in, apply_entry
from storage.counters import DUPLICATE, add_counts_entry, totals
from storage.enterprises import add_prefix, get_credential, issue_credential, set_operator_secret, user_key
from storage.entries import BAD_ENTRY, FAILED, encode_entry, unwrap
from storage.jsonvalues import ValueEncoder
from storage.loader import load_files
from storage.log import EmbeddedLog, LocalLog, Retention
from storage.store import Store, StoreError, StoreReadOnlyError
from storage.writes import WriteError, parse_batch_item, put_batch, put_identifier, put_identifier_entry

URL = HandleValue(1, "URL", b"https://example.com/a", timestamp=1)


def dump(store: Store, names=("handles", "prefixes_db", "counters_db", "enterprises_db", "templates_db",
                              "audit_db", "shared_db", "zone_journal_db")) -> dict:  # fmt: skip
    with store.env.begin() as txn:
        return {name: list(txn.cursor(getattr(store, name))) for name in names}


def logged(store: Store) -> list[tuple[int, bytes]]:
    return list(EmbeddedLog(store).entries_after(0))


def test_a_write_is_an_entry_applied_with_its_position(store):
    add_prefix(store, "88.100.7", "Brakes Ltd")
    assert put_identifier(store, "88.100.7/A", [URL]) == "created"
    log = logged(store)
    assert [p for p, _ in log] == [1, 2] and store.applied_position() == 2
    assert [entries.decode_entry(e)[0] for _, e in log] == [entries.ADD_PREFIX, entries.PUT_IDENTIFIER]
    # The identifier change is noted for IXFR at its position, with no record before it.
    with store.env.begin() as txn:
        notes = list(zonejournal.notes_after(store, txn, 0))
    assert [(n.position, n.key, n.old_raw) for n in notes] == [(2, b"88.100.7/A", None)]


def test_a_refusal_is_a_logged_result_that_stores_nothing(store):
    add_prefix(store, "88.100.7", "Brakes Ltd")
    before = dump(store)
    with pytest.raises(WriteError) as caught:
        put_identifier(store, "88.100.8/A", [URL])  # a prefix not served here
    assert caught.value.code == ResponseCode.SERVER_NOT_RESP
    assert dump(store) == before  # nothing of it, not even an audit entry or a journal note
    assert store.applied_position() == 2 and len(logged(store)) == 2  # but it is in the log, applied


def test_an_atomic_batch_refused_whole_leaves_nothing(store):
    add_prefix(store, "88.100.7", "Brakes Ltd")
    encoder = ValueEncoder(1)
    items = [parse_batch_item(1, {"handle": "88.100.7/A", "values": [{"index": 1, "type": "URL", "data": "x"}]},
                              encoder, store),
             parse_batch_item(2, {"handle": "88.100.9/B", "values": []}, encoder, store)]  # fmt: skip
    before = dump(store)
    result = put_batch(store, items, atomic=True)
    assert not result.written and result.failed == 1 and result.first_error.code == ResponseCode.SERVER_NOT_RESP
    assert dump(store) == before


def test_a_bad_entry_is_refused_before_the_log_and_fatal_in_it(store):
    results = LocalLog(store).submit([b"\x93garbage", encode_entry("drop_everything", {})])
    assert [r[1] for r in results] == [BAD_ENTRY, BAD_ENTRY]
    assert store.applied_position() == 0 and logged(store) == []
    add_prefix(store, "88.100.7", "Brakes Ltd")
    before = dump(store)
    good = put_identifier_entry("88.100.7/A", [URL])
    with pytest.raises(ApplyError):  # met in a log (a replicated one): the apply loop stops there
        apply_batch(store, [(2, good), (3, encode_entry("drop_everything", {}))])
    assert dump(store) == before and store.applied_position() == 1  # nothing of the batch committed
    with pytest.raises(ApplyError), store.env.begin(write=True) as txn:
        apply_entry(store, txn, 9, b"\xc1")


def test_a_failing_entry_is_left_out_while_the_others_commit(store, monkeypatch):
    add_prefix(store, "88.100.7", "Brakes Ltd")

    def broken(s, txn, args, ctx):
        txn.put(b"88.100.7/HALF", b"x", db=s.handles)  # written, then the apply fails: must not stay
        raise RuntimeError("a bug")

    monkeypatch.setitem(apply.APPLY, entries.DELETE_TEMPLATES, broken)
    batch = [put_identifier_entry("88.100.7/A", [URL]), encode_entry(entries.DELETE_TEMPLATES, {}),
             put_identifier_entry("88.100.7/B", [URL])]  # fmt: skip
    results = LocalLog(store).submit(batch)
    assert unwrap(results[0]) == "created" and unwrap(results[2]) == "created"
    assert results[1][:2] == [entries.REFUSED, FAILED] and "a bug" in results[1][2]
    assert store.get("88.100.7/HALF") is None
    assert [p for p, _ in logged(store)] == [1, 2, 3] and store.applied_position() == 3


def test_a_replayed_position_is_not_applied_again(store):
    add_prefix(store, "88.100.7", "Brakes Ltd")
    entry = put_identifier_entry("88.100.7/A", [URL])
    assert apply_batch(store, [(2, entry)])[0] == [entries.OK, "created"]
    assert apply_batch(store, [(2, entry)]) == [None]  # redelivered after a crash: skipped
    assert totals(store, "registrations")[0] == 1
    with pytest.raises(ApplyError):  # a gap
        apply_batch(store, [(4, entry)])


def test_a_resent_counter_delta_counts_once(store):
    counts = {b"resolutions.handle/20261201/88.100.7": 5}
    first = add_counts_entry(counts, source="worker-1", seq=1)
    log = LocalLog(store)
    assert unwrap(log.submit([first])[0]) == "applied"
    assert unwrap(log.submit([first])[0]) == DUPLICATE  # the answer was lost, the worker sent it again
    assert unwrap(log.submit([add_counts_entry(counts, source="worker-1", seq=2)])[0]) == "applied"
    assert unwrap(log.submit([add_counts_entry(counts, source="worker-2", seq=1)])[0]) == "applied"
    assert totals(store, "resolutions")[0] == 15


def test_the_log_is_trimmed_beyond_its_retention(store):
    log = LocalLog(store, Retention(entries=3, seconds=3600))
    for _ in range(6):
        log.submit([add_counts_entry({b"resolutions.handle/20261201/88.100.7": 1})])
    assert [p for p, _ in logged(store)] == [4, 5, 6] and store.applied_position() == 6
    a_week = EmbeddedLog(store, Retention(entries=100, seconds=7 * 86_400))
    assert store.write(lambda txn: a_week.trim_in(txn, now_s=time.time() + 86_400)) == 0  # a day later
    assert store.write(lambda txn: a_week.trim_in(txn, now_s=time.time() + 8 * 86_400)) == 3  # too old
    assert logged(store) == [] and store.applied_position() == 6
    log.submit([add_counts_entry({b"resolutions.handle/20261201/88.100.7": 1})])
    assert [p for p, _ in logged(store)] == [7]  # positions go on after the applied one
    assert totals(store, "resolutions")[0] == 7


def test_another_store_applying_the_same_log_reaches_the_same_state(tmp_path, demo_ndjson):
    with Store(tmp_path / "a", create=True) as a:
        load_files(a, [demo_ndjson], parallel=False)  # chunks logged by reference to the file
        add_prefix(a, "88.100.7", "Brakes Ltd")
        issue_credential(a, "88.100.7")
        set_operator_secret(a, "a long operator secret")
        set_templates(a, {"prefix": "88.100.7", "scenario": "s", "templates": [
            {"name": "Part", "suffixPattern": "PART-.*", "fields": [{"name": "lot", "index": 2001, "type": "LOT"}]}]})
        put_identifier(a, "88.100.7/PART-1", [URL, HandleValue(2001, "LOT", b"L1", timestamp=1)], checker=True)
        with pytest.raises(WriteError):
            put_identifier(a, "88.100.7/PART-2", [HandleValue(2001, "LINE", b"x", timestamp=1)], checker=True)
        log = logged(a)
        expected = dump(a)
        applied = a.applied_position()
    with Store(tmp_path / "b", create=True) as b:
        apply_batch(b, log)
        assert dump(b) == expected and b.applied_position() == applied
        assert get_credential(b, user_key("operator")).verify("a long operator secret")


def test_a_read_only_store_never_writes(tmp_path):
    with Store(tmp_path / "s", create=True) as s:
        add_prefix(s, "88.100.7", "Brakes Ltd")
    with Store(tmp_path / "s", readonly=True) as ro:
        assert ro.prefixes() and ro.applied_position() == 1
        with pytest.raises(StoreReadOnlyError):
            add_prefix(ro, "88.100.8", "Other")
        with pytest.raises(lmdb.ReadonlyError):
            ro.env.begin(write=True)
    with pytest.raises(StoreError):
        Store(tmp_path / "none", readonly=True)


def test_template_documents_travel_as_entries(store):
    add_prefix(store, "88.100.7", "Brakes Ltd")
    document = {"prefix": "88.100.7", "templates": [{"name": "P", "fields": [{"name": "a", "index": 2001,
                                                                                 "type": "A"}]}]}  # fmt: skip
    set_templates(store, document)
    kind, args = entries.decode_entry(logged(store)[-1][1])
    assert kind == entries.SET_TEMPLATES and json.loads(args["document"]) == document


def test_a_credential_entry_carries_the_hash_never_the_secret(store):
    add_prefix(store, "88.100.7", "Brakes Ltd")
    _, secret = issue_credential(store, "88.100.7")
    raw = logged(store)[-1][1]
    assert secret.encode() not in raw
    with store.env.begin(write=True) as txn:  # the admin identity is a noted identifier change
        assert any(n.key == b"88.100.7/ADMIN" for n in zonejournal.notes_after(store, txn, 0))
        assert apply_batch_in(store, txn, []) == []


def test_the_settings_default_to_the_logs_retention():
    from resolver.config import ServeConfig
    from storage.log import LOG_RETENTION_ENTRIES, LOG_RETENTION_S

    config = ServeConfig(data_dir="x")
    assert (config.log_retention_entries, config.log_retention_s) == (LOG_RETENTION_ENTRIES, LOG_RETENTION_S)
