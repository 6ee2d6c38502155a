"""Harness: the DNS view (resolver/dnsview) over a real store, as the UDP and TCP listeners call it.

Invariant: `DnsView.answer` returns None (dropped: shorter than a header, or a response) or a message that
dnspython parses, answering the same id with QR set, within the transport's size (512 bytes without EDNS,
the client's EDNS size up to 1232 on UDP; 65,535 on TCP). Any exception is a finding."""

from __future__ import annotations

from collections.abc import Callable

import dns.exception
import dns.message

from bench.datagen import generate_lines
from resolver.dnsview.view import DnsView
from resolver.service import ResolutionService
from storage.loader import load_files
from tests.fuzz.common import main, scratch_store
from tests.vectors import VECTORS

MAX_UDP_ANSWER_BYTES = 1232  #: the largest EDNS size the view answers with
MAX_TCP_ANSWER_BYTES = 65_535  #: a TCP DNS message's length prefix


def view() -> DnsView:
    """50 generated identifiers under four prefixes, and one whose DNS name needs the digest form."""
    store = scratch_store()
    source = store.path.parent / "ids.ndjson"
    long_line = '{"handle": "88.100.1/' + "L" * 300 + '", "values": [{"index": 1, "type": "URL", "data": "x"}]}\n'
    source.write_text("\n".join(generate_lines(50, 1, "88.100", 4)) + "\n" + long_line, encoding="utf-8")
    load_files(store, [source])
    service = ResolutionService(store, "88.100", VECTORS["hs_site_record"])
    return DnsView("id.test.", service.values_tail, False, digest_lookup=store.key_of_dns_digest)


def target() -> Callable[[bytes], None]:
    dns_view = view()

    def one_input(data: bytes) -> None:
        for transport, limit in (("udp", MAX_UDP_ANSWER_BYTES), ("tcp", MAX_TCP_ANSWER_BYTES)):
            reply = dns_view.answer(data, transport)
            if reply is None:
                if len(data) >= 12 and not data[2] & 0x80:
                    raise AssertionError("a query with a header was dropped")
                continue
            if len(reply) > limit or reply[:2] != data[:2] or not reply[2] & 0x80:
                raise AssertionError(f"bad {transport} answer header or size {len(reply)}")
            try:
                dns.message.from_wire(reply)
            except dns.exception.DNSException as exc:
                raise AssertionError(f"the {transport} answer does not parse: {exc!r}") from exc

    return one_input


if __name__ == "__main__":
    main(target)
