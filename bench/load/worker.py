"""One generator process: builds its pool of requests, opens its sockets, says it is ready, waits for the word,
runs the protocol's loop and sends its figures (or its traceback) to the parent over a pipe. Progress reports go
over the same pipe about once a second. Imports nothing of the server."""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from bench.load.datagram import run_datagram
from bench.load.meter import Meter
from bench.load.protocols import PROTOCOLS
from bench.load.requests import request_pool
from bench.load.spec import LoadGenError, LoadSpec
from bench.load.stream import run_stream

READY_TIMEOUT_S = 60.0  #: a process building its pool and opening its sockets takes well under that


@dataclass(frozen=True, slots=True)
class ProcessPlan:
    """What process ``index`` of a run does: the run's spec, and its own share of the rate and of the count."""

    spec: LoadSpec
    index: int
    rate: float | None
    count: int | None


def generate(plan: ProcessPlan, conn, go, stop=None) -> dict:
    spec = plan.spec
    protocol = PROTOCOLS[spec.protocol]
    options = {"host": spec.host, "port": spec.port, "dns_zone": spec.dns_zone, "dns_qtype": spec.dns_qtype}
    pool, _ = request_pool(
        spec.handles, spec.pool_size, spec.missing_ratio, f"{spec.seed}:{plan.index}", spec.protocol, options,
        popularity=spec.popularity, zipf_s=spec.zipf_s, order_seed=spec.seed,
    )  # fmt: skip
    meter = Meter(
        plan.index,
        spec.warmup_s,
        spec.duration_s,
        plan.count,
        progress=lambda snap: conn.send(("progress", snap)),
        should_stop=stop.is_set if stop is not None else None,
    )

    def wait_for_go() -> None:
        conn.send(("ready", plan.index))
        if not go.wait(READY_TIMEOUT_S):
            raise LoadGenError("the parent never said go")

    loop = run_datagram if protocol.datagram else run_stream
    return loop(spec, plan.rate, protocol, pool, meter, wait_for_go)


def process_main(plan: ProcessPlan, conn, go, stop=None) -> None:
    """``stop``: an event the parent may set to end the measurement early (seen within a progress interval)."""
    try:
        conn.send(("result", generate(plan, conn, go, stop)))
    except KeyboardInterrupt:
        pass  # the parent stops everyone
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        conn.close()
