"""Fuzz invariants of the HTTP API, in-process over a real store: any body to a write route, the batch route,
the tunnel and the operator's API gets a 2xx or 4xx answer with a JSON body (the tunnel: a Handle response),
never a 5xx; and a 4xx answer leaves every database a write can change exactly as it was.

Bodies are drawn near the valid forms (values with plausible and implausible fields, batch lines, template
documents), from arbitrary JSON, from raw bytes and by mutating valid bodies byte by byte."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.cli_admin import load_scenario
from resolver.handle.message import decode_response
from storage.enterprises import issue_credential, set_operator_secret
from storage.store import Store
from tests.app_helpers import InProcessApp
from tests.conftest import copy_demo_store
from tests.vectors import VECTORS

SCENARIOS = Path(__file__).resolve().parents[1] / "deploy" / "scenarios"
OPERATOR_SECRET = "operator-secret-for-fuzzing"
OP = ("operator", OPERATOR_SECRET)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))  #: per test; FUZZ_EXAMPLES=3000 for a longer hunt
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_store_dir):
    path = copy_demo_store(demo_store_dir, tmp_path_factory.mktemp("http-fuzz"))
    with Store(path) as store:
        user, secret = issue_credential(store, "88.100.7")
        set_operator_secret(store, OPERATOR_SECRET)
        load_scenario(store, SCENARIOS / "automotive")  # templates on 88.100.101: writes there are checked
    running = InProcessApp(path)
    running.ent7 = (user, secret)
    yield running
    running.close()


def forget_failures(app: InProcessApp) -> None:
    """Wrong credentials are part of the input; the login throttle must not turn every later example into 429."""
    app.ctx.auth.throttle.forget_all()


def check_json_answer(app: InProcessApp, reply, before: str) -> dict:
    assert 200 <= reply.status < 300 or 400 <= reply.status < 500, (reply.status, reply.body[:400])
    assert reply.headers["Content-Type"].startswith("application/json"), reply.headers
    body = json.loads(reply.body)
    assert isinstance(body, dict) and isinstance(body["responseCode"], int)
    if reply.status >= 400:
        assert body["message"]
        assert app.state() == before, f"a {reply.status} answer wrote something: {body}"
    return body


# -- strategies --------------------------------------------------------------------------------------------

SMALL_INTS = st.integers(-(2**40), 2**40) | st.sampled_from([0, 1, 2, 100, 200, 2001, 2**32 - 1, 2**32, -1])
SCALARS = st.none() | st.booleans() | SMALL_INTS | st.floats() | st.text(max_size=24)
ANY_JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def sometimes(plausible):
    """Mostly the plausible form of a field (so that whole bodies often get through), sometimes anything."""
    return st.one_of(*[plausible] * 7, ANY_JSON)


HANDLES = st.one_of(
    st.sampled_from(["88.100.7/FUZZ-1", "88.100.7/FUZZ-2", "88.100.101/PART-F1", "88.100.101/BATCH-F1"]),
    st.builds("88.100.7/{}".format, st.text(min_size=1, max_size=12)),
    st.builds("88.100.7/{}".format, st.text(min_size=1, max_size=12)),
    st.sampled_from(["88.100.7/ADMIN", "88.100.8/NOT-MINE", "99.9/UNSERVED", "0.NA/88.100.7", "88.100.7/", "/x",
                     "88.100.7/批次-é", "88.100.7/" + "L" * 2100]),
    st.text(min_size=1, max_size=30),
)  # fmt: skip
ADMIN = st.fixed_dictionaries(
    {"handle": sometimes(st.sampled_from(["0.NA/88.100.7", "88.100.7/ADMIN", ""])),
     "index": sometimes(SMALL_INTS | st.sampled_from(["200", "x"])),
     "permissions": sometimes(st.text(alphabet="01", max_size=14))}
)  # fmt: skip
INTERFACE = st.fixed_dictionaries(
    {},
    optional={"type": sometimes(st.integers(-1, 4)), "query": st.booleans(), "admin": st.booleans(),
              "protocol": sometimes(st.sampled_from(["UDP", "TCP", "HTTP", "HTTPS", "SCTP"])),
              "port": sometimes(st.integers(-1, 70000))},
)  # fmt: skip
SITE = st.fixed_dictionaries(
    {},
    optional={"version": sometimes(SMALL_INTS), "protocolVersion": sometimes(st.sampled_from(["2.10", "9.99", "x"])),
              "serialNumber": sometimes(SMALL_INTS), "primarySite": st.booleans(), "multiPrimary": st.booleans(),
              "hashOption": sometimes(st.integers(-1, 300)), "hashFilter": sometimes(st.sampled_from(["", "00ff", "zz"])),
              "attributes": st.lists(st.fixed_dictionaries({"name": st.text(max_size=8), "value": sometimes(st.text(max_size=8))}), max_size=2),
              "servers": st.lists(st.fixed_dictionaries(
                  {"serverId": sometimes(SMALL_INTS), "address": sometimes(st.sampled_from(["127.0.0.1", "::1", "host", ""])),
                   "publicKey": sometimes(st.fixed_dictionaries({"format": st.sampled_from(["base64", "hex", "x"]), "value": st.text(max_size=8)})),
                   "interfaces": st.lists(INTERFACE, max_size=3)}), max_size=2)},
)  # fmt: skip
DATA = st.one_of(
    st.text(max_size=40),
    st.fixed_dictionaries(
        {"format": sometimes(st.sampled_from(["string", "base64", "hex", "admin", "site", "vlist", "key"])),
         "value": st.one_of(st.text(max_size=40), ADMIN, SITE,
                            st.lists(st.fixed_dictionaries({"handle": sometimes(HANDLES), "index": sometimes(SMALL_INTS)}), max_size=3),
                            ANY_JSON)}
    ),
    ANY_JSON,
)  # fmt: skip
VALUE_FIELDS = {
    "index": sometimes(SMALL_INTS),
    "type": sometimes(st.sampled_from(
        ["URL", "DESC", "EMAIL", "HS_ADMIN", "HS_SITE", "HS_VLIST", "HS_PUBKEY", "PART_NO", "BATCH_REF", ""])),
    "data": DATA,
    "ttl": sometimes(SMALL_INTS | st.sampled_from(["2030-01-01T00:00:00Z", "soon"])),
    "timestamp": sometimes(SMALL_INTS | st.sampled_from(["2025-07-01T08:00:00Z", "2025-13-01", "1e9"])),
    "permissions": sometimes(st.sampled_from(["1110", "0000", "1", "11111", "abcd"])),
    "references": sometimes(st.lists(st.fixed_dictionaries(
        {"handle": sometimes(HANDLES), "index": sometimes(SMALL_INTS)}), max_size=3)),
}  # fmt: skip
VALUE = st.fixed_dictionaries({}, optional=VALUE_FIELDS)
GOOD_VALUES = [
    {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.com/f"}, "ttl": 60},
    {"index": 2, "type": "DESC", "data": "刹车盘", "timestamp": "2025-07-01T08:00:00Z", "permissions": "1110"},
    {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {"handle": "0.NA/88.100.7",
     "index": 200, "permissions": "011111111111"}}},
]  # fmt: skip


@st.composite
def near_good_values(draw) -> list:
    """The good values with one field of one of them changed (or dropped): most of the body is right, so the
    parser gets as far as that field."""
    values = json.loads(json.dumps(GOOD_VALUES))
    value = values[draw(st.integers(0, len(values) - 1))]
    key = draw(st.sampled_from(sorted(VALUE_FIELDS)))
    if draw(st.integers(0, 5)) == 0:
        value.pop(key, None)
    else:
        value[key] = draw(VALUE_FIELDS[key])
    return values


VALUES = st.one_of(st.lists(VALUE, max_size=4), near_good_values(), near_good_values())
RECORD = st.fixed_dictionaries({"handle": sometimes(HANDLES), "values": sometimes(VALUES)})
PUT_BODY = st.one_of(
    st.builds(lambda values: {"values": values}, VALUES),
    VALUES,
    RECORD,
    ANY_JSON,
)


def encode_json(obj) -> bytes:
    return json.dumps(
        obj, ensure_ascii=False
    ).encode()  # NaN and Infinity come out as invalid JSON: good input


@st.composite
def mutated(draw, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(
                st.sampled_from(
                    [b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"\x00", b"\xff", b"1e999", b"-"]
                )
            )
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        else:
            del data[at:]
    return bytes(data)


def bodies(structured) -> st.SearchStrategy[bytes]:
    good = encode_json({"values": GOOD_VALUES})
    return st.one_of(
        structured.map(encode_json),
        structured.map(encode_json),
        mutated(good),
        st.binary(max_size=200),
    )


def credentials(app) -> st.SearchStrategy:
    return st.sampled_from(
        [app.ent7] * 4 + [OP] * 3 + [None, ("operator", "wrong-secret"), (app.ent7[0], "x" * 32)]
    )


QUERIES = st.sampled_from(["", "", "overwrite=false", "index=1", "index=various", "index=1&index=100",
                           "index=x", "overwrite=maybe", "atomic=true", "atomic=true&overwrite=false"])  # fmt: skip


# -- tests -------------------------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_put_handle_with_any_body(app, data):
    forget_failures(app)
    handle = data.draw(HANDLES)
    body = data.draw(bodies(PUT_BODY))
    query = data.draw(QUERIES)
    before = app.state()
    reply = app.call("PUT", f"/api/handles/{quote(handle)}?{query}", body, auth=data.draw(credentials(app)))
    check_json_answer(app, reply, before)


@FUZZ
@given(data=st.data())
def test_batch_with_any_body(app, data):
    forget_failures(app)
    records = data.draw(st.lists(st.one_of(RECORD, RECORD, ANY_JSON), min_size=0, max_size=6))
    if data.draw(st.booleans()):
        body = encode_json(records)
    else:  # NDJSON, with blank and broken lines among the records
        lines = [encode_json(r) for r in records]
        for _ in range(data.draw(st.integers(0, 2))):
            lines.insert(
                data.draw(st.integers(0, len(lines))),
                data.draw(st.sampled_from([b"", b"{", b"[1,", b"\xff\xfe"])),
            )
        body = b"\n".join(lines)
    if data.draw(st.integers(0, 4)) == 0:
        body = data.draw(mutated(body or b"[]"))
    before = app.state()
    reply = app.call("POST", f"/api/batch?{data.draw(QUERIES)}", body, auth=data.draw(credentials(app)))
    answer = check_json_answer(app, reply, before)
    if reply.status == 200:
        assert answer["created"] + answer["replaced"] + answer["failed"] == len(answer["results"])


@FUZZ
@given(data=st.data())
def test_tunnel_with_any_body(app, data):
    vector = VECTORS[data.draw(st.sampled_from(sorted(VECTORS)))]
    body = data.draw(st.one_of(mutated(vector), st.binary(max_size=300), st.just(vector)))
    content_type = data.draw(
        st.sampled_from(["application/x-hdl-message"] * 4 + ["application/json", "text/plain"])
    )
    before = app.state()
    reply = app.call("POST", "/", body, headers={"Content-Type": content_type})
    if reply.status == 200:
        assert reply.headers["Content-Type"] == "application/x-hdl-message"
        response = decode_response(reply.body)  # what the tunnel answers is a well-formed Handle response
        assert response.envelope.request_id == int.from_bytes(body[8:12], "big")
    else:
        check_json_answer(app, reply, before)


AUTH_HEADERS = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60),
    st.builds(lambda text: "Basic " + base64.b64encode(text.encode()).decode(), st.text(max_size=40)),
    st.builds(lambda raw: "Basic " + base64.b64encode(raw).decode(), st.binary(max_size=40)),
    st.sampled_from(
        ["Basic", "Basic ", "Bearer x", "Basic !!!", "basic b3BlcmF0b3I6", "Basic " + "A" * 5000]
    ),
)


@FUZZ
@given(header=AUTH_HEADERS)
def test_any_authorization_header(app, header):
    forget_failures(app)
    before = app.state()
    reply = app.call("GET", "/api/whoami", headers={"Authorization": header})
    check_json_answer(app, reply, before)


TEMPLATE_FIELD = st.fixed_dictionaries(
    {},
    optional={"name": sometimes(st.sampled_from(["a", "b", "c"]) | st.text(max_size=10)),
              "index": sometimes(st.integers(1995, 2010)),
              "type": sometimes(st.sampled_from(["PART_NO", "DESC", ""])), "required": sometimes(st.booleans()),
              "pattern": sometimes(st.sampled_from(["[A-Z]+", "(", "a{2,3}", ".*", "[", "a{4294967296}"])),
              "enum": sometimes(st.lists(st.text(max_size=6), max_size=3)),
              "minLength": sometimes(st.integers(-1, 50)), "maxLength": sometimes(st.integers(-1, 50)),
              "reference": sometimes(st.fixed_dictionaries({}, optional={
                  "prefixes": sometimes(st.lists(st.sampled_from(["88.100.60", "88.100.7", "x"]), max_size=2)),
                  "template": sometimes(st.text(max_size=6)), "mustExist": sometimes(st.booleans())}))},
)  # fmt: skip
TEMPLATE_DOC = st.fixed_dictionaries(
    {"prefix": sometimes(st.sampled_from(["88.100.60", "88.100.61"]))},
    optional={"scenario": sometimes(st.text(max_size=10)),
              "templates": sometimes(st.lists(st.fixed_dictionaries(
                  {"name": sometimes(st.sampled_from(["part", "batch"]) | st.text(max_size=8)),
                   "suffixPattern": sometimes(st.sampled_from(["PART-[0-9]+", ".*", "(", "X"])),
                   "fields": sometimes(st.lists(TEMPLATE_FIELD, max_size=3))}), max_size=2))},
)  # fmt: skip
# Only prefixes of their own: the operator's calls must not disable or refer away the prefixes the other tests
# write under (88.100.7, 88.100.101).
ADMIN_PREFIXES = st.sampled_from(["88.100.60", "88.100.61", "0.NA", "", "88..1", "88.100.60.-"]) | st.text(
    alphabet="0123456789.ABZ-", max_size=12
)
PREFIX_BODY = st.fixed_dictionaries(
    {},
    optional={"prefix": sometimes(ADMIN_PREFIXES), "org": sometimes(st.text(max_size=12)),
              "site": sometimes(st.sampled_from(["127.0.0.1:2700", "[::1]:2641", "host:1", "1.2.3.4:0", "1.2.3.4"]))},
)  # fmt: skip


@FUZZ
@given(data=st.data())
def test_admin_api_with_any_body(app, data):
    forget_failures(app)
    prefix = data.draw(ADMIN_PREFIXES).strip(".") or "88.100.60"
    route = data.draw(st.sampled_from(["prefixes", "templates", "action"]))
    if route == "prefixes":
        method, path, body = "POST", "/api/admin/prefixes", data.draw(bodies(PREFIX_BODY))
    elif route == "templates":
        method, path, body = "PUT", f"/api/admin/templates/{quote(prefix)}", data.draw(bodies(TEMPLATE_DOC))
    else:
        action = data.draw(st.sampled_from(["disable", "enable", "credential"]))
        method, path, body = (
            "POST",
            f"/api/admin/prefixes/{quote(prefix)}/{action}",
            data.draw(st.binary(max_size=20)),
        )
    auth = data.draw(st.sampled_from([OP, OP, OP, app.ent7, None]))
    before = app.state()
    reply = app.call(method, path, body, auth=auth)
    check_json_answer(app, reply, before)


def test_the_fuzzed_routes_do_write_when_the_input_is_good(app):
    """The invariant above is only worth something if good input gets through: a 2xx writes."""
    before = app.state()
    reply = app.call(
        "PUT", "/api/handles/88.100.7/FUZZ-GOOD", encode_json({"values": GOOD_VALUES}), auth=app.ent7
    )
    assert reply.status in (200, 201) and app.state() != before
    before = app.state()
    batch = encode_json([{"handle": "88.100.7/FUZZ-BATCH", "values": GOOD_VALUES}])
    assert app.call("POST", "/api/batch?atomic=true", batch, auth=app.ent7).status == 200
    assert app.state() != before


def test_a_template_pattern_too_large_for_re_is_a_400_not_a_500(app):
    """Found by `make fuzz` (http_json): re.compile raises OverflowError, not re.error, for a{4294967296}."""
    document = {"prefix": "88.100.60", "templates": [{"name": "t", "suffixPattern": "X-[0-9]{4294967296}",
                "fields": [{"name": "f", "index": 2001, "type": "T"}]}]}  # fmt: skip
    before = app.state()
    reply = app.call("PUT", "/api/admin/templates/88.100.60", encode_json(document), auth=OP)
    assert reply.status == 400 and "suffixPattern" in reply.json["message"]
    assert app.state() == before
