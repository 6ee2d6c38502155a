"""The real Handle.Net REST client, pyhandle, against `idnode serve --http-port` over plain HTTP: create,
retrieve, modify, delete, and a write under another enterprise's prefix refused."""

from __future__ import annotations

import asyncio

import pytest
from pyhandle.handleclient import RESTHandleClient
from pyhandle.handleexceptions import GenericHandleError, HandleAlreadyExistsException

from resolver.client import HandleClient
from storage.enterprises import issue_credential
from storage.store import Store
from tests.conftest import copy_demo_store
from tests.http_helpers import http_node


@pytest.fixture(scope="module")
def node_and_creds(tmp_path_factory, demo_store_dir):
    path = copy_demo_store(demo_store_dir, tmp_path_factory.mktemp("pyhandle"))
    with Store(path) as store:
        creds = {p: issue_credential(store, p) for p in ("88.100.3", "88.100.4")}
    with http_node(path, workers=2) as node:
        yield node, creds


def client(node, user: str, secret: str) -> RESTHandleClient:
    # pyhandle talks HTTPS to hdl.handle.net by default; a handle_server_url with http:// and no certificate
    # check aim it at the node. Creating it resolves the user's handle (88.100.x/ADMIN), as pyhandle does.
    return RESTHandleClient.instantiate_with_username_and_password(
        f"http://127.0.0.1:{node.http_port}", user, secret, HTTPS_verify=False
    )


def resolve_handle_protocol(node, handle: str):
    async def go():
        async with HandleClient(node.host, node.port) as c:
            return await c.resolve(handle)

    return asyncio.run(go())


def test_create_retrieve_modify_delete(node_and_creds):
    node, creds = node_and_creds
    c = client(node, *creds["88.100.3"])
    handle = "88.100.3/PYHANDLE-1"
    assert c.register_handle_kv(handle, URL="https://example.com/py/1", CHECKSUM="c0ffee") == handle
    record = c.retrieve_handle_record(handle)
    assert record["URL"] == "https://example.com/py/1" and record["CHECKSUM"] == "c0ffee"
    assert "0.NA/88.100.3" in record["HS_ADMIN"]
    with pytest.raises(HandleAlreadyExistsException):
        c.register_handle_kv(handle, URL="https://example.com/again")

    c.modify_handle_value(handle, URL="https://example.com/py/1-v2")
    c.add_handle_value(handle, DESC="刹车盘 批次 2025-07")
    assert c.get_value_from_handle(handle, "URL") == "https://example.com/py/1-v2"
    over_udp = resolve_handle_protocol(node, handle)  # the same record over the Handle protocol
    assert over_udp.ok and {v.type for v in over_udp.values} == {"HS_ADMIN", "URL", "CHECKSUM", "DESC"}

    c.delete_handle_value(handle, "CHECKSUM")
    assert "CHECKSUM" not in c.retrieve_handle_record(handle)
    assert c.delete_handle(handle) == handle
    assert c.retrieve_handle_record(handle) is None
    assert resolve_handle_protocol(node, handle).response_code == 100


def test_write_under_another_enterprise_prefix_is_refused(node_and_creds):
    node, creds = node_and_creds
    c = client(node, *creds["88.100.3"])
    with pytest.raises(GenericHandleError) as refused:
        c.register_handle_kv("88.100.4/NOT-YOURS", URL="https://example.com/x")
    assert refused.value.response.status_code == 403
    assert c.retrieve_handle_record("88.100.4/NOT-YOURS") is None
    own = client(node, *creds["88.100.4"])
    assert own.register_handle_kv("88.100.4/MINE", URL="https://example.com/mine") == "88.100.4/MINE"


def test_wrong_secret_is_an_authentication_error(node_and_creds):
    from pyhandle.handleexceptions import HandleAuthenticationError

    node, creds = node_and_creds
    user, _ = creds["88.100.3"]
    c = client(node, user, "wrong-secret")
    with pytest.raises(HandleAuthenticationError):
        c.register_handle_kv("88.100.3/NOPE", URL="https://example.com/x")
