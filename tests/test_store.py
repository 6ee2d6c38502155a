"""The LMDB store on real files: keys and the case rule, prefixes, counters, map growth, read views."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from resolver.handle.values import HandleValue
from storage import store as store_module
from storage.counters import ResolutionCounter, resolution_totals
from storage.keys import InvalidHandle, handle_key
from storage.loader import load_files
from storage.records import pack_record
from storage.store import PrefixInfo, Store, StoreError


def test_case_rule():
    assert handle_key(b"88.100.1/abc") == b"88.100.1/ABC"
    assert handle_key(b"88.100.1/abc", case_sensitive=True) == b"88.100.1/abc"
    assert handle_key(b"88.a/abc", case_sensitive=True) == b"88.A/abc"  # prefixes always case-insensitive
    assert handle_key(b"0.na/88.a", case_sensitive=True) == b"0.NA/88.A"
    assert handle_key("88.100.1/äbc".encode()) == "88.100.1/äBC".encode()  # only ASCII a-z change
    for bad in (b"no-slash", b"/suffix-only"):
        with pytest.raises(InvalidHandle):
            handle_key(bad)


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        Store(tmp_path / "absent")


def test_case_sensitivity_is_fixed_at_creation(tmp_path):
    Store(tmp_path / "s", create=True, case_sensitive=True).close()
    with Store(tmp_path / "s") as reopened:
        assert reopened.case_sensitive
        assert reopened.key_of("88.1/abc") == b"88.1/abc"


def test_records_survive_reopen_and_count(tmp_path):
    with Store(tmp_path / "s", create=True) as s:
        new = s.put_records([(b"88.1/A", pack_record([HandleValue(1, "URL", b"u")])), (b"88.1/B", pack_record([]))])
        assert new == 2
        assert s.put_records([(b"88.1/A", pack_record([HandleValue(1, "URL", b"v")]))]) == 0
    with Store(tmp_path / "s") as s:
        assert s.count_identifiers() == 2
        tail, _ = s.unpack(s.get("88.1/a"))
        assert tail.endswith(b"\x00\x00\x00\x01v\x00\x00\x00\x00")


def test_map_grows_instead_of_failing(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "INITIAL_MAP_BYTES", 1 << 20)
    with Store(tmp_path / "s", create=True) as s:
        view = s.read_view()
        big = pack_record([HandleValue(1, "BLOB", b"x" * 3000)])
        for batch in range(10):
            s.put_records([(f"88.1/{batch:03}-{i:04}".encode(), big) for i in range(200)])
        assert s.count_identifiers() == 2000
        assert s.env.info()["map_size"] > 1 << 20
        view.refresh()
        assert view.get(b"88.1/009-0199") == big


def test_map_grows_when_the_write_log_applies_a_load(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "INITIAL_MAP_BYTES", 1 << 20)
    source = tmp_path / "big.ndjson"
    with source.open("w") as out:
        for i in range(3000):
            out.write(json.dumps({"handle": f"88.1/G-{i:05}", "values": [{"index": 1, "type": "DESC",
                                                                           "data": "x" * 1000}]}) + "\n")  # fmt: skip
    with Store(tmp_path / "s", create=True) as s:
        load_files(s, [source])  # entries of the write log, applied in one transaction each
        assert s.count_identifiers() == 3000
        assert s.env.info()["map_size"] > 1 << 20


_GROW_ELSEWHERE = """
import sys
from resolver.handle.values import HandleValue
from storage import store as store_module
from storage.records import pack_record
store_module.INITIAL_MAP_BYTES = 1 << 20
with store_module.Store(sys.argv[1]) as s:
    big = pack_record([HandleValue(1, "BLOB", b"x" * 3000)])
    s.put_records([(f"88.1/{sys.argv[2]}-{i:04}".encode(), big) for i in range(1000)])
