"""`idnode key show|rotate`: the node's server key pair (resolver/serverkey.py), which signs certified answers
and is published in the node's HS_SITE."""

from __future__ import annotations

import argparse
import hashlib

from resolver.cli_errors import CliError
from resolver.cli_store import add_store_arguments, store_dir


def _fingerprint(public_key_hs: bytes) -> str:
    """SHA-256 of the key as HS_SITE publishes it: what an operator compares with a client's view."""
    return hashlib.sha256(public_key_hs).hexdigest()


def cmd_key_show(args: argparse.Namespace) -> int:
    """The key, made now when the store directory has none yet (as `idnode serve` would at first start), so
    an operator can publish or register it before the node first serves."""
    from resolver.serverkey import ServerKey, ServerKeyError, ensure_key, key_path

    directory = store_dir(args)
    path = key_path(directory)
    made = not path.exists()
    if made and not directory.is_dir():
        raise CliError(f"{directory} is not a directory")
    try:
        key = ServerKey(ensure_key(directory))
    except ServerKeyError as exc:
        raise CliError(str(exc)) from None
    print(f"server key: {path} (RSA, signs SHA256withRSA){' - made now' if made else ''}")
    print(f"HS_SITE fingerprint (SHA-256 of the published key): {_fingerprint(key.public_key_hs)}")
    print(key.public_pem().decode(), end="")
    return 0


def cmd_key_rotate(args: argparse.Namespace) -> int:
    from resolver.serverkey import PREVIOUS_SUFFIX, ServerKey, rotate_key

    directory = store_dir(args)
    if not directory.is_dir():
        raise CliError(f"{directory} is not a directory")
    path = rotate_key(directory)
    key = ServerKey(path)
    print(f"new server key {path}; the previous one is kept as {path.name}{PREVIOUS_SUFFIX}")
    print(f"HS_SITE fingerprint: {_fingerprint(key.public_key_hs)}")
    print("a serving node signs with it and publishes it within a housekeeping pass (about a second)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    key = sub.add_parser(
        "key", help="the node's server key pair: signs certified answers, published in HS_SITE"
    )
    key_sub = key.add_subparsers(dest="key_command", required=True)
    show = key_sub.add_parser("show", help="the public key, its HS_SITE fingerprint and the key file")
    add_store_arguments(show)
    show.set_defaults(func=cmd_key_show)
    rotate = key_sub.add_parser("rotate", help="replace the key pair (the old one kept as .previous)")
    add_store_arguments(rotate)
    rotate.set_defaults(func=cmd_key_rotate)
