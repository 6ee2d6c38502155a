"""`idnode serve --http-port` over real sockets on 127.0.0.1 with two workers: REST resolution, browser
redirects and pages, the tunnelled native protocol, writes visible at once to every worker and protocol,
batches, the operator's API, referrals to enterprise nodes, statistics, and bad input of every kind."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from pathlib import Path

import pytest

from bench.datagen import Dataset
from resolver.cli_admin import load_scenario
from resolver.client import HandleClient
from resolver.handle.constants import OpCode, OpFlag, ResponseCode
from resolver.handle.message import (
    ResolutionRequest,
    decode_message,
    decode_resolution_response_body,
    encode_request,
    encode_resolution_request,
)
from resolver.handle.udp import Reassembler, is_chunk
from resolver.handle.values import HandleValue, decode_site
from storage.counters import totals
from storage.enterprises import add_prefix, issue_credential, set_operator_secret
from storage.loader import load_files
from storage.records import pack_record
from storage.store import Store
from tests.conftest import copy_demo_store
from tests.http_helpers import call, http_node

DATASET = Dataset(2000, 1, "88.100", 8)
SCENARIOS = Path(__file__).resolve().parents[1] / "deploy" / "scenarios"
OPERATOR_SECRET = "operator-secret-for-tests"
HANDLE = DATASET.handle_at(3)
OWN = next(DATASET.handle_at(i) for i in range(DATASET.count) if DATASET.handle_at(i).startswith("88.100.7/"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_ndjson):
    """A store with the demo identifiers, credentials for 88.100.7 and 88.100.8, the operator's secret, a
    prefix served by its own node, the automotive scenario, and a few odd records."""
    path = tmp_path_factory.mktemp("http") / "store"
    with Store(path, create=True) as store:
        load_files(store, [demo_ndjson])
        odd = [
            (b"88.100.1/NO-URL", [HandleValue(2, "DESC", "没有网址".encode())]),
            (b"88.100.1/JS-URL", [HandleValue(1, "URL", b"javascript:alert(1)")]),
            (b"88.100.1/CRLF-URL", [HandleValue(1, "URL", b"https://a.example/\r\nSet-Cookie: x=1")]),
            (b"88.100.1/PRIVATE", [HandleValue(1, "URL", b"https://example.com/p"),
                                   HandleValue(5, "SECRET", b"hidden", permissions=0b1100)]),
        ]  # fmt: skip
        store.put_records([(key, pack_record(values)) for key, values in odd])
        creds = {p: issue_credential(store, p) for p in ("88.100.7", "88.100.8")}
        set_operator_secret(store, OPERATOR_SECRET)
        add_prefix(store, "88.100.50", "Own Node Co", "127.0.0.1:2700")
        name, count, failures = load_scenario(store, SCENARIOS / "automotive")
        assert not failures and count == 44
    return path, creds


@pytest.fixture(scope="module")
def node(setup):
    with http_node(setup[0], workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def ent7(setup):
    return setup[1]["88.100.7"]


@pytest.fixture(scope="module")
def ent8(setup):
    return setup[1]["88.100.8"]


OP = ("operator", OPERATOR_SECRET)


def get(node, path, **kw):
    return call(node.http_port, "GET", path, **kw)


def resolve_everywhere(node, handle: str, sockets: int = 12) -> set[int]:
    """Response codes for `handle` over UDP from many source ports (spread over the workers), TCP and HTTP."""

    async def go():
        codes = set()
        for n in range(sockets):
            async with HandleClient(node.host, node.port, tcp=n % 4 == 0) as client:
                codes.add((await client.resolve(handle)).response_code)
        return codes

    codes = asyncio.run(go())
    for _ in range(sockets // 2):
        codes.add(get(node, f"/api/handles/{handle}").json["responseCode"])
    return codes


# -- resolution --------------------------------------------------------------------------------------------


def test_resolution_in_the_handle_net_json_form(node):
    reply = get(node, f"/api/handles/{HANDLE}")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
    body = reply.json
    assert body["responseCode"] == 1 and body["handle"] == HANDLE
    types = [v["type"] for v in body["values"]]
    assert "URL" in types and "HS_ADMIN" in types
    url = next(v for v in body["values"] if v["type"] == "URL")
    assert url["data"]["format"] == "string" and url["ttl"] == 86400 and url["timestamp"].endswith("Z")


def test_type_and_index_filters(node):
    assert [v["type"] for v in get(node, f"/api/handles/{HANDLE}?type=URL").json["values"]] == ["URL"]
    assert [v["index"] for v in get(node, f"/api/handles/{HANDLE}?index=100").json["values"]] == [100]
    both = get(node, f"/api/handles/{HANDLE}?type=URL&index=100").json["values"]
    assert sorted(v["type"] for v in both) == ["HS_ADMIN", "URL"]
    none = get(node, f"/api/handles/{HANDLE}?type=NOTHING")
    assert (none.status, none.json["responseCode"], none.json["values"]) == (200, 200, [])


def test_resolution_errors_are_json(node):
    missing = get(node, "/api/handles/88.100.1/NOT-THERE")
    assert (missing.status, missing.json["responseCode"], missing.json["handle"]) == (
        404,
        100,
        "88.100.1/NOT-THERE",
    )
    unknown = get(node, "/api/handles/99.9/X")
    assert (unknown.status, unknown.json["responseCode"]) == (400, 301)
    invalid = get(node, "/api/handles/no-slash-here")
    assert (invalid.status, invalid.json["responseCode"]) == (400, 102)
    assert get(node, f"/api/handles/{HANDLE}?index=abc").status == 400
    assert get(node, "/api/nothing-here").status == 404


def test_values_without_public_read_only_for_the_administrator(node):
    anonymous = get(node, "/api/handles/88.100.1/PRIVATE").json["values"]
    assert [v["index"] for v in anonymous] == [1]
    operator = get(node, "/api/handles/88.100.1/PRIVATE", auth=OP).json["values"]
    assert [v["index"] for v in operator] == [1, 5] and operator[1]["permissions"] == "1100"


def test_prefix_served_by_an_enterprise_node_is_a_referral_with_its_site(node):
    reply = get(node, "/api/handles/88.100.50/ANY")
    assert (reply.status, reply.json["responseCode"]) == (404, 302)
    assert reply.json["referral"]["handle"] == "0.NA/88.100.50"
    site = reply.json["referral"]["values"][0]["data"]["value"]
    assert [(i["protocol"], i["port"]) for i in site["servers"][0]["interfaces"]] == [
        ("TCP", 2700),
        ("UDP", 2700),
    ]

    async def go():
        async with HandleClient(node.host, node.port) as client:
            # Without REC: the referral (with REC the node asks the enterprise node: tests/test_recursion.py).
            plain = int(OpFlag.CA | OpFlag.PO)
            referral = await client.resolve("88.100.50/ANY", op_flags=plain)
            return referral, await client.resolve("0.NA/88.100.50")

    referral, prefix_handle = asyncio.run(go())
    assert referral.response_code == ResponseCode.SERVICE_REFERRAL and referral.referral == "0.NA/88.100.50"
    assert prefix_handle.ok
    hs_site = next(v for v in prefix_handle.values if v.type == "HS_SITE")
    server = decode_site(hs_site.data).servers[0]
    assert str(server.address) == "127.0.0.1" and [(i.protocol, i.port) for i in server.interfaces] == [
        (1, 2700),
        (0, 2700),
    ]


# -- browsers, QR codes, the tunnel ------------------------------------------------------------------------


def test_browser_is_redirected_to_the_first_url(node):
    reply = get(node, f"/{HANDLE}")
    url = get(node, f"/api/handles/{HANDLE}?type=URL").json["values"][0]["data"]["value"]
    assert reply.status == 302 and reply.headers["Location"] == url


def test_browser_page_without_url_or_with_noredirect(node):
    page = get(node, f"/{HANDLE}?noredirect")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert HANDLE.encode() in page.body and b"HS_ADMIN" in page.body
    no_url = get(node, "/88.100.1/NO-URL")
    assert no_url.status == 200 and "没有网址".encode() in no_url.body
    unsafe = get(node, "/88.100.1/JS-URL")
    assert (
        unsafe.status == 200
        and b"javascript:alert(1)" in unsafe.body
        and b'href="javascript' not in unsafe.body
    )
    assert get(node, "/88.100.1/CRLF-URL").status == 200  # shown, never put into a Location header
    assert get(node, "/88.100.1/NOT-THERE").status == 404
    assert get(node, "/").status == 200
    search = get(node, f"/?handle={HANDLE}")
    assert search.status == 302 and search.headers["Location"] == f"/{HANDLE}"


def test_native_protocol_tunnelled_over_http(node):
    message = encode_request(OpCode.RESOLUTION, encode_resolution_request(ResolutionRequest(HANDLE.encode())),
                             request_id=99, expiration=2_000_000_000, op_flags=0)  # fmt: skip
    reply = call(
        node.http_port, "POST", "/", body=message, headers={"Content-Type": "application/x-hdl-message"}
    )
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/x-hdl-message"
    answer = decode_message(reply.body)
    assert answer.header.response_code == ResponseCode.SUCCESS and answer.envelope.request_id == 99
    assert decode_resolution_response_body(answer.body, False)[1] == HANDLE.encode()
    wrong_type = call(node.http_port, "POST", "/", body=message, headers={"Content-Type": "text/plain"})
    assert wrong_type.status == 415
    garbage = call(
        node.http_port, "POST", "/", body=b"\x00" * 7, headers={"Content-Type": "application/x-hdl-message"}
    )
    assert garbage.status == 400 and garbage.json["responseCode"] == 4


def udp_answer(node, message: bytes) -> bytes:
    """The whole answer, reassembled when it comes in pieces (a prefix handle's HS_SITE carries the server
    key, so its answer takes two datagrams)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(message, (node.host, node.port))
        reassembler, whole = Reassembler(), None
        while whole is None:
            datagram = sock.recv(65535)
            whole = reassembler.feed("node", datagram, 0.0) if is_chunk(datagram) else datagram
        return whole


