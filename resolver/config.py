"""Settings of `idnode serve`, typed and defaulted in one place (the CLI fills them)."""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from resolver.cpus import parse_cpu_list
from resolver.security.config import SecurityLogConfig
from resolver.tls import server_context

DEFAULT_HANDLE_PORT = 2641  #: IANA port of the Handle System
DEFAULT_HTTP_PORT = 8000  #: the reference server's HTTP port (handle-protocol.md, transports)
DEFAULT_DNS_PORT = 8053  #: unprivileged DNS port for development; 53 under systemd
DEFAULT_DNS_ZONE = "id.test."  #: the zone identifiers appear under in the DNS view
DNS_NOTIFY_PORT = 53  #: RFC 1035 §4.2: where a `dns_notify` secondary listens when its entry names no port
UDP_RATE_LIMIT_PER_S = 1000.0  #: far above what one real client asks, far below a flood
UDP_RATE_BURST = 2000.0  #: a client resolving a list in one go is not throttled
RATE_LIMIT_EXEMPT = ("127.0.0.0/8", "::1/128")  #: loopback: local tools and load tests measure the node
UDP_AMPLIFICATION_FACTOR = 10.0  #: a multi-datagram UDP answer may be this many times its request (unproven sources)
TCP_MAX_CONNECTIONS = 10_000  #: open TCP connections per worker (each costs a little memory)
TCP_MAX_CONNECTIONS_PER_SOURCE = 256  #: one address cannot take every connection
RATE_LIMIT_ACTIONS = ("drop", "busy")
HTTP_IDLE_TIMEOUT_S = 15.0  #: an idle HTTP connection, or one that has not finished its request head, is closed
HTTP_MAX_CONNECTIONS = 1024  #: open HTTP connections per worker (an aiohttp connection costs tens of KiB)
HTTP_MAX_CONNECTIONS_PER_SOURCE = 128  #: a browser opens 6, an enterprise node's pool a few dozen
MAX_DNS_ZONE_BYTES = 64  #: leaves room for readable identifier names; longer keys are indexed by digest (storage)
DEFAULT_NODE_PREFIX = "88.100"  #: the secondary node's own prefix; enterprises live under it
#: The DNS view's memos per worker (resolver/dnsview/memo.py): about 1 KB per identifier asked for both TXT
#: and URI, so 256 MiB keeps the answers of some 250,000 popular identifiers. Kept here, not taken from
#: resolver.dnsview, so that reading the configuration does not import the DNS code.
DNS_MEMO_MB = 256
TCP_IDLE_TIMEOUT_S = 60.0  #: ID-SDK keeps one connection for all its requests; close only when it falls silent
COUNTER_FLUSH_INTERVAL_S = 2.0  #: resolution counts reach the store this often (and at shutdown)
PREFIX_RELOAD_INTERVAL_S = 1.0  #: how soon a prefix added or changed elsewhere is seen by every worker
STOP_GRACE_S = 10.0  #: how long a stopping or replaced worker may drain and flush before SIGKILL
#: Write-log retention (storage/log.py keeps the same defaults; config does not import the store): applied
#: entries stay for IXFR and catching-up members, at most this many and at most this long.
LOG_RETENTION_ENTRIES = 1_000_000
LOG_RETENTION_S = 7 * 86_400.0
#: The writer runs at this nice increment: on a busy core the serving workers come first, and writes (answered
#: after they are applied, parsed there when they are HTTP batches) take the CPU the resolutions leave.
WRITER_NICE = 5
CLUSTER_REPLICAS = 3  #: the log survives the loss of one NATS server (a quorum of two stays)
CLUSTER_STREAM = "IDNODE_LOG"  #: the JetStream stream of the cluster's write log
RECURSION_TIMEOUT_S = 3.0  #: an enterprise node's answer is awaited this long; the SDKs wait about 5 s
PROBE_INTERVAL_S = 60.0  #: enterprise nodes are probed once a minute (issue 13)
RECURSION_MODES = ("off", "on-request", "always")  #: accepted `recursion` values
LOG_LEVELS = ("debug", "info", "warning", "error")  #: accepted `log_level` values
LOG_FORMATS = ("text", "json")  #: `text` for a terminal, `json` (an object a line) for journald and shippers


