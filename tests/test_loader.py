"""`idnode load`: NDJSON and CSV, errors naming file and line, consistency after a failed load, resuming,
re-running, and the sorted fast path."""

from __future__ import annotations

import json
import struct

import msgpack
import pytest

from bench.datagen import Dataset, generate_lines
from resolver.handle.values import AdminData, HandleValue, encode_admin, encode_value
from storage.loader import LoadError, load_files
from storage.records import split_values
from storage.store import Store
from tests.servers import idnode
from tests.test_lineshapes import NoShapes


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def record(handle, url="https://example.com/x"):
    return json.dumps({"handle": handle, "values": [{"index": 1, "type": "URL", "data": url}]})


def test_load_generated_file_registers_everything_and_prefixes(tmp_path, demo_ndjson):
    with Store(tmp_path / "s", create=True) as store:
        report = load_files(store, [demo_ndjson])
        assert (report.records, report.new) == (2000, 2000)
        assert store.count_identifiers() == 2000
        assert sorted(store.prefixes()) == sorted(
            p.encode() for p in Dataset(2000, 1, "88.100", 8).prefixes()
        )
        tail, all_public = store.unpack(store.get(Dataset(2000, 1, "88.100", 8).handle_at(17)))
        assert all_public and len(split_values(tail)) == 4


def test_rerunning_a_load_is_safe(tmp_path, demo_ndjson):
    with Store(tmp_path / "s", create=True) as store:
        load_files(store, [demo_ndjson])
        again = load_files(store, [demo_ndjson])
        assert (again.records, again.new) == (2000, 0)
        assert store.count_identifiers() == 2000


def test_unsorted_input_and_duplicates_are_accepted(tmp_path):
    path = write_lines(
        tmp_path / "u.ndjson", [record("88.1/B"), record("88.1/A"), record("88.1/b", "https://new")]
    )
    with Store(tmp_path / "s", create=True) as store:
        load_files(store, [path])
        assert store.count_identifiers() == 2
        assert b"https://new" in store.get("88.1/B")  # the later line wins


def test_parallel_and_serial_parsing_store_the_same_bytes(tmp_path, demo_ndjson, monkeypatch):
    from storage import loader

    # Values without a timestamp get the load's clock: both loads must read the same second.
    monkeypatch.setattr(loader.time, "time", lambda: 1_764_400_000.0)
    with Store(tmp_path / "a", create=True) as a, Store(tmp_path / "b", create=True) as b:
        load_files(a, [demo_ndjson], parallel=False)
        load_files(b, [demo_ndjson], parallel=True)
        strip = lambda s: [(k, s.unpack(v)) for k, v in s.iter_records()]  # noqa: E731
        assert strip(a) == strip(b)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "line 3:"),
        (json.dumps({"handle": "no-slash", "values": []}), "line 3: handle:"),
        (
            json.dumps(
                {
                    "handle": "88.1/C",
                    "values": [{"index": 1, "type": "URL", "data": {"format": "hex", "value": "zz"}}],
                }
            ),
            "line 3: values[0].data.value: not valid hex",
        ),
        (json.dumps({"handle": "88.1/" + "C" * 2100, "values": []}), "line 3: handle: longer than 2048"),
        (json.dumps({"handle": "88.1/", "values": []}), "line 3: handle: the suffix is empty: '88.1/'"),
    ],
)
def test_bad_line_names_file_and_line_and_keeps_the_lines_before(tmp_path, bad_line, message):
    path = write_lines(
        tmp_path / "bad.ndjson", [record("88.1/A"), record("88.1/B"), bad_line, record("88.1/D")]
    )
    with Store(tmp_path / "s", create=True) as store:
        with pytest.raises(LoadError) as err:
            load_files(store, [path])
        assert str(err.value).startswith(f"{path}:{message}")
        assert store.count_identifiers() == 2  # A and B committed, nothing after the bad line
        assert store.get("88.1/D") is None