def without_expiration(answer: bytes) -> bytes:
    """The answer with its ExpirationTime (now + 12 h; header bytes 16-20, after the 20-byte envelope) zeroed:
    two answers a second apart differ there only."""
    return answer[:36] + bytes(4) + answer[40:]


@pytest.mark.parametrize("handle", [HANDLE, HANDLE.split("/")[0]], ids=["handle", "bare-prefix"])
def test_tunnel_on_any_path_as_cnri_java_client_posts_it(node, handle):
    """CNRI's Java client falls back to the HTTP interface of an HS_SITE: `POST /<percent-encoded handle>`
    with the native message. The answer is the native answer, byte for byte the one UDP gives."""
    message = encode_request(OpCode.RESOLUTION, encode_resolution_request(ResolutionRequest(handle.encode())),
                             request_id=4242, expiration=2_000_000_000, op_flags=0x19000000)  # fmt: skip
    path = "/" + handle.replace("/", "%2F")
    reply = call(node.http_port, "POST", path, body=message, headers={"Content-Type": "application/x-hdl-message"})
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/x-hdl-message"
    answer = decode_message(reply.body)
    assert answer.header.response_code == ResponseCode.SUCCESS and answer.envelope.request_id == 4242
    assert answer.header.op_flags & OpFlag.AT
    assert without_expiration(reply.body) == without_expiration(udp_answer(node, message))
    for other in ("/api/handles/" + handle, "/some/where"):  # routed by its content type, whatever the path
        assert call(node.http_port, "POST", other, body=message,
                    headers={"Content-Type": "application/x-hdl-message"}).status == 200  # fmt: skip
    assert call(node.http_port, "POST", path, body=message, headers={"Content-Type": "text/plain"}).status == 405


