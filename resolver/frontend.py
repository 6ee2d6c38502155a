"""Handle-protocol requests in, answers out, for every transport (UDP, TCP, the HTTP tunnel).

The single boundary where codec errors become error answers (or drops, for an unreadable envelope), and
where op codes meet the resolution service. No sockets here: transports hand in bytes and send what comes
back.
"""

from __future__ import annotations

import time

from resolver.handle.admin import AUTH_PATH_OPS
from resolver.handle.constants import (
    ENVELOPE_BYTES,
    UDP_DATAGRAM_BYTES,
    EnvelopeFlag,
    OpCode,
    OpFlag,
    ResponseCode,
)
from resolver.handle.errors import EnvelopeError, HandleProtocolError
from resolver.handle.fastpath import encode_plain_answer, read_plain_resolution
from resolver.handle.message import (
    decode_request,
    decode_resolution_request,
    decode_site_info_request,
    encode_error_answer,
    encode_error_response,
    encode_resolution_response,
    encode_response,
)
from resolver.handle.udp import Reassembler, is_chunk, split_datagrams
from resolver.service import AUTHORITATIVE, ResolutionService

ANSWER_LIFETIME_S = 43_200  #: ExpirationTime of answers: must lie in the future or ID-SDK rejects the answer
TOO_LARGE_FOR_UDP = "answer too large for UDP to an unverified address: ask over TCP"
_TC = int(EnvelopeFlag.TC)
_RESOLUTION = int(OpCode.RESOLUTION)
_GET_SITE_INFO = int(OpCode.GET_SITE_INFO)
_CT = int(OpFlag.CT)
_AUTH_PATH_CODES = frozenset(int(op) for op in AUTH_PATH_OPS)
_SUCCESS = ResponseCode.SUCCESS
_SERVICE_REFERRAL = ResponseCode.SERVICE_REFERRAL

# Error answers carry a short reason; HANDLE_NOT_FOUND stays empty like the reference server's.
_ERROR_TEXT = {
    ResponseCode.HANDLE_NOT_FOUND: "",
    ResponseCode.VALUES_NOT_FOUND: "no values match the request",
    ResponseCode.SERVER_NOT_RESP: "this node does not serve that prefix",
    ResponseCode.INVALID_HANDLE: "not a valid handle (prefix/suffix)",
    ResponseCode.ERROR: "the stored record cannot be read",
}


