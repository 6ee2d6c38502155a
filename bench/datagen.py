"""Synthetic identifier records for benchmarks, demos and tests.

Every generated handle looks like ``88.100.7/BRAKE-2025-000123``: an enterprise prefix
``{prefix}.{e}`` (``e`` in ``1..enterprises``), then ``KIND-YEAR-SERIAL`` with an upper-case
ASCII kind code, a four-digit year and a six-digit zero-padded serial.  Handles are upper-case
ASCII already, so the store key (``handle.upper().encode()``) equals ``handle.encode()`` and the
records come out in ascending key (byte) order, across prefix boundaries too
(``88.100.1/`` < ``88.100.10/`` < ... < ``88.100.2/`` because ``/`` sorts below every digit).

Layout of the data set, fixed by ``(count, seed, prefix, enterprises)``:

* enterprises are visited in byte order of ``"{prefix}.{e}/"``; each one owns one contiguous
  block of records;
* within an enterprise, kind codes in byte order of ``"KIND-"``, years ascending, serials
  ``000001..`` ascending within each (kind, year) segment.

The per-enterprise plan is a handful of integers, so ``Dataset.handle_at(i)`` is a bisection
over O(enterprises) offsets and generation streams with O(enterprises) memory, whatever the count.

``generate_records`` yields plain dicts; ``generate_lines`` yields the same records already
rendered as compact JSON text (template strings, about 10x cheaper than ``json.dumps``).
``write_ndjson`` accepts either.  Fast path for files::

    write_ndjson(generate_lines(count, seed), out)

or from a shell: ``python -m bench.datagen --count 20000000 --seed 1 -o data.ndjson``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from random import Random
from typing import TextIO

__all__ = [
    "Dataset",
    "generate_lines",
    "generate_records",
    "handle_at",
    "missing_handle",
    "sample_handles",
    "write_ndjson",
]

DEFAULT_PREFIX = "88.100"
DEFAULT_ENTERPRISES = 32
LAST_YEAR = 2025
SERIAL_MAX = 999_999  # six digits; a (kind, year) segment never holds more
TTL = 86400
ADMIN_INDEX = 200
ADMIN_PERMISSIONS = "011111111111"

# Kind code -> (product names, materials, word used in the description).
# Everything here ends up inside JSON string literals verbatim: no quotes, backslashes or
# control characters allowed (checked at import time below).
_SPECIALTY: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "BRAKE": (("制动盘", "制动钳", "刹车片"), ("灰铸铁", "球墨铸铁", "陶瓷复合材料"), "批次"),
    "BRG": (("深沟球轴承", "圆锥滚子轴承", "调心滚子轴承"), ("GCr15轴承钢", "不锈钢", "氮化硅陶瓷"), "批次"),
    "VALVE": (("球阀", "闸阀", "截止阀", "蝶阀"), ("不锈钢304", "铸钢", "黄铜"), "批次"),
    "MOTOR": (("伺服电机", "三相异步电机", "永磁同步电机"), ("硅钢片", "铜线绕组", "铝合金壳体"), "出厂"),
    "PUMP": (("离心泵", "齿轮泵", "柱塞泵"), ("铸铁", "不锈钢316", "铝合金"), "出厂"),
    "GEAR": (("斜齿轮", "行星减速器", "蜗轮"), ("20CrMnTi", "42CrMo", "粉末冶金"), "批次"),
    "MOLD": (("注塑模具", "冲压模具", "压铸模具"), ("P20模具钢", "H13模具钢", "NAK80"), "出厂"),
    "CELL": (("磷酸铁锂电芯", "三元锂电芯"), ("磷酸铁锂", "镍钴锰"), "批次"),
    "CABLE": (("电力电缆", "控制电缆", "光纤跳线"), ("无氧铜", "铝合金导体", "交联聚乙烯"), "批次"),
}
_GENERIC: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "PART": (("紧固件", "法兰", "轴套", "支架"), ("45号钢", "铝合金", "工程塑料"), "批次"),
    "BATCH": (("冷轧钢卷", "铝锭", "电解铜"), ("Q235", "6061铝合金", "T2紫铜"), "批次"),
    "EQP": (("数控机床", "注塑机", "冲压机", "工业机器人"), ("铸铁床身", "钢结构", "铝型材"), "出厂"),
}
# Kind codes that generation never uses: missing_handle() builds its handles from these, so a
# "missing" handle is absent from every data set whatever count or seed produced it.
_MISSING_KINDS = ("RMA", "SAMPLE", "TMP")

_CITIES = (
    "十堰", "柳州", "宁波", "苏州", "佛山", "青岛", "重庆", "西安",
    "株洲", "无锡", "长春", "合肥", "东莞", "烟台", "襄阳", "芜湖",
)
_SYLLABLES = (
    "heng", "xin", "da", "tai", "hua", "kang", "rui", "feng",
    "long", "sheng", "yuan", "jin", "tong", "cheng", "hong", "an",
)
_TRADES = ("jixie", "zhizao", "keji", "gongye", "dongli", "jingmi")
_TLDS = (".com.cn", ".cn", ".com")
_PATHS = ("/trace/", "/id/", "/product/", "/p/")
_MAILBOXES = ("qa", "trace", "service", "zhijian", "kefu")

_PREFIX_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def _check_json_safe() -> None:
    words: list[str] = [*_CITIES, *_SYLLABLES, *_TRADES, *_TLDS, *_PATHS, *_MAILBOXES]
    for products, materials, word in (*_SPECIALTY.values(), *_GENERIC.values()):
        words += [*products, *materials, word]
    for w in words:
        assert json.dumps(w, ensure_ascii=False) == f'"{w}"', w
    assert not set(_MISSING_KINDS) & (set(_SPECIALTY) | set(_GENERIC))


_check_json_safe()


def _split(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` proportionally to integer ``weights`` (largest remainder, integer-only)."""
    wsum = sum(weights)
    shares = [total * w // wsum for w in weights]
    left = total - sum(shares)
    if left:
        order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % wsum), i))
        for i in order[:left]:
            shares[i] += 1
    return shares


