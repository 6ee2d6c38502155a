import io
import itertools
import json
import re
from random import Random

import pytest

from bench.datagen import (
    Dataset,
    generate_lines,
    generate_records,
    handle_at,
    missing_handle,
    sample_handles,
    write_ndjson,
)

HANDLE_RE = re.compile(r"88\.100\.([1-9][0-9]*)/([A-Z]+)-([0-9]{4})-([0-9]{6})")


def key(handle: str) -> bytes:
    return handle.upper().encode()


@pytest.fixture(scope="module")
def records_12():
    return list(generate_records(20_000, seed=7, enterprises=12))


@pytest.mark.parametrize(("count", "enterprises"), [(0, 32), (1, 32), (5, 32), (31, 32), (32, 32), (1000, 3)])
def test_count_exact(count, enterprises):
    assert sum(1 for _ in generate_records(count, seed=3, enterprises=enterprises)) == count
    assert sum(1 for _ in generate_lines(count, seed=3, enterprises=enterprises)) == count
    out = io.StringIO()
    assert write_ndjson(generate_lines(count, seed=3, enterprises=enterprises), out) == count
    assert out.getvalue().count("\n") == count


def test_key_order_strict_across_prefix_boundaries(records_12):
    keys = [key(r["handle"]) for r in records_12]
    assert all(a < b for a, b in itertools.pairwise(keys))
    # Handles are upper-case ASCII already, so handle order is key order.
    assert all(r["handle"] == r["handle"].upper() and r["handle"].isascii() for r in records_12)
    # Prefix blocks appear in byte order: 1, 10, 11, 12, 2, 3, ..., 9.
    order = [p for p, _ in itertools.groupby(r["handle"].split("/")[0] for r in records_12)]
    assert order == [f"88.100.{n}" for n in (1, 10, 11, 12, 2, 3, 4, 5, 6, 7, 8, 9)]


def test_every_prefix_used(records_12):
    assert {r["handle"].split("/")[0] for r in records_12} == {f"88.100.{n}" for n in range(1, 13)}
    used = {r["handle"].split("/")[0] for r in generate_records(32, seed=5)}
    assert used == {f"88.100.{n}" for n in range(1, 33)}
    # Fewer records than enterprises: no prefix gets more than one.
    few = [r["handle"].split("/")[0] for r in generate_records(10, seed=5)]
    assert len(few) == len(set(few)) == 10


def test_other_prefix():
    recs = list(generate_records(3000, seed=2, prefix="88.608", enterprises=15))
    keys = [key(r["handle"]) for r in recs]
    assert all(a < b for a, b in itertools.pairwise(keys))
    assert {r["handle"].split("/")[0] for r in recs} == {f"88.608.{n}" for n in range(1, 16)}
    for r in recs:
        admin = r["values"][3]["data"]["value"]["handle"]
        assert admin == "0.NA/" + r["handle"].split("/")[0]


def test_deterministic_per_seed_and_different_across_seeds():
    a = list(generate_lines(5000, seed=11, enterprises=12))
    assert a == list(generate_lines(5000, seed=11, enterprises=12))
    b = list(generate_lines(5000, seed=12, enterprises=12))
    assert a != b
    # Not only the handle layout: the values differ too.
    values_a = {json.dumps(json.loads(line)["values"][:3], ensure_ascii=False) for line in a}
    values_b = {json.dumps(json.loads(line)["values"][:3], ensure_ascii=False) for line in b}
    assert len(values_a & values_b) < len(values_a) // 10


def test_lines_match_records():
    for line, rec in zip(generate_lines(20_000, seed=4), generate_records(20_000, seed=4), strict=True):
        assert "\n" not in line
        assert json.loads(line) == rec


def test_record_form(records_12):
    for rec in records_12:
        assert set(rec) == {"handle", "values"}
        m = HANDLE_RE.fullmatch(rec["handle"])
        assert m, rec["handle"]
        prefix, suffix = rec["handle"].split("/")
        year = m.group(3)
        assert 1 <= int(m.group(4)) <= 999_999
        url, email, desc, admin = rec["values"]
        assert [v["index"] for v in rec["values"]] == [1, 2, 3, 100]
        assert [v["type"] for v in rec["values"]] == ["URL", "EMAIL", "DESC", "HS_ADMIN"]
        for v in (url, email, desc):
            assert v["data"]["format"] == "string"
            assert v["ttl"] == 86400
            assert isinstance(v["data"]["value"], str)
        assert url["data"]["value"].startswith("https://")
        assert url["data"]["value"].endswith("/" + suffix)
        host = url["data"]["value"].split("/")[2]
        local, _, domain = email["data"]["value"].partition("@")
        assert local and host == "www." + domain
        text = desc["data"]["value"]
        assert not text.isascii()
        assert text.encode("utf-8").decode("utf-8") == text
        assert f" {year}-" in text
        assert admin["data"] == {
            "format": "admin",
            "value": {"handle": "0.NA/" + prefix, "index": 200, "permissions": "011111111111"},
        }
        assert "ttl" not in admin


