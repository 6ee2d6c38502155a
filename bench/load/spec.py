"""What a load run is asked to do (:class:`LoadSpec`), the bounds it must stay within, and the checks that refuse
anything else with a message naming the setting. Imports nothing of the server."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.datagen import DEFAULT_ENTERPRISES, DEFAULT_PREFIX

#: Handle over UDP, Handle over TCP, the DNS view over UDP, the REST API over HTTP.
PROTOCOLS = ("udp", "tcp", "dns", "http")
POPULARITIES = ("uniform", "zipf")
DNS_QTYPES = ("TXT", "URI", "alternate")  #: alternate: TXT and URI by turns, as bench/compare.py asks dnsperf

REQUEST_TIMEOUT_S = 1.0  #: an answer later than this means a lost request; loopback answers take < 10 ms
DEFAULT_POOL_SIZE = 1 << 16  #: pre-encoded requests per process; a power of two (indexed by a mask)
DEFAULT_DURATION_S = 10.0
MAX_DURATION_S = 3600.0  #: a run is a benchmark, not a flood: refuse anything longer than an hour
MAX_COUNT = 1_000_000_000  #: answers; at 100k/s nearly three hours, so MAX_DURATION_S stops it first
MAX_RATE_PER_S = 10_000_000.0  #: far beyond what one Python process sends; catches a typo of a few zeros
MAX_SOCKETS_PER_PROCESS = 4096  #: file descriptors are finite; 64-256 already spread well over SO_REUSEPORT
MAX_WINDOW = 1024  #: per socket; beyond a few dozen the server's receive buffer only fills up and drops
MAX_PROCESSES = 256  #: one per core is the useful most

#: Sockets (UDP) or connections (TCP) per process, and requests outstanding on each, when not given. HTTP is not
#: pipelined (the node answers one request of a connection at a time), so its window is 1 and concurrency comes
#: from connections, kept below the node's per-source cap (http_max_connections_per_source = 128 a worker).
DEFAULT_SOCKETS = {"udp": 64, "dns": 64, "tcp": 16, "http": 32}
DEFAULT_WINDOW = {"udp": 4, "dns": 4, "tcp": 16, "http": 1}


class LoadGenError(Exception):
    """The load could not be generated (bad arguments, a process failed or hung)."""


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """The synthetic data set the server was loaded with (the arguments of ``idnode gen``)."""

    count: int
    seed: int = 1
    prefix: str = DEFAULT_PREFIX
    enterprises: int = DEFAULT_ENTERPRISES


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One load run, bounded by ``duration_s`` measured seconds (default 10) or by ``count`` measured answers
    (then ``duration_s`` is only the longest it may take, default MAX_DURATION_S). ``rate`` set: open loop at
    that many requests per second over all processes; unset: closed loop with ``window`` requests outstanding
    per socket."""

    protocol: str
    host: str
    port: int
    handles: Sequence[str] | DatasetSpec
    duration_s: float | None = None
    count: int | None = None
    warmup_s: float = 2.0
    processes: int = 1
    sockets: int | None = None  #: per process; None: DEFAULT_SOCKETS of the protocol
    window: int | None = None  #: per socket, closed loop; None: DEFAULT_WINDOW of the protocol
    rate: float | None = None
    missing_ratio: float = 0.0
    popularity: str = "uniform"
    zipf_s: float = 1.0
    seed: int = 1
    timeout_s: float = REQUEST_TIMEOUT_S
    pool_size: int = DEFAULT_POOL_SIZE
    dns_zone: str = "id.test."
    dns_qtype: str = "alternate"
    extra: dict = field(default_factory=dict, compare=False)  #: notes carried into the result's settings

    def __post_init__(self) -> None:
        if self.duration_s is None:
            object.__setattr__(
                self, "duration_s", DEFAULT_DURATION_S if self.count is None else MAX_DURATION_S
            )
        if self.protocol in PROTOCOLS:
            if self.sockets is None:
                object.__setattr__(self, "sockets", DEFAULT_SOCKETS[self.protocol])
            if self.window is None:
                object.__setattr__(self, "window", DEFAULT_WINDOW[self.protocol])
        if not isinstance(self.handles, DatasetSpec):
            object.__setattr__(self, "handles", list(self.handles))

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    def check(self) -> None:  # noqa: C901 - one flat list of rules reads best
        """Raise :class:`LoadGenError` naming the first setting that is out of bounds."""
        problems = []
        if self.protocol not in PROTOCOLS:
            problems.append(f"protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            problems.append(f"duration must lie within (0, {MAX_DURATION_S:g}] seconds")
        if not 0 <= self.warmup_s <= MAX_DURATION_S:
            problems.append(f"warm-up must lie within [0, {MAX_DURATION_S:g}] seconds")
        if self.count is not None and not 1 <= self.count <= MAX_COUNT:
            problems.append(f"count must be a whole number of answers within 1..{MAX_COUNT:,}")
        if not 1 <= self.processes <= MAX_PROCESSES:
            problems.append(f"processes must lie within 1..{MAX_PROCESSES}")
        if self.count is not None and self.count < self.processes:
            problems.append(f"count {self.count} is below the {self.processes} processes that share it")
        if not 1 <= (self.sockets or 0) <= MAX_SOCKETS_PER_PROCESS:
            problems.append(f"sockets must lie within 1..{MAX_SOCKETS_PER_PROCESS} per process")
        if not 1 <= (self.window or 0) <= MAX_WINDOW:
            problems.append(f"window must lie within 1..{MAX_WINDOW}")
        if self.protocol == "http" and self.window != 1:
            problems.append(
                "HTTP requests are not pipelined: the window must be 1 (use more sockets instead)"
            )
        if self.rate is not None and not (0 < self.rate <= MAX_RATE_PER_S and math.isfinite(self.rate)):
            problems.append(f"rate must lie within (0, {MAX_RATE_PER_S:,.0f}] requests per second")
        if not 0.0 <= self.missing_ratio <= 1.0:
            problems.append(f"missing ratio {self.missing_ratio} is not between 0 and 1")
        if self.popularity not in POPULARITIES:
            problems.append(f"popularity {self.popularity!r} is not one of {', '.join(POPULARITIES)}")
        if not (0 < self.zipf_s <= 10 and math.isfinite(self.zipf_s)):
            problems.append("the Zipf exponent must lie within (0, 10]")
        if self.timeout_s <= 0:
            problems.append("timeout must be positive")
        if self.pool_size < 1 or self.pool_size & (self.pool_size - 1):
            problems.append(f"pool size {self.pool_size} is not a power of two")
        if self.dns_qtype not in DNS_QTYPES:
            problems.append(f"DNS query type {self.dns_qtype!r} is not one of {', '.join(DNS_QTYPES)}")
        handles = self.handles
        if isinstance(handles, DatasetSpec):
            if handles.count < 1 and self.missing_ratio < 1.0:
                problems.append("the data set is empty")
        elif not handles:
            problems.append("no handles to ask for")
        if problems:
            raise LoadGenError("; ".join(problems))

    def share(self, index: int) -> tuple[float | None, int | None]:
        """Process ``index``'s part of the rate and of the count (the count split as evenly as it goes)."""
        rate = self.rate / self.processes if self.rate is not None else None
        if self.count is None:
            return rate, None
        part, extra = divmod(self.count, self.processes)
        return rate, part + (1 if index < extra else 0)
