"""The CSV form of `idnode load`: one value a row, header `handle,index,type,data[,format,ttl,permissions,
timestamp]`, the rows of one identifier consecutive. Rows become values in the JSON form, so CSV and NDJSON
share one parser and its checks."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from resolver.handle.errors import HandleProtocolError
from storage.chunks import Chunk, validate_handle
from storage.jsonvalues import ValueFormatError, value_from_json
from storage.records import pack_record

CSV_COLUMNS = ("handle", "index", "type", "data")  #: required header columns
CSV_OPTIONAL = ("format", "ttl", "permissions", "timestamp")  #: optional header columns
IDENTIFIERS_PER_CHUNK = 20_000  #: identifiers per write transaction


def csv_chunks(path: Path, skip_lines: int, now_s: int, case_sensitive: bool) -> Iterator[Chunk]:
    """Chunks of identifiers; the first `skip_lines` lines of the file (the header counts) were committed
    before (a checkpoint never splits an identifier, so skipping whole lines is safe)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            yield Chunk(1, 0, [], error=f"CSV header lacks {', '.join(missing)}")
            return
        items: list[tuple[bytes, bytes]] = []
        current: tuple[str, list, int] | None = None  # handle, values, line of its first row
        chunk_first = skip_lines + 1  # the first chunk accounts for the header line too
        row_no = max(chunk_first, 1)

        def finish_identifier() -> None:
            handle, values, _ = current
            items.append((validate_handle(handle, case_sensitive), pack_record(values)))

        for row_no, row in enumerate(reader, 2):
            if row_no <= skip_lines:
                continue
            try:
                if current is not None and current[0] != row["handle"]:
                    finish_identifier()  # a new handle completes the one before it
                    current = None
                    if len(items) >= IDENTIFIERS_PER_CHUNK:
                        yield Chunk(chunk_first, row_no - chunk_first, items)
                        items, chunk_first = [], row_no
                value = value_from_json(_row_as_value(row), now_s, "row")
                if current is None:
                    current = (row["handle"], [], row_no)
                if any(v.index == value.index for v in current[1]):
                    raise ValueFormatError(f"index {value.index} appears twice for {row['handle']}")
                current[1].append(value)
            except (ValueError, TypeError, KeyError, HandleProtocolError) as exc:
                # The bad row's identifier is left out whole; the rows before it are committed.
                good_until = current[2] if current else row_no
                where = f" (in its row at line {row_no})" if row_no != good_until else ""
                yield Chunk(chunk_first, good_until - chunk_first, items, error=f"{exc}{where}")
                return
        if current is not None:
            try:
                finish_identifier()
            except (ValueError, HandleProtocolError) as exc:
                yield Chunk(chunk_first, current[2] - chunk_first, items, error=str(exc))
                return
        yield Chunk(chunk_first, row_no + 1 - chunk_first, items)


def _row_as_value(row: dict) -> dict:
    fmt = row.get("format") or "string"
    data = json.loads(row["data"]) if fmt == "admin" else row["data"]
    obj: dict = {
        "index": _int(row["index"], "index"),
        "type": row["type"],
        "data": {"format": fmt, "value": data},
    }
    for key in ("permissions", "timestamp"):
        if row.get(key):
            obj[key] = row[key]
    if row.get("ttl"):
        obj["ttl"] = int(row["ttl"]) if row["ttl"].lstrip("-").isdigit() else row["ttl"]
    return obj


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise ValueFormatError(f"{name}: {text!r} is not an integer") from exc


def csv_records(text: str) -> list[tuple[int, Any]]:
    """The identifiers of a CSV document as batch records: (line of the identifier's first row, `{"handle",
    "values"}` in the JSON form, or the error of its first bad row), so an upload of CSV is checked by the
    same batch parser as NDJSON. A document without the required header is one error at line 1."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        return [(1, ValueFormatError(f"CSV header lacks {', '.join(missing)}"))]
    out: list[tuple[int, Any]] = []
    current: dict | None = None
    try:
        for row_no, row in enumerate(reader, 2):
            handle = row.get("handle") or ""
            if current is None or current["handle"] != handle:
                current = {"handle": handle, "values": []}
                out.append((row_no, current))
            if isinstance(out[-1][1], Exception):
                continue  # the rest of an identifier whose row failed
            try:
                current["values"].append(_row_as_value(row))
            except (ValueError, TypeError) as exc:
                out[-1] = (out[-1][0], ValueFormatError(f"line {row_no}: {exc}"))
    except csv.Error as exc:
        out.append((reader.line_num, ValueFormatError(f"not CSV: {exc}")))
    return out