@dataclass(frozen=True, slots=True)
class _Segment:
    """One run of consecutive serials ``000001..{size}`` under ``{prefix}.{e}/{kind}-{year}-``."""

    kind: str
    year: int
    size: int
    descs: tuple[str, ...]  # description variants for this kind and year


@dataclass(frozen=True, slots=True)
class _Enterprise:
    number: int
    prefix: str  # e.g. "88.100.7"
    count: int
    domain: str
    url_base: str  # "https://www.example.cn/trace/"
    email: str
    segments: tuple[_Segment, ...]
    seg_starts: tuple[int, ...]  # offset of each segment inside this enterprise's block
    value_seed: str


def _profile(seed: int, prefix: str, number: int, count: int) -> _Enterprise:
    """Deterministic enterprise plan; its look depends on (seed, number) only, not on count."""
    rng = Random(f"idnode-datagen:{seed}:{number}")
    name = rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES) + rng.choice(_TRADES)
    domain = name + rng.choice(_TLDS)
    url_base = "https://www." + domain + rng.choice(_PATHS)
    email = rng.choice(_MAILBOXES) + "@" + domain
    city = rng.choice(_CITIES) + "工厂"
    codes = rng.sample(sorted(_SPECIALTY), rng.randint(1, 2))
    codes += rng.sample(sorted(_GENERIC), rng.randint(1, 2))
    kind_weights = [rng.randint(1, 10) for _ in codes]
    first_years = [rng.randint(LAST_YEAR - 7, LAST_YEAR) for _ in codes]
    kinds = sorted(zip(codes, kind_weights, first_years, strict=True), key=lambda t: (t[0] + "-").encode())

    segments: list[_Segment] = []
    for (code, _w, first_year), kcount in zip(
        kinds, _split(count, [w for _, w, _ in kinds]), strict=True
    ):
        if kcount == 0:
            continue
        products, materials, word = _SPECIALTY.get(code) or _GENERIC[code]
        # Later years register more identifiers (weight 1, 2, 3, ...).  Reach further back in
        # time until no (kind, year) segment needs more than SERIAL_MAX serials.
        nyears = LAST_YEAR - first_year + 1
        while True:
            sizes = _split(kcount, list(range(1, nyears + 1)))
            if max(sizes) <= SERIAL_MAX:
                break
            nyears += 1
        start_year = LAST_YEAR - nyears + 1
        if start_year < 1000:
            raise ValueError(f"count too large for four-digit years: {count} in {prefix}")
        mats = rng.sample(materials, 2)
        for year, size in zip(range(start_year, LAST_YEAR + 1), sizes, strict=True):
            if size == 0:
                continue
            descs = tuple(
                f"{p} {word} {year}-{m:02d} {mat} {city}"
                for p in products
                for m in range(1, 13)
                for mat in mats
            )
            segments.append(_Segment(code, year, size, descs))

    starts: list[int] = []
    acc = 0
    for seg in segments:
        starts.append(acc)
        acc += seg.size
    assert acc == count
    return _Enterprise(
        number=number,
        prefix=f"{prefix}.{number}",
        count=count,
        domain=domain,
        url_base=url_base,
        email=email,
        segments=tuple(segments),
        seg_starts=tuple(starts),
        value_seed=f"idnode-datagen:{seed}:{number}:values",
    )