"""


def test_a_read_adopts_the_map_another_process_grew(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "INITIAL_MAP_BYTES", 1 << 20)
    with Store(tmp_path / "s", create=True) as s:
        s.set_meta(b"mark", b"here")
        grown = 0

        def grow_elsewhere() -> None:  # a writer or a loader's sibling grows the map past this process's
            nonlocal grown
            grown += 1
            subprocess.run([sys.executable, "-c", _GROW_ELSEWHERE, str(tmp_path / "s"), f"E{grown}"], check=True,
                           timeout=60)  # fmt: skip

        grow_elsewhere()
        assert s.get_meta(b"mark") == b"here"  # LMDB says MDB_MAP_RESIZED first: the store adopts the size
        assert s.env.info()["map_size"] > 1 << 20
        # every read of its own adopts it too (`idnode load` counted a served store's identifiers after the
        # writer grew it: a traceback at the end of a 20M load)
        grow_elsewhere()
        assert s.count_identifiers() == 2000
        grow_elsewhere()
        assert s.get("88.1/E3-0999") is not None
        grow_elsewhere()
        assert s.prefixes() == {} and sum(s.counters().values()) == 4000  # registrations counted


def test_read_view_sees_writes_after_refresh(store):
    view = store.read_view()
    assert view.get(b"88.1/NEW") is None
    store.put_records([(b"88.1/NEW", pack_record([]))])
    view.refresh()
    assert view.get(b"88.1/NEW") is not None


def test_prefixes_and_version(store):
    v0 = store.prefixes_version()
    store.put_prefix(PrefixInfo("88.100.7", state="referral", org="Brakes Ltd", site=b"site"))
    assert store.prefixes_version() != v0
    info = store.prefixes()[b"88.100.7"]
    assert (info.state, info.org, info.site) == ("referral", "Brakes Ltd", b"site")


def test_counts_accumulate_across_flushes_and_reopen(tmp_path):
    with Store(tmp_path / "s", create=True) as s:
        counter = ResolutionCounter()
        for _ in range(3):
            counter.count(b"88.100.1")
        counter.count(b"88.100.2")
        assert counter.flush(s, now_s=1_764_400_000) == 4
        counter.count(b"88.100.1")
        counter.flush(s, now_s=1_764_500_000)
        assert counter.flush(s) == 0  # nothing pending
    with Store(tmp_path / "s") as s:
        total, per_prefix, per_day = resolution_totals(s)
    assert total == 5
    assert per_prefix == {"88.100.1": 4, "88.100.2": 1}
    assert sorted(per_day.values()) == [1, 4]


def test_counter_keeps_counts_when_the_store_write_fails(tmp_path):
    class Broken:
        def add_counts(self, counts):
            raise OSError("disk full")

    counter = ResolutionCounter()
    counter.count(b"88.1")
    with pytest.raises(OSError):
        counter.flush(Broken())
    with Store(tmp_path / "s", create=True) as s:
        assert counter.flush(s) == 1
        assert resolution_totals(s)[0] == 1


def test_new_records_count_as_registrations_of_their_prefix(store):
    from storage.counters import totals
    from storage.store import REGISTRATIONS

    store.put_records([(b"88.1/A", pack_record([])), (b"88.1/B", pack_record([])), (b"88.2/C", pack_record([]))], append=True)
    store.put_records([(b"88.1/A", pack_record([])), (b"88.2/D", pack_record([]))])  # A exists: not new
    total, per_prefix, per_day, _ = totals(store, REGISTRATIONS)
    assert total == 4
    assert per_prefix == {"88.1": 2, "88.2": 2}


_AROUND_THE_SLASH = [b"88.1/A", b"88.1/B", b"88.1.2/A", b"88.10/A", b"88.1/", b"88.1/\xff", b"88.1-X/A", b"88.1/0"]


@pytest.mark.parametrize(
    "keys",
    [
        [],
        [b"88.1/A"],
        [b"88.1/A", b"88.1/B", b"88.1.2/A", b"88.10/A", b"88.1/C"],  # unsorted: counted one by one
        sorted([*_AROUND_THE_SLASH, b"0.NA/88.1", b"88.1/A/B", b"88/X"]),  # prefixes extending others
        [b"88.1/A", b"88.1/A", b"88.2/B"],  # sorted but not strictly: a duplicate is counted twice
    ],
)
def test_count_by_prefix_counts_sorted_runs_like_one_by_one(keys):
    from storage.keys import count_by_prefix, prefix_of_key, strictly_ascending

    one_by_one: dict[bytes, int] = {}
    for key in keys:
        one_by_one[prefix_of_key(key)] = one_by_one.get(prefix_of_key(key), 0) + 1
    assert count_by_prefix(keys) == one_by_one
    assert strictly_ascending(keys) == all(a < b for a, b in zip(keys, keys[1:], strict=False))


def test_long_keys_of_a_batch_are_indexed_for_the_dns_view(store):
    import hashlib

    long_key = b"88.1/" + b"L" * 60
    store.put_records([(b"88.1/A", pack_record([])), (long_key, pack_record([]))])
    store.put_records([(b"88.1/B", pack_record([]))])
    assert store.key_of_dns_digest(hashlib.sha256(long_key).digest()) == long_key
    with store.env.begin(db=store.dns_digests_db) as txn:
        assert txn.stat(store.dns_digests_db)["entries"] == 1
