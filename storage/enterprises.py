"""Enterprises of the node: their prefixes (hosted here or served by their own node), their credentials, and
when they were last seen.

A credential is a secret issued once and stored only as a salted scrypt hash, with its salt and parameters, so
the parameters can be raised later without invalidating issued secrets. Enterprise users have the Handle.Net
form `300:<prefix>/ADMIN`; the identifier `<prefix>/ADMIN` is registered when the first secret is issued, so
REST clients that check the admin identity exists (pyhandle does) find it. The operator's user is `operator`.

Records live in the store's `enterprises` database: `cred/<user>` (msgpack) and `seen/<PREFIX>` (u64 Unix
seconds). Every change is an entry of the write log (storage/entries.py), applied by `apply_*` in the writer's
transaction; the entry of a credential carries its salted hash, never the secret. Every prefix and credential
write is recorded in the audit trail (storage/audit.py) in that transaction, under the handle `0.NA/<prefix>`. Imports the Handle value codec, never the servers.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack

from resolver.handle.values import (
    AdminData,
    HandleValue,
    Interface,
    InterfaceProtocol,
    InterfaceType,
    ServerInfo,
    SiteInfo,
    encode_admin,
    encode_site,
)
from storage import audit, entries
from storage.audit import Actor
from storage.entries import encode_entry, submit_one, unwrap
from storage.keys import normalize_prefix, prefix_sort_key
from storage.records import pack_record
from storage.store import REGISTRATIONS, PrefixInfo, Store, counter_key, today

CREDENTIAL_SCHEMA_VERSION = 1  #: version of the msgpack credential record
SCRYPT_N = (
    2**14
)  #: scrypt cost: ~50 ms and 16 MiB per check on this machine class; verified logins are cached
SCRYPT_R = 8  #: scrypt block size (the common recommendation)
SCRYPT_P = 1  #: scrypt parallelism
SCRYPT_DKLEN = 32  #: bytes of derived key stored
SALT_BYTES = 16  #: per-secret random salt
SECRET_BYTES = 24  #: entropy of an issued secret (printed as 32 URL-safe characters)
MIN_SECRET_CHARS = 12  #: an operator-chosen secret shorter than this is refused
ADMIN_INDEX = 300  #: the index in the user name `300:<prefix>/ADMIN`, as Handle.Net clients write it
ADMIN_SUFFIX = (
    "ADMIN"  #: suffix of the enterprise's admin identity handle; reserved, not writable over the API
)
OPERATOR_USER = "operator"  #: the node operator's user name
CONNECTED_WINDOW_S = 86_400  #: an enterprise seen (authenticated) within this window counts as connected
MAX_PREFIX_CHARS = 64  #: longer is a typing mistake, not a prefix
PUBLIC_KEY_INDEX_MIN = 301  #: HS_PUBKEY indexes of `<prefix>/ADMIN` (300 is the secret key's)
PUBLIC_KEY_INDEX_MAX = 399  #: ... up to here, so that the HS_VLIST of the prefix handle names them all

_CRED = b"cred/"
_SEEN = b"seen/"
_U64 = struct.Struct(">Q")
_PREFIX_RE = re.compile(r"[0-9A-Za-z]+(\.[0-9A-Za-z-]+)*")
_USER_RE = re.compile(r"(\d+):([^/]+)/(.+)")
REGISTRATIONS_ADMIN = f"{REGISTRATIONS}.admin"  #: counter kind of identifiers created by the admin tools


class EnterpriseError(ValueError):
    """A prefix or credential operation cannot be done as asked; the message says why."""


# -- names ---------------------------------------------------------------------------------------------------


def validate_prefix(text: str) -> str:
    """`text` as a prefix (`88.100.7`): dot-separated ASCII segments, not the 0.NA namespace."""
    text = text.strip()
    if not text or len(text) > MAX_PREFIX_CHARS or not _PREFIX_RE.fullmatch(text):
        raise EnterpriseError(f"prefix: {text!r} is not a prefix like 88.100.7")
    if text.upper() == "0.NA" or text.upper().startswith("0.NA."):
        raise EnterpriseError("prefix: 0.NA is the namespace of prefix handles, not an enterprise prefix")
    return text


def enterprise_user(prefix: str) -> str:
    """The Handle.Net user name of a prefix's administrator: `300:88.100.7/ADMIN`."""
    return f"{ADMIN_INDEX}:{prefix}/{ADMIN_SUFFIX}"