class Dataset:
    """The synthetic data set fixed by ``(count, seed, prefix, enterprises)``.

    Construction costs O(enterprises); nothing per record is kept in memory.
    """

    def __init__(
        self,
        count: int,
        seed: int = 1,
        prefix: str = DEFAULT_PREFIX,
        enterprises: int = DEFAULT_ENTERPRISES,
    ) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        if enterprises < 1:
            raise ValueError("enterprises must be >= 1")
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"prefix must be dot-separated decimal segments, got {prefix!r}")
        self.count = count
        self.seed = seed
        self.prefix = prefix
        self.enterprises = enterprises

        # Sizes: each enterprise gets at least one record when count allows, the rest is split by
        # skewed integer weights (a few big manufacturers, many small ones).
        wrng = Random(f"idnode-datagen:{seed}:sizes")
        weights = [wrng.randint(10, 100) ** 2 for _ in range(enterprises)]
        if count >= enterprises:
            sizes = [1 + s for s in _split(count - enterprises, weights)]
        else:
            sizes = _split(count, weights)

        numbers = sorted(range(1, enterprises + 1), key=lambda n: f"{prefix}.{n}/".encode())
        self._ents: list[_Enterprise] = [_profile(seed, prefix, n, sizes[n - 1]) for n in numbers]
        self._starts: list[int] = []
        acc = 0
        for ent in self._ents:
            self._starts.append(acc)
            acc += ent.count

    def __len__(self) -> int:
        return self.count

    def prefixes(self) -> list[str]:
        """Enterprise prefixes in emission (byte) order."""
        return [ent.prefix for ent in self._ents]

    def handle_at(self, i: int) -> str:
        """Handle of the record at position ``i`` (0-based) in key order."""
        if not 0 <= i < self.count:
            raise IndexError(f"position {i} out of range for {self.count} records")
        k = bisect.bisect_right(self._starts, i) - 1
        ent = self._ents[k]
        j = i - self._starts[k]
        s = bisect.bisect_right(ent.seg_starts, j) - 1
        seg = ent.segments[s]
        return f"{ent.prefix}/{seg.kind}-{seg.year}-{j - ent.seg_starts[s] + 1:06d}"

    def sample_handles(self, k: int, rng_seed: int = 0) -> list[str]:
        """``k`` existing handles drawn uniformly with replacement (``k`` may exceed count)."""
        if k and not self.count:
            raise ValueError("cannot sample from an empty data set")
        rng = Random(rng_seed)
        return [self.handle_at(rng.randrange(self.count)) for _ in range(k)]

    def missing_handle(self, i: int) -> str:
        """See module-level :func:`missing_handle`."""
        return missing_handle(i, self.prefix, self.enterprises)

    # -- generation ----------------------------------------------------------------------------

    def lines(self) -> Iterator[str]:
        """Records as compact JSON text, one object per string, no trailing newline."""
        for ent in self._ents:
            rnd = Random(ent.value_seed).random
            p = ent.prefix
            admin = (
                '"},"ttl":86400},{"index":100,"type":"HS_ADMIN","data":{"format":"admin","value":'
                f'{{"handle":"0.NA/{p}","index":{ADMIN_INDEX},"permissions":"{ADMIN_PERMISSIONS}"}}}}}}]}}'
            )
            for seg in ent.segments:
                stem = f"{seg.kind}-{seg.year}-"
                a = '{"handle":"' + p + "/" + stem
                b = (
                    '","values":[{"index":1,"type":"URL","data":{"format":"string","value":"'
                    + ent.url_base
                    + stem
                )
                c = (
                    '"},"ttl":86400},{"index":2,"type":"EMAIL","data":{"format":"string","value":"'
                    + ent.email
                    + '"},"ttl":86400},{"index":3,"type":"DESC","data":{"format":"string","value":"'
                )
                descs = seg.descs
                nd = len(descs)
                for serial in range(1, seg.size + 1):
                    s = f"{serial:06d}"
                    yield f"{a}{s}{b}{s}{c}{descs[int(rnd() * nd)]}{admin}"

    def records(self) -> Iterator[dict]:
        """Records as dicts; same content and order as :meth:`lines`."""
        for ent in self._ents:
            rnd = Random(ent.value_seed).random
            p = ent.prefix
            admin_handle = "0.NA/" + p
            for seg in ent.segments:
                stem = f"{seg.kind}-{seg.year}-"
                url = ent.url_base + stem
                descs = seg.descs
                nd = len(descs)
                for serial in range(1, seg.size + 1):
                    s = f"{serial:06d}"
                    yield {
                        "handle": f"{p}/{stem}{s}",
                        "values": [
                            {"index": 1, "type": "URL", "data": {"format": "string", "value": url + s},
                             "ttl": TTL},
                            {"index": 2, "type": "EMAIL", "data": {"format": "string", "value": ent.email},
                             "ttl": TTL},
                            {"index": 3, "type": "DESC",
                             "data": {"format": "string", "value": descs[int(rnd() * nd)]}, "ttl": TTL},
                            {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
                                "handle": admin_handle, "index": ADMIN_INDEX,
                                "permissions": ADMIN_PERMISSIONS}}},
                        ],
                    }