def test_few_kinds_per_enterprise(records_12):
    kinds: dict[str, set[str]] = {}
    for rec in records_12:
        m = HANDLE_RE.fullmatch(rec["handle"])
        kinds.setdefault(m.group(1), set()).add(m.group(2))
    assert all(2 <= len(k) <= 4 for k in kinds.values())
    assert len(set().union(*kinds.values())) > 4


def test_record_size():
    sizes = [len(line.encode()) for line in generate_lines(5000, seed=1)]
    assert 400 <= min(sizes) and max(sizes) <= 650


def test_write_ndjson_dicts_and_strings():
    out_d, out_s = io.StringIO(), io.StringIO()
    assert write_ndjson(generate_records(9000, seed=9), out_d) == 9000
    assert write_ndjson(generate_lines(9000, seed=9), out_s) == 9000
    lines_d = out_d.getvalue().splitlines()
    lines_s = out_s.getvalue().splitlines()
    assert len(lines_d) == len(lines_s) == 9000
    assert [json.loads(x) for x in lines_d] == [json.loads(x) for x in lines_s]
    assert write_ndjson([], io.StringIO()) == 0


def test_handle_at_matches_generation():
    ds = Dataset(20_000, seed=6, enterprises=12)
    handles = [r["handle"] for r in ds.records()]
    assert [ds.handle_at(i) for i in range(len(ds))] == handles
    assert handle_at(123, 20_000, seed=6, enterprises=12) == handles[123]
    with pytest.raises(IndexError):
        ds.handle_at(20_000)
    with pytest.raises(IndexError):
        ds.handle_at(-1)


def test_sample_handles_exist():
    count, seed = 30_000, 8
    existing = {r["handle"] for r in generate_records(count, seed, "88.100", 12)}
    sample = sample_handles(count, seed, "88.100", 12, 2000, 99)
    assert len(sample) == 2000
    assert set(sample) <= existing
    assert len(set(sample)) > 1500
    assert sample == sample_handles(count, seed, "88.100", 12, 2000, 99)
    assert sample != sample_handles(count, seed, "88.100", 12, 2000, 100)
    # k may exceed count (drawn with replacement).
    tiny = {r["handle"] for r in generate_records(10, seed, "88.100", 12)}
    assert set(sample_handles(10, seed, "88.100", 12, 50, 1)) <= tiny
    with pytest.raises(ValueError):
        sample_handles(0, seed, "88.100", 12, 1, 1)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_missing_handle_never_generated(seed):
    existing = {r["handle"] for r in generate_records(30_000, seed, enterprises=12)}
    missing = [missing_handle(i, "88.100", 12) for i in range(30_000)]
    assert len(set(missing)) == len(missing)
    assert not set(missing) & existing
    assert {m.split("/")[0] for m in missing} == {f"88.100.{n}" for n in range(1, 13)}
    assert all(HANDLE_RE.fullmatch(m) for m in missing)
    assert all(m == m.upper() for m in missing)
    assert Dataset(10, seed, enterprises=12).missing_handle(5) == missing[5]


def test_large_dataset_is_lazy_and_consistent():
    ds = Dataset(20_000_000, seed=1)
    assert len(ds) == 20_000_000
    first = [r["handle"] for r in itertools.islice(ds.records(), 1000)]
    assert first == [ds.handle_at(i) for i in range(1000)]
    assert [json.loads(x)["handle"] for x in itertools.islice(ds.lines(), 1000)] == first
    rng = Random(0)
    positions = sorted({rng.randrange(len(ds)) for _ in range(5000)} | {0, len(ds) - 1})
    handles = [ds.handle_at(i) for i in positions]
    assert all(HANDLE_RE.fullmatch(h) for h in handles)
    assert all(key(a) < key(b) for a, b in itertools.pairwise(handles))
    assert {h.split("/")[0] for h in ds.sample_handles(5000, 1)} == set(ds.prefixes())


def test_single_enterprise_huge_count_keeps_six_digit_serials():
    ds = Dataset(20_000_000, seed=1, enterprises=1)
    rng = Random(1)
    positions = sorted({rng.randrange(len(ds)) for _ in range(2000)} | {0, len(ds) - 1})
    handles = [ds.handle_at(i) for i in positions]
    assert all(HANDLE_RE.fullmatch(h) for h in handles)
    assert all(key(a) < key(b) for a, b in itertools.pairwise(handles))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": -1},
        {"count": 1, "enterprises": 0},
        {"count": 1, "prefix": "88.abc"},
        {"count": 1, "prefix": "88/1"},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        Dataset(**kwargs)