# -- writes ------------------------------------------------------------------------------------------------


def test_write_is_visible_at_once_to_every_worker_and_protocol(node, ent7):
    handle = "88.100.7/VISIBLE-1"
    body = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/v1"}]}
    assert resolve_everywhere(node, handle, sockets=4) == {100}  # every worker has answered before the write
    created = call(node.http_port, "PUT", f"/api/handles/{handle}", body=body, auth=ent7)
    assert (created.status, created.json) == (201, {"responseCode": 1, "handle": handle})
    assert resolve_everywhere(node, handle) == {1}
    deleted = call(node.http_port, "DELETE", f"/api/handles/{handle}", auth=ent7)
    assert (deleted.status, deleted.json["responseCode"]) == (200, 1)
    assert resolve_everywhere(node, handle) == {100}


def test_put_replace_overwrite_false_and_index_updates(node, ent7):
    handle = "88.100.7/REPLACE-1"
    first = {
        "values": [
            {"index": 1, "type": "URL", "data": "https://a"},
            {"index": 2, "type": "DESC", "data": "a"},
        ]
    }
    assert call(node.http_port, "PUT", f"/api/handles/{handle}", body=first, auth=ent7).status == 201
    refused = call(node.http_port, "PUT", f"/api/handles/{handle}?overwrite=false", body=first, auth=ent7)
    assert (refused.status, refused.json["responseCode"]) == (409, 101)
    update = {
        "values": [{"index": 2, "type": "DESC", "data": "b"}, {"index": 3, "type": "EMAIL", "data": "x@y"}]
    }
    assert (
        call(node.http_port, "PUT", f"/api/handles/{handle}?index=2&index=3", body=update, auth=ent7).status
        == 200
    )
    values = get(node, f"/api/handles/{handle}").json["values"]
    assert [(v["index"], v["data"]["value"]) for v in values] == [(1, "https://a"), (2, "b"), (3, "x@y")]
    clash = call(node.http_port, "PUT", f"/api/handles/{handle}?index=3&overwrite=false", body={"values": [
        {"index": 3, "type": "EMAIL", "data": "z@y"}]}, auth=ent7)  # fmt: skip
    assert (clash.status, clash.json["responseCode"]) == (409, 201)
    removed = call(node.http_port, "DELETE", f"/api/handles/{handle}?index=2", auth=ent7)
    assert removed.status == 200
    assert [v["index"] for v in get(node, f"/api/handles/{handle}").json["values"]] == [1, 3]
    nothing = call(node.http_port, "DELETE", f"/api/handles/{handle}?index=77", auth=ent7)
    assert (nothing.status, nothing.json["responseCode"]) == (400, 200)
    replaced = call(node.http_port, "PUT", f"/api/handles/{handle}", body=[{"index": 9, "type": "X", "data": "y"}],
                    auth=ent7)  # fmt: skip
    assert replaced.status == 200
    assert [v["index"] for v in get(node, f"/api/handles/{handle}").json["values"]] == [9]


