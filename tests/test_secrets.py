"""Secrets never leave the node: with every log record captured at DEBUG, failed logins of every kind
(wrong secret, another user's secret, malformed headers, throttled guesses), writes good and bad, an
unexpected failure inside an authenticated write, and a credential rotation never put a secret, nor a guess
of one, in a log line or an error answer; and the store file holds only their hashes."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from resolver.http import writes as http_writes
from storage.enterprises import issue_credential, set_operator_secret
from storage.store import Store
from tests.app_helpers import InProcessApp

OPERATOR_SECRET = "operator-secret-never-logged"
GOOD = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/s"}]}


def body(obj) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture()
def app(demo_store_copy):
    path = demo_store_copy
    with Store(path) as store:
        creds = {p: issue_credential(store, p) for p in ("88.100.7", "88.100.8")}
        set_operator_secret(store, OPERATOR_SECRET)
    running = InProcessApp(path)
    running.creds = creds
    running.path = path
    yield running
    running.close()


def raw_basic(text: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(text.encode()).decode()}


def test_no_secret_in_logs_answers_or_the_store(app, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    user7, secret7 = app.creds["88.100.7"]
    user8, secret8 = app.creds["88.100.8"]
    # The last character changed to one it is not (a fixed "Q" would be the secret itself one time in 64).
    near_miss = secret7[:-1] + ("Q" if secret7[-1] != "Q" else "R")
    guesses = [near_miss, secret7 + "x", "guess-" + secret7[:10], OPERATOR_SECRET + "!"]
    replies = []

    def call(*args, **kwargs):
        reply = app.call(*args, **kwargs)
        replies.append(reply)
        return reply

    # Failed logins of every kind.
    for guess in guesses:
        assert call("GET", "/api/whoami", auth=(user7, guess)).status == 401
    assert call("GET", "/api/whoami", auth=(user8, secret7)).status == 401  # a real secret, the wrong user
    assert call("GET", "/api/whoami", auth=("operator", secret8)).status == 401
    assert call("GET", "/api/whoami", auth=("300:88.100.99/ADMIN", secret7)).status == 401  # no credential
    assert call("GET", "/api/whoami", auth=("someone", secret7)).status == 401  # no such user
    assert call("GET", "/api/whoami", headers=raw_basic(secret7)).status == 401  # no ':' at all
    assert call("GET", "/api/whoami", headers=raw_basic(f"{user7}:{guesses[0]}")).status == 401  # curl's form
    assert call("GET", "/api/whoami", headers={"Authorization": f"Bearer {secret7}"}).status == 401
    assert call("GET", "/api/whoami", headers={"Authorization": f"Basic {secret7}!!"}).status == 401
    throttled = [call("GET", "/api/whoami", auth=(user7, g)).status for g in guesses * 3]
    assert 429 in throttled
    # Writes, good and bad, with real credentials.
    assert call("PUT", "/api/handles/88.100.8/S-1", body(GOOD), auth=(user8, secret8)).status == 201
    assert call("PUT", "/api/handles/88.100.8/S-2", b"{broken", auth=(user8, secret8)).status == 400
    assert call("PUT", "/api/handles/88.100.7/S-3", body(GOOD), auth=(user8, secret8)).status == 403
    bad_batch = b'{"handle": "88.100.8/B-1", "values": []}\n{"handle": 5}\n'
    assert call("POST", "/api/batch", bad_batch, auth=("operator", OPERATOR_SECRET)).status == 200
    assert call("DELETE", "/api/handles/88.100.8/S-1", auth=(user8, secret8)).status == 200
    # A bug inside an authenticated write: a 500 with a traceback in the log, and still no secret.
    monkeypatch.setattr(http_writes, "put_identifier", _explode)
    assert call("PUT", "/api/handles/88.100.8/S-4", body(GOOD), auth=(user8, secret8)).status == 500
    # Rotation: the new secret is in that one answer (shown once, by design) and nowhere else.
    rotated = app.call("POST", "/api/admin/prefixes/88.100.8/credential", auth=("operator", OPERATOR_SECRET))
    new_secret = rotated.json["secret"]
    assert call("GET", "/api/whoami", auth=(user8, new_secret)).status == 200
    assert call("GET", "/api/whoami", auth=(user8, secret8)).status == 401

    never = [secret7, secret8, OPERATOR_SECRET, new_secret, *guesses]
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    assert "Traceback" in logged and "RuntimeError" in logged  # the capture saw the failure's traceback
    assert len(caplog.records) >= 1
    for secret in never:
        assert secret not in logged
        for reply in replies:
            assert secret.encode() not in reply.body, reply.body
            assert all(secret not in value for value in reply.headers.values())
    app.close()
    app.close = lambda: None
    stored = (app.path / "data.mdb").read_bytes()
    for secret in (secret7, secret8, OPERATOR_SECRET, new_secret):
        assert secret.encode() not in stored  # only salted scrypt hashes are kept


def _explode(*args, **kwargs):
    raise RuntimeError("the write failed unexpectedly")
