"""This node as a member of its cluster (imports no NATS client: every worker builds its HS_SITE from it)."""

from __future__ import annotations

from resolver.config import ServeConfig
from storage.members import Member


def this_member(config: ServeConfig) -> Member:
    """What clients are told about this node in the node prefix's HS_SITE."""
    return Member(
        node=config.node_id, address=config.published_address, handle_port=config.handle_port,
        http_port=config.http_port or 0, http_tls=config.http_tls_cert is not None,
    )  # fmt: skip
