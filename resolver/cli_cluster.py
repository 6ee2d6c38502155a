"""`idnode cluster status|remove`: the members of a node's cluster, where each stands in the log, and taking
a member that is gone for good out of every member's HS_SITE.

Where each member stands comes from the log itself: every member consumes the stream through a durable
consumer named after it (`idnode-<node>`), whose acknowledged floor is the position it has applied (it
acknowledges after applying) and whose waiting pull requests show that it is consuming now. The members'
addresses come from the store (they arrive through the log, storage/members.py); this node's own status
from the file its writer keeps (resolver/cluster/status.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from resolver.cli_errors import CliError

STATUS_TIMEOUT_S = 5.0  #: NATS must answer the status questions within this


def register(sub: argparse._SubParsersAction) -> None:
    from resolver.cli_store import add_store_arguments

    cluster = sub.add_parser(
        "cluster", help="members of this node's cluster and their place in the write log"
    )
    commands = cluster.add_subparsers(dest="cluster_command", required=True)
    status = commands.add_parser("status", help="members, applied log position, lag and health")
    add_store_arguments(status)
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(func=cmd_status)
    remove = commands.add_parser(
        "remove", help="take a member that is gone for good out of the cluster's HS_SITE"
    )
    add_store_arguments(remove)
    remove.add_argument("node", help="the member's node id")
    remove.set_defaults(func=cmd_remove)


def _config(args: argparse.Namespace):
    from resolver import settings
    from resolver.cli_store import store_dir

    try:
        config = settings.build_config(
            {"data_dir": store_dir(args)}, os.environ, settings.config_path(args, os.environ)
        )
    except settings.ConfigError as exc:
        raise CliError(str(exc)) from None
    if not config.clustered:
        raise CliError(
            "this node is no cluster member: cluster.nats is not set (configuration file or IDNODE_CLUSTER_NATS)"
        )
    return config


async def _stream_positions(config) -> tuple[int, dict[str, dict]]:
    """(the stream's last position, durable consumer name -> {applied, consuming, pending})."""
    from resolver.cluster.jetstream import ClusterLogError, JetStreamLog
    from resolver.cluster.setup import stream_settings

    stream = JetStreamLog(stream_settings(config), config.node_id)
    try:
        await stream.connect()
        async with asyncio.timeout(STATUS_TIMEOUT_S):
            last = await stream.last_position()
            consumers = await stream.consumers()
    except (ClusterLogError, TimeoutError) as error:
        raise CliError(f"the cluster's log cannot be asked: {error}") from None
    finally:
        await stream.close()
    return last, {
        info.name: {"applied": info.ack_floor.stream_seq if info.ack_floor else 0,
                    "consuming": bool(info.num_waiting), "pending": info.num_pending or 0}
        for info in consumers
    }  # fmt: skip


def cluster_rows(config, store) -> dict:
    """The status of every member: the store's member records joined with the stream's consumers."""
    from resolver.cluster.jetstream import durable_name
    from resolver.cluster.status import read_status
    from storage.members import members

    last, consumers = asyncio.run(_stream_positions(config))
    own = read_status(config.data_dir)
    rows = []
    for member in members(store):
        consumer = consumers.get(durable_name(member.node))
        applied = consumer["applied"] if consumer else None
        if member.node == config.node_id and own is not None and time.time() - own["time"] < 10:
            applied = max(applied or 0, own["applied"])
            health = own["state"] if own["state"] != "ready" else "applying"
        elif consumer is None:
            health = "never consumed"
        else:
            health = "applying" if consumer["consuming"] else "not consuming"
        rows.append({"node": member.node, "address": member.address, "handle_port": member.handle_port,
                     "applied": applied, "lag": None if applied is None else max(0, last - applied),
                     "health": health, "this": member.node == config.node_id})  # fmt: skip
    return {"stream": config.cluster_stream, "last_position": last, "members": rows}


def cmd_status(args: argparse.Namespace) -> int:
    from resolver.cli_store import open_store

    config = _config(args)
    with open_store(args) as store:
        status = cluster_rows(config, store)
    if args.json:
        print(json.dumps(status))
        return 0
    print(f"log {status['stream']}: last position {status['last_position']}")
    print(f"{'node':<16} {'address':<28} {'applied':>12} {'lag':>10}  health")
    for row in status["members"]:
        where = f"{row['address']}:{row['handle_port']}"
        applied = "-" if row["applied"] is None else str(row["applied"])
        lag = "-" if row["lag"] is None else str(row["lag"])
        mark = " (this node)" if row["this"] else ""
        print(f"{row['node']:<16} {where:<28} {applied:>12} {lag:>10}  {row['health']}{mark}")
    if not status["members"]:
        print("no members announced yet: a member announces itself when its writer first reaches the log")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from resolver.cli_admin import _writes
    from storage import entries
    from storage.entries import encode_entry, submit_one, unwrap

    config = _config(args)
    with _writes(args) as (_, target):
        removed = unwrap(submit_one(target, encode_entry(entries.REMOVE_MEMBER, {"node": args.node})))
    if not removed:
        raise CliError(f"no member {args.node!r} in this cluster")
    print(f"member {args.node} removed: no member's HS_SITE lists it any more")
    print(asyncio.run(_delete_consumer(config, args.node)))
    return 0


async def _delete_consumer(config, node: str) -> str:
    """Delete the durable consumer of a member gone for good: JetStream would otherwise keep its state (and
    report it not current) forever."""
    from nats.js.errors import NotFoundError

    from resolver.cluster.jetstream import ClusterLogError, JetStreamLog, durable_name
    from resolver.cluster.setup import stream_settings

    stream = JetStreamLog(stream_settings(config), config.node_id)
    name = durable_name(node)
    try:
        await stream.connect()
        async with asyncio.timeout(STATUS_TIMEOUT_S):
            await stream.delete_consumer(name)
        return f"its consumer {name} deleted"
    except NotFoundError:
        return f"it had no consumer {name}"
    except (ClusterLogError, TimeoutError) as error:
        return f"its consumer {name} could not be deleted now ({error}): run this again when NATS answers"
    finally:
        await stream.close()
