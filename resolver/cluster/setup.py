"""A cluster member's log built from the node's settings (`[cluster]`): the stream, this member's record."""

from __future__ import annotations

import concurrent.futures

from resolver.cluster.identity import this_member
from resolver.cluster.jetstream import JetStreamLog, StreamSettings
from resolver.cluster.member import ClusterLog
from resolver.config import ServeConfig
from storage.store import Store


def stream_settings(config: ServeConfig) -> StreamSettings:
    return StreamSettings(
        tuple(config.cluster_nats), replicas=config.cluster_replicas, retention_s=config.log_retention_s,
        stream=config.cluster_stream,
    )  # fmt: skip


def cluster_log(config: ServeConfig, store: Store, commit: concurrent.futures.Executor) -> ClusterLog:
    return ClusterLog(
        store, JetStreamLog(stream_settings(config), config.node_id), this_member(config), commit
    )
