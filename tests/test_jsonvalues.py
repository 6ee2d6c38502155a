"""The REST API's value JSON, as bulk files carry it: every format, defaults, and errors naming the field."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from resolver.handle.values import (
    AdminData,
    Interface,
    ServerInfo,
    SiteInfo,
    decode_admin,
    decode_site,
    encode_site,
)
from storage.jsonvalues import ValueFormatError, record_from_json, value_from_json, value_to_json

NOW = 1_750_000_000


def test_string_value_with_defaults():
    v = value_from_json({"index": 1, "type": "URL", "data": {"format": "string", "value": "https://x"}}, NOW)
    assert (v.index, v.type, v.data, v.ttl_type, v.ttl, v.permissions, v.timestamp) == (
        1,
        "URL",
        b"https://x",
        0,
        86400,
        0x0E,
        NOW,
    )


def test_bare_string_data_and_explicit_fields():
    v = value_from_json(
        {
            "index": 3,
            "type": "DESC",
            "data": "汽车零部件",
            "ttl": 60,
            "permissions": "1111",
            "timestamp": "2025-07-01T08:00:00Z",
            "references": [{"handle": "88.100.1/LOT-7", "index": 1}],
        },
        NOW,
    )
    assert v.data == "汽车零部件".encode()
    assert (v.ttl, v.permissions, v.timestamp) == (60, 0x0F, 1751356800)
    assert v.references[0].handle == "88.100.1/LOT-7"


def test_absolute_ttl_from_iso_string():
    v = value_from_json({"index": 1, "type": "URL", "data": "x", "ttl": "2030-01-01T00:00:00Z"}, NOW)
    assert (v.ttl_type, v.ttl) == (1, 1893456000)


def test_base64_and_hex():
    assert (
        value_from_json({"index": 1, "type": "K", "data": {"format": "base64", "value": "AAEC"}}, NOW).data
        == b"\0\1\2"
    )
    assert (
        value_from_json({"index": 1, "type": "K", "data": {"format": "hex", "value": "ff00"}}, NOW).data
        == b"\xff\0"
    )


def test_admin_value():
    v = value_from_json(
        {
            "index": 100,
            "type": "HS_ADMIN",
            "data": {
                "format": "admin",
                "value": {"handle": "0.NA/88.100.1", "index": 200, "permissions": "011111111111"},
            },
        },
        NOW,
    )
    assert decode_admin(v.data) == AdminData("0.NA/88.100.1", 200, 0b011111111111)


def test_site_value_round_trips_through_json():
    site = SiteInfo(
        attributes=(("desc", "enterprise node"),),
        servers=(
            ServerInfo(
                1,
                ipaddress.ip_address("192.0.2.7"),
                b"\x01\x02",
                (Interface(3, 1, 2641), Interface(2, 0, 2641)),
            ),
        ),
    )
    obj = {
        "index": 1,
        "type": "HS_SITE",
        "data": {
            "format": "site",
            "value": {
                "attributes": [{"name": "desc", "value": "enterprise node"}],
                "servers": [
                    {
                        "serverId": 1,
                        "address": "192.0.2.7",
                        "publicKey": {"format": "base64", "value": base64.b64encode(b"\x01\x02").decode()},
                        "interfaces": [
                            {"type": 3, "protocol": "TCP", "port": 2641},
                            {"type": 2, "protocol": "UDP", "port": 2641},
                        ],
                    }
                ],
            },
        },
    }
    v = value_from_json(obj, NOW)
    assert decode_site(v.data) == site
    assert value_to_json(v)["data"]["format"] == "site"
    assert value_from_json(value_to_json(v), NOW).data == encode_site(site)


def test_value_to_json_round_trip():
    obj = {
        "index": 7,
        "type": "DESC",
        "data": {"format": "string", "value": "批次 7"},
        "ttl": 3600,
        "timestamp": "2025-07-01T08:00:00Z",
        "permissions": "1111",
        "references": [{"handle": "88.100.1/A", "index": 2}],
    }
    assert value_to_json(value_from_json(obj, NOW)) == obj


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"type": "URL", "data": "x"}, "value.index"),
        ({"index": "1", "type": "URL", "data": "x"}, "value.index"),
        ({"index": 1, "type": 5, "data": "x"}, "value.type"),
        ({"index": 1, "type": "URL"}, "value.data"),
        ({"index": 1, "type": "URL", "data": {"format": "zip", "value": "x"}}, "value.data.format"),
        ({"index": 1, "type": "URL", "data": {"format": "base64", "value": "!!"}}, "value.data.value"),
        ({"index": 1, "type": "URL", "data": "x", "ttl": "soon"}, "value.ttl"),
        ({"index": 1, "type": "URL", "data": "x", "permissions": "12"}, "value.permissions"),
        (
            {"index": 1, "type": "A", "data": {"format": "admin", "value": {"index": 200}}},
            "value.data.value.handle",
        ),
        (
            {
                "index": 1,
                "type": "S",
                "data": {"format": "site", "value": {"servers": [{"address": "nope"}]}},
            },
            "value.data.value.servers[0].address",
        ),
        ({"index": -1, "type": "URL", "data": "x"}, "value.index"),
    ],
)
def test_errors_name_the_field(obj, field):
    with pytest.raises(ValueFormatError) as err:
        value_from_json(obj, NOW)
    assert str(err.value).startswith(field + ":")


def test_record_rejects_duplicate_indexes_and_bad_shapes():
    with pytest.raises(ValueFormatError, match="index 1 appears twice"):
        record_from_json(
            {"handle": "88.100.1/A", "values": [{"index": 1, "type": "A", "data": "x"}] * 2}, NOW
        )
    with pytest.raises(ValueFormatError, match="^values:"):
        record_from_json({"handle": "88.100.1/A", "values": {}}, NOW)
    with pytest.raises(ValueFormatError, match="^handle:"):
        record_from_json({"values": []}, NOW)
