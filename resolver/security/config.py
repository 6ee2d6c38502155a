"""Settings of the security log upload, typed, defaulted and checked in one place. The configuration loader fills
`SecurityLogConfig` from the `[security_log]` table of the TOML file (`from_mapping`); nothing here reads files
or the environment. Imports only the standard library.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: octet-counted TCP (RFC 6587), TLS (RFC 5425), UDP datagrams (RFC 5426), RELP (rsyslog's imrelp) and RELP
#: inside TLS (imrelp's tls="on")
TRANSPORTS = ("tcp", "tls", "udp", "relp", "relp-tls")
TLS_TRANSPORTS = ("tls", "relp-tls")  #: the TLS ones: they take ca_file, cert_file, key_file, server_name
#: 6514/tls and 514/udp are IANA's; 514/tcp is custom; RELP has no IANA port, 2514 is rsyslog's documented one
DEFAULT_PORTS = {"tcp": 514, "tls": 6514, "udp": 514, "relp": 2514, "relp-tls": 2514}
DEFAULT_QUEUE_MAX_BYTES = 64 << 20  #: ~200,000 events of ~300 B: a busy day of writes, platform away
DEFAULT_QUEUE_MAX_EVENTS = 500_000  #: bounds the queue's entry count whatever the event size
MIN_QUEUE_MAX_BYTES = 64 << 10  #: room for a few of the largest events (8 KiB each)
DEFAULT_QUEUE_SUBDIR = "security-queue"  #: the queue directory under the data directory when none is named
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14, "clock": 15,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22,
    "local7": 23,
}  # fmt: skip  # RFC 5424 §6.2.1, table 1


@dataclass
class SecurityLogConfig:
    """Where and how security events are uploaded. An empty `collector` turns the upload off (events are then
    not even queued); the audit trail in the store does not depend on it."""

    collector: str = ""  # HOST[:PORT] of the syslog collector; IPv6 as [ADDR]:PORT; empty: upload off
    transport: str = "tcp"  # tcp | tls | udp | relp | relp-tls
    ca_file: str = ""  # TLS: CA bundle the collector's certificate must chain to (empty: the system's CAs)
    cert_file: str = ""  # TLS: this node's client certificate (PEM), for collectors that require one
    key_file: str = ""  # TLS: its private key (PEM); empty: the key is in cert_file
    server_name: str = ""  # TLS: name the collector's certificate must carry (empty: the collector's host)
    queue_dir: str = ""  # where events wait for the collector; empty: <data_dir>/security-queue
    queue_max_bytes: int = DEFAULT_QUEUE_MAX_BYTES  # bound of the queue; beyond it the oldest are dropped
    queue_max_events: int = DEFAULT_QUEUE_MAX_EVENTS  # the same bound counted in events
    fsync_interval_s: float = 1.0  # queued events reach the disk at least this often (0: at every append)
    facility: str = "authpriv"  # syslog facility of every message (RFC 5424 §6.2.1)
    hostname: str = ""  # HOSTNAME of the messages; empty: this machine's name
    node_id: str = ""  # every message's JSON carries it as "node" (e.g. the node prefix 88.100)
    summary_interval_s: float = 300.0  # resolution summaries per prefix are sent this often
    reconnect_initial_s: float = 0.5  # first wait after the collector could not be reached; doubles each time
    reconnect_max_s: float = 30.0  # longest wait between attempts
    connect_timeout_s: float = 5.0  # TCP connect and TLS handshake
    send_timeout_s: float = 10.0  # tcp, tls: a batch TCP-acknowledged; relp: the wait for a 200 OK

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(
                f"security_log.transport: {self.transport!r} is not one of {', '.join(TRANSPORTS)}"
            )
        if self.facility not in FACILITIES:
            raise ValueError(f"security_log.facility: {self.facility!r} is not a syslog facility name")
        if self.collector:
            self.address  # noqa: B018  # raises ValueError for a malformed collector
        if self.queue_max_bytes < MIN_QUEUE_MAX_BYTES:
            raise ValueError(f"security_log.queue_max_bytes: at least {MIN_QUEUE_MAX_BYTES}")
        if self.queue_max_events < 1:
            raise ValueError("security_log.queue_max_events: at least 1")
        for name in ("fsync_interval_s",):
            if getattr(self, name) < 0:
                raise ValueError(f"security_log.{name}: must not be negative")
        for name in ("summary_interval_s", "reconnect_initial_s", "reconnect_max_s", "connect_timeout_s",
                     "send_timeout_s"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"security_log.{name}: must be positive")
        if self.transport not in TLS_TRANSPORTS and (self.ca_file or self.cert_file or self.key_file):
            raise ValueError(
                'security_log: ca_file, cert_file and key_file need transport = "tls" or "relp-tls"'
            )
        if self.key_file and not self.cert_file:
            raise ValueError("security_log.key_file: given without cert_file")

    @property
    def enabled(self) -> bool:
        return bool(self.collector)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the collector; the port defaults by transport."""
        text = self.collector.strip()
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"security_log.collector: {self.collector!r} is not [ADDR]:PORT")
            port_text = rest[1:]
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
        else:
            host, port_text = text, ""  # a bare host name, IPv4 or IPv6 address
        if not host:
            raise ValueError(f"security_log.collector: {self.collector!r} names no host")
        if not port_text:
            return host, DEFAULT_PORTS[self.transport]
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"security_log.collector: {port_text!r} is not a port number")
        return host, int(port_text)

    @property
    def facility_code(self) -> int:
        return FACILITIES[self.facility]

    def queue_path(self, data_dir: str | Path) -> Path:
        return Path(self.queue_dir) if self.queue_dir else Path(data_dir) / DEFAULT_QUEUE_SUBDIR

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SecurityLogConfig:
        """From the `[security_log]` table of the TOML file; unknown keys are refused by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"security_log: unknown setting {', '.join(map(repr, unknown))}")
        for name, value in values.items():
            expected = type(next(f.default for f in dataclasses.fields(cls) if f.name == name))
            ok = isinstance(value, expected) and not isinstance(value, bool)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ValueError(f"security_log.{name}: {value!r} is not {expected.__name__}")
        converted: dict[str, Any] = {
            k: float(v) if isinstance(v, int) and k.endswith("_s") else v for k, v in values.items()
        }
        return cls(**converted)

    def to_args(self) -> list[str]:
        """The settings that differ from the defaults as `idnode seclog export` flags (`add_arguments`)."""
        out: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                out += [_flag(f.name), str(value)]
        return out

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per setting: --collector, --transport, --ca-file, ..., --summary-interval-s."""
        for f in dataclasses.fields(cls):
            kind = type(f.default)
            parser.add_argument(_flag(f.name), dest=f"security_log_{f.name}", type=kind, default=None,
                                metavar={str: "TEXT", int: "N", float: "SECONDS"}[kind],
                                help=f"security_log.{f.name} (default {f.default!r})")  # fmt: skip

    @classmethod
    def from_args(cls, args: argparse.Namespace, base: SecurityLogConfig | None = None) -> SecurityLogConfig:
        """`base` (or the defaults) with the flags of `add_arguments` that were given."""
        values = dataclasses.asdict(base) if base is not None else {}
        for f in dataclasses.fields(cls):
            given = getattr(args, f"security_log_{f.name}", None)
            if given is not None:
                values[f.name] = given
        return cls(**values)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
