"""What a worker counts per request, kept cheap enough for the UDP hot path: one dict increment keyed by the
answer's op code and response code bytes, and a countdown that picks one request in `sample_every` to be timed
(and, when the access log is on, perhaps logged). Housekeeping hands the counts to `resolver.metrics` once a
second; nothing here touches Prometheus, files or the store.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict

from resolver.handle.constants import ENVELOPE_BYTES, OpCode
from resolver.logs import ACCESS_LOGGER

access_log = logging.getLogger(ACCESS_LOGGER)

LATENCY_SAMPLE_EVERY = 64  #: one request in this many is timed: enough for percentiles, cheap at 100k/s
MAX_PENDING_SAMPLES = 8192  #: latency samples kept between two publications (bounded if housekeeping stalls)
CODES_AT = slice(ENVELOPE_BYTES, ENVELOPE_BYTES + 8)  #: op code and response code, first in the header
NO_ANSWER = b""  #: counting key of a request that got no answer (dropped, or a piece of a longer one)
RCODE_LOW_BYTE_AT = ENVELOPE_BYTES + 7  #: last byte of an answer's response code: one index to look at
PROTOCOL_ERROR_LOW_BYTE = 4  #: ... is this for PROTOCOL_ERROR (4) and for no other response code
_PROTOCOL_ERROR = b"\x00\x00\x00\x04"  # ResponseCode.PROTOCOL_ERROR as the header has it (u32, big-endian)


def is_protocol_error(answer: bytes) -> bool:
    """Whether an answer says PROTOCOL_ERROR: its request was malformed (the security log counts them). The
    hot path first compares the byte at RCODE_LOW_BYTE_AT, which rules out nearly every answer at once."""
    return answer[ENVELOPE_BYTES + 4 : ENVELOPE_BYTES + 8] == _PROTOCOL_ERROR


class QueryStats:
    """One worker's request counts per transport, and sampled latencies; `take()` empties them."""

    def __init__(self, access_log_sample: float = 0.0, sample_every: int = LATENCY_SAMPLE_EVERY):
        self.answers: dict[str, defaultdict[bytes, int]] = {}
        self.latencies: dict[str, list[float]] = {}
        # The access log rides on the latency sample: a sampled request is logged with the probability that
        # makes the overall share `access_log_sample`; a share above 1/sample_every samples more often.
        if access_log_sample > 0:
            sample_every = max(1, min(sample_every, int(1 / access_log_sample)))
        self.sample_every = sample_every
        self.access_probability = min(1.0, access_log_sample * sample_every)
        self.tcp_connections = 0

    def counts(self, transport: str) -> defaultdict[bytes, int]:
        """The dict a transport increments: key = answer bytes at CODES_AT, or NO_ANSWER."""
        return self.answers.setdefault(transport, defaultdict(int))

    def sample(
        self, transport: str, seconds: float, client: str, request: bytes, answer: bytes | None
    ) -> None:
        samples = self.latencies.setdefault(transport, [])
        if len(samples) < MAX_PENDING_SAMPLES:
            samples.append(seconds)
        if self.access_probability and random.random() < self.access_probability:
            log_access(transport, seconds, client, request, answer)

    def take(self) -> tuple[dict[str, dict[bytes, int]], dict[str, list[float]]]:
        """The counts and samples since the last call, leaving the live dicts empty (same objects)."""
        answers = {}
        for transport, counts in self.answers.items():
            if counts:
                answers[transport] = dict(counts)
                counts.clear()
        latencies = {}
        for transport, samples in self.latencies.items():
            if samples:
                latencies[transport] = samples[:]
                samples.clear()
        return answers, latencies


def code_names(key: bytes) -> tuple[str, str]:
    """(op, code) labels of a counting key: names of the op code and response code, lower case."""
    from resolver.handle.constants import ResponseCode

    if len(key) < 8:
        return "none", "dropped"
    op, code = int.from_bytes(key[:4], "big"), int.from_bytes(key[4:8], "big")
    try:
        op_name = OpCode(op).name.lower()
    except ValueError:
        op_name = "other"
    try:
        code_name = ResponseCode(code).name.lower()
    except ValueError:
        code_name = "other"
    return op_name, code_name


def log_access(transport: str, seconds: float, client: str, request: bytes, answer: bytes | None) -> None:
    """One access-log line; decodes the request again, which is fine for the few requests sampled."""
    from resolver.handle.errors import HandleProtocolError
    from resolver.handle.message import decode_request, decode_resolution_request

    handle = ""
    try:
        message = decode_request(request)
        if message.header.op_code == OpCode.RESOLUTION:
            handle = decode_resolution_request(message.body).handle.decode("utf-8", "replace")
    except (HandleProtocolError, ValueError):
        pass
    op, code = code_names(answer[CODES_AT] if answer else NO_ANSWER)
    access_log.info(
        "%s %s %s %s %s %.0fus",
        transport,
        client,
        op,
        handle or "-",
        code,
        seconds * 1e6,
        extra={
            "event": "access",
            "transport": transport,
            "client": client,
            "op": op,
            "handle": handle,
            "code": code,
            "bytes_in": len(request),
            "bytes_out": len(answer) if answer else 0,
            "duration_us": round(seconds * 1e6),
        },
    )
