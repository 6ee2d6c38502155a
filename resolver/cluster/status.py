"""A cluster member's status as its writer last saw it, in a small file of the data directory (atomically
replaced every second): workers export it in /metrics, `idnode cluster status` prints it. Imports no NATS
client, so reading it costs a node on its own nothing (the file is then absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

STATUS_FILE = "cluster-status.json"  #: in the data directory
CONNECTING, READY, STOPPED = "connecting", "ready", "stopped"  #: a member's states: no log, applying, stopped


def write_status(path: Path, status: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)


def read_status(data_dir: Path) -> dict | None:
    """The member's last status (None when this node is no cluster member or its writer never wrote one)."""
    try:
        return json.loads((Path(data_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
