"""Prometheus metrics and the health answers of the node, ready for the HTTP app to serve.

prometheus-client runs in multiprocess mode: every process (supervisor and workers) writes its values to
files in one directory ($PROMETHEUS_MULTIPROC_DIR), and a scrape merges them, so the answer is the same
whichever worker the HTTP request lands on. Workers never touch Prometheus per request: they count in plain
ints (`resolver.server.stats.QueryStats`) and `publish()` moves the counts here once a second. Figures
that live in the store (identifiers, registrations, resolutions counted, store size) are read at scrape
time by `StoreCollector`, so they are exact and cost nothing between scrapes; so are the security log
queue's figures (`SecurityQueueCollector`: events waiting, their bytes, events dropped by the bound).

For the HTTP app: `metrics_response(store)` -> (body, content type) for GET /metrics; `healthz(state)`
and `readyz(state, store)` -> `HealthAnswer` (status, JSON body) for GET /healthz and /readyz.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  #: where prometheus-client keeps the per-process files
LATENCY_BUCKETS_S = (
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0,
)  #: answers take tens of microseconds; the upper buckets catch stalls  # fmt: skip
HOUSEKEEPING_STALE_S = 30.0  #: a worker whose housekeeping has not run for this long is not alive
FLUSH_STALE_INTERVALS = 10  #: counts unflushed for this many flush intervals make readiness say "degraded"
LOW_DISK_BYTES = 1 << 30  #: free space under this in the data directory is reported (writes will fail soon)
JSON_CONTENT_TYPE = "application/json"

_metrics: _Metrics | None = None


class _Metrics:
    """The metric objects; created once per process by `enable()` (after the directory is known)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.queries = Counter(
            "idnode_queries",
            "Requests answered (or dropped: code=dropped), by transport, op code and response code",
            ["transport", "op", "code"],
            registry=None,
        )
        self.latency = Histogram(
            "idnode_query_duration_seconds",
            "Time to answer one request inside the worker, sampled (one request in 64)",
            ["transport"],
            buckets=LATENCY_BUCKETS_S,
            registry=None,
        )
        self.tcp_connections = Gauge(
            "idnode_tcp_connections",
            "Open Handle TCP connections",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.flushes = Counter(  # not "counter_flushes": promtool refuses a metric type in a name
            "idnode_resolution_flushes",
            "Writes of resolution counts to the store, by result",
            ["result"],
            registry=None,
        )
        self.worker_restarts = Counter(
            "idnode_worker_restarts",
            "Workers restarted after they died or hung, by reason",
            ["reason"],
            registry=None,
        )
        self.reloads = Counter(
            "idnode_reloads", "Configuration reloads (SIGHUP), by result", ["result"], registry=None
        )
        self.workers = Gauge(
            "idnode_workers", "Worker processes running", multiprocess_mode="mostrecent", registry=None
        )
        self.security_failed = Counter(
            "idnode_security_events_failed",
            "Security events lost because the upload queue could not be written",
            registry=None,
        )
        self.security_failed_seen = 0  # this process's SecurityEvents.failed already counted
        self.http_bad_requests = Counter(
            "idnode_http_bad_requests",
            "HTTP requests refused as malformed by the parser (request line, headers, body framing)",
            registry=None,
        )


def enable(directory: str | Path, wipe: bool = False) -> Path:
    """Switch this process (and the children it forks later) to multiprocess metrics in `directory`.

    The supervisor calls it with `wipe` before forking: values of an earlier run would otherwise be added to
    this run's. Workers inherit the setting through the environment and the module state."""
    global _metrics
    path = Path(directory)
    if wipe and path.is_dir():
        for old in path.glob("*.db"):
            old.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    from prometheus_client import values

    # prometheus-client chooses its value class when first imported; choose again now that the directory
    # is known (metric objects read `values.ValueClass` when they are created).
    values.ValueClass = values.MultiProcessValue()
    _metrics = _Metrics()
    return path


def enabled() -> bool:
    return _metrics is not None


def process_dead(pid: int) -> None:
    """Forget the live gauges of a worker that exited (the supervisor calls it when it reaps one)."""
    if _metrics is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, os.environ.get(MULTIPROC_ENV))


