"""The processes of a running node, from /proc: a supervisor's children, and which of them is its writer."""

from __future__ import annotations

import os
from pathlib import Path

from bench.procstat import listening_ports  # noqa: F401  # tests find it here with the rest

WRITER_NAME = "idnode-writer"  #: the writer process's name (/proc/PID/comm), as resolver/writer/server.py sets it


def is_writer(pid: int) -> bool:
    """Whether `pid` is a node's writer process (not one of its workers)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == WRITER_NAME
    except OSError:
        return False


def child_pids(pid: int) -> set[int]:
    """Pids whose parent is `pid`."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(entry))
    return out


def node_workers(pid: int) -> set[int]:
    """The serving processes of the node whose supervisor is `pid`: its children but its writer."""
    return {c for c in child_pids(pid) if not is_writer(c)}


def node_writer(pid: int) -> int | None:
    """The writer process of the node whose supervisor is `pid`, if it runs."""
    return next((c for c in child_pids(pid) if is_writer(c)), None)