class HandleFrontend:
    def __init__(self, service: ResolutionService, clock=time.time):
        self.service = service
        self.clock = clock
        self.reassembler = Reassembler()
        #: signs answers to CT requests (resolver.serverkey.ServerKey); None: answered unsigned
        self.signer = None
        #: resolves REC requests for referred prefixes at the enterprise's node (resolver.recursion); None: 302
        self.recursor = None
        #: answers handed back as awaitables (a recursion under way): transports compare it before and after
        self.deferrals = 0
        #: answers administrative requests arriving over UDP (resolver.admin.datagrams); None: not supported
        self.admin_datagrams = None

    def answer_message(self, data: bytes, source: tuple | None = None) -> bytes | None:
        """The answer to one whole request message, or None when it must be dropped. `source`: the UDP
        sender, given by `answer_datagram` only (administrative requests over TCP have their own path)."""
        expiration = int(self.clock()) + ANSWER_LIFETIME_S
        plain = read_plain_resolution(data)
        if plain is not None:
            # Nearly every request: no filters, so the stored values go out as they are (all public ones).
            code, payload = self.service.resolve(plain.handle)
            if code == _SUCCESS:
                return encode_plain_answer(plain, code, payload, expiration, True)
            try:  # other outcomes are rarer: answered by the general encoder, without resolving again
                return self._resolution_answer(decode_request(data), plain.handle, code, payload, expiration)
            except HandleProtocolError as exc:
                return encode_error_answer(data, exc, expiration)
        try:
            request = decode_request(data)
            op_code = request.header.op_code
            if op_code == _RESOLUTION:
                return self._certify(request, self._resolve(request, expiration))
            if op_code == _GET_SITE_INFO:
                decode_site_info_request(request.body)  # validates the handle; any handle gets our site
                site = encode_response(
                    request, _SUCCESS, self.service.site_data, expiration, authoritative=True
                )
                return self._certify(request, site)
            if op_code in _AUTH_PATH_CODES and source is not None and self.admin_datagrams is not None:
                return self.admin_datagrams.answer(data, source)  # a future: the transport sends it later
            return encode_error_response(
                request,
                ResponseCode.OPERATION_NOT_SUPPORTED,
                f"op code {op_code} is not supported here",
                expiration,
            )
        except HandleProtocolError as exc:
            return encode_error_answer(data, exc, expiration)

    def _resolve(self, request, expiration: int) -> bytes:
        query = decode_resolution_request(request.body)
        # No credential is verified on this node, so every requester gets the public values, PO or not.
        code, payload = self.service.resolve(query.handle, query.indexes, query.types, True)
        return self._resolution_answer(request, query.handle, code, payload, expiration, query)

    def _certify(self, request, answer):
        """The answer signed when the request asked for a certified one (CT) and the node has a key."""
        if request.header.op_flags & _CT and self.signer is not None and answer.__class__ is bytes:
            return self.signer.sign_answer(answer)
        return answer

    def _resolution_answer(self, request, handle: bytes, code, payload: bytes, expiration: int, query=None):
        # AT only where the answer comes from what this node holds (resolver.service.AUTHORITATIVE).
        if code == _SUCCESS:
            return encode_resolution_response(request, handle, payload, expiration, authoritative=True)
        if code == _SERVICE_REFERRAL:
            recursor = self.recursor
            if recursor is not None and recursor.wanted(request.header.op_flags):
                # Asked at the enterprise's node: bytes at once (cache, refusal) or an awaitable of them.
                answer = recursor.answer(
                    request, handle, query, expiration, lambda a: self._certify(request, a)
                )
                if answer.__class__ is not bytes:
                    self.deferrals += 1
                return answer
            referral = self.service.referral_handle(handle)
            return encode_resolution_response(request, referral, payload, expiration, _SERVICE_REFERRAL)
        return encode_error_response(
            request, code, _ERROR_TEXT.get(code, ""), expiration, authoritative=code in AUTHORITATIVE
        )

    def busy_answer(self, data: bytes) -> bytes | None:
        """SERVER_TOO_BUSY for a request refused by the rate limit (none for a piece of a chunked request)."""
        if is_chunk(data):
            return None
        error = HandleProtocolError("rate limit exceeded: slow down", ResponseCode.SERVER_TOO_BUSY)
        return encode_error_answer(data, error, int(self.clock()) + ANSWER_LIFETIME_S)

    def too_large_answer(self, data: bytes) -> bytes | None:
        """The short answer the amplification bound sends instead of a large UDP answer: ERROR with the
        envelope's TC flag set, telling the client to ask again over TCP."""
        if is_chunk(data):
            return None
        error = HandleProtocolError(TOO_LARGE_FOR_UDP, ResponseCode.ERROR)
        answer = encode_error_answer(data, error, int(self.clock()) + ANSWER_LIFETIME_S)
        if answer is None:
            return None
        return answer[:2] + bytes((answer[2] | _TC,)) + answer[3:]

    def answer_datagram(self, data: bytes, source: tuple) -> list[bytes]:
        """Answers to one UDP datagram: none (dropped, or a piece of a longer request still incomplete), one,
        or the 492-byte pieces of an answer longer than a datagram."""
        if is_chunk(data):
            try:
                whole = self.reassembler.feed(source, data, self.clock())
            except EnvelopeError:
                return []
            except HandleProtocolError as exc:
                answer = encode_error_answer(
                    data[:ENVELOPE_BYTES], exc, int(self.clock()) + ANSWER_LIFETIME_S
                )
                return [answer] if answer else []
            if whole is None:
                return []
            data = whole
        answer = self.answer_message(data, source)
        if answer is None:
            return []
        if answer.__class__ is not bytes:  # a recursion under way: the transport sends it when it ends
            return [answer]
        if len(answer) <= UDP_DATAGRAM_BYTES:
            return [answer]
        return split_datagrams(answer)
