"""Administrative Handle requests in, answers out: challenge-response authentication, the national op-2001 login,
HS_ADMIN authorization, and the writes themselves through the node's one write policy (storage/writes.py, applied
by the writer with its audit entry, templates, prefix checks and registration counters; answered once applied).

- An administrative request (CREATE/DELETE/ADD/REMOVE/MODIFY/LIST) from a caller not logged in is answered 402
  with the request digest and a nonce (handle-admin.md §2); the challenge waits in PendingChallenges (shared by
  the workers). The op-200 answer names it by session id; its secret-key MAC or signature is checked against
  the identity's key, then the original request is authorized by HS_ADMIN and performed, and answered with its
  own op code.
- Op 2001 (TCP only) is challenged the same way; a good answer binds the identity to the connection, and later
  requests on it are performed without a challenge (handle-admin.md §7).
- Challenges and logins are rate-limited per source (a token bucket of resolver/server/limits.py, loopback not
  exempt); logged-in connections are bounded per worker and per source. Every failure is a Handle error answer.
No sockets here: transports hand in whole messages with a Caller and send what comes back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resolver.admin import authorize, crypto
from resolver.admin.challenges import Pending, PendingChallenges
from resolver.handle.admin import (
    AUTH_TYPE_PUBKEY,
    AUTH_TYPE_SECKEY,
    AdminRequest,
    decode_admin_request,
    decode_challenge_answer,
    decode_login,
    decode_secret_response,
    decode_signature_response,
    encode_challenge_body,
    encode_created_body,
    encode_list_body,
    list_parts,
)
from resolver.handle.constants import (
    MAX_MESSAGE_BYTES,
    SERVER_VERSION,
    AdminPermission,
    OpCode,
    OpFlag,
    ResponseCode,
)
from resolver.handle.envelope import Envelope, negotiate_version
from resolver.handle.errors import HandleProtocolError
from resolver.handle.keys import decode_public_key
from resolver.handle.message import (
    Header,
    Message,
    decode_request,
    digest_input,
    encode_error_answer,
    encode_message,
    request_digest,
)
from resolver.handle.values import AdminData, HandleValue, Reference, encode_admin, encode_vlist
from resolver.handle.wire import pack_string
from resolver.security.events import NO_EVENTS, SecurityEvents
from resolver.server.limits import ExemptNetworks, SourceRateLimiter
from resolver.writer.client import WorkerWrites
from storage.audit import Actor
from storage.enterprises import ADMIN_SUFFIX, admin_identity_key
from storage.entries import WriterUnavailable
from storage.handlekeys import NodeKeyError, decrypt_secret, load_node_key, secret_key_name
from storage.keys import NA_PREFIX, normalize_prefix
from storage.writes import (
    AUDIT_OPERATIONS,
    REGISTRATIONS_HANDLE,
    WriteError,
    decode_record_values,
    delete_identifier,
    put_identifier,
)

log = logging.getLogger(__name__)

AUTH_RATE_PER_S = (
    20.0  #: challenges and logins per second one address may cause (each costs a file and a check)
)
AUTH_BURST = 60  #: ... in a burst: a client opening 16 logged-in connections at once is not refused
MAX_LOGGED_IN = 4096  #: logged-in connections per worker
MAX_LOGGED_IN_PER_SOURCE = 256  #: ... per address, so one client cannot take them all
MAX_LIST_HANDLES = 1_000_000  #: handles walked by one LIST_HANDLES, as the HTTP listing
LIST_PART_BYTES = 60_000  #: body of one LIST_HANDLES continuation message (well under MAX_MESSAGE_BYTES)
WRITE_THREADS = 4  #: writes build and submit their entries in threads, off the event loop
ANSWER_LIFETIME_S = 43_200  #: ExpirationTime of answers when the request's lies in the past
SITE_INFO_SERIAL = 1  #: the serial of this node's HS_SITE (resolver/server/worker.py), sent in admin answers
PREFIX_ADMIN_INDEX = 200  #: the prefix handle's HS_ADMIN names index 200 of itself (resolver/service.py)
_COPIED_FLAGS = int(OpFlag.REC | OpFlag.CA | OpFlag.PO)  # what an answer keeps of the request's flags
_AT, _RD, _CN = int(OpFlag.AT), int(OpFlag.RD), int(OpFlag.CN)


@dataclass(eq=False)
class Caller:
    """Who sends on one connection (or one UDP source): its address and, after op 2001, its identity."""

    source: str
    port: int = 0
    transport: str = "tcp"  # "tcp" | "udp"
    identity: tuple[str, int] | None = None

    @property
    def where(self) -> str:
        return f"[{self.source}]:{self.port}" if ":" in self.source else f"{self.source}:{self.port}"


class AdminError(Exception):
    """An administrative request refused; `code` is the answer's response code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class AdminService:
    def __init__(
        self,
        store: Any,
        service: Any,
        *,
        writer: Any = None,
        challenges: PendingChallenges | None = None,
        events: SecurityEvents = NO_EVENTS,
        limiter: SourceRateLimiter | None = None,
        data_dir: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        max_logged_in: int = MAX_LOGGED_IN,
        max_logged_in_per_source: int = MAX_LOGGED_IN_PER_SOURCE,
    ):
        """`store`: the worker's (read-only) store; `service`: its ResolutionService (prefix table, refresh);
        `writer`: the writer's WriterClient (None: writes go into `store` in this process, for tests)."""
        self.store = store
        self.service = service
        self.writer = writer
        self.challenges = challenges if challenges is not None else PendingChallenges()
        self.events = events
        # `is not None`, not `or`: a limiter tracking no source yet has len() 0 and would be replaced
        default = SourceRateLimiter(AUTH_RATE_PER_S, AUTH_BURST, ExemptNetworks(()))
        self.limiter = limiter if limiter is not None else default
        self.data_dir = Path(data_dir) if data_dir is not None else Path(store.path)
        self.clock = clock
        self.max_logged_in = max_logged_in
        self.max_logged_in_per_source = max_logged_in_per_source
        self.logged_in: dict[str, int] = {}  # source -> logged-in connections
        self._writes = WorkerWrites(store, writer, WRITE_THREADS, "handle-write")
        self._node_key: bytes | None = None

    # -- the boundary ------------------------------------------------------------------------------------

    async def answer(self, data: bytes, caller: Caller) -> list[bytes]:
        """The answers to one whole administrative message (several for a long LIST_HANDLES); none to drop it."""
        now = self.clock()
        try:
            request = decode_request(data)
        except HandleProtocolError as exc:
            answer = encode_error_answer(data, exc, int(now) + ANSWER_LIFETIME_S)
            return [answer] if answer else []
        try:
            op = request.header.op_code
            if op == OpCode.RESPONSE_TO_CHALLENGE:
                return await self._answered(request, caller)
            if op == OpCode.LOGIN_ID_SYSTEM:
                return self._login(request, caller)
            decode_admin_request(op, request.body)  # a malformed request is refused before any challenge
            if caller.identity is not None:
                identity, index = caller.identity
                return await self._perform(request, request, identity, index, caller)
            return self._challenge(request, caller)
        except AdminError as exc:
            return [self._reply(request, request, exc.code, pack_string(str(exc)))]
        except HandleProtocolError as exc:
            return [self._reply(request, request, exc.response_code, pack_string(str(exc)))]

    # -- answers -----------------------------------------------------------------------------------------

    def _expiration(self, request: Message) -> int:
        """The request's expiration when it lies ahead (the SDKs expect theirs back), else a fresh one."""
        now = int(self.clock())
        return request.header.expiration if request.header.expiration > now else now + ANSWER_LIFETIME_S

    def _reply(self, original: Message, carrier: Message, code: int, body: bytes, *, session_id: int = 0,
               extra_flags: int = 0) -> bytes:  # fmt: skip
        """An answer with `original`'s op code to `carrier` (the message being answered: the request itself,
        or the op-200 answer to its challenge): the negotiated version, session `session_id`, the carrier's
        request id, AT plus the carrier's REC/CA/PO, this node's site serial (handle-admin.md §2 step 4, §7)."""
        major, minor = negotiate_version(carrier.envelope)
        flags = (carrier.header.op_flags & _COPIED_FLAGS) | _AT | extra_flags
        if carrier is original and carrier.header.op_flags & _RD and not extra_flags & _RD:
            flags |= _RD
            body = request_digest(digest_input(carrier), (major, minor)) + body
        envelope = Envelope(major, minor, 0, *SERVER_VERSION, session_id, carrier.envelope.request_id, 0, 0)
        header = Header(original.header.op_code, code, flags, SITE_INFO_SERIAL, original.header.recursion_count,
                        self._expiration(carrier))  # fmt: skip
        return encode_message(envelope, header, body)

    def _challenge(self, request: Message, caller: Caller) -> list[bytes]:
        """402 with the digest of `request` and a new nonce; the pending challenge names the session."""
        if not self.limiter.allow(caller.source, time.monotonic()):
            self.events.rate_limited(caller.source, "handle-auth")
            raise AdminError(
                ResponseCode.SERVER_TOO_BUSY, "too many authentication attempts from this address"
            )
        version = negotiate_version(request.envelope)
        digest = request_digest(digest_input(request), version)
        pending = self.challenges.issue(caller.source, encode_request_bytes(request), digest)
        if pending is None:
            self.events.rate_limited(caller.source, "handle-auth")
            raise AdminError(ResponseCode.SERVER_TOO_BUSY, "too many unanswered challenges: answer or wait")
        body = digest + encode_challenge_body(pending.nonce)
        return [self._reply(request, request, ResponseCode.AUTHENTICATION_NEEDED, body,
                            session_id=pending.session_id, extra_flags=_RD)]  # fmt: skip

    def _login(self, request: Message, caller: Caller) -> list[bytes]:
        if caller.transport != "tcp":
            raise AdminError(
                ResponseCode.OPERATION_NOT_SUPPORTED, "op 2001 binds a login to a TCP connection"
            )
        decode_login(request.body)
        return self._challenge(request, caller)

    async def _answered(self, answer: Message, caller: Caller) -> list[bytes]:
        """An op-200 answer: check it against its pending challenge, then log in or perform the request."""
        session_id = answer.envelope.session_id
        try:
            response = decode_challenge_answer(answer.body)
        except HandleProtocolError as exc:
            return [self._reply(answer, answer, exc.response_code, pack_string(str(exc)))]
        pending = self.challenges.take(session_id, caller.source)
        if pending is None:
            return [self._reply(answer, answer, ResponseCode.AUTHEN_TIMEOUT, pack_string(
                f"no challenge {session_id} is waiting for this address (expired, answered already, or never sent)"
            ))]  # fmt: skip
        original = decode_request(pending.request)
        who = f"{response.index}:{response.identity}"
        try:
            await self._verify(response, pending)
        except AdminError as exc:
            self.events.auth_failure(who, caller.where, str(exc), transport="handle")
            return [self._reply(original, answer, exc.code, pack_string(str(exc)))]
        if original.header.op_code == OpCode.LOGIN_ID_SYSTEM:
            return [self._bind(original, answer, caller, response.identity, response.index)]
        try:
            return await self._perform(original, answer, response.identity, response.index, caller)
        except AdminError as exc:
            return [self._reply(original, answer, exc.code, pack_string(str(exc)))]

    def _bind(self, original: Message, answer: Message, caller: Caller, identity: str, index: int) -> bytes:
        if caller.identity is None:
            held = self.logged_in.get(caller.source, 0)
            if sum(self.logged_in.values()) >= self.max_logged_in or held >= self.max_logged_in_per_source:
                self.events.rate_limited(caller.source, "handle-auth")
                return self._reply(original, answer, ResponseCode.SERVER_TOO_BUSY,
                                   pack_string("too many logged-in connections"))  # fmt: skip
            self.logged_in[caller.source] = held + 1
        caller.identity = (identity, index)
        return self._reply(original, answer, ResponseCode.SUCCESS, b"")

    def release(self, caller: Caller) -> None:
        """The caller's connection closed: its login ends."""
        if caller.identity is None:
            return
        caller.identity = None
        held = self.logged_in.get(caller.source, 0) - 1
        if held > 0:
            self.logged_in[caller.source] = held
        else:
            self.logged_in.pop(caller.source, None)

    # -- authentication ----------------------------------------------------------------------------------

    async def _verify(self, response, pending: Pending) -> None:
        """AdminError 403 unless `response` proves the identity with its key at its index."""
        prefix = response.identity.split("/", 1)[0]
        info = self.service.prefix_info(normalize_prefix(prefix.encode()))
        if info is None or info.state == "disabled":
            raise AdminError(ResponseCode.AUTHENTICATION_FAILED, f"{response.identity} cannot log in here")
        digest = pending.digest[1:]
        version = negotiate_version(decode_request(pending.request).envelope)
        loop = asyncio.get_running_loop()
        if response.auth_type == AUTH_TYPE_SECKEY:
            secret = self._secret_of(response.identity, response.index)
            form = decode_secret_response(response.signed, version)
            check = functools.partial(crypto.verify_secret, secret, form, pending.nonce, digest)
        elif response.auth_type == AUTH_TYPE_PUBKEY:
            key = self._public_key_of(response.identity, response.index)
            signature = decode_signature_response(response.signed)
            check = functools.partial(crypto.verify_signature, key, signature, pending.nonce + digest,
                                      response.identity)  # fmt: skip
        else:
            raise AdminError(
                ResponseCode.AUTHENTICATION_FAILED, f"unknown authentication type {response.auth_type[:32]!r}"
            )
        try:
            ok = await loop.run_in_executor(self._writes.threads, check)  # PBKDF2 and SM2 take milliseconds
        except crypto.KeyError_ as exc:
            raise AdminError(ResponseCode.AUTHENTICATION_FAILED, str(exc)) from None
        if not ok:
            raise AdminError(ResponseCode.AUTHENTICATION_FAILED, "the challenge answer does not verify")

    def _secret_of(self, identity: str, index: int) -> bytes:
        prefix, _, suffix = identity.partition("/")
        failed = AdminError(ResponseCode.AUTHENTICATION_FAILED, f"{index}:{identity} holds no secret key")
        if suffix.upper() != ADMIN_SUFFIX:
            raise failed  # secrets are held for <prefix>/ADMIN only: storage/handlekeys.py says why
        identity_key = admin_identity_key(prefix)
        with self.store.env.begin(db=self.store.enterprises_db) as txn:
            blob = txn.get(secret_key_name(identity_key, index))
        if blob is None:
            raise failed
        try:
            if self._node_key is None:
                self._node_key = load_node_key(self.data_dir)
            if self._node_key is None:
                raise NodeKeyError("the node key file is missing")
            return decrypt_secret(self._node_key, identity_key, index, bytes(blob))
        except NodeKeyError as exc:
            log.error("cannot check the secret key of %s: %s", identity, exc)
            raise failed from None

    def _public_key_of(self, identity: str, index: int):
        for value in self._values(identity) or ():
            if value.index == index:
                if value.type != "HS_PUBKEY":
                    break
                try:
                    return decode_public_key(value.data)
                except HandleProtocolError as exc:
                    raise AdminError(ResponseCode.AUTHENTICATION_FAILED, str(exc)) from None
        raise AdminError(ResponseCode.AUTHENTICATION_FAILED, f"{index}:{identity} holds no public key")

    # -- values ------------------------------------------------------------------------------------------

    def _values(self, handle: str) -> list[HandleValue] | None:
        """Every value of `handle` (none filtered), from this worker's snapshot; None when absent."""
        try:
            key = self.store.key_of(handle)
        except Exception:
            return None
        prefix = key[: key.find(b"/")]
        raw = self.store.get(key)
        if raw is None:
            if prefix == NA_PREFIX:
                return self._prefix_handle_values(key[len(NA_PREFIX) + 1 :])
            return None
        try:
            return decode_record_values(bytes(raw), self.store.shared_value)
        except Exception:  # an unreadable record governs nothing
            return None

    def _prefix_handle_values(self, prefix: bytes) -> list[HandleValue] | None:
        """The admin values of a prefix handle `0.NA/<prefix>` this node keeps: the HS_ADMIN it serves (index
        200 of itself) and the group there: every key of `<prefix>/ADMIN` (index 0 = any index)."""
        info = self.service.prefix_info(prefix)
        if info is None:
            return None
        handle = f"0.NA/{info.prefix}"
        return [
            HandleValue(100, "HS_ADMIN", encode_admin(AdminData(handle, PREFIX_ADMIN_INDEX, 0x0FFF))),
            HandleValue(
                PREFIX_ADMIN_INDEX, "HS_VLIST", encode_vlist([Reference(f"{info.prefix}/{ADMIN_SUFFIX}", 0)])
            ),
        ]

    # -- performing ----------------------------------------------------------------------------------------

    async def _perform(self, original: Message, carrier: Message, identity: str, index: int,
                       caller: Caller) -> list[bytes]:  # fmt: skip
        op = original.header.op_code
        request = decode_admin_request(op, original.body)
        handle = request.handle
        if op == OpCode.LIST_HANDLES:
            prefix = handle[5:] if handle.upper().startswith("0.NA/") else handle
            governing = self._values(f"0.NA/{prefix}") or []
            self._authorize(governing, identity, index, op, False, handle, caller)
            return self._list(original, carrier, prefix)
        prefix = handle.split("/", 1)[0]
        prefix_values = self._values(f"0.NA/{prefix}") or []
        current = self._values(handle) if op != OpCode.CREATE_HANDLE else None
        if op == OpCode.CREATE_HANDLE:
            governing = prefix_values
        else:
            governing = authorize.admin_values(current or ()) or prefix_values
        touches_admin = any(v.type == "HS_ADMIN" for v in request.values) or (
            op == OpCode.REMOVE_VALUE
            and any(v.type == "HS_ADMIN" and v.index in request.indexes for v in current or ())
        )
        self._authorize(governing, identity, index, op, touches_admin, handle, caller)
        if op != OpCode.CREATE_HANDLE and current is None:
            raise AdminError(ResponseCode.HANDLE_NOT_FOUND, "")
        if op == OpCode.MODIFY_VALUE:
            held = {v.index for v in current or ()}
            missing = sorted({v.index for v in request.values} - held)
            if missing:
                raise AdminError(
                    ResponseCode.VALUES_NOT_FOUND, f"{handle} has no value at index {missing[0]}"
                )
        actor = Actor(f"{index}:{identity}", caller.where)
        allowed = normalize_prefix(identity.split("/", 1)[0].encode())
        try:
            outcome = await self._write(request, original, allowed, actor)
        except WriteError as exc:
            self.events.write(actor.identity, actor.source, _OPERATION[op], handle, outcome="refused",
                              detail={"code": int(exc.code), "reason": exc.message})  # fmt: skip
            raise AdminError(exc.code, exc.message) from None
        except WriterUnavailable as exc:  # the writer restarting, or a cluster member whose log is away: retry
            log.debug("Handle write of %s not taken: %s", handle, exc)
            raise AdminError(ResponseCode.SERVER_TOO_BUSY, f"the write was not taken: {exc}") from None
        except Exception as exc:  # the disk full, an apply that failed: nothing promised
            log.debug("Handle write of %s failed: %s", handle, exc)
            raise AdminError(ResponseCode.ERROR, f"the write could not be applied: {exc}") from None
        self.service.refresh()
        self.events.write(actor.identity, actor.source, AUDIT_OPERATIONS[outcome], handle)
        body = encode_created_body(handle) if op == OpCode.CREATE_HANDLE else b""
        return [self._reply(original, carrier, ResponseCode.SUCCESS, body)]

    def _authorize(self, governing, identity: str, index: int, op: int, touches_admin: bool, handle: str,
                   caller: Caller) -> None:  # fmt: skip
        """AdminError 400 unless HS_ADMIN grants the operation; a refusal is an auth-failure security event
        (beyond its rights), as over HTTP."""
        needed = authorize.needed_permission(op, touches_admin)
        if not authorize.is_authorized(governing, identity, index, needed, self._values):
            reason = f"{index}:{identity} is not an administrator of {handle} with {AdminPermission(needed).name}"
            self.events.auth_failure(f"{index}:{identity}", caller.where, reason, transport="handle")
            raise AdminError(ResponseCode.INVALID_ADMIN, reason)

    async def _write(self, request: AdminRequest, original: Message, allowed: bytes, actor: Actor) -> str:
        op = request.op_code
        now_s = int(self.clock())
        values = [  # a value sent without a time (CNRI sends 0) is stamped now, as over HTTP
            HandleValue(
                v.index, v.type, v.data, v.timestamp or now_s, v.ttl_type, v.ttl, v.permissions, v.references
            )
            for v in request.values
        ]
        common = {"allowed_prefix": allowed, "checker": True, "actor": actor}
        if op == OpCode.CREATE_HANDLE:
            overwrite = bool(original.header.op_flags & OpFlag.OVERWRITE)
            return await self._submit(put_identifier, request.handle, values, overwrite=overwrite,
                                      counter_kind=REGISTRATIONS_HANDLE, **common)  # fmt: skip
        if op in (OpCode.ADD_VALUE, OpCode.MODIFY_VALUE):
            return await self._submit(put_identifier, request.handle, values, indexes=[v.index for v in values],
                                      overwrite=op == OpCode.MODIFY_VALUE, **common)  # fmt: skip
        if op == OpCode.REMOVE_VALUE:
            return await self._submit(
                delete_identifier, request.handle, indexes=list(request.indexes), **common
            )
        return await self._submit(delete_identifier, request.handle, **common)

    async def _submit(self, fn, *args, **kwargs):
        return await self._writes(fn, *args, **kwargs)

    def _list(self, original: Message, carrier: Message, prefix: str) -> list[bytes]:
        key = normalize_prefix(prefix.encode())
        info = self.service.prefix_info(key)
        if info is None or info.state != "hosted":
            raise AdminError(ResponseCode.SERVER_NOT_RESP, f"prefix {prefix} is not hosted here")
        start = key + b"/"
        handles: list[bytes] = []
        with self.store.env.begin(db=self.store.handles) as txn, txn.cursor() as cursor:
            if cursor.set_range(start):
                for stored in cursor.iternext(values=False):
                    if not stored.startswith(start) or len(handles) >= MAX_LIST_HANDLES:
                        break
                    handles.append(bytes(stored))
        parts = list_parts(handles, LIST_PART_BYTES)
        answers = []
        for n, part in enumerate(parts):
            more = _CN if n < len(parts) - 1 else 0
            answers.append(self._reply(original, carrier, ResponseCode.SUCCESS, encode_list_body(part),
                                       extra_flags=more))  # fmt: skip
        return answers

    def close(self) -> None:
        self._writes.close()


_OPERATION = {
    OpCode.CREATE_HANDLE: "create", OpCode.DELETE_HANDLE: "delete", OpCode.ADD_VALUE: "add",
    OpCode.MODIFY_VALUE: "modify", OpCode.REMOVE_VALUE: "remove",
}  # fmt: skip


def encode_request_bytes(request: Message) -> bytes:
    """The whole message again (kept with its challenge)."""
    return encode_message(request.envelope, request.header, request.body, request.credential)


assert LIST_PART_BYTES < MAX_MESSAGE_BYTES
