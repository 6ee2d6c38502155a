"""Harness: what the HTTP API makes of a JSON body (storage/jsonvalues, storage/writes, resolver/http).

One input goes through every parser a request body meets: the PUT body (`values_from_body`: the values, or an
HttpError of status 4xx), the batch body (`split_records`, then `parse_batch_item` per record: never raises,
an item carries its WriteError), a bulk line (`encoded_record_from_json`), a template document
(`parse_document`: TemplateError) and the operator's prefix body (`validate_prefix`, `site_from_address`:
EnterpriseError). Any other exception, or an HttpError of status 5xx, is a finding."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from resolver.handle.errors import HandleProtocolError
from resolver.http.batch import split_records
from resolver.http.common import HttpError
from resolver.http.writes import values_from_body
from resolver.templates import TemplateError, parse_document
from storage.enterprises import EnterpriseError, site_from_address, validate_prefix
from storage.jsonvalues import ValueEncoder, encoded_record_from_json
from storage.writes import parse_batch_item
from tests.fuzz.common import main, scratch_store

NOW_S = 0x6500_0000


def _http(call: Callable[[], object]) -> object | None:
    try:
        return call()
    except HttpError as exc:
        if not 400 <= exc.status < 500:
            raise AssertionError(f"HTTP {exc.status} for a bad body: {exc.message}") from exc
        return None


def target() -> Callable[[bytes], None]:
    store = scratch_store()

    def one_input(data: bytes) -> None:
        _http(lambda: values_from_body(data, "88.100.7/FUZZ", NOW_S))
        records = _http(lambda: split_records(data)) or []
        encoder = ValueEncoder(NOW_S)
        for position, obj in records:
            item = parse_batch_item(position, obj, encoder, store)
            if item.error is None and (not item.key or not item.record):
                raise AssertionError("a batch item without error, key or record")
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        try:
            encoded_record_from_json(obj, ValueEncoder(NOW_S))
        except (ValueError, RecursionError, HandleProtocolError):
            pass
        try:
            parse_document(obj)
        except TemplateError:
            pass
        if isinstance(obj, dict):
            for name, check in (("prefix", validate_prefix), ("site", site_from_address)):
                if isinstance(obj.get(name), str):
                    try:
                        check(obj[name])
                    except EnterpriseError:
                        pass

    return one_input


if __name__ == "__main__":
    main(target)