def test_a_bad_line_can_be_fixed_and_the_load_rerun(tmp_path):
    lines = list(generate_lines(50, 1, "88.100", 4))
    path = write_lines(tmp_path / "f.ndjson", lines[:30] + ["{broken"] + lines[30:])
    with Store(tmp_path / "s", create=True) as store:
        with pytest.raises(LoadError, match=":line 31:"):
            load_files(store, [path])
        assert store.count_identifiers() == 30
    write_lines(path, lines)
    with Store(tmp_path / "s") as store:
        report = load_files(store, [path])
        assert store.count_identifiers() == 50
        assert report.skipped_lines == 0  # a changed file is loaded whole, which is safe


def test_interrupted_load_resumes_after_its_last_commit(tmp_path, monkeypatch):
    from storage import loader

    lines = list(generate_lines(45, 1, "88.100", 4))
    monkeypatch.setattr(loader, "CHUNK_BYTES", len(lines[0]) * 10)  # about ten lines a chunk
    path = write_lines(tmp_path / "f.ndjson", lines)

    committed = []

    def interrupt_after_two_commits(_path, records, _seconds):
        committed.append(records)
        if len(committed) == 2:
            raise KeyboardInterrupt  # what Ctrl-C or a kill does between two commits

    with Store(tmp_path / "s", create=True) as store:
        with pytest.raises(KeyboardInterrupt):
            load_files(store, [path], progress=interrupt_after_two_commits, parallel=False)
        assert store.count_identifiers() == committed[-1] < 45
    with Store(tmp_path / "s") as store:
        report = load_files(store, [path])
        assert report.skipped_lines == committed[-1] and report.records == 45 - committed[-1]
        assert store.count_identifiers() == 45
        again = load_files(store, [path])  # finished: the checkpoint is gone, a rerun reloads safely
        assert again.skipped_lines == 0 and store.count_identifiers() == 45


CSV_TEXT = """handle,index,type,data,format,ttl,permissions
88.100.7/PART-1,1,URL,https://example.com/part/1,,,
88.100.7/PART-1,2,DESC,刹车盘,,3600,
88.100.7/PART-1,100,HS_ADMIN,"{""handle"": ""0.NA/88.100.7"", ""index"": 200, ""permissions"": ""011111111111""}",admin,,
88.100.7/PART-2,1,URL,https://example.com/part/2,,,1111
"""


def test_csv_groups_consecutive_rows_into_identifiers(tmp_path):
    path = tmp_path / "parts.csv"
    path.write_text(CSV_TEXT, encoding="utf-8")
    with Store(tmp_path / "s", create=True) as store:
        assert load_files(store, [path]).records == 2
        tail, _ = store.unpack(store.get("88.100.7/part-1"))
        assert len(split_values(tail)) == 3


def test_csv_error_names_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(CSV_TEXT + "88.100.7/PART-3,one,URL,x,,,\n", encoding="utf-8")
    with Store(tmp_path / "s", create=True) as store:
        with pytest.raises(LoadError, match=r"bad.csv:line 6: index: 'one' is not an integer$"):
            load_files(store, [path])
        assert store.count_identifiers() == 2
    path.write_text("handle,type\nx,y\n", encoding="utf-8")
    with (
        Store(tmp_path / "s") as store,
        pytest.raises(LoadError, match="line 1: CSV header lacks index, data"),
    ):
        load_files(store, [path])