def cleanup(directory: str | Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


# -- publishing (workers' housekeeping, supervisor) --------------------------------------------------------


def publish(stats: Any) -> None:
    """Move a worker's QueryStats into the metrics (once a second, from housekeeping)."""
    if _metrics is None:
        return
    from resolver.server.stats import code_names

    answers, latencies = stats.take()
    for transport, counts in answers.items():
        for key, n in counts.items():
            op, code = code_names(key)
            _metrics.queries.labels(transport, op, code).inc(n)
    for transport, samples in latencies.items():
        histogram = _metrics.latency.labels(transport)
        for seconds in samples:
            histogram.observe(seconds)
    _metrics.tcp_connections.set(stats.tcp_connections)


def publish_security(events: Any) -> None:
    """Count the security events this process could not queue (SecurityEvents.failed grows; from
    housekeeping, once a second)."""
    if _metrics is None:
        return
    failed = events.failed
    if failed > _metrics.security_failed_seen:
        _metrics.security_failed.inc(failed - _metrics.security_failed_seen)
        _metrics.security_failed_seen = failed


def count_query(transport: str, op: str, code: str, n: int = 1) -> None:
    """For transports that count with names rather than Handle header bytes (DNS, HTTP)."""
    if _metrics is not None:
        _metrics.queries.labels(transport, op, code).inc(n)


def http_bad_request() -> None:
    """One malformed HTTP request answered 400 (resolver/http/badrequests.py): rare, so counted at once."""
    if _metrics is not None:
        _metrics.http_bad_requests.inc()


def flush_result(ok: bool) -> None:
    if _metrics is not None:
        _metrics.flushes.labels("ok" if ok else "error").inc()


def worker_restarted(reason: str) -> None:
    if _metrics is not None:
        _metrics.worker_restarts.labels(reason).inc()


def reloaded(ok: bool) -> None:
    if _metrics is not None:
        _metrics.reloads.labels("ok" if ok else "failed").inc()


def set_workers(n: int) -> None:
    if _metrics is not None:
        _metrics.workers.set(n)


# -- scraping (the HTTP app) ----------------------------------------------------------------------------


class StoreCollector:
    """Figures read from the store at scrape time: identifiers, registrations and resolutions counted (the
    acceptance evidence, persisted), and how much disk the store uses and has left."""

    def __init__(self, store: Any):
        self.store = store

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from storage.counters import RESOLUTIONS, totals
        from storage.store import REGISTRATIONS

        store = self.store
        yield GaugeMetricFamily("idnode_identifiers", "Identifiers stored", value=store.count_identifiers())
        registered = totals(store, REGISTRATIONS)[0]
        yield CounterMetricFamily(
            "idnode_registrations", "Identifiers registered (persisted)", value=registered
        )
        resolutions = CounterMetricFamily(
            "idnode_resolutions",
            "Resolutions counted in the store (persisted), by protocol",
            labels=["protocol"],
        )
        for protocol, n in sorted(totals(store, RESOLUTIONS)[3].items()):
            resolutions.add_metric([protocol], n)
        yield resolutions
        sizes = store_sizes(store)
        yield GaugeMetricFamily(
            "idnode_store_file_bytes", "Size of data.mdb on disk", value=sizes["file_bytes"]
        )
        yield GaugeMetricFamily("idnode_store_used_bytes", "Pages the store uses", value=sizes["used_bytes"])
        yield GaugeMetricFamily("idnode_store_map_bytes", "Current LMDB map size", value=sizes["map_bytes"])
        yield GaugeMetricFamily(
            "idnode_data_free_bytes",
            "Free space in the data directory's file system",
            value=sizes["free_bytes"],
        )


class BuildInfoCollector:
    """`idnode_build_info{version,commit,python} 1`, the Prometheus convention for what is running: join on it
    to tell an upgraded node from one still on the old code."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from resolver import buildinfo

        info = GaugeMetricFamily(
            "idnode_build_info",
            "The idnode build serving: package version, git commit (empty if unknown), Python version",
            labels=["version", "commit", "python"],
        )
        info.add_metric([buildinfo.version(), buildinfo.commit(), buildinfo.python_version()], 1)
        yield info


class SecurityQueueCollector:
    """The security log upload queue at scrape time: events waiting for the collector, their bytes, and the
    events its bound dropped unsent (cumulative, persisted in the queue). `stats` is
    SecurityEvents.queue_stats of the scraping process, which may have the queue open (a second open of
    an LMDB environment in one process is not allowed); it returns None while the upload is off."""

    def __init__(self, stats: Any):
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            stats = self.stats()
        except Exception:  # a queue that cannot be read leaves its figures out, not the whole scrape
            return
        if stats is None:
            return
        yield GaugeMetricFamily(
            "idnode_security_queue_events", "Security events waiting to be sent", value=stats.events
        )
        yield GaugeMetricFamily(
            "idnode_security_queue_bytes", "Bytes of the security events waiting", value=stats.bytes
        )
        yield CounterMetricFamily(
            "idnode_security_events_dropped",
            "Security events dropped unsent by the queue's bound (oldest first)",
            value=stats.dropped,
        )
        yield CounterMetricFamily(
            "idnode_security_events_queued", "Security events ever queued", value=stats.appended
        )


class ClusterCollector:
    """A cluster member's place in the log, from the status its writer writes every second
    (resolver/cluster/member.py): the position applied here, the stream's last, the lag between them, and
    whether the member is applying (1) or not (0: NATS unreachable, or the apply loop stopped). Nothing for a
    node on its own."""

    STALE_S = 10.0  #: a status older than this (the writer hung or died) reports the member as not applying

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from resolver.cluster.status import READY, read_status

        status = read_status(self.data_dir)
        if status is None:
            return
        node = [status["node"]]
        for name, help_text, key in (
            ("idnode_cluster_applied_position", "Write-log position applied to this member's store", "applied"),
            ("idnode_cluster_log_position", "Last position of the cluster's write log (JetStream stream)",
             "stream_last"),
            ("idnode_cluster_lag_entries", "Entries of the cluster's log not yet applied here", "lag"),
        ):  # fmt: skip
            family = GaugeMetricFamily(name, help_text, labels=["node"])
            family.add_metric(node, status[key])
            yield family
        fresh = time.time() - status["time"] < self.STALE_S
        applying = GaugeMetricFamily(
            "idnode_cluster_applying", "1 while this member is connected to the log and applying it", labels=["node"]
        )
        applying.add_metric(node, 1 if fresh and status["state"] == READY else 0)
        yield applying


def store_sizes(store: Any) -> dict[str, int]:
    info, stat = store.env.info(), store.env.stat()
    data = Path(store.path) / "data.mdb"
    fs = os.statvfs(store.path)
    return {
        "file_bytes": data.stat().st_size if data.exists() else 0,
        "used_bytes": (info["last_pgno"] + 1) * stat["psize"],
        "map_bytes": info["map_size"],
        "free_bytes": fs.f_bavail * fs.f_frsize,
    }


def metrics_response(
    store: Any = None, directory: str | Path | None = None, security_queue: Any = None
) -> tuple[bytes, str]:
    """(body, content type) of GET /metrics: every process's metrics merged (from `directory`, default
    $PROMETHEUS_MULTIPROC_DIR, which the supervisor sets for its workers), plus the store's figures and,
    with `security_queue` (a function returning QueueStats or None), the security log queue's."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    directory = directory or os.environ.get(MULTIPROC_ENV)
    if directory and os.path.isdir(directory):
        MultiProcessCollector(registry, path=str(directory))
    registry.register(BuildInfoCollector())
    if store is not None:
        registry.register(StoreCollector(store))
        registry.register(ClusterCollector(Path(store.path)))
    if security_queue is not None:
        registry.register(SecurityQueueCollector(security_queue))
    return generate_latest(registry), CONTENT_TYPE_LATEST


