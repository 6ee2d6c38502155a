"""A core budget: the CPUs a kind of process may run on, written as taskset(1) writes them ("1", "0,2", "2-7").

Serving workers and the write plane (the writer, a load into a served store) share a machine; priority alone
(writer_nice, the loader's nice 10) still lets a busy writer take a slice of the core a worker answers on. Given
CPUs of their own (`worker_cpus`, `writer_cpus`), writes cannot delay an answer at all; see the README,
"Writes beside resolution".
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def parse_cpu_list(text: str, name: str = "cpus") -> frozenset[int]:
    """The CPUs of a list like "0,2-3" (empty: none, meaning every CPU); ValueError naming `name` for a list
    that is malformed or names a CPU the machine does not have on."""
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        first, sep, last = part.partition("-")
        try:
            low, high = int(first), int(last) if sep else int(first)
        except ValueError:
            raise ValueError(f"{name}: {part!r} is not a CPU number or a range like 2-5") from None
        if low < 0 or high < low:
            raise ValueError(f"{name}: {part!r} is not a CPU number or a range like 2-5")
        cpus.update(range(low, high + 1))
    usable = online_cpus()
    if not cpus <= usable:
        outside = ",".join(str(c) for c in sorted(cpus - usable))
        raise ValueError(f"{name}: CPU {outside} is not available here (this machine's CPUs: "
                         f"{format_cpu_list(usable)})")  # fmt: skip
    return frozenset(cpus)


def online_cpus() -> set[int]:
    """The machine's CPUs that are on (not this process's affinity: a node started under taskset may still
    give its workers and its writer other CPUs)."""
    try:
        with open("/sys/devices/system/cpu/online") as f:
            return set(parse_ranges(f.read().strip()))
    except (OSError, ValueError):
        return set(range(os.cpu_count() or 1))


def parse_ranges(text: str) -> list[int]:
    """The numbers of a kernel CPU list, "0-3,6"; ValueError for anything else."""
    out: list[int] = []
    for part in text.split(","):
        first, sep, last = part.partition("-")
        out.extend(range(int(first), int(last if sep else first) + 1))
    return out


def format_cpu_list(cpus: set[int] | frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def pin(cpus: frozenset[int]) -> None:
    """Run this process on `cpus` from now on (nothing for an empty set). Call it before any thread starts:
    threads made later inherit it, those already running keep their own."""
    if not cpus:
        return
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:  # a cgroup cpuset without these CPUs: serving matters more than the budget
        log.error("cannot run on CPUs %s (%s): running on %s", format_cpu_list(cpus), exc.strerror,
                  format_cpu_list(os.sched_getaffinity(0)), extra={"event": "cpu_budget_refused"})  # fmt: skip