def notify_target(text: str) -> tuple[str, int]:
    """(address, port) of a `dns_notify` entry: `192.0.2.7`, `192.0.2.7:5300`, `2001:db8::7` or
    `[2001:db8::7]:5300` (port 53 when none is given). ValueError naming the setting otherwise."""
    host, port = text.strip(), DNS_NOTIFY_PORT
    if host.startswith("["):
        inside, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"dns_notify: {text!r} is not [address]:port")
        host, port_text = inside, rest[1:]
        if rest:
            port = _port(text, port_text)
    elif host.count(":") == 1:
        host, port_text = host.split(":")
        port = _port(text, port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"dns_notify: {text!r} is not an address, address:port or [address]:port") from exc
    return host, port


def _port(text: str, port_text: str) -> int:
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"dns_notify: {text!r} has no valid port")
    return int(port_text)


@dataclass
class ServeConfig:
    data_dir: Path
    binds: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    handle_port: int = DEFAULT_HANDLE_PORT
    http_port: int | None = None  # None: no HTTP listener
    dns_port: int | None = None  # None: no DNS listener
    dns_zone: str = DEFAULT_DNS_ZONE
    dns_memo_mb: int = DNS_MEMO_MB  # per worker: rendered records and whole answers of the DNS view (0: none)
    dns_transfer_allow: list[str] = field(default_factory=list)  # addresses/networks allowed AXFR and IXFR
    dns_notify: list[str] = field(default_factory=list)  # secondaries sent NOTIFY on change: "addr[:port]"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    # processes serving HTTP alone (the API, its batch writes, the pages); 0: the workers serve HTTP too
    http_workers: int = 0
    node_prefix: str = DEFAULT_NODE_PREFIX
    site_address: str | None = None  # the address published in the node's HS_SITE; default: first bind
    tcp_idle_timeout_s: float = TCP_IDLE_TIMEOUT_S
    counter_flush_interval_s: float = COUNTER_FLUSH_INTERVAL_S
    prefix_reload_interval_s: float = PREFIX_RELOAD_INTERVAL_S
    stop_grace_s: float = STOP_GRACE_S
    log_level: str = "info"
    log_format: str = "text"
    access_log_sample: float = 0.0  # share of answered requests written to the access log (0: none, 1: all)
    metrics_dir: str = ""  # prometheus-client multiprocess files; empty: a private temporary directory
    udp_rate_limit_per_s: float = UDP_RATE_LIMIT_PER_S  # per source address, UDP requests (0: no limit)
    udp_rate_burst: float = UDP_RATE_BURST  # requests a source may send at once before the rate applies
    udp_rate_limit_action: str = "drop"  # "drop" or "busy" (answer SERVER_TOO_BUSY)
    rate_limit_exempt: list[str] = field(default_factory=lambda: list(RATE_LIMIT_EXEMPT))
    udp_amplification_factor: float = UDP_AMPLIFICATION_FACTOR  # 0: no bound
    udp_batch: bool = True  # recvmmsg/sendmmsg batches for Handle UDP where built (Linux); false: loop transport
    udp_c_answers: bool = True  # in batches, plain resolutions answered by the extension; false: all in Python
    tcp_max_connections: int = TCP_MAX_CONNECTIONS  # per worker
    tcp_max_connections_per_source: int = TCP_MAX_CONNECTIONS_PER_SOURCE  # per worker and source address
    http_tls_cert: Path | None = None  # PEM certificate chain; with http_tls_key the HTTP port speaks HTTPS only
    http_tls_key: Path | None = None  # PEM private key of http_tls_cert
    http_idle_timeout_s: float = HTTP_IDLE_TIMEOUT_S
    http_max_connections: int = HTTP_MAX_CONNECTIONS  # per worker
    http_max_connections_per_source: int = HTTP_MAX_CONNECTIONS_PER_SOURCE  # per worker and source address
    writer_socket: str = ""  # the writer's Unix socket; empty: writer.sock in the data directory
    writer_nice: int = WRITER_NICE  # CPU priority of the writer process (nice increment, 0-19)
    writer_cpus: str = ""  # CPUs of the writer and of loads into the served store, "1" or "2-3" (empty: any)
    worker_cpus: str = ""  # CPUs of the serving workers, "0" or "0,2-5" (empty: any)
    http_cpus: str = ""  # CPUs of the HTTP workers (with http_workers), "1" or "2-3" (empty: any)
    log_retention_entries: int = LOG_RETENTION_ENTRIES  # applied write-log entries kept, at most
    log_retention_s: float = LOG_RETENTION_S  # ... and for at most this long
    # referred prefixes: "on-request" resolves REC requests at the enterprise node, "always" every request,
    # "off" answers 302 (resolver/recursion)
    recursion: str = "on-request"
    recursion_timeout_s: float = RECURSION_TIMEOUT_S  # one question to an enterprise node, UDP then TCP
    probe_interval_s: float = PROBE_INTERVAL_S  # GET_SITE_INFO to every enterprise node this often (0: never)
    # the [cluster] table (read as cluster_<name>): with `nats` set, the write log is a NATS JetStream stream
    # shared by every member (resolver/cluster/); empty: one machine, the log in the node's own store
    cluster_nats: list[str] = field(default_factory=list)  # nats://host:port of the NATS servers
    cluster_node: str = ""  # this member's id, unique in the cluster; empty: the host name
    cluster_replicas: int = CLUSTER_REPLICAS  # copies of the log JetStream keeps (created with the stream)
    cluster_stream: str = CLUSTER_STREAM  # the stream's name: two clusters may share one NATS cluster
    # the [security_log] table: upload of security events to the regional platform (off without a collector)
    security_log: SecurityLogConfig = field(default_factory=SecurityLogConfig)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.workers < 1:
            raise ValueError("workers: at least 1")
        for name in ("handle_port", "http_port", "dns_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{name.replace('_', ' ')}: {port} is not a port number")
        if self.dns_memo_mb < 0:
            raise ValueError("dns_memo_mb: must be 0 (no memo) or positive")
        for network in self.dns_transfer_allow:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"dns_transfer_allow: {network!r} is not an address or network") from exc
        for target in self.dns_notify:
            notify_target(target)
        if self.tcp_idle_timeout_s <= 0:
            raise ValueError("tcp idle timeout: must be positive")
        for name in ("counter_flush_interval_s", "prefix_reload_interval_s", "stop_grace_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        self.log_level = self.log_level.lower()
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format: {self.log_format!r} is not one of {', '.join(LOG_FORMATS)}")
        if not 0.0 <= self.access_log_sample <= 1.0:
            raise ValueError(f"access_log_sample: {self.access_log_sample} is not between 0 and 1")
        if not self.binds:
            raise ValueError("binds: at least one address")
        if self.udp_rate_limit_per_s < 0 or (self.udp_rate_limit_per_s and self.udp_rate_burst < 1):
            raise ValueError("udp_rate_limit_per_s: must be 0 (off) or positive, with udp_rate_burst at least 1")
        if self.udp_rate_limit_action not in RATE_LIMIT_ACTIONS:
            raise ValueError(f"udp_rate_limit_action: {self.udp_rate_limit_action!r} is not one of drop, busy")
        for network in self.rate_limit_exempt:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"rate_limit_exempt: {network!r} is not a network") from exc
        if self.udp_amplification_factor < 0:
            raise ValueError("udp_amplification_factor: must be 0 (off) or positive")
        if self.tcp_max_connections < 1 or self.tcp_max_connections_per_source < 1:
            raise ValueError("tcp_max_connections, tcp_max_connections_per_source: at least 1")
        if not 0 <= self.writer_nice <= 19:
            raise ValueError("writer_nice: 0 to 19 (a nice increment)")
        parse_cpu_list(self.writer_cpus, "writer_cpus")
        parse_cpu_list(self.worker_cpus, "worker_cpus")
        parse_cpu_list(self.http_cpus, "http_cpus")
        if self.http_workers < 0:
            raise ValueError("http_workers: 0 (the workers serve HTTP) or more")
        if self.http_workers and self.http_port is None:
            raise ValueError("http_workers: the node serves no HTTP (http_port is not set)")
        if self.log_retention_entries < 0 or self.log_retention_s < 0:
            raise ValueError("log_retention_entries, log_retention_s: must not be negative")
        if self.http_idle_timeout_s <= 0:
            raise ValueError("http_idle_timeout_s: must be positive")
        if self.recursion not in RECURSION_MODES:
            raise ValueError(f"recursion: {self.recursion!r} is not one of {', '.join(RECURSION_MODES)}")
        if not 0 < self.recursion_timeout_s <= 60:
            raise ValueError("recursion_timeout_s: more than 0, at most 60 seconds")
        if self.probe_interval_s < 0:
            raise ValueError("probe_interval_s: 0 (no probing) or positive")
        if self.http_max_connections < 1 or self.http_max_connections_per_source < 1:
            raise ValueError("http_max_connections, http_max_connections_per_source: at least 1")
        if (self.http_tls_cert is None) != (self.http_tls_key is None):
            raise ValueError("http_tls_cert: give http_tls_cert and http_tls_key together")
        for url in self.cluster_nats:
            if not url.startswith(("nats://", "tls://")) or "://" == url[-3:]:
                raise ValueError(f"cluster.nats: {url!r} is not nats://host:port")
        if self.cluster_nats and not 1 <= self.cluster_replicas <= 5:
            raise ValueError("cluster.replicas: 1 to 5 (JetStream's limit); 3 survives the loss of one server")
        if self.cluster_node and not all(c.isalnum() or c in "-_." for c in self.cluster_node):
            raise ValueError(f"cluster.node: {self.cluster_node!r}: letters, digits, '-', '_' or '.'")
        zone = self.dns_zone.rstrip(".")
        if not zone or len(zone) > MAX_DNS_ZONE_BYTES or any(not 0 < len(label) < 64 for label in zone.split(".")):
            raise ValueError(f"dns_zone: {self.dns_zone!r} is not a DNS name of at most {MAX_DNS_ZONE_BYTES} bytes")
        for bind in self.binds:
            try:
                ipaddress.ip_address(bind)
            except ValueError as exc:
                raise ValueError(f"bind: {bind!r} is not an IP address") from exc
        if self.site_address:
            try:
                published = ipaddress.ip_address(self.site_address)
            except ValueError as exc:
                raise ValueError(f"site_address: {self.site_address!r} is not an IP address") from exc
            if published.is_unspecified:
                raise ValueError(f"site_address: {self.site_address} is no address a client can connect to")

    @property
    def clustered(self) -> bool:
        return bool(self.cluster_nats)

    @property
    def node_id(self) -> str:
        """This member's id in the cluster: `cluster_node`, else the host name."""
        import socket

        return self.cluster_node or socket.gethostname().split(".")[0]

    def check_site_address(self) -> None:
        """Refuse (ValueError naming `site_address`) a node that cannot tell clients where it is: one that
        listens on a wildcard (0.0.0.0, ::) or a non-loopback address without `site_address` would publish
        loopback, or a guess among its addresses, in its HS_SITE, and clients that follow it would go astray.
        Loopback-only nodes (development, tests) publish their first bind."""
        if self.site_address:
            return
        public = [b for b in self.binds if not ipaddress.ip_address(b).is_loopback]
        if public:
            raise ValueError(
                f"site_address: not set, and the node listens on {', '.join(public)}, so its HS_SITE cannot "
                "say where clients reach it: set site_address in the configuration file, --site-address or "
                "IDNODE_SITE_ADDRESS to the address clients connect to"
            )

    def http_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the HTTP port, or None for plain HTTP. Reads the files: TlsSettingError (a
        ValueError naming the key) when they are missing, unreadable or do not match."""
        if self.http_tls_cert is None or self.http_tls_key is None:
            return None
        return server_context(Path(self.http_tls_cert), Path(self.http_tls_key))

    @property
    def published_address(self) -> str:
        """The address clients are told to use: `site_address`, else the first bind (`check_site_address`
        refuses to serve a wildcard or public bind without `site_address`; built directly, as in tests, an
        unspecified bind publishes loopback)."""
        if self.site_address:
            return self.site_address
        address = ipaddress.ip_address(self.binds[0])
        if address.is_unspecified:
            return "::1" if address.version == 6 else "127.0.0.1"
        return str(address)