def generate_records(
    count: int, seed: int = 1, prefix: str = DEFAULT_PREFIX, enterprises: int = DEFAULT_ENTERPRISES
) -> Iterator[dict]:
    """Yield ``count`` record dicts ``{"handle": ..., "values": [...]}`` in ascending key order."""
    return Dataset(count, seed, prefix, enterprises).records()


def generate_lines(
    count: int, seed: int = 1, prefix: str = DEFAULT_PREFIX, enterprises: int = DEFAULT_ENTERPRISES
) -> Iterator[str]:
    """Same records as :func:`generate_records`, pre-rendered as compact JSON (fast path)."""
    return Dataset(count, seed, prefix, enterprises).lines()


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def write_ndjson(records: Iterable[dict | str], out: TextIO) -> int:
    """Write one JSON object per line; return the number of lines written.

    Items may be dicts (serialised here) or strings holding one JSON object already rendered
    without newlines (written verbatim, e.g. from :func:`generate_lines`).  Non-ASCII text is
    written as UTF-8 characters, so open ``out`` with ``encoding="utf-8"``.
    """
    n = 0
    buf: list[str] = []
    encode = _ENCODER.encode
    for rec in records:
        buf.append(rec if isinstance(rec, str) else encode(rec))
        if len(buf) >= 4096:
            buf.append("")
            out.write("\n".join(buf))
            n += len(buf) - 1
            buf.clear()
    if buf:
        buf.append("")
        out.write("\n".join(buf))
        n += len(buf) - 1
    return n


def handle_at(
    i: int, count: int, seed: int = 1, prefix: str = DEFAULT_PREFIX, enterprises: int = DEFAULT_ENTERPRISES
) -> str:
    """Handle at position ``i``; builds the O(enterprises) plan each call, so prefer Dataset."""
    return Dataset(count, seed, prefix, enterprises).handle_at(i)


def sample_handles(
    count: int,
    seed: int = 1,
    prefix: str = DEFAULT_PREFIX,
    enterprises: int = DEFAULT_ENTERPRISES,
    k: int = 1000,
    rng_seed: int = 0,
) -> list[str]:
    """``k`` handles present in ``generate_records(count, seed, prefix, enterprises)``.

    Drawn uniformly with replacement using ``Random(rng_seed)``; no records are generated.
    """
    return Dataset(count, seed, prefix, enterprises).sample_handles(k, rng_seed)


def missing_handle(i: int, prefix: str = DEFAULT_PREFIX, enterprises: int = DEFAULT_ENTERPRISES) -> str:
    """The i-th handle (i >= 0) that no data set contains, for any count and seed.

    It lives under a real enterprise prefix ``{prefix}.{1..enterprises}`` and has the usual
    ``KIND-YEAR-SERIAL`` shape, but uses a kind code generation never emits (RMA, SAMPLE, TMP).
    Distinct ``i`` give distinct handles.
    """
    if i < 0:
        raise ValueError("i must be >= 0")
    i, e = divmod(i, enterprises)
    i, kind = divmod(i, len(_MISSING_KINDS))
    i, year = divmod(i, 8)
    return f"{prefix}.{e + 1}/{_MISSING_KINDS[kind]}-{LAST_YEAR - 7 + year}-{i + 1:06d}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write synthetic identifier records as NDJSON.")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--prefix", default=DEFAULT_PREFIX)
    ap.add_argument("--enterprises", type=int, default=DEFAULT_ENTERPRISES)
    ap.add_argument("-o", "--output", help="file to write (default: stdout)")
    args = ap.parse_args(argv)
    lines = generate_lines(args.count, args.seed, args.prefix, args.enterprises)
    if args.output:
        with open(args.output, "w", encoding="utf-8", buffering=1 << 20) as out:
            write_ndjson(lines, out)
    else:
        sys.stdout.reconfigure(encoding="utf-8")  # type: ignore[union-attr]
        write_ndjson(lines, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
