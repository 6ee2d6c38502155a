"""resolver/http/batch.py parses a batch in slices, giving the event loop a turn between them, so a 2,000-record
batch never stops a worker's resolutions for the whole parse (bench/results/writeplane.md measured the stall)."""

from __future__ import annotations

import asyncio
import json

import orjson

from resolver.http import batch


def _body(count: int, bad_line: int | None = None) -> bytes:
    lines = [json.dumps({"handle": f"88.200.1/P-{n}", "values": []}) for n in range(count)]
    if bad_line is not None:
        lines[bad_line] = "{not json"
    return ("\n".join(lines) + "\n\n").encode()


def test_read_records_gives_what_split_records_gives():
    body = _body(450, bad_line=7)
    sliced = asyncio.run(batch.read_records(body))
    whole = batch.split_records(body)
    assert [n for n, _ in sliced] == [n for n, _ in whole] == list(range(1, 451))
    assert isinstance(sliced[7][1], orjson.JSONDecodeError) and isinstance(
        whole[7][1], orjson.JSONDecodeError
    )
    assert [r for _, r in sliced if not isinstance(r, Exception)] == [
        r for _, r in whole if not isinstance(r, Exception)
    ]


def test_a_full_batch_lets_other_tasks_run_between_slices():
    body = _body(2000)
    turns = 0

    async def other() -> None:  # a resolution waiting for the loop
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def main() -> list:
        ticker = asyncio.create_task(other())
        await asyncio.sleep(0)
        started = turns
        records = await batch.in_slices(await batch.read_records(body), lambda r: r)
        ran = turns - started
        ticker.cancel()
        return [records, ran]

    records, ran = asyncio.run(main())
    assert len(records) == 2000
    slices = 2000 // batch.PARSE_SLICE_RECORDS
    assert ran >= 2 * (slices - 1)  # a turn between every two slices, of the decoding and of the parsing


def test_a_json_array_is_decoded_whole_and_keeps_its_positions():
    body = json.dumps(
        [{"handle": "88.200.1/A", "values": []}, {"handle": "88.200.1/B", "values": []}]
    ).encode()
    assert [n for n, _ in asyncio.run(batch.read_records(body))] == [1, 2]
