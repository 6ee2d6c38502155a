"""True error messages of the `idnode` command: each failure the user can fix is one line naming its real cause
and what to check, exit status 2, no traceback. Real sockets on 127.0.0.1, real processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from resolver import buildinfo
from resolver.client import parse_address
from resolver.config import ServeConfig
from storage.backup import backup_store
from storage.store import Store
from tests.http_helpers import http_node
from tests.servers import REPO, free_port, idnode

UNASSIGNED = "192.0.2.1"  #: TEST-NET-1 (RFC 5737): on no host


def one_line_failure(result: subprocess.CompletedProcess, command: str) -> str:
    """The single stderr line of a refused command (exit status 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"idnode {command}: "), result.stderr
    return lines[0]


@pytest.fixture()
def silent_udp():
    """A UDP port that takes requests and never answers (nothing listens on its TCP port)."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        yield port


# -- idnode serve: binds and the published address -----------------------------------------------------------


def test_serve_names_the_port_in_use(demo_store_dir):
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))
        result = idnode("serve", "--data", str(demo_store_dir), "--handle-port", str(port), "--workers", "1")
    line = one_line_failure(result, "serve")
    assert f"127.0.0.1:{port}/udp already in use" in line
    assert "permission" not in line and "not an address" not in line


def test_serve_names_an_address_this_host_does_not_have(demo_store_dir):
    result = idnode("serve", "--data", str(demo_store_dir), "--bind", UNASSIGNED, "--site-address", UNASSIGNED,
                    "--handle-port", str(free_port()), "--workers", "1")  # fmt: skip
    line = one_line_failure(result, "serve")
    assert f"{UNASSIGNED}: not an address of this host" in line and "already in use" not in line


def _unprivileged_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def test_serve_names_permission_denied_below_1024_for_a_user_without_the_capability(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to run the command as user nobody (setpriv)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    start = _unprivileged_start()
    if start <= 1:
        pytest.skip(f"net.ipv4.ip_unprivileged_port_start is {start}: every port is open to every user")
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    works = subprocess.run([*as_nobody, sys.executable, "-c", "import resolver.cli"], cwd=REPO, env=env,
                           capture_output=True, text=True)  # fmt: skip
    if works.returncode != 0:
        pytest.skip(f"user nobody cannot run this checkout's Python: {works.stderr.strip()[-200:]}")
    port = start - 1  # privileged whether or not something holds it: the kernel checks that first
    result = subprocess.run(
        [*as_nobody, sys.executable, "-m", "resolver.cli", "serve", "--data", str(tmp_path / "store"),
         "--handle-port", str(port), "--workers", "1"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    line = one_line_failure(result, "serve")
    assert f"127.0.0.1:{port}/udp" in line and "permission denied" in line
    assert "CAP_NET_BIND_SERVICE" in line and "port >= 1024" in line and "already in use" not in line


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", UNASSIGNED])
def test_serve_on_a_wildcard_or_public_address_needs_site_address(demo_store_dir, bind):
    result = idnode("serve", "--data", str(demo_store_dir), "--bind", bind, "--handle-port", str(free_port()))
    line = one_line_failure(result, "serve")
    assert f"listens on {bind}" in line
    assert "site_address" in line and "--site-address" in line and "IDNODE_SITE_ADDRESS" in line


def test_site_address_rules():
    ServeConfig(Path("d"), binds=["127.0.0.1", "::1"]).check_site_address()  # loopback publishes its bind
    ServeConfig(Path("d"), binds=["0.0.0.0"], site_address="192.0.2.10").check_site_address()
    with pytest.raises(ValueError, match="site_address: not set"):
        ServeConfig(Path("d"), binds=["127.0.0.1", "10.0.0.1"]).check_site_address()
    with pytest.raises(ValueError, match="site_address: 'node.example' is not an IP address"):
        ServeConfig(Path("d"), site_address="node.example")
    with pytest.raises(ValueError, match="site_address: 0.0.0.0 is no address"):
        ServeConfig(Path("d"), site_address="0.0.0.0")


# -- idnode resolve --------------------------------------------------------------------------------------------


def test_resolve_without_a_server_says_what_to_check():
    port = free_port()
    line = one_line_failure(idnode("resolve", "88.100.1/X", "--server", f"127.0.0.1:{port}"), "resolve")
    assert f"127.0.0.1:{port}" in line and "UDP" in line
    assert f"is `idnode serve` running there, and is {port} its Handle port?" in line


def test_resolve_over_tcp_names_the_refused_connection():
    port = free_port()
    result = idnode("resolve", "88.100.1/X", "--tcp", "--server", f"127.0.0.1:{port}")
    line = one_line_failure(result, "resolve")
    assert f"cannot connect to 127.0.0.1:{port} over TCP: connection refused" in line
    assert f"is {port} its Handle port?" in line


def test_resolve_from_a_silent_port_names_the_wait(silent_udp):
    result = idnode("resolve", "88.100.1/X", "--server", f"127.0.0.1:{silent_udp}", "--timeout", "0.3")
    line = one_line_failure(result, "resolve")
    assert f"no answer from 127.0.0.1:{silent_udp} over UDP within 0.3 s" in line
    assert "is `idnode serve` running there" in line


def test_resolve_against_the_http_port_says_it_speaks_http(demo_store_dir):
    with http_node(demo_store_dir, workers=1) as node:
        server = f"127.0.0.1:{node.http_port}"
        for flags in ((), ("--tcp",)):
            line = one_line_failure(idnode("resolve", "88.100.1/X", "--server", server, *flags), "resolve")
            assert f"{server} speaks HTTP, not the Handle protocol; the Handle port is 2641" in line


def test_server_addresses_default_to_the_handle_port():
    assert parse_address("127.0.0.1", 2641) == ("127.0.0.1", 2641)
    assert parse_address("127.0.0.1:2700", 2641) == ("127.0.0.1", 2700)
    assert parse_address("node.example", 2641) == ("node.example", 2641)
    assert parse_address("[::1]", 2641) == ("::1", 2641)
    assert parse_address("[::1]:2700", 2641) == ("::1", 2700)
    assert parse_address("::1", 2641) == ("::1", 2641)
    assert parse_address("2001:db8::7", 2641) == ("2001:db8::7", 2641)
    for bad in ("127.0.0.1:x", "[::1", "[::1]x", ":2641", "h:70000"):
        with pytest.raises(ValueError):
            parse_address(bad, 2641)


def test_resolve_server_without_a_port_asks_port_2641():
    result = idnode("resolve", "88.100.1/X", "--tcp", "--timeout", "0.5", "--server", "[::1]")
    if result.returncode != 2:
        pytest.skip("something answers on [::1]:2641 here")
    assert "[::1]:2641" in one_line_failure(result, "resolve")


# -- idnode bench ----------------------------------------------------------------------------------------------


def test_bench_says_nothing_answered(silent_udp):
    result = idnode("bench", "udp", "--server", f"127.0.0.1:{silent_udp}", "--dataset-count", "10",
                    "--duration", "0.3", "--warmup", "0", "--timeout", "0.2", "--quiet")  # fmt: skip
    line = one_line_failure(result, "bench")
    assert f"nothing answered: no answer from 127.0.0.1:{silent_udp} over UDP" in line
    assert result.stdout == ""


def test_bench_over_tcp_names_the_refused_connection_without_a_traceback():
    port = free_port()
    result = idnode("bench", "tcp", "--server", f"127.0.0.1:{port}", "--dataset-count", "10",
                    "--duration", "0.3", "--warmup", "0", "--quiet")  # fmt: skip
    line = one_line_failure(result, "bench")
    assert f"cannot connect to 127.0.0.1:{port} over TCP" in line and "Connection refused" in line
    assert "LoadGenError" not in line


# -- idnode restore names who uses the store ------------------------------------------------------------------


@pytest.fixture()
def backup(tmp_path, demo_store_dir) -> Path:
    with Store(demo_store_dir) as store:
        backup_store(store, tmp_path / "backup")
    return tmp_path / "backup"


def test_restore_says_no_process_uses_the_store(tmp_path, backup, demo_store_copy):
    result = idnode("restore", str(backup), "--data", str(demo_store_copy))
    assert result.returncode == 0, result.stderr
    assert f"no process has {demo_store_copy / 'data.mdb'} open" in result.stderr


def test_restore_names_the_process_that_has_the_store_open(tmp_path, backup, demo_store_copy):
    holder_code = "import sys; f = open(sys.argv[1], 'rb'); print('ready', flush=True); sys.stdin.read()"
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(demo_store_copy / "data.mdb")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "ready\n"
        result = idnode("restore", str(backup), "--data", str(demo_store_copy))
    finally:
        holder.communicate("")
    line = one_line_failure(result, "restore")
    assert f"is live: used by pid {holder.pid} ({sys.executable} -c import sys;" in line
    assert "has data.mdb open" in line and "--force" in line


# -- a closed pipe ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["gen", "--count", "2000"],
        ["stats", "--data", "{store}"],
        ["export-zone", "--data", "{store}"],
        ["prefix", "list", "--data", "{store}"],
    ],
)
def test_a_reader_that_left_ends_the_command_quietly(argv, demo_store_dir):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line: every write finds the pipe closed
    try:
        argv = [part.replace("{store}", str(demo_store_dir)) for part in argv]
        result = subprocess.run([sys.executable, "-m", "resolver.cli", *argv], stdout=write_end,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 141  # 128 + SIGPIPE, as a shell reports `yes | head -1`
    assert "BrokenPipeError" not in result.stderr and "Exception ignored" not in result.stderr
    assert "Traceback" not in result.stderr


def test_gen_into_head_ends_quietly():
    script = f'{sys.executable} -m resolver.cli gen --count 20000 | head -1; echo "status ${{PIPESTATUS[0]}}"'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO)
    first, status = result.stdout.splitlines()
    assert first.startswith('{"handle":') and status == "status 141"
    assert result.stderr == ""


# -- idnode --version ------------------------------------------------------------------------------------------


def _git_head() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True)  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else ""


def test_version_names_the_package_version_and_the_commit():
    before = _git_head() if shutil.which("git") and (REPO / ".git").exists() else ""
    result = idnode("--version")
    assert result.returncode == 0
    expected = f"idnode {metadata.version('idnode')} ("
    assert result.stdout.startswith(expected), result.stdout
    if before:  # other commits may land meanwhile: the commit shown is HEAD's before or after
        assert f"commit {before}," in result.stdout or f"commit {_git_head()}," in result.stdout
    assert f"Python {sys.version.split()[0]})" in result.stdout


def test_a_built_package_takes_its_commit_from_build_commit(tmp_path, monkeypatch):
    (tmp_path / "BUILD_COMMIT").write_text("0123456789abcdef0123456789abcdef01234567\n")
    monkeypatch.setattr(buildinfo, "COMMIT_FILE", tmp_path / "BUILD_COMMIT")
    buildinfo.commit.cache_clear()
    try:
        assert buildinfo.commit() == "0123456789ab"
        assert "(commit 0123456789ab, Python " in buildinfo.describe()
    finally:
        buildinfo.commit.cache_clear()
