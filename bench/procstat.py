"""CPU accounting from /proc for the benchmarks: what a server (and its workers) used, what the whole machine
did, and which other processes were busy meanwhile (proc(5): utime and stime are fields 14 and 15 of stat)."""

from __future__ import annotations

import os
from pathlib import Path


def process_ticks(pid: int) -> int:
    """utime + stime of every thread of `pid`, in clock ticks (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it (a supervisor's workers, NSD's server child)."""
    found = {pid}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
        for child in children:
            found |= descendants(child)
    return found


def tree_ticks(pid: int) -> int:
    """CPU ticks of `pid` and all its descendants."""
    return sum(process_ticks(p) for p in descendants(pid))


def all_process_ticks() -> dict[int, tuple[str, int]]:
    """(command name, utime + stime) of every process on the machine, to spot load we did not make."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = text.rpartition(")")[2].split()
        out[int(entry)] = (text[text.find("(") + 1 : text.rfind(")")], int(fields[11]) + int(fields[12]))
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, all) ticks of all CPUs since boot (/proc/stat); busy is neither idle nor I/O wait, so it includes
    short-lived processes, kernel work and time the hypervisor took."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    total = sum(fields)
    return total - fields[3] - fields[4], total


def _socket_inodes(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def listening_ports(pid: int) -> set[tuple[str, int]]:
    """("tcp", port) of each TCP socket `pid` listens on and ("udp", port) of each UDP socket it has bound,
    IPv4 and IPv6, from /proc/net: what `ss -lnp` would show for it."""
    inodes = _socket_inodes(pid)
    out = set()
    for proto, listening in (("tcp", "0A"), ("udp", "07")):
        for table in (proto, proto + "6"):
            try:
                lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if fields[3] == listening and int(fields[9]) in inodes:
                    out.add((proto, int(fields[1].rsplit(":", 1)[1], 16)))
    return out
