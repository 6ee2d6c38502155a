"""Which store an `idnode` command means, and which processes have it open.

Every command that reads a store takes `--data DIR` (alias `--data-dir`), `--config FILE` and the environment
alike, by one rule (settings.store_dir): `--data` > $IDNODE_DATA_DIR > `data_dir` of the configuration file
(`--config`, $IDNODE_CONFIG, /etc/idnode/idnode.toml when it exists). `store_users` names the processes that
use a store (its server's lock, LMDB's reader table, /proc), for `idnode restore`. Imports no server code.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from resolver.cli_errors import CliError

log = logging.getLogger(__name__)

WHICH_STORE = "which store? give --data DIR or --config FILE, or set IDNODE_DATA_DIR"
MAX_CMDLINE_CHARS = 120  #: a command line longer than this is cut, so that the message stays one line


def add_store_arguments(
    parser: argparse.ArgumentParser, *, help_text: str = "store directory", data_group=None
) -> None:
    """--data (into `data_group`, a mutually exclusive group, when given) and --config."""
    (data_group or parser).add_argument(
        "--data", "--data-dir", dest="data", type=Path, help=f"{help_text} (or IDNODE_DATA_DIR)"
    )
    parser.add_argument(
        "--config", type=Path, help="read data_dir from this TOML file (default: $IDNODE_CONFIG)"
    )


def store_dir(args: argparse.Namespace, *, required: bool = True, default_file: bool = True) -> Path | None:
    """The store directory of a command's `--data`/`--config` arguments and the environment (CliError when
    nothing names one and `required`)."""
    from resolver import settings

    try:
        found = settings.store_dir(
            getattr(args, "data", None), getattr(args, "config", None), os.environ, default_file=default_file
        )
    except settings.ConfigError as exc:
        raise CliError(str(exc)) from None
    if found is None and required:
        raise CliError(WHICH_STORE)
    return found


def open_store(args: argparse.Namespace, **kwargs):
    """The Store the command means, opened (kwargs: Store's `create`, `case_sensitive`)."""
    from storage.store import Store, StoreError

    try:
        return Store(store_dir(args), **kwargs)
    except StoreError as exc:
        raise CliError(str(exc)) from None


# -- who uses a store ------------------------------------------------------------------------------------------


@dataclass
class StoreUser:
    pid: int
    cmdline: str
    how: list[str] = field(default_factory=list)  # "serve lock", "LMDB reader", "open"

    def describe(self) -> str:
        return f"pid {self.pid} ({self.cmdline}; {', '.join(self.how)})"


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "command line unknown"
    text = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part) or "?"
    return text if len(text) <= MAX_CMDLINE_CHARS else text[: MAX_CMDLINE_CHARS - 1] + "…"


def _opened_by(pid: str, target: Path) -> bool:
    """Whether process `pid` has `target` open or mapped (LMDB maps data.mdb; it may also hold an fd)."""
    try:
        for entry in os.scandir(f"/proc/{pid}/fd"):
            try:
                if Path(os.readlink(entry.path)) == target:
                    return True
            except OSError:
                continue
    except OSError:
        pass  # another user's process: its fds are not ours to read; the lock and reader table still speak
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            return any(line.rstrip("\n").endswith(" " + str(target)) for line in maps)
    except OSError:
        return False


def _openers(data_file: Path) -> list[int]:
    """Pids (not ours) whose open files or memory maps name `data_file`, from /proc."""
    target = data_file.resolve()
    me = str(os.getpid())
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit() and name != me]
    except OSError:
        return []
    return sorted(int(pid) for pid in pids if _opened_by(pid, target))


def store_users(data_dir: Path) -> list[StoreUser]:
    """The processes other than this one that use the store in `data_dir`: the `idnode serve` holding its
    lock, the holders of LMDB reader slots, and any process with data.mdb open or mapped. Empty when none."""
    from resolver.server.lifecycle import lock_holder
    from storage.backup import live_readers

    users: dict[int, StoreUser] = {}

    def note(pid: int, how: str) -> None:
        if pid == os.getpid():
            return
        user = users.setdefault(pid, StoreUser(pid, _cmdline(pid)))
        if how not in user.how:
            user.how.append(how)

    holder = lock_holder(data_dir)
    if holder is not None and holder > 0:  # -1: locked, but the pid in the file is unreadable; /proc names it
        note(holder, "holds the serve lock")
    data_file = Path(data_dir) / "data.mdb"
    if data_file.exists():
        try:
            for pid in live_readers(data_dir):
                note(pid, "LMDB reader")
        except Exception as exc:  # an unreadable reader table is no proof of life; /proc still speaks
            log.debug("cannot read the reader table of %s: %s", data_dir, exc)
        for pid in _openers(data_file):
            note(pid, "has data.mdb open")
    return sorted(users.values(), key=lambda u: ("holds the serve lock" not in u.how, u.pid))
