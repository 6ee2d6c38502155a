"""The pool of requests a generator process sends, built before the clock starts: a seeded draw of identifiers
(existing ones by popularity, plus an exact share of missing ones), shuffled, then encoded for the protocol.
A process sends the pool round and round, so the pool's make-up is the load's make-up. Imports nothing of the
server."""

from __future__ import annotations

from collections.abc import Sequence
from random import Random

from bench.datagen import Dataset, missing_handle
from bench.load.popularity import draw_positions
from bench.load.protocols import PROTOCOLS
from bench.load.spec import DatasetSpec, LoadGenError


def _missing_for_list(handles: Sequence[str], i: int) -> str:
    # Under a prefix the server hosts, so the answer is HANDLE_NOT_FOUND rather than "not my prefix".
    prefix = handles[i % len(handles)].partition("/")[0]
    return f"{prefix}/IDNODE-LOADGEN-MISSING-{i:08d}"


def draw_names(
    handles: Sequence[str] | DatasetSpec,
    size: int,
    missing_ratio: float,
    seed: int | str,
    popularity: str = "uniform",
    zipf_s: float = 1.0,
    order_seed: int | str = 1,
) -> list[str]:
    """``size`` handles in send order: exactly ``round(size * missing_ratio)`` absent ones, the rest drawn with
    replacement from ``handles`` (uniformly, or by Zipf rank; ``order_seed`` fixes which identifier has which
    rank, so give every process of a run the same one). The order is a seeded shuffle."""
    if not 0.0 <= missing_ratio <= 1.0:
        raise LoadGenError(f"missing ratio {missing_ratio} is not between 0 and 1")
    rng = Random(f"idnode-loadgen:{seed}")
    missing = round(size * missing_ratio)
    start = rng.randrange(1 << 20)  # different processes ask for different missing handles
    if isinstance(handles, DatasetSpec):
        dataset = Dataset(handles.count, handles.seed, handles.prefix, handles.enterprises)
        if size - missing and not dataset.count:
            raise LoadGenError("the data set is empty")
        at, n = dataset.handle_at, dataset.count
        absent = [missing_handle(start + i, handles.prefix, handles.enterprises) for i in range(missing)]
    else:
        if not handles:
            raise LoadGenError("no handles to ask for")
        at, n = handles.__getitem__, len(handles)
        absent = [_missing_for_list(handles, start + i) for i in range(missing)]
    positions = draw_positions(n, size - missing, popularity, zipf_s, rng, order_seed) if n else []
    names = [at(p) for p in positions] + absent
    rng.shuffle(names)
    return names


def request_pool(
    handles: Sequence[str] | DatasetSpec,
    size: int,
    missing_ratio: float,
    seed: int | str,
    protocol: str = "udp",
    options: dict | None = None,
    **draw,
) -> tuple[list[bytearray], list[str]]:
    """``size`` pre-encoded requests (id 0) of ``protocol`` and their handles, in send order. ``draw``: the
    popularity arguments of :func:`draw_names` (``popularity``, ``zipf_s``, ``order_seed``). ``options``: what
    the encoder needs beyond the names (DNS zone and query type, the HTTP Host)."""
    names = draw_names(handles, size, missing_ratio, seed, **draw)
    return PROTOCOLS[protocol].encode(names, options or {}), names