def test_writes_need_credentials_of_the_prefix(node, ent7, ent8):
    body = {"values": [{"index": 1, "type": "URL", "data": "https://x"}]}
    anonymous = call(node.http_port, "PUT", "/api/handles/88.100.7/A", body=body)
    assert (anonymous.status, anonymous.json["responseCode"]) == (401, 402)
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong = call(
        node.http_port, "PUT", "/api/handles/88.100.7/A", body=body, auth=(ent7[0], "not-the-secret")
    )
    assert (wrong.status, wrong.json["responseCode"]) == (401, 403)
    nobody = call(node.http_port, "PUT", "/api/handles/88.100.7/A", body=body, auth=("admin", "x"))
    assert nobody.status == 401
    other = call(node.http_port, "PUT", "/api/handles/88.100.8/A", body=body, auth=ent7)
    assert (other.status, other.json["responseCode"]) == (403, 401)
    delete_other = call(node.http_port, "DELETE", f"/api/handles/{HANDLE}", auth=ent8)
    assert delete_other.status == 403
    identity = call(node.http_port, "PUT", "/api/handles/88.100.7/ADMIN", body=body, auth=ent7)
    assert identity.status == 403
    for handle in ("88.100.7/A", "88.100.8/A"):
        assert get(node, f"/api/handles/{handle}").status == 404
    token = base64.b64encode(f"{ent7[0]}:{ent7[1]}".encode()).decode()
    raw_colon = call(node.http_port, "GET", "/api/whoami", headers={"Authorization": f"Basic {token}"})
    assert raw_colon.json["prefix"] == "88.100.7"  # curl -u sends the user's ':' unencoded


