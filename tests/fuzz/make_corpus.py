"""Writes the seed corpus of the harnesses to tests/fuzz/corpus/<harness>/ (one input a file, named by its
SHA-1): the reference vectors' messages and requests built for the harness's store (handle), queries built
with dnspython (dns), and the JSON bodies of the HTTP API's routes, the bulk format and the scenarios'
template documents (http_json). Deterministic; run it again after changing it and commit the result:

    .venv/bin/python -m tests.fuzz.make_corpus
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import dns.edns
import dns.flags
import dns.message

from bench.datagen import Dataset
from resolver.dnsview import handle_to_name
from resolver.handle.constants import OpCode
from resolver.handle.message import ResolutionRequest, encode_request, encode_resolution_request
from resolver.handle.udp import split_datagrams
from tests.fuzz.common import CORPUS
from tests.vectors import VECTORS

SCENARIOS = Path(__file__).resolve().parents[2] / "deploy" / "scenarios"
ZONE = "id.test."


def handle_inputs() -> list[bytes]:
    messages = [data for name, data in sorted(VECTORS.items()) if len(data) >= 24 and not name.startswith("value_")]
    requests = []
    for n, (handle, indexes, types) in enumerate([
        (b"88.100.1/ABC123", (), ()), (b"88.100.1/ABC123", (1, 100), (b"EMAIL",)), (b"88.100.1/ABC123", (), (b"HS_",)),
        (b"88.100.1/LARGE", (), ()), (b"88.100.1/NONE", (), ()), (b"88.100.7/REFERRED", (), ()),
        (b"0.NA/88.100.1", (), ()), (b"99.9/X", (), ()), (b"88.100.1/ABC123", (200,), (b"INTERNAL",)),
    ]):  # fmt: skip
        body = encode_resolution_request(ResolutionRequest(handle, indexes, types))
        requests.append(encode_request(OpCode.RESOLUTION, body, request_id=n + 1, expiration=0x6500_0000))
    requests.append(encode_request(OpCode.GET_SITE_INFO, b"\x00\x00\x00\x00", request_id=99, expiration=0x6500_0000))
    long = ResolutionRequest(b"88.100.1/ABC123", (), tuple(b"T%04d" % n for n in range(120)))
    pieces = split_datagrams(encode_request(OpCode.RESOLUTION, encode_resolution_request(long), request_id=7,
                                            expiration=0x6500_0000))  # fmt: skip
    return messages + requests + pieces


def dns_inputs() -> list[bytes]:
    dataset = Dataset(50, 1, "88.100", 4)
    names = [handle_to_name(dataset.handle_at(n), ZONE) for n in (0, 1, 17, 49)]
    names += [handle_to_name("88.100.1/" + "L" * 300, ZONE), ZONE, "_.88." + ZONE, "1.100.88." + ZONE,
              "nothing._.1.100.88." + ZONE, "example.com."]  # fmt: skip
    out = []
    for n, name in enumerate(names):
        for rdtype in ("TXT", "ANY", "URI", "SOA", "NS", "A", "AAAA", "CNAME", "HINFO"):
            query = dns.message.make_query(name, rdtype, use_edns=n % 3 != 0, payload=512 + 360 * (n % 4),
                                           want_dnssec=n % 2 == 1)  # fmt: skip
            query.id = 0x1000 + len(out)
            out.append(query.to_wire())
    cookie = dns.message.make_query(names[0], "TXT", use_edns=0, options=[dns.edns.GenericOption(10, b"c" * 8)])
    out.append(cookie.to_wire())
    nonrec = dns.message.make_query(names[1], "TXT")
    nonrec.flags &= ~dns.flags.RD
    out.append(nonrec.to_wire())
    return out


def http_json_inputs() -> list[bytes]:
    url = {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.com/p"}, "ttl": 86400}
    values = [
        url,
        {"index": 2, "type": "DESC", "data": "刹车盘 批次", "timestamp": "2025-07-01T08:00:00Z", "permissions": "1110",
         "references": [{"handle": "88.100.7/LOT-7", "index": 1}]},
        {"index": 3, "type": "EMAIL", "data": {"format": "base64", "value": "cWFAZXhhbXBsZS5jb20="}, "ttl": "2030-01-01T00:00:00Z"},
        {"index": 4, "type": "BIN", "data": {"format": "hex", "value": "00ff10"}},
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {"handle": "0.NA/88.100.7", "index": "200",
         "permissions": "011111111111"}}},
        {"index": 101, "type": "HS_VLIST", "data": {"format": "vlist", "value": [{"handle": "88.100.7/A", "index": 1}]}},
        {"index": 102, "type": "HS_SITE", "data": {"format": "site", "value": {
            "version": 1, "protocolVersion": "2.10", "serialNumber": 1, "primarySite": True, "multiPrimary": False,
            "hashOption": 0, "hashFilter": "", "attributes": [{"name": "desc", "value": "node"}],
            "servers": [{"serverId": 1, "address": "127.0.0.1", "publicKey": {"format": "base64", "value": ""},
                         "interfaces": [{"type": 2, "protocol": "TCP", "port": 2641}, {"query": True, "admin": False,
                                        "protocol": "UDP", "port": 2641}]}]}}},
        {"index": 103, "type": "HS_PUBKEY", "data": {"format": "key", "value": "AAAA"}},
    ]  # fmt: skip
    bodies: list[object] = [
        {"values": values}, values, {"handle": "88.100.7/FUZZ", "values": [url]}, {"values": []},
        {"prefix": "88.100.60", "org": "Fuzz Org", "site": "127.0.0.1:2700"}, {"prefix": "88.100.61", "org": "x"},
        [{"handle": "88.100.7/B-1", "values": [url]}, {"handle": "88.100.7/B-2", "values": values[:3]}],
    ]  # fmt: skip
    for scenario in sorted(SCENARIOS.glob("*/scenario.json")):
        bodies.extend(json.loads(scenario.read_text(encoding="utf-8")).get("templates", []))
    out = [json.dumps(b, ensure_ascii=False).encode() for b in bodies]
    lines = [json.dumps({"handle": f"88.100.7/N-{n}", "values": [values[n % len(values)]]}).encode() for n in range(8)]
    out.append(b"\n".join(lines) + b"\n")
    out.append(("\n".join(Dataset(5, 1, "88.100", 2).lines()) + "\n").encode())
    out.extend([b"", b"[]", b"{}", b"null", b"[" * 64 + b"]" * 64, b'{"values": [{"index": 4294967296}]}'])
    return out


HARNESSES = {"handle": handle_inputs, "dns": dns_inputs, "http_json": http_json_inputs}


def write_corpus() -> dict[str, int]:
    counts = {}
    for name, inputs in HARNESSES.items():
        directory = CORPUS / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        unique = {hashlib.sha1(data).hexdigest(): data for data in inputs()}
        for digest, data in unique.items():
            (directory / digest).write_bytes(data)
        counts[name] = len(unique)
    return counts


if __name__ == "__main__":
    for harness, count in write_corpus().items():
        print(f"{CORPUS / harness}: {count} inputs")