def user_key(user: str) -> bytes | None:
    """The stored form of a user name, or None when it names no user this node can have: `operator`, or
    `300:<prefix>/ADMIN` with the prefix upper-cased like every prefix."""
    if user == OPERATOR_USER:
        return user.encode()
    match = _USER_RE.fullmatch(user)
    if not match or int(match.group(1)) != ADMIN_INDEX or match.group(3).upper() != ADMIN_SUFFIX:
        return None
    return _admin_user_key(match.group(2))


def _admin_user_key(prefix: str) -> bytes:
    """The stored form of `enterprise_user(prefix)`: the prefix upper-cased like every prefix."""
    return f"{ADMIN_INDEX}:{prefix.upper()}/{ADMIN_SUFFIX}".encode()


def admin_identity_key(prefix: str) -> bytes:
    """`<PREFIX>/ADMIN` as the Handle secret keys are named (storage/handlekeys.py), whatever the store's case rule."""
    return normalize_prefix(prefix.encode()) + b"/" + ADMIN_SUFFIX.encode()


def prefix_of_user(key: bytes) -> bytes | None:
    """The prefix key an enterprise user administers; None for the operator."""
    if key == OPERATOR_USER.encode():
        return None
    return key[key.index(b":") + 1 : key.rindex(b"/")]


# -- secrets -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credential:
    """A stored credential: the scrypt hash of a secret with everything needed to check it again."""

    user: str
    salt: bytes
    digest: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P
    issued_s: int = 0

    def pack(self) -> bytes:
        return msgpack.packb(
            {
                "v": CREDENTIAL_SCHEMA_VERSION,
                "user": self.user,
                "kdf": "scrypt",
                "n": self.n,
                "r": self.r,
                "p": self.p,
                "salt": self.salt,
                "hash": self.digest,
                "issued": self.issued_s,
            }
        )

    @classmethod
    def unpack(cls, raw: bytes) -> Credential:
        obj = msgpack.unpackb(raw)
        if obj.get("v") != CREDENTIAL_SCHEMA_VERSION or obj.get("kdf") != "scrypt":
            raise EnterpriseError(
                f"credential record schema {obj.get('v')!r}/{obj.get('kdf')!r} is not readable"
            )
        return cls(obj["user"], obj["salt"], obj["hash"], obj["n"], obj["r"], obj["p"], obj["issued"])

    def verify(self, secret: str) -> bool:
        return hmac.compare_digest(
            _scrypt(secret, self.salt, self.n, self.r, self.p, len(self.digest)), self.digest
        )


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * r * n + (1 << 20)
    )


def hash_secret(user: str, secret: str, now_s: int | None = None) -> Credential:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    return Credential(user, salt, digest, issued_s=int(time.time()) if now_s is None else now_s)


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def get_credential(store: Store, key: bytes, txn: lmdb.Transaction | None = None) -> Credential | None:
    if txn is None:
        with store.env.begin(db=store.enterprises_db) as own:
            raw = own.get(_CRED + key)
    else:
        raw = txn.get(_CRED + key, db=store.enterprises_db)
    return Credential.unpack(raw) if raw is not None else None