def test_bad_input_gets_a_4xx_json_message_and_writes_nothing(node, ent7):
    port = node.http_port
    url = "/api/handles/88.100.7/BAD-1"
    cases = [
        (b"{not json", 400, 4),
        (json.dumps({"values": [{"index": "one", "type": "URL", "data": "x"}]}).encode(), 400, 202),
        (json.dumps({"values": {"index": 1}}).encode(), 400, 202),
        (json.dumps({"values": [{"index": 1, "type": "URL", "data": {"format": "hex", "value": "zz"}}]}).encode(), 400,
         202),
        (json.dumps({"handle": "88.100.7/OTHER", "values": []}).encode(), 400, 102),
        (b"x" * ((1 << 20) + 1), 413, 4),
    ]  # fmt: skip
    for body, status, code in cases:
        reply = call(port, "PUT", url, body=body, auth=ent7)
        assert (reply.status, reply.json["responseCode"]) == (status, code), body[:60]
        assert reply.json["message"]
    wrong_type = call(port, "PUT", url, body={"values": [{"index": 1, "type": "URL", "data": "x"}, {"index": 1,
                      "type": "URL", "data": "y"}]}, auth=ent7)  # fmt: skip
    assert wrong_type.status == 400 and "twice" in wrong_type.json["message"]
    assert get(node, url).status == 404
    unserved = call(port, "PUT", "/api/handles/99.9/X", body={"values": []}, auth=OP)
    assert (unserved.status, unserved.json["responseCode"]) == (400, 301)
    referral = call(port, "PUT", "/api/handles/88.100.50/X", body={"values": []}, auth=OP)
    assert (referral.status, referral.json["responseCode"]) == (400, 301)


def test_template_violation_is_422_naming_the_field(node):
    handle = "88.100.101/PART-T1"
    good = [
        {"index": 2001, "type": "PART_NO", "data": "YA-T-0001"},
        {"index": 2002, "type": "PART_NAME", "data": "制动盘"},
        {"index": 2003, "type": "CATEGORY", "data": "brake-disc"},
        {"index": 2004, "type": "BATCH_REF", "data": "88.100.101/BATCH-2025-0701"},
        {"index": 2006, "type": "QC_RESULT", "data": "pass"},
    ]
    for index, data, field in ((2003, "wheel", "category"), (2004, "88.100.101/BATCH-NONE", "batch"),
                               (2001, "lower-case", "partNumber")):  # fmt: skip
        values = [dict(v, data=data) if v["index"] == index else v for v in good]
        reply = call(node.http_port, "PUT", f"/api/handles/{handle}", body={"values": values}, auth=OP)
        assert (reply.status, reply.json["responseCode"], reply.json["field"]) == (422, 202, field)
    missing = call(node.http_port, "PUT", f"/api/handles/{handle}", body={"values": good[1:]}, auth=OP)
    assert (
        missing.status == 422
        and missing.json["field"] == "partNumber"
        and "required" in missing.json["message"]
    )
    assert get(node, f"/api/handles/{handle}").status == 404
    assert call(node.http_port, "PUT", f"/api/handles/{handle}", body={"values": good}, auth=OP).status == 201
    removal = call(node.http_port, "DELETE", f"/api/handles/{handle}?index=2004", auth=OP)
    assert removal.status == 422 and removal.json["field"] == "batch"


