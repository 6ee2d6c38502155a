"""A small asyncio Handle-protocol client: `idnode resolve`, the tests and the benchmarks use it.

One `HandleClient` holds one UDP endpoint or one TCP connection; requests on it may run concurrently and
are matched to answers by request id.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from resolver.handle.constants import OpCode, OpFlag, ResponseCode
from resolver.handle.describe import value_lines
from resolver.handle.errors import HandleProtocolError
from resolver.handle.message import (
    Message,
    ResolutionRequest,
    decode_error_body,
    decode_resolution_response_body,
    decode_response,
    encode_request,
    encode_resolution_request,
    encode_site_info_request,
    split_request_digest,
)
from resolver.handle.tcp import FrameBuffer
from resolver.handle.udp import Reassembler, is_chunk
from resolver.handle.values import HandleValue, SiteInfo, decode_site

UDP_ATTEMPTS = 3  #: a lost datagram is sent again this many times in all, within the caller's timeout
REQUEST_LIFETIME_S = 60  #: ExpirationTime of requests
DEFAULT_FLAGS = int(OpFlag.REC | OpFlag.CA | OpFlag.PO)  #: what the reference client sends by default


class ResolveError(Exception):
    """The server could not be asked, or its answer could not be read."""


class NoAnswer(ResolveError):
    """Nothing answered within the timeout (UDP), or the TCP connection did not open in time."""


class Refused(ResolveError):
    """Nothing listens there: the TCP connection was refused, or ICMP port unreachable came back (UDP)."""


class NotHandle(ResolveError):
    """The server answered in another protocol (HTTP), so the port is not a Handle port."""


HTTP_STATUS_START = b"HTTP/"  #: an HTTP server's first bytes, whatever it makes of the request


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """(host, port) of `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6 address (more than one colon,
    no brackets: no port can be told apart). ValueError for anything else."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [IPV6]:PORT")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        host, port_text = text, ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"{text!r} names no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"{text!r}: {port_text!r} is not a port number")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Resolution:
    handle: str
    response_code: int
    values: tuple[HandleValue, ...] = ()
    message: str = ""
    referral: str = ""  # the prefix handle named by a SERVICE_REFERRAL answer
    raw: Message | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.response_code == ResponseCode.SUCCESS

    def to_json(self, value_to_json: Callable[[HandleValue], dict]) -> dict:
        out: dict = {"responseCode": self.response_code, "handle": self.handle}
        if self.values:
            out["values"] = [value_to_json(v) for v in self.values]
        if self.message:
            out["message"] = self.message
        if self.referral:
            out["referral"] = self.referral
        return out

    def describe(self) -> str:
        """The answer for a person: its code, then a line per value (resolver/handle/describe.py says how)."""
        try:
            name = ResponseCode(self.response_code).name
        except ValueError:
            name = "UNKNOWN"
        lines = [f"{self.handle}: {name} ({self.response_code}){' ' + self.message if self.message else ''}"]
        if self.referral:
            lines.append(f"  referred to {self.referral}")
        for value in self.values:
            lines += value_lines(value)
        return "\n".join(lines)


class _UdpClientProtocol(asyncio.DatagramProtocol):
    def __init__(self, client: HandleClient):
        self.client = client
        self.reassembler = Reassembler()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            whole = self.reassembler.feed(addr, data, time.monotonic()) if is_chunk(data) else data
        except HandleProtocolError:
            return
        if whole is not None:
            self.client._deliver(whole)

    def error_received(self, exc: Exception) -> None:
        where = format_address(self.client.host, self.client.port)
        if isinstance(exc, ConnectionRefusedError):  # ICMP port unreachable came back
            self.client._fail_all(Refused(f"{where} refused the UDP request: nothing listens there"))
        else:
            self.client._fail_all(ResolveError(f"{where} over UDP: {exc}"))


class HandleClient:
    def __init__(self, host: str, port: int, *, tcp: bool = False, timeout_s: float = 5.0):
        self.host, self.port, self.tcp, self.timeout_s = host, port, tcp, timeout_s
        self._ids = itertools.count(random.randrange(1, 1 << 30))
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task | None = None

    async def __aenter__(self) -> HandleClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        if self.tcp:
            where = format_address(self.host, self.port)
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.timeout_s
                )
            except ConnectionRefusedError:
                raise Refused(f"cannot connect to {where} over TCP: connection refused") from None
            except TimeoutError:
                raise NoAnswer(f"no TCP connection to {where} within {self.timeout_s:g} s") from None
            except OSError as exc:
                raise ResolveError(f"cannot connect to {where} over TCP: {exc.strerror or exc}") from None
            self._read_task = asyncio.create_task(self._read_tcp())
        else:
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpClientProtocol(self), remote_addr=(self.host, self.port)
            )

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        if self._read_task is not None:
            self._read_task.cancel()
        self._fail_all(ResolveError("client closed"))

    async def _read_tcp(self) -> None:
        frames = FrameBuffer()
        first = True
        try:
            while chunk := await self._reader.read(65536):
                if first and chunk.startswith(HTTP_STATUS_START):
                    where = format_address(self.host, self.port)
                    self._fail_all(NotHandle(f"{where} speaks HTTP, not the Handle protocol"))
                    return
                first = False
                for message in frames.feed(chunk):
                    self._deliver(message)
            self._fail_all(ResolveError("the server closed the connection"))
        except (OSError, HandleProtocolError) as exc:
            self._fail_all(ResolveError(f"connection failed: {exc}"))

    def _deliver(self, data: bytes) -> None:
        try:
            message = decode_response(data)
        except HandleProtocolError:
            return  # not an answer we can read; the caller's timeout reports it
        future = self._pending.pop(message.envelope.request_id, None)
        if future is not None and not future.done():
            future.set_result(message)

    def _fail_all(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc if isinstance(exc, ResolveError) else ResolveError(str(exc)))
        self._pending.clear()

    async def request(
        self,
        op_code: int,
        body: bytes,
        op_flags: int = DEFAULT_FLAGS,
        recursion_count: int = 0,
        session_id: int = 0,
    ) -> Message:
        """Send one request and wait for its answer (UDP: sent again when lost). `recursion_count`: how many
        servers passed the request on before (a recursing node counts up, resolver/recursion)."""
        request_id = next(self._ids) & 0xFFFFFFFF
        data = encode_request(
            op_code,
            body,
            request_id=request_id,
            op_flags=op_flags,
            expiration=int(time.time()) + REQUEST_LIFETIME_S,
            recursion_count=recursion_count,
            session_id=session_id,
        )
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            if self.tcp:
                self._writer.write(data)
                return await asyncio.wait_for(future, self.timeout_s)
            for attempt in range(UDP_ATTEMPTS):
                self._udp.sendto(data)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), self.timeout_s / UDP_ATTEMPTS)
                except TimeoutError:
                    if attempt == UDP_ATTEMPTS - 1:
                        raise
            raise AssertionError("unreachable")
        except TimeoutError:
            over = "TCP" if self.tcp else "UDP"
            raise NoAnswer(
                f"no answer from {format_address(self.host, self.port)} over {over} within {self.timeout_s:g} s"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    async def resolve(
        self,
        handle: str,
        types: Iterable[str] = (),
        indexes: Iterable[int] = (),
        op_flags: int = DEFAULT_FLAGS,
    ) -> Resolution:
        body = encode_resolution_request(
            ResolutionRequest(handle.encode(), tuple(indexes), tuple(t.encode() for t in types))
        )
        message = await self.request(OpCode.RESOLUTION, body, op_flags)
        return read_resolution(handle, message)

    async def authenticated(
        self, op_code: int, body: bytes, signer, op_flags: int = DEFAULT_FLAGS
    ) -> Message:
        """An administrative request (or op-2001 login) answered through the challenge: sent, and when the
        server answers 402, the challenge is signed by `signer` (resolver.admin.crypto.Signer) and answered
        with op 200; the final answer is returned (its response code says how it went)."""
        from resolver.handle.admin import ChallengeAnswer, decode_challenge_body, encode_challenge_answer

        first = await self.request(op_code, body, op_flags)
        if first.header.response_code != ResponseCode.AUTHENTICATION_NEEDED:
            return first
        digest, nonce = decode_challenge_body(first.body)
        auth_type, signed = signer.sign(nonce, digest[1:])
        answer = encode_challenge_answer(ChallengeAnswer(auth_type, signer.identity, signer.index, signed))
        return await self.request(
            OpCode.RESPONSE_TO_CHALLENGE, answer, op_flags, session_id=first.envelope.session_id
        )

    async def login(self, signer) -> Message:
        """The national op 2001: the identity is bound to this TCP connection (later writes need no challenge)."""
        from resolver.handle.admin import Login, encode_login

        body = encode_login(Login(signer.identity, signer.index))
        return await self.authenticated(OpCode.LOGIN_ID_SYSTEM, body, signer, 0)

    async def admin(self, request, signer=None, op_flags: int = DEFAULT_FLAGS) -> Message:
        """CREATE/DELETE/ADD/REMOVE/MODIFY/LIST (`request`: resolver.handle.admin.AdminRequest), challenged and
        answered with `signer` when given (else sent as is: on a logged-in connection)."""
        from resolver.handle.admin import encode_admin_request

        body = encode_admin_request(request)
        if signer is None:
            return await self.request(request.op_code, body, op_flags)
        return await self.authenticated(request.op_code, body, signer, op_flags)

    async def get_site_info(self) -> SiteInfo:
        message = await self.request(OpCode.GET_SITE_INFO, encode_site_info_request(b"/"), 0)
        if message.header.response_code != ResponseCode.SUCCESS:
            raise ResolveError(f"GET_SITE_INFO answered {message.header.response_code}")
        return decode_site(split_request_digest(message.body, bool(message.header.op_flags & OpFlag.RD))[1])


def read_resolution(handle: str, message: Message) -> Resolution:
    """A Resolution from the answer to an OC_RESOLUTION request."""
    code = message.header.response_code
    has_digest = bool(message.header.op_flags & OpFlag.RD)
    try:
        if code in (ResponseCode.SUCCESS, ResponseCode.SERVICE_REFERRAL):
            _, named, values = decode_resolution_response_body(message.body, has_digest)
            referral = named.decode() if code == ResponseCode.SERVICE_REFERRAL else ""
            return Resolution(handle, code, values, referral=referral, raw=message)
        _, rest = split_request_digest(message.body, has_digest)
        return Resolution(handle, code, message=decode_error_body(rest), raw=message)
    except HandleProtocolError as exc:
        raise ResolveError(f"unreadable answer: {exc}") from exc