def set_operator_secret(target: Any, secret: str, actor: Actor | None = None, now_s: int | None = None) -> None:
    """Set the operator's secret (its salted hash goes into the log entry, never the secret)."""
    if len(secret) < MIN_SECRET_CHARS:
        raise EnterpriseError(f"secret: at least {MIN_SECRET_CHARS} characters")
    now_ns = time.time_ns() if now_s is None else now_s * 1_000_000_000
    credential = hash_secret(OPERATOR_USER, secret, now_ns // 1_000_000_000)
    actor = actor or audit.cli_actor()
    entry = encode_entry(entries.SET_OPERATOR_SECRET, {
        "salt": credential.salt, "hash": credential.digest, "n": credential.n, "r": credential.r,
        "p": credential.p, "issued": credential.issued_s, "time_ns": now_ns,
        "actor": entries.actor_args(actor),
    })  # fmt: skip
    unwrap(submit_one(target, entry))


def apply_set_operator_secret(store: Store, txn: lmdb.Transaction, args: dict) -> None:
    credential = Credential(OPERATOR_USER, args["salt"], args["hash"], args["n"], args["r"], args["p"],
                            args["issued"])  # fmt: skip
    actor = Actor(*args["actor"])
    txn.put(_CRED + OPERATOR_USER.encode(), credential.pack(), db=store.enterprises_db)
    audit.record(store, txn, actor.identity, actor.source, audit.CREDENTIAL_ISSUE, OPERATOR_USER,
                 {"user": OPERATOR_USER}, now_ns=args["time_ns"])  # fmt: skip


def issue_credential(
    target: Any,
    prefix: str,
    now_s: int | None = None,
    actor: Actor | None = None,
    node_key: bytes | None = None,
) -> tuple[str, str]:
    """A new secret for the administrator of `prefix` (replacing any earlier one): (user, secret). The secret
    is returned once; the log entry carries its salted hash (HTTP Basic) and, with `node_key`, the secret
    encrypted with it (the HS_SECKEY at index 300 of `<prefix>/ADMIN` for the Handle protocol,
    storage/handlekeys.py), never the secret in clear. Registers `<prefix>/ADMIN` if it is not there yet."""
    now_ns = time.time_ns() if now_s is None else now_s * 1_000_000_000
    now_s = now_ns // 1_000_000_000
    actor = actor or audit.cli_actor()
    validate_prefix(prefix)
    secret = new_secret()
    credential = hash_secret("", secret, now_s)  # the user is named when applied, from the stored prefix
    args = {
        "prefix": prefix, "salt": credential.salt, "hash": credential.digest, "n": credential.n,
        "r": credential.r, "p": credential.p, "issued": now_s, "time_ns": now_ns,
        "actor": entries.actor_args(actor),
    }  # fmt: skip
    if node_key is not None:
        from storage.handlekeys import encrypt_secret

        identity_key = admin_identity_key(prefix)
        args["hs_seckey"] = encrypt_secret(node_key, identity_key, ADMIN_INDEX, secret.encode())
    user = unwrap(submit_one(target, encode_entry(entries.ISSUE_CREDENTIAL, args)))
    return user, secret


def register_public_key(
    target: Any,
    prefix: str,
    index: int,
    key_data: bytes,
    now_s: int | None = None,
    actor: Actor | None = None,
) -> str:
    """Make `key_data` (HS_PUBKEY data in the Handle key encoding) the value at `index` of `<prefix>/ADMIN`,
    replacing what that index held: the enterprise proves itself over the Handle protocol by signing with
    the private key. Returns the identity `index:<prefix>/ADMIN`. An ISSUE_CREDENTIAL entry, audited."""
    validate_prefix(prefix)
    if not PUBLIC_KEY_INDEX_MIN <= index <= PUBLIC_KEY_INDEX_MAX or index == ADMIN_INDEX:
        raise EnterpriseError(
            f"index: a key's index is {PUBLIC_KEY_INDEX_MIN}..{PUBLIC_KEY_INDEX_MAX} (not {ADMIN_INDEX}, the secret key's)"
        )
    now_ns = time.time_ns() if now_s is None else now_s * 1_000_000_000
    entry = encode_entry(entries.ISSUE_CREDENTIAL, {
        "prefix": prefix, "pubkey": key_data, "index": index, "issued": now_ns // 1_000_000_000,
        "time_ns": now_ns, "actor": entries.actor_args(actor or audit.cli_actor()),
    })  # fmt: skip
    return unwrap(submit_one(target, entry))


def apply_issue_credential(
    store: Store, txn: lmdb.Transaction, args: dict, changed: Callable[[bytes, bytes | None], None]
) -> str:
    key = normalize_prefix(validate_prefix(args["prefix"]).encode())
    now_s = args["issued"]
    actor = Actor(*args["actor"])
    info = _prefix_in(store, txn, key)
    if info.state == "disabled":
        raise EnterpriseError(f"prefix {info.prefix} is disabled; enable it before issuing a credential")
    if "pubkey" in args:
        return _apply_public_key(store, txn, args, info, changed)
    user = enterprise_user(info.prefix)
    credential = Credential(user, args["salt"], args["hash"], args["n"], args["r"], args["p"], now_s)
    txn.put(_CRED + _admin_user_key(info.prefix), credential.pack(), db=store.enterprises_db)
    created = _ensure_admin_record(store, txn, info, key, now_s, changed)
    from storage.handlekeys import secret_key_name

    name = secret_key_name(admin_identity_key(info.prefix), ADMIN_INDEX)
    if args.get("hs_seckey") is not None:
        txn.put(name, args["hs_seckey"], db=store.enterprises_db)
    else:  # a rotated secret retires the Handle copy of the old one too
        txn.delete(name, db=store.enterprises_db)
    audit.record(store, txn, actor.identity, actor.source, audit.CREDENTIAL_ISSUE, f"0.NA/{info.prefix}",
                 {"user": user, "admin_created": created, "hs_seckey": args.get("hs_seckey") is not None},
                 now_ns=args["time_ns"])  # fmt: skip
    return user


def _ensure_admin_record(store: Store, txn: lmdb.Transaction, info: PrefixInfo, key: bytes, now_s: int,
                         changed: Callable[[bytes, bytes | None], None]) -> bool:  # fmt: skip
    """Register `<prefix>/ADMIN` if it is not there; whether it was made."""
    admin_key = store.key_of(f"{info.prefix}/{ADMIN_SUFFIX}")
    if txn.get(admin_key, db=store.handles) is not None:
        return False
    changed(admin_key, None)
    txn.put(admin_key, pack_record(_admin_identity_values(info.prefix, now_s)), db=store.handles)
    store.add_counts_in(txn, {counter_key(REGISTRATIONS_ADMIN, today(now_s), key): 1})
    return True


def _apply_public_key(store: Store, txn: lmdb.Transaction, args: dict, info: PrefixInfo,
                      changed: Callable[[bytes, bytes | None], None]) -> str:  # fmt: skip
    """An ISSUE_CREDENTIAL entry with a public key: the HS_PUBKEY value at its index of `<prefix>/ADMIN`."""
    from resolver.handle.values import decode_value, encode_value
    from resolver.handle.wire import Reader
    from storage.records import split_values, unpack_record

    key = normalize_prefix(info.prefix.encode())
    now_s, index, actor = args["issued"], args["index"], Actor(*args["actor"])
    _ensure_admin_record(store, txn, info, key, now_s, changed)
    admin_key = store.key_of(f"{info.prefix}/{ADMIN_SUFFIX}")
    old_raw = bytes(txn.get(admin_key, db=store.handles))
    tail, _ = unpack_record(old_raw, store.shared_value)
    values = [decode_value(Reader(encoded)) for encoded in split_values(tail)]
    new = HandleValue(index, "HS_PUBKEY", args["pubkey"], now_s)
    replaced = any(v.index == index for v in values)
    values = [new if v.index == index else v for v in values] + ([] if replaced else [new])
    encode_value(new)  # a value that cannot be encoded is refused before anything is put
    changed(admin_key, old_raw)
    txn.put(admin_key, pack_record(values), db=store.handles)
    identity = f"{index}:{info.prefix}/{ADMIN_SUFFIX}"
    audit.record(store, txn, actor.identity, actor.source, audit.CREDENTIAL_ISSUE, f"0.NA/{info.prefix}",
                 {"user": identity, "hs_pubkey": True, "replaced": replaced}, now_ns=args["time_ns"])  # fmt: skip
    return identity


def _admin_identity_values(prefix: str, now_s: int) -> list[HandleValue]:
    """Public values of `<prefix>/ADMIN`: who administers it and what it is. No key material: the secret's
    hash stays in the enterprises database, which no protocol serves."""
    return [
        HandleValue(
            1, "DESC", f"administrator of prefix {prefix} (credential held by this node)".encode(), now_s
        ),
        HandleValue(100, "HS_ADMIN", encode_admin(AdminData(f"0.NA/{prefix}", 200, 0x0FFF)), now_s),
    ]


# -- prefixes ------------------------------------------------------------------------------------------------


def site_from_address(text: str, serial: int = 1) -> bytes:
    """The HS_SITE of an enterprise node at `HOST:PORT` (an IP address, `[v6]:port` for IPv6): one server
    answering queries on TCP, then UDP, at that port (ID-SDK talks the first interface it sees)."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise EnterpriseError(f"site: {text!r} is not HOST:PORT")
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise EnterpriseError(f"site: {host!r} is not an IP address (an HS_SITE carries addresses)") from exc
    interfaces = (
        Interface(InterfaceType.QUERY, InterfaceProtocol.TCP, int(port)),
        Interface(InterfaceType.QUERY, InterfaceProtocol.UDP, int(port)),
    )
    server = ServerInfo(1, address, b"", interfaces)
    return encode_site(SiteInfo(serial=serial, attributes=(("desc", "enterprise node"),), servers=(server,)))


def _prefix_in(store: Store, txn: lmdb.Transaction, key: bytes) -> PrefixInfo:
    raw = txn.get(key, db=store.prefixes_db)
    if raw is None:
        raise EnterpriseError(f"prefix {key.decode()} is not known here (add it with `idnode prefix add`)")
    return PrefixInfo.unpack(raw)


def _held_under(store: Store, txn: lmdb.Transaction, key: bytes) -> int:
    """How many identifiers the store holds under the prefix `key` (a cursor over its keys, values unread)."""
    start = key + b"/"
    held = 0
    with txn.cursor(db=store.handles) as cursor:
        if cursor.set_range(start):
            for stored in cursor.iternext(values=False):
                if not stored.startswith(start):
                    break
                held += 1
    return held


def identifiers_held(store: Store, prefix: str) -> int:
    """How many identifiers the store holds under `prefix`."""
    with store.env.begin() as txn:
        return _held_under(store, txn, normalize_prefix(prefix.encode()))


def check_prefix_change(
    store: Store,
    txn: lmdb.Transaction,
    key: bytes,
    old: PrefixInfo | None,
    site: str | None,
    node_prefix: str | None,
    force: bool,
    outside_node_prefix: bool,
) -> None:
    """The operator's two safety checks on `add_prefix`, for `idnode prefix add` and the operator's API alike,
    in the transaction of the write (so a load in between cannot slip past): a new prefix must lie below the
    node's own prefix (`node_prefix`; None: not checked) unless `outside_node_prefix`; and sending a prefix
    hosted here to its own node (`site`) would stop every identifier held under it resolving here, so that is
    refused while it holds any, unless `force`."""
    if old is None and node_prefix is not None and not outside_node_prefix:
        own = normalize_prefix(node_prefix.strip().encode())
        if not key.startswith(own + b"."):
            raise EnterpriseError(
                f"prefix: {key.decode()} is not below this node's prefix {own.decode()} (node_prefix); to add it "
                'anyway give --outside-node-prefix (over the API: "outsideNodePrefix": true)'
            )
    if site and not force and (old is None or old.site is None):
        held = _held_under(store, txn, key)
        if held:
            raise EnterpriseError(
                f"site: {held:,} identifiers held here under {key.decode()} would stop resolving here (each "
                f"resolution would be referred to {site.strip()}); to do it anyway give --force (over the API: "
                '"force": true)'
            )


def add_prefix(
    target: Any,
    prefix: str,
    org: str,
    site: str | None = None,
    now_s: int | None = None,
    actor: Actor | None = None,
    node_prefix: str | None = None,
    force: bool = False,
    outside_node_prefix: bool = False,
) -> PrefixInfo:
    """Register an enterprise prefix, or update the organisation and site of a known one. With `site`
    (HOST:PORT) the prefix is served by the enterprise's own node and resolutions under it are referred
    there; without, its identifiers are hosted here. A disabled prefix stays disabled. `check_prefix_change`
    refuses a new prefix outside `node_prefix` and a site for a prefix that holds identifiers here, unless
    `outside_node_prefix` resp. `force`."""
    prefix = validate_prefix(prefix)
    if not org.strip():
        raise EnterpriseError("org: the organisation's name is required")
    if site:
        site_from_address(site)  # a bad address is refused before anything is logged
    now_ns = time.time_ns() if now_s is None else now_s * 1_000_000_000
    entry = encode_entry(entries.ADD_PREFIX, {
        "prefix": prefix, "org": org, "site": site, "time_ns": now_ns,
        "node_prefix": node_prefix, "force": force, "outside_node_prefix": outside_node_prefix,
        "actor": entries.actor_args(actor or audit.cli_actor()),
    })  # fmt: skip
    return PrefixInfo.unpack(unwrap(submit_one(target, entry)))


def apply_add_prefix(store: Store, txn: lmdb.Transaction, args: dict) -> bytes:
    prefix, org, site = validate_prefix(args["prefix"]), args["org"], args["site"]
    key = normalize_prefix(prefix.encode())
    now_ns = args["time_ns"]
    actor = Actor(*args["actor"])
    raw = txn.get(key, db=store.prefixes_db)
    old = PrefixInfo.unpack(raw) if raw is not None else None
    # an entry logged before these checks existed has no such keys: applied again, it does what it did then
    check_prefix_change(store, txn, key, old, site, args.get("node_prefix"), args.get("force", True),
                        args.get("outside_node_prefix", False))  # fmt: skip
    serial = (old.extra.get("site_serial", 0) + 1) if old and site else 1
    extra: dict[str, Any] = dict(old.extra) if old else {}
    extra.pop("site_address", None)
    if site:
        extra.update(site_address=site.strip(), site_serial=serial)
    state = "referral" if site else "hosted"
    if old is not None and old.state == "disabled":
        state = "disabled"
    info = PrefixInfo(
        prefix=old.prefix if old else prefix,
        state=state,
        org=org.strip(),
        site=site_from_address(site, serial) if site else None,
        created_s=old.created_s if old else now_ns // 1_000_000_000,
        extra=extra,
    )
    store.put_prefix_in(txn, info)
    detail = {"org": info.org, "state": info.state, "site": site.strip() if site else None,
              "updated": old is not None}  # fmt: skip
    handle = f"0.NA/{info.prefix}"
    audit.record(store, txn, actor.identity, actor.source, audit.PREFIX_ADD, handle, detail, now_ns=now_ns)
    return info.pack()


def set_prefix_enabled(target: Any, prefix: str, enabled: bool, actor: Actor | None = None) -> PrefixInfo:
    """Disable a prefix (nothing under it resolves, its credential is refused) or enable it again."""
    validate_prefix(prefix)
    entry = encode_entry(entries.SET_PREFIX_ENABLED, {
        "prefix": prefix, "enabled": enabled, "time_ns": time.time_ns(),
        "actor": entries.actor_args(actor or audit.cli_actor()),
    })  # fmt: skip
    return PrefixInfo.unpack(unwrap(submit_one(target, entry)))


def apply_set_prefix_enabled(store: Store, txn: lmdb.Transaction, args: dict) -> bytes:
    key = normalize_prefix(validate_prefix(args["prefix"]).encode())
    enabled = args["enabled"]
    actor = Actor(*args["actor"])
    old = _prefix_in(store, txn, key)
    state = ("referral" if old.site else "hosted") if enabled else "disabled"
    info = PrefixInfo(old.prefix, state, old.org, old.site, old.created_s, old.extra)
    store.put_prefix_in(txn, info)
    operation = audit.PREFIX_ENABLE if enabled else audit.PREFIX_DISABLE
    audit.record(store, txn, actor.identity, actor.source, operation, f"0.NA/{info.prefix}",
                 {"state": state, "was": old.state}, now_ns=args["time_ns"])  # fmt: skip
    return info.pack()


# -- last seen -----------------------------------------------------------------------------------------------


def mark_seen_entry(seen: dict[bytes, int]) -> bytes:
    """The log entry of last-seen marks: prefix key -> Unix seconds (several coalesced in one entry)."""
    return encode_entry(entries.MARK_SEEN, {"seen": seen})


def mark_seen(target: Any, prefix_key: bytes, now_s: int | None = None) -> None:
    now_s = int(time.time()) if now_s is None else now_s
    unwrap(submit_one(target, mark_seen_entry({prefix_key: now_s})))


def apply_mark_seen(store: Store, txn: lmdb.Transaction, args: dict) -> None:
    """Keep the latest time per enterprise (marks from several workers may arrive out of order)."""
    for prefix_key, seen_s in args["seen"].items():
        old = txn.get(_SEEN + prefix_key, db=store.enterprises_db)
        if old is None or _U64.unpack(old)[0] < seen_s:
            txn.put(_SEEN + prefix_key, _U64.pack(seen_s), db=store.enterprises_db)


def last_seen(store: Store) -> dict[bytes, int]:
    """Prefix key -> Unix seconds of the enterprise's last authenticated call."""
    with store.env.begin(db=store.enterprises_db) as txn, txn.cursor() as cursor:
        if not cursor.set_range(_SEEN):
            return {}
        return {k[len(_SEEN) :]: _U64.unpack(v)[0] for k, v in cursor if k.startswith(_SEEN)}


def credential_users(store: Store) -> set[bytes]:
    with store.env.begin(db=store.enterprises_db) as txn, txn.cursor() as cursor:
        if not cursor.set_range(_CRED):
            return set()
        return {k[len(_CRED) :] for k in cursor.iternext(values=False) if k.startswith(_CRED)}


def enterprises(store: Store, now_s: int | None = None, window_s: int = CONNECTED_WINDOW_S) -> list[dict]:
    """Every known prefix with its organisation, state, site, whether a credential was issued, when it was
    last seen and whether that makes it connected (seen within `window_s` and not disabled)."""
    now_s = int(time.time()) if now_s is None else now_s
    seen = last_seen(store)
    users = credential_users(store)
    out = []
    for key, info in sorted(store.prefixes().items(), key=lambda item: prefix_sort_key(item[0])):
        seen_s = seen.get(key)
        out.append(
            {
                "prefix": info.prefix,
                "org": info.org,
                "state": info.state,
                "site": info.extra.get("site_address"),
                "credential": user_key(enterprise_user(key.decode())) in users,
                "lastSeen": seen_s,
                "connected": bool(
                    seen_s is not None and now_s - seen_s <= window_s and info.state != "disabled"
                ),
            }
        )
    return out
