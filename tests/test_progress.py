"""Progress of the long commands (`idnode load`, `check`, `export-zone`, `bench`): a bar on a terminal, nothing
but the final lines in a pipe. Each command runs for real, once with stderr to a pipe and once with stderr on a
pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from tests.servers import idnode, running_node

REPO = Path(__file__).resolve().parents[1]
TERMINAL_SIZE = struct.pack("HHHH", 24, 100, 0, 0)  # rows, columns: a bar needs a width to draw in
RUN_TIMEOUT_S = 120  #: every command here takes seconds; a hang fails instead of blocking the suite


def on_terminal(*args: str) -> tuple[int, str, str]:
    """Run `idnode ARGS` with stderr on a pseudo-terminal: (exit status, stdout, what the terminal showed, its
    line ends as \n)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, TERMINAL_SIZE)
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer has gone
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "resolver.cli", *args],
            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, cwd=REPO, timeout=RUN_TIMEOUT_S,
        )  # fmt: skip
    finally:
        os.close(slave)
        reader.join(RUN_TIMEOUT_S)
        os.close(master)
    # A terminal ends lines with \r\n; a carriage return left after undoing that is a bar being redrawn.
    return done.returncode, done.stdout.decode(), shown.decode(errors="replace").replace("\r\n", "\n")


def in_pipe(*args: str) -> subprocess.CompletedProcess:
    return idnode(*args, cwd=REPO, timeout=RUN_TIMEOUT_S)


def assert_quiet(stderr: str, final: list[str]) -> None:
    """A pipe gets no carriage return and no bar, only the final lines (each starting as given)."""
    assert "\r" not in stderr and "\x1b[" not in stderr, repr(stderr)
    lines = stderr.splitlines()
    assert len(lines) == len(final), stderr
    for line, start in zip(lines, final, strict=True):
        assert line.startswith(start), stderr


def assert_bar(shown: str, label: str) -> None:
    assert "\r" in shown and label in shown, repr(shown)
    assert any(mark in shown for mark in ("it/s", "identifiers/s", " identifiers", "[00:")), repr(shown)


@pytest.fixture()
def store_dir(tmp_path, demo_ndjson) -> Path:
    path = tmp_path / "store"
    assert in_pipe("load", "--data", str(path), str(demo_ndjson)).returncode == 0
    return path


def test_load(tmp_path, demo_ndjson):
    piped = in_pipe("load", "--data", str(tmp_path / "a"), str(demo_ndjson))
    assert piped.returncode == 0
    assert_quiet(piped.stderr, ["loaded 2,000 identifiers"])
    status, _, shown = on_terminal("load", "--data", str(tmp_path / "b"), str(demo_ndjson))
    assert status == 0
    assert_bar(shown, "load")
    assert "loaded 2,000 identifiers" in shown  # and the final line after it
    status, _, shown = on_terminal("load", "--quiet", "--data", str(tmp_path / "c"), str(demo_ndjson))
    assert status == 0 and "\r" not in shown  # --quiet: no bar even on a terminal


def test_check(store_dir):
    piped = in_pipe("check", "--data", str(store_dir))
    assert piped.returncode == 0 and piped.stdout.strip().endswith(": ok")
    assert_quiet(piped.stderr, [])
    status, stdout, shown = on_terminal("check", "--data", str(store_dir))
    assert status == 0 and stdout.strip().endswith(": ok")
    assert_bar(shown, "check")
    assert "/2.00k" in shown or "2000" in shown or "2.00k" in shown  # counted towards the store's total


def test_export_zone(store_dir, tmp_path):
    piped = in_pipe("export-zone", "--data", str(store_dir), "-o", str(tmp_path / "a.zone"))
    assert piped.returncode == 0
    assert_quiet(piped.stderr, ["exported "])
    status, _, shown = on_terminal("export-zone", "--data", str(store_dir), "-o", str(tmp_path / "b.zone"))
    assert status == 0
    assert_bar(shown, "export-zone")
    status, stdout, shown = on_terminal("export-zone", "--data", str(store_dir))
    assert status == 0 and "$ORIGIN" in stdout and "\r" not in shown  # the zone itself is the output


def test_bench(store_dir):
    with running_node(store_dir, workers=1) as node:
        bench = ("bench", "udp", "--server", f"127.0.0.1:{node.port}", "--dataset-count", "2000",
                 "--enterprises", "8", "--duration", "2", "--warmup", "0.5", "--processes", "1")  # fmt: skip
        piped = in_pipe(*bench)
        status, stdout, shown = on_terminal(*bench)
    assert piped.returncode == 0, piped.stderr
    assert "answers/s" in piped.stdout  # the result table
    assert "\r" not in piped.stderr and "so far" not in piped.stderr, piped.stderr
    assert status == 0 and "answers/s" in stdout
    assert "\r" in shown and "answers/s so far" in shown, repr(shown)