# -- health ---------------------------------------------------------------------------------------------


@dataclass
class WorkerHealth:
    """What a worker knows about itself; the worker updates it, the health answers read it."""

    flush_interval_s: float = 2.0
    listening: bool = False  # every listener is bound
    draining: bool = False  # told to stop: other workers take new requests
    started_s: float = field(default_factory=time.monotonic)
    housekeeping_s: float = field(default_factory=time.monotonic)  # last housekeeping pass
    flushed_s: float = field(default_factory=time.monotonic)  # last successful flush of counts
    flush_error: str = ""


@dataclass(frozen=True)
class HealthAnswer:
    status: int  # HTTP status: 200 or 503
    checks: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200

    def body(self) -> bytes:
        return json.dumps(
            {"status": "ok" if self.ok else "fail", "checks": self.checks}, sort_keys=True
        ).encode()

    content_type = JSON_CONTENT_TYPE


def healthz(state: WorkerHealth, now_s: float | None = None) -> HealthAnswer:
    """Liveness: the worker's loop runs (it answers this) and its housekeeping is not stuck. Failing it
    means "restart me"; disk or store trouble does not fail it, since a restart would not help."""
    now = time.monotonic() if now_s is None else now_s
    housekeeping_age = now - state.housekeeping_s
    alive = housekeeping_age < HOUSEKEEPING_STALE_S
    checks = {"housekeeping_age_s": round(housekeeping_age, 3), "pid": os.getpid()}
    return HealthAnswer(200 if alive else 503, checks)


def readyz(state: WorkerHealth, store: Any = None, now_s: float | None = None) -> HealthAnswer:
    """Readiness: listeners bound, not draining, store readable. Counts that cannot be flushed and low disk
    are reported (`degraded`) without failing: the node still resolves, and taking it out of service would
    lose answers rather than save counts."""
    now = time.monotonic() if now_s is None else now_s
    checks: dict[str, Any] = {"listening": state.listening, "draining": state.draining}
    ready = state.listening and not state.draining
    degraded: list[str] = []
    if store is not None:
        try:
            checks["identifiers"] = store.count_identifiers()
            checks["store"] = "ok"
        except Exception as exc:  # any failure to read is the answer, not an error of the endpoint
            checks["store"] = f"unreadable: {exc}"
            ready = False
        try:
            fs = os.statvfs(store.path)
            free = fs.f_bavail * fs.f_frsize
            checks["data_free_bytes"] = free
            if free < LOW_DISK_BYTES:
                degraded.append("low disk space in the data directory")
        except OSError as exc:
            degraded.append(f"cannot measure disk space: {exc}")
    flush_age = now - state.flushed_s
    checks["counts_flushed_age_s"] = round(flush_age, 3)
    if flush_age > FLUSH_STALE_INTERVALS * state.flush_interval_s:
        degraded.append(
            f"resolution counts not flushed for {flush_age:.0f} s: {state.flush_error or 'unknown'}"
        )
    if degraded:
        checks["degraded"] = degraded
    return HealthAnswer(200 if ready else 503, checks)