def test_cli_load_reports_error_with_file_and_line(tmp_path):
    path = write_lines(tmp_path / "x.ndjson", [record("88.1/A"), "[1, 2]"])
    result = idnode("load", "--data", str(tmp_path / "s"), "--quiet", str(path))
    assert result.returncode == 2
    assert f"{path}:line 2: record: must be an object" in result.stderr
    missing = idnode("load", "--data", str(tmp_path / "s"), str(tmp_path / "nope.ndjson"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_cli_gen_is_deterministic_and_sorted(tmp_path):
    first = idnode("gen", "--count", "300", "--seed", "4").stdout.splitlines()
    second = idnode("gen", "--count", "300", "--seed", "4").stdout.splitlines()
    assert first == second and len(first) == 300
    keys = [json.loads(line)["handle"].upper().encode() for line in first]
    assert keys == sorted(keys)


def test_parallel_load_names_the_right_line_and_keeps_the_chunks_before(tmp_path, monkeypatch):
    from storage import loader

    lines = list(generate_lines(60, 1, "88.100", 4))
    monkeypatch.setattr(loader, "CHUNK_BYTES", len(lines[0]) * 7)  # many chunks over two workers
    path = write_lines(tmp_path / "f.ndjson", lines[:44] + ['{"handle": 5}'] + lines[44:])
    with Store(tmp_path / "s", create=True) as store:
        with pytest.raises(LoadError, match=r"f.ndjson:line 45: handle: must be a string$"):
            load_files(store, [path], parallel=True)
        assert store.count_identifiers() == 44  # every line before the bad one, none after
        assert store.get(json.loads(lines[44])["handle"]) is None


def _stored(store: Store) -> dict[str, list[tuple[bytes, bytes]]]:
    """Everything a load writes that does not name the moment of the load (the audit trail does)."""
    out = {}
    for name, db in (("handles", store.handles), ("shared", store.shared_db), ("counters", store.counters_db),
                     ("prefixes", store.prefixes_db), ("dns digests", store.dns_digests_db)):  # fmt: skip
        with store.env.begin(db=db) as txn:
            out[name] = list(txn.cursor())
    return out


def test_line_templates_store_the_bytes_of_the_general_parser(tmp_path, monkeypatch):
    from storage import chunks, loader

    odd = [
        {"handle": "88.9/私有-1", "values": [{"index": 1, "type": "URL", "data": "u", "permissions": "1100"}]},
        {"handle": "88.9/" + "LONG" * 20, "values": [{"index": 1, "type": "URL", "data": "https://x/é"}]},
        {"handle": "88.9/E", "values": [{"index": 1, "type": "DESC", "data": ""}, {"index": 2, "type": "EMAIL",
                                                                                  "data": {"value": "a@b"}}]},
        {"handle": "88.9/ESC", "values": [{"index": 1, "type": "DESC", "data": 'quote " and \\'}]},
    ]  # fmt: skip
    lines = [*generate_lines(600, 3, "88.100", 4)]
    lines += [json.dumps(obj, ensure_ascii=False, separators=(",", ":")) for obj in odd for _ in range(2)]
    ndjson = write_lines(tmp_path / "mixed.ndjson", lines)
    csv_path = tmp_path / "parts.csv"
    csv_path.write_text(CSV_TEXT, encoding="utf-8")
    monkeypatch.setattr(loader.time, "time", lambda: 1_764_400_000.0)
    with Store(tmp_path / "fast", create=True) as store:
        load_files(store, [ndjson, csv_path], parallel=True)
        fast = _stored(store)
        csv_record = store.get("88.100.7/PART-1")

    monkeypatch.setattr(chunks, "LineShapes", NoShapes)
    with Store(tmp_path / "general", create=True) as store:
        load_files(store, [ndjson, csv_path], parallel=False)
        assert _stored(store) == fast
    assert len(fast["handles"]) == 600 + len(odd) + 2 and len(fast["dns digests"]) == 1

    # CSV takes neither templates nor shared values: its record is built as storage/records.py describes.
    now_s = 1_764_400_000
    admin = encode_admin(AdminData("0.NA/88.100.7", 200, 0b011111111111))
    values = [HandleValue(1, "URL", b"https://example.com/part/1", now_s),
              HandleValue(2, "DESC", "刹车盘".encode(), now_s, ttl=3600),
              HandleValue(100, "HS_ADMIN", admin, now_s)]  # fmt: skip
    tail = struct.pack(">I", len(values)) + b"".join(encode_value(v) for v in values)
    assert csv_record == msgpack.packb([1, tail, True])
