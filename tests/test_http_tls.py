"""HTTPS on the HTTP port (`http_tls_cert`, `http_tls_key`) with a self-signed certificate made here: reads
and writes work for a client that trusts it, over TLS 1.2 or later; plain HTTP and clients that do not trust
it get nothing; the HS_SITE lists the port as HTTPS; bad files are refused at start (exit 2, naming the key)
and on reload (the node keeps serving with the certificate it has); a reload with a new certificate serves it
from every worker; nothing logged contains a secret."""

from __future__ import annotations

import argparse
import datetime
import http.client
import ipaddress
import json
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from resolver import settings
from resolver.config import ServeConfig
from resolver.handle.values import InterfaceProtocol, decode_site
from resolver.server.worker import node_site
from resolver.tls import MIN_TLS_VERSION, TlsSettingError, server_context
from storage.enterprises import issue_credential
from storage.store import Store
from tests.conftest import copy_demo_store
from tests.http_helpers import basic, http_node
from tests.servers import idnode


def self_signed(directory: Path, name: str = "node") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idnode test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def https(port: int, context: ssl.SSLContext, method: str, path: str, body=None, auth=None):
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        headers = {"Authorization": basic(*auth)} if auth else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), conn.sock.version()
    finally:
        conn.close()


def pem_to_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def served_certificates(port: int, connections: int = 8) -> set[bytes]:
    """The certificates (DER) the node presents over `connections` handshakes (from as many source ports,
    which SO_REUSEPORT spreads over the workers)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only to read what is presented
    found = set()
    for _ in range(connections):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw) as tls:
                found.add(tls.getpeercert(binary_form=True))
    return found


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(directory)
    other_cert, other_key = self_signed(directory, "other")
    return {"cert": cert, "key": key, "other_cert": other_cert, "other_key": other_key, "dir": directory}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, demo_store_dir):
    path = copy_demo_store(demo_store_dir, tmp_path_factory.mktemp("tls-store"))
    with Store(path) as store:
        user, secret = issue_credential(store, "88.100.7")
    return path, (user, secret)


def test_https_serves_reads_and_writes_and_plain_http_gets_nothing(pki, store_dir):
    path, cred = store_dir
    config = pki["dir"] / "idnode.toml"
    config.write_text(f'http_tls_cert = "{pki["cert"]}"\nhttp_tls_key = "{pki["key"]}"\n')
    trusting = ssl.create_default_context(cafile=str(pki["cert"]))
    extra = ("--config", str(config), "--log-level", "debug")
    with http_node(path, workers=2, extra=extra) as node:
        port = node.http_port
        status, body, version = https(port, trusting, "GET", "/api/handles/88.100.7/NOT-YET")
        assert status == 404 and version in ("TLSv1.2", "TLSv1.3")
        value = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/tls"}]}
        status, _, _ = https(
            port, trusting, "PUT", "/api/handles/88.100.7/TLS-1", json.dumps(value), auth=cred
        )
        assert status == 201
        for _ in range(4):  # every worker serves HTTPS and sees the write
            status, body, _ = https(port, trusting, "GET", "/api/handles/88.100.7/TLS-1")
            assert (
                status == 200 and json.loads(body)["values"][0]["data"]["value"] == "https://example.com/tls"
            )
        assert https(port, trusting, "GET", "/api/whoami", auth=(cred[0], "wrong-" + cred[1]))[0] == 401

        # Plain HTTP to the TLS port: no HTTP answer at all.
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.request("GET", "/api/stats")
            plain.getresponse()
        plain.close()
        # A client that does not trust the certificate refuses the connection.
        with pytest.raises(ssl.SSLCertVerificationError):
            https(port, ssl.create_default_context(), "GET", "/api/stats")

        first = served_certificates(port)
        assert first == {pem_to_der(pki["cert"])}
        # A reload with a key that does not match is refused; the node keeps serving with what it has.
        config.write_text(f'http_tls_cert = "{pki["cert"]}"\nhttp_tls_key = "{pki["other_key"]}"\n')
        status = node.reload()
        assert "last reload failed" in status and "http_tls_key" in status
        assert served_certificates(port) == first
        assert https(port, trusting, "GET", "/api/stats")[0] == 200
        # A reload with another certificate and its key: every worker serves the new one.
        config.write_text(f'http_tls_cert = "{pki["other_cert"]}"\nhttp_tls_key = "{pki["other_key"]}"\n')
        assert node.reload() == "serving with 2 workers"
        assert served_certificates(port) == {pem_to_der(pki["other_cert"])}
    for secret in (cred[1], "wrong-" + cred[1]):
        assert secret not in node.output  # debug logs of logins, writes and a failed login


def test_the_context_refuses_tls_below_1_2(pki):
    context = server_context(pki["cert"], pki["key"])
    assert context.minimum_version == MIN_TLS_VERSION == ssl.TLSVersion.TLSv1_2


def test_hs_site_lists_the_http_port_as_https(pki):
    plain = ServeConfig(data_dir=Path("/d"), http_port=8000)
    tls = ServeConfig(data_dir=Path("/d"), http_port=8443, http_tls_cert=pki["cert"], http_tls_key=pki["key"])
    protocols = {
        name: [i.protocol for i in decode_site(node_site(c)).servers[0].interfaces]
        for name, c in (("plain", plain), ("tls", tls))
    }
    assert (
        protocols["plain"][-1] == InterfaceProtocol.HTTP and protocols["tls"][-1] == InterfaceProtocol.HTTPS
    )


def test_bad_tls_settings_are_refused_naming_the_key(pki, tmp_path):
    def load(*flags: str):
        parser = argparse.ArgumentParser()
        settings.add_arguments(parser)
        return settings.loader_from_args(parser.parse_args(["--data", str(tmp_path), *flags]), environ={})()

    with pytest.raises(
        settings.ConfigError, match="http_tls_cert: give http_tls_cert and http_tls_key together"
    ):
        load("--http-tls-cert", str(pki["cert"]))
    with pytest.raises(settings.ConfigError, match="http_tls_cert: .* is not a file"):
        load("--http-tls-cert", str(tmp_path / "missing.pem"), "--http-tls-key", str(pki["key"]))
    with pytest.raises(
        settings.ConfigError, match="http_tls_key: .* not a PEM certificate and its private key"
    ):
        load("--http-tls-cert", str(pki["cert"]), "--http-tls-key", str(pki["other_key"]))
    with pytest.raises(TlsSettingError, match="http_tls_key"):
        server_context(pki["cert"], pki["cert"])  # a certificate where the key should be
    config = load("--http-tls-cert", str(pki["cert"]), "--http-tls-key", str(pki["key"]))
    assert config.http_ssl_context() is not None
    result = idnode("serve", "--data", str(tmp_path), "--http-port", "0", "--http-tls-cert", str(pki["cert"]),
                    "--http-tls-key", str(pki["other_key"]))  # fmt: skip
    assert result.returncode == 2 and "http_tls_key" in result.stderr
