"""Harness: the Handle frontend (resolver/frontend.py) — what UDP, TCP and the HTTP tunnel call.

Invariant: `answer_message` returns None (dropped) or a message that decodes as a response to the same
request id; `answer_datagram` returns nothing, one such response, or UDP pieces a client reassembles into
one. Any exception is a finding. Served from a real LMDB store holding the reference vectors' identifiers
(SUCCESS, filtered, several-datagram answers, referral, not found, unknown prefix)."""

from __future__ import annotations

from collections.abc import Callable

from resolver.frontend import HandleFrontend
from resolver.handle.constants import UDP_DATAGRAM_BYTES
from resolver.handle.message import decode_message, decode_resolution_response_body, decode_response
from resolver.handle.udp import Reassembler, is_chunk
from resolver.service import ResolutionService
from storage.records import pack_encoded
from storage.store import PrefixInfo
from tests.fuzz.common import main, scratch_store
from tests.vectors import VECTORS

CLOCK_S = 0x6500_0000  #: the vectors' timestamps


def frontend() -> HandleFrontend:
    store = scratch_store()
    public = [VECTORS[f"value_{i}_{name}"] for i, name in enumerate(["URL", "EMAIL", "DESC", "HS_ADMIN"])]
    store.put_records(
        [
            (b"88.100.1/ABC123", pack_encoded([*public, VECTORS["value_4_INTERNAL"]], all_public=False)),
            (b"88.100.1/LARGE", pack_encoded(public * 40, all_public=True)),
        ]
    )
    store.put_prefix(PrefixInfo("88.100.1", created_s=CLOCK_S))
    referral = decode_resolution_response_body(decode_message(VECTORS["service_referral_response"]).body, False)
    store.put_prefix(PrefixInfo("88.100.7", state="referral", site=referral[2][0].data, created_s=CLOCK_S))
    return HandleFrontend(ResolutionService(store, "88.100", VECTORS["hs_site_record"]), clock=lambda: CLOCK_S)


def check_response(request: bytes, answer: bytes) -> None:
    response = decode_response(answer)
    if response.envelope.request_id != int.from_bytes(request[8:12], "big"):
        raise AssertionError("the answer carries another request id")


def target() -> Callable[[bytes], None]:
    node = frontend()

    def one_input(data: bytes) -> None:
        answer = node.answer_message(data)
        if answer is not None:
            check_response(data, answer)
        datagrams = node.answer_datagram(data, ("192.0.2.1", 40000))
        if len(datagrams) == 1 and not is_chunk(datagrams[0]):
            check_response(data, datagrams[0])
        elif datagrams:
            client, whole = Reassembler(), None
            for piece in datagrams:
                if not is_chunk(piece) or len(piece) > UDP_DATAGRAM_BYTES:
                    raise AssertionError("a piece of a long answer is not a UDP chunk")
                whole = client.feed(("192.0.2.53", 2641), piece, 0.0) or whole
            if whole is None:
                raise AssertionError("the pieces do not make a whole answer")
            decode_response(whole)
        if len(node.reassembler) > 1000:
            node.reassembler = Reassembler()  # the harness feeds one source forever; bounded anyway

    return one_input


if __name__ == "__main__":
    main(target)