# -- batches -----------------------------------------------------------------------------------------------


def _records(prefix: str, names, bad_at=()):
    lines = []
    for n, name in enumerate(names):
        value = {"index": 1, "type": "URL", "data": f"https://example.com/{name}"}
        if n in bad_at:
            value["index"] = "bad"
        lines.append(json.dumps({"handle": f"{prefix}/{name}", "values": [value]}))
    return ("\n".join(lines) + "\n").encode()


def test_atomic_batch_with_a_bad_item_writes_nothing(node, ent7):
    names = [f"ATOM-{n}" for n in range(50)]
    reply = call(node.http_port, "POST", "/api/batch?atomic=true", body=_records("88.100.7", names, bad_at=[37]),
                 auth=ent7, headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
    assert reply.status == 400 and reply.json["written"] is False and reply.json["failed"] == 1
    assert reply.json["message"] == "atomic batch refused, nothing written: 1 of 50 items failed"
    assert (
        reply.json["results"][37]["position"] == 38
        and reply.json["results"][37]["field"] == "values[0].index"
    )
    for name in (names[0], names[49]):
        assert get(node, f"/api/handles/88.100.7/{name}").status == 404


def test_batch_reports_per_item_and_writes_the_good_ones(node, ent7):
    names = [f"BATCH-{n}" for n in range(20)]
    body = _records("88.100.7", names, bad_at=[3]) + b"{broken\n" + _records("88.100.8", ["NOT-MINE"])
    reply = call(node.http_port, "POST", "/api/batch", body=body, auth=ent7)
    assert reply.status == 200
    result = reply.json
    assert (result["created"], result["failed"], result["written"]) == (19, 3, True)
    codes = [r["responseCode"] for r in result["results"]]
    assert codes[3] == 202 and codes[20] == 4 and codes[21] == 401 and codes.count(1) == 19
    assert resolve_everywhere(node, "88.100.7/BATCH-19", sockets=4) == {1}
    again = call(
        node.http_port,
        "POST",
        "/api/batch?overwrite=false",
        auth=ent7,
        body=[{"handle": "88.100.7/BATCH-0", "values": []}, {"handle": "88.100.7/BATCH-NEW", "values": []}],
    )
    assert [r["responseCode"] for r in again.json["results"]] == [101, 1]  # a JSON array works too
    assert call(node.http_port, "POST", "/api/batch", body=[{"handle": "88.100.7/BATCH-1", "values": []}],
                auth=ent7).json["replaced"] == 1  # fmt: skip


def test_batch_limits(node, ent7):
    too_many = _records("88.100.7", [f"MANY-{n}" for n in range(2001)])
    reply = call(node.http_port, "POST", "/api/batch", body=too_many, auth=ent7)
    assert (reply.status, reply.json["limit"]) == (413, 2000)
    assert get(node, "/api/handles/88.100.7/MANY-0").status == 404
    assert call(node.http_port, "POST", "/api/batch", body=b"\n\n", auth=ent7).status == 400
    assert call(node.http_port, "POST", "/api/batch", body=b"[1, 2", auth=ent7).status == 400
    assert call(node.http_port, "POST", "/api/batch", body=_records("88.100.7", ["X"])).status == 401
    oversize = call(node.http_port, "POST", "/api/batch", body=b"x" * ((8 << 20) + 1), auth=ent7)
    assert oversize.status == 413


# -- listing, statistics, the operator ---------------------------------------------------------------------


def test_listing_is_for_the_prefix_administrator(node, ent7):
    assert get(node, "/api/handles?prefix=88.100.7").status == 401
    assert get(node, "/api/handles?prefix=88.100.8", auth=ent7).status == 403
    first = get(node, "/api/handles?prefix=88.100.7&page=0&pageSize=5", auth=ent7).json
    second = get(node, "/api/handles?prefix=0.NA/88.100.7&page=1&pageSize=5", auth=ent7).json
    assert (
        len(first["handles"]) == 5
        and len(second["handles"]) == 5
        and first["handles"][-1] < second["handles"][0]
    )
    everything = get(node, "/api/handles?prefix=88.100.7&pageSize=10000", auth=OP).json
    assert int(everything["totalCount"]) == len(everything["handles"]) and OWN in everything["handles"]
    assert get(node, "/api/handles?prefix=88.100.7&pageSize=0", auth=OP).status == 400


def test_stats_totals_for_everyone_prefixes_for_the_operator(node, ent7):
    anonymous = get(node, "/api/stats").json
    assert anonymous["identifiers"] > 2000 and "per_prefix" not in anonymous["resolutions"]
    assert anonymous["registrations"]["per_protocol"]["load"] >= 2000
    operator = get(node, "/api/stats", auth=OP).json
    assert "88.100.1" in operator["registrations"]["per_prefix"]
    own = get(node, "/api/stats", auth=ent7).json
    assert set(own["registrations"]["per_prefix"]) <= {"88.100.7"}


def test_operator_api(node, ent7):
    assert call(node.http_port, "GET", "/api/whoami", auth=ent7).json["user"] == ent7[0]  # marks it seen
    assert call(node.http_port, "POST", "/api/admin/prefixes", body={"prefix": "88.100.60", "org": "x"},
                auth=ent7).status == 403  # fmt: skip
    assert (
        call(node.http_port, "POST", "/api/admin/prefixes", body={"prefix": "88.100.60", "org": "x"}).status
        == 401
    )
    added = call(node.http_port, "POST", "/api/admin/prefixes", body={"prefix": "88.100.60", "org": "New Co"},
                 auth=OP)  # fmt: skip
    assert added.json == {
        "responseCode": 1,
        "prefix": "88.100.60",
        "org": "New Co",
        "state": "hosted",
        "site": None,
    }
    bad = call(node.http_port, "POST", "/api/admin/prefixes", body={"prefix": "a b", "org": "x"}, auth=OP)
    assert bad.status == 400 and bad.json["field"] == "prefix"
    issued = call(node.http_port, "POST", "/api/admin/prefixes/88.100.60/credential", auth=OP).json
    user, secret = issued["user"], issued["secret"]
    assert user == "300:88.100.60/ADMIN"
    put = call(node.http_port, "PUT", "/api/handles/88.100.60/FIRST", auth=(user, secret),
               body={"values": [{"index": 1, "type": "URL", "data": "https://new.example"}]})  # fmt: skip
    assert put.status == 201
    rotated = call(node.http_port, "POST", "/api/admin/prefixes/88.100.60/credential", auth=OP).json["secret"]
    assert call(node.http_port, "GET", "/api/whoami", auth=(user, secret)).status == 401
    assert call(node.http_port, "GET", "/api/whoami", auth=(user, rotated)).json["prefix"] == "88.100.60"

    def enterprises() -> tuple[dict, dict]:
        listed = call(node.http_port, "GET", "/api/admin/enterprises", auth=OP).json
        return listed, {e["prefix"]: e for e in listed["enterprises"]}

    # Last-seen marks reach the writer in the background, right after the login that made them.
    deadline = time.monotonic() + 10
    while not all(enterprises()[1][p]["connected"] for p in ("88.100.60", "88.100.7")):
        assert time.monotonic() < deadline, "the logins were not marked as seen"
        time.sleep(0.02)
    listed, by_prefix = enterprises()
    assert not by_prefix["88.100.2"]["connected"] and listed["connected"] >= 2
    report = call(node.http_port, "GET", "/api/admin/report", auth=OP).json
    scenarios = next(f for f in report["figures"] if f["name"].startswith("application scenarios"))
    assert scenarios["value"] == 1 and not scenarios["holds"]


def test_disabled_prefix_resolves_nowhere_and_its_credential_is_refused(node, ent8):
    handle = next(
        DATASET.handle_at(i) for i in range(DATASET.count) if DATASET.handle_at(i).startswith("88.100.8/")
    )
    assert call(node.http_port, "GET", "/api/whoami", auth=ent8).status == 200
    disabled = call(node.http_port, "POST", "/api/admin/prefixes/88.100.8/disable", auth=OP)
    assert disabled.json["state"] == "disabled"
    try:
        assert call(node.http_port, "GET", "/api/whoami", auth=ent8).status == 403
        assert get(node, f"/api/handles/{handle}").json["responseCode"] == 301
    finally:
        enabled = call(node.http_port, "POST", "/api/admin/prefixes/88.100.8/enable", auth=OP)
        assert enabled.json["state"] == "hosted"
    assert call(node.http_port, "POST", "/api/admin/prefixes/77.1/disable", auth=OP).status == 404


def test_templates_over_the_operator_api(node, ent7):
    document = json.loads((SCENARIOS / "equipment" / "scenario.json").read_text())["templates"][1]
    assert (
        call(node.http_port, "PUT", "/api/admin/templates/88.100.202", body=document, auth=ent7).status == 403
    )
    assert (
        call(node.http_port, "PUT", "/api/admin/templates/88.100.202", body=document, auth=OP).status == 400
    )
    call(
        node.http_port, "POST", "/api/admin/prefixes", body={"prefix": "88.100.202", "org": "Spares"}, auth=OP
    )
    assert (
        call(node.http_port, "PUT", "/api/admin/templates/88.100.202", body=document, auth=OP).status == 200
    )
    assert call(node.http_port, "GET", "/api/admin/templates/88.100.202", auth=ent7).json == document
    broken = dict(document, templates=[{"name": "x", "fields": [{"name": "a", "index": 5, "type": "T"}]}])
    refused = call(node.http_port, "PUT", "/api/admin/templates/88.100.202", body=broken, auth=OP)
    assert refused.status == 400 and "index" in refused.json["message"]
    part = call(node.http_port, "PUT", "/api/handles/88.100.202/SP-X1", auth=OP, body={"values": [
        {"index": 2001, "type": "PART_NO", "data": "X1-0001"}]})  # fmt: skip
    assert part.status == 422 and part.json["field"] == "partName"
    assert call(node.http_port, "DELETE", "/api/admin/templates/88.100.202", auth=OP).status == 200
    assert call(node.http_port, "GET", "/api/admin/templates/88.100.202", auth=OP).status == 404


def test_failed_logins_are_throttled(node):
    statuses = [call(node.http_port, "GET", "/api/whoami", auth=("300:88.100.3/ADMIN", "guess")).status
                for _ in range(30)]  # fmt: skip
    assert statuses[0] == 401 and 429 in statuses  # no credential was issued for 88.100.3 either


def test_http_resolutions_and_registrations_are_counted_and_persisted(tmp_path, demo_store_dir):
    """On a node of its own (it stops the node to read what was flushed): exactly what it asked is counted."""
    path = copy_demo_store(demo_store_dir, tmp_path)
    with Store(path) as store:
        user, secret = issue_credential(store, "88.100.7")
    with http_node(path, workers=2) as own:
        for _ in range(5):
            assert get(own, f"/api/handles/{HANDLE}").status == 200
        value = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/counted"}]}
        assert call(own.http_port, "PUT", "/api/handles/88.100.7/COUNTED", value, auth=(user, secret)).status == 201
        assert own.stop() == 0  # the workers flush their counts as they stop
    with Store(path) as store:
        _, per_prefix, _, per_protocol = totals(store, "resolutions")
        assert per_protocol.get("http") == 5 and per_prefix[HANDLE.split("/")[0]] == 5
        assert totals(store, "registrations")[3].get("http") == 1
