"""Side by side on one core: idnode's DNS view against NSD, Knot DNS and a minimal Python server, on the same
identifiers; and idnode's Handle UDP on the same store.

What it does (``make bench-compare``, or ``.venv/bin/python -m bench.compare --help``):

1. builds a store of ``--count`` identifiers (``idnode gen`` + ``idnode load``) in a work directory, exports its
   zone (``idnode export-zone``) and writes a dnsperf query file: names of existing identifiers, TXT and URI in
   equal shares, and ``--missing`` of names that do not exist (NXDOMAIN);
2. starts each server on 127.0.0.1 at a free port, pinned to CPU 0 (``taskset -c 0``): NSD (own configuration
   in the work directory: one server process, no chroot, no privilege drop, no response rate limiting), Knot
   (one UDP worker, one background worker), ``idnode serve --workers 1 --dns-port`` (as configured by default,
   and again with its memo of answers off: ``--dns-memo-mb 0``), and bench/echo_server.py
   (uvloop answering every query with a fixed pre-encoded answer: the floor of a Python server);
3. runs dnsperf pinned to CPU 1 against each in turn, ``--rounds`` times (the order rotates every round, so
   drift of the machine is shared out), after a warm-up run per server that is not counted; and, when
   bench/loadgen.py is usable, idnode's Handle UDP with that generator (also on CPU 1) for the same
   identifiers;
4. stops everything it started (by PID; also on Ctrl-C, SIGTERM or an error) and writes
   ``compare.json``, ``compare.md`` and ``compare.png`` (matplotlib, the ``bench`` extra) to ``--out``.

Each run records the CPU the server and the load generator used and any other process that used CPU
meanwhile: this machine may be shared, and a busy neighbour shows up there. Traffic goes only to 127.0.0.1;
every run is bounded in time. Installs nothing: missing tools are named with the ``apt-get install`` line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.datagen import Dataset
from bench.load.plot import NO_MATPLOTLIB, pyplot
from bench.procstat import all_process_ticks, descendants, machine_ticks
from bench.results_io import machine_facts
from resolver.dnsview import handle_to_name
from resolver.server.sockets import free_udp_tcp_port

ROOT = Path(__file__).resolve().parents[1]
ZONE = "id.test."
APT_PACKAGES = {"nsd": "nsd", "knotd": "knot", "dnsperf": "dnsperf", "taskset": "util-linux"}
#: idnode-nomemo: the DNS view with its memo off (dns_memo_mb 0), every answer read and rendered afresh: what a
#: query for an identifier nobody asked for lately costs.
SERVER_NAMES = ("nsd", "knot", "idnode", "idnode-nomemo", "echo")
START_TIMEOUT_S = 180.0  #: a server loading a zone of a few million records takes well under this
STOP_TIMEOUT_S = 15.0  #: SIGTERM, then this long, then SIGKILL to the server's process group
PROBE_TIMEOUT_S = 0.5  #: one readiness probe
DNSPERF_GRACE_S = 30.0  #: dnsperf stops itself after -l seconds (plus its query timeout); kill it after this
OTHER_LOAD_REPORTED = 0.05  #: cores; another process this busy during a run is listed with the run
QUIET_CORES = 0.15  #: before a run, wait (up to --settle seconds) until other processes use less than this
QUIET_SAMPLE_S = 1.0  #: how long each look at the machine's other load lasts
MAX_ROUNDS = 50
MAX_SECONDS = 600.0
_PROBE = struct.Struct(">HHHHHH")


# --- machine and tools -------------------------------------------------------------------------------------


def missing_tools(servers: list[str]) -> list[str]:
    needed = ["taskset", "dnsperf"] + [
        {"nsd": "nsd", "knot": "knotd"}[s] for s in servers if s in ("nsd", "knot")
    ]
    return [tool for tool in needed if shutil.which(tool) is None]


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return lines[0] if lines else ""


def tool_versions() -> dict[str, str]:
    versions = {}
    if shutil.which("nsd"):
        versions["nsd"] = _first_line(["nsd", "-v"])
    if shutil.which("knotd"):
        versions["knot"] = _first_line(["knotd", "--version"])
    if shutil.which("dnsperf"):
        out = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True, timeout=10)
        found = re.search(r"Version\s+(\S+)", out.stdout + out.stderr)
        versions["dnsperf"] = found.group(1) if found else ""
    for module in ("uvloop", "lmdb", "dnslib"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            pass
    versions["python"] = platform.python_version()
    return versions


def machine() -> dict:
    facts = machine_facts()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "nproc": facts["cpus"],
        "cpu_model": facts["cpu_model"],
        "kernel": facts["kernel"],
        "memory_gib": facts["memory_gib"],
        "commit": facts["commit"] + ("+uncommitted" if dirty else ""),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- CPU accounting from /proc --------------------------------------------------------------------------------


class CpuWatch:
    """CPU used from now to :meth:`stop` by a server (with its children) and by processes that are not ours."""

    def __init__(self, server_pid: int):
        self.hz = os.sysconf("SC_CLK_TCK")
        self.pids = descendants(server_pid)
        self.before = all_process_ticks()
        self.busy_before = machine_ticks()[0]
        self.started = time.monotonic()

    def stop(self) -> dict:
        after = all_process_ticks()
        busy = machine_ticks()[0] - self.busy_before
        seconds = time.monotonic() - self.started
        server = sum(after.get(p, ("", 0))[1] - self.before.get(p, ("", 0))[1] for p in self.pids)
        # Ours: this process and everything it started (the generator, idle servers); a generator that has
        # exited is not in `after` at all, and the kernel's rusage of waited-for children gives its CPU.
        ours = descendants(os.getpid())
        others = []
        for pid, (name, ticks) in after.items():
            if pid in ours:
                continue
            share = (ticks - self.before.get(pid, (name, 0))[1]) / self.hz / seconds
            if share >= OTHER_LOAD_REPORTED:
                others.append({"pid": pid, "name": name, "cores": round(share, 2)})
        return {
            "server_cores": round(server / self.hz / seconds, 3),
            "machine_busy_cores": round(busy / self.hz / seconds, 3),
            "other_load": sorted(others, key=lambda o: -o["cores"]),
        }


def wait_for_quiet(max_wait_s: float) -> float:
    """Wait until the machine is nearly idle (our servers wait for queries meanwhile), at most ``max_wait_s``;
    the seconds waited."""
    hz = os.sysconf("SC_CLK_TCK")
    started = time.monotonic()
    while time.monotonic() - started < max_wait_s:
        before = machine_ticks()[0]
        time.sleep(QUIET_SAMPLE_S)
        if (machine_ticks()[0] - before) / hz / QUIET_SAMPLE_S < QUIET_CORES:
            break
    return round(time.monotonic() - started, 1)


# --- processes we start ---------------------------------------------------------------------------------------


@dataclass
class Started:
    name: str
    argv: list[str]
    process: subprocess.Popen
    log: Path


class Processes:
    """Every server this run starts; ``stop_all`` stops each by its PID (then its process group), whatever
    happened."""

    def __init__(self) -> None:
        self.started: list[Started] = []

    def start(self, name: str, argv: list[str], log: Path, cwd: Path | None = None) -> Started:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDNODE_")}
        env["PYTHONUNBUFFERED"] = "1"
        with open(log, "w") as out:
            # Own session: the server and its children form a process group whose id is its PID, so stopping
            # it can reach a child the server left behind, and a Ctrl-C in the terminal reaches only us.
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                start_new_session=True,
            )  # fmt: skip
        entry = Started(name, argv, process, log)
        self.started.append(entry)
        return entry

    def stop(self, entry: Started) -> None:
        process = entry.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Children that outlived their parent (none should) are still in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for entry in reversed(self.started):
            try:
                self.stop(entry)
            except Exception as exc:  # stop the others anyway
                print(f"could not stop {entry.name} (pid {entry.process.pid}): {exc}", file=sys.stderr)
        self.started.clear()


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived: unwind, stopping every server on the way. A BaseException, so that the
    handlers that note a failed run and go on to the next do not swallow it."""


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def stopped_on_exit(processes: Processes):
    """The body runs with SIGINT, SIGTERM and SIGHUP raising :class:`Interrupted`; on the way out, however it
    goes (done, an error, Ctrl-C, a kill from the shell), every process in ``processes`` is stopped by its PID.
    bench/protocols.py shares it."""
    # SIGINT too: a background job of a shell starts with SIGINT ignored, and Python then installs no handler.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, _raise_interrupted) for s in signals}
    try:
        yield
    finally:
        for signum in signals:  # a second Ctrl-C must not cut the cleanup short
            signal.signal(signum, signal.SIG_IGN)
        processes.stop_all()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _probe_query(name: str, qtype: int, qid: int) -> bytes:
    labels = b"".join(bytes((len(p),)) + p.encode("ascii") for p in name.rstrip(".").split("."))
    return _PROBE.pack(qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack(">HH", qtype, 1)


def probe(port: int, name: str, qtype: int = 16) -> tuple[int, int, bytes] | None:
    """(rcode, answer count, the answer) of one UDP query to 127.0.0.1:port, or None without an answer."""
    qid = random.randrange(1 << 16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(PROBE_TIMEOUT_S)
        try:
            sock.sendto(_probe_query(name, qtype, qid), ("127.0.0.1", port))
            while True:
                reply, _ = sock.recvfrom(65535)
                if len(reply) >= 12 and _PROBE.unpack_from(reply)[0] == qid:
                    break
        except OSError:
            return None
    _, flags, _, ancount, _, _ = _PROBE.unpack_from(reply)
    return flags & 0xF, ancount, reply


def check_answer(server: str, reply: bytes, name: str) -> None:
    """The answer is a well-formed DNS message with TXT records for ``name``: dnsperf reads only the id and the
    rcode of what it gets, so a server answering garbage would be measured as fast."""
    try:
        import dns.message
        import dns.rdatatype
    except ImportError:
        return  # dnspython is in the test extra, which `make bench-compare` installs
    message = dns.message.from_wire(reply)
    if not any(r.rdtype == dns.rdatatype.TXT and r.name.to_text() == name for r in message.answer):
        raise RuntimeError(f"{server} answered {name} TXT without TXT records:\n{message}")


def wait_ready(entry: Started, port: int, name: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until the server answers ``name`` TXT with data (the zone is loaded), or it died, or time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if entry.process.poll() is not None:
            raise RuntimeError(f"{entry.name} exited with {entry.process.returncode}; see {entry.log}")
        got = probe(port, name)
        if got is not None and got[0] == 0 and got[1] > 0:
            check_answer(entry.name, got[2], name)
            return
        time.sleep(0.2)
    raise RuntimeError(f"{entry.name} did not answer {name} within {timeout_s:g} s; see {entry.log}")


# --- servers --------------------------------------------------------------------------------------------------


def nsd_config(work: Path, port: int, zonefile: Path) -> Path:
    base = work / "nsd"
    base.mkdir(exist_ok=True)
    conf = base / "nsd.conf"
    conf.write_text(
        f"""server:
    ip-address: 127.0.0.1
    port: {port}
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{base}"
    pidfile: "{base}/nsd.pid"
    database: ""
    zonelistfile: "{base}/zone.list"
    xfrdfile: "{base}/xfrd.state"
    xfrdir: "{base}"
    logfile: "{base}/nsd.log"
    verbosity: 1
    hide-version: yes
    # Response rate limiting would throttle a benchmark whose queries all come from 127.0.0.1.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "{ZONE}"
    zonefile: "{zonefile}"
"""
    )
    return conf


def knot_config(work: Path, port: int, zonefile: Path) -> Path:
    base = work / "knot"
    base.mkdir(exist_ok=True)
    conf = base / "knot.conf"
    conf.write_text(
        f"""server:
    rundir: "{base}"
    pidfile: "{base}/knot.pid"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: "{base}/knot.sock"
database:
    storage: "{base}"
log:
  - target: stderr
    any: info
template:
  - id: default
    storage: "{base}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: {ZONE}
    file: "{zonefile}"
"""
    )
    return conf


@dataclass
class Server:
    name: str
    label: str
    port: int
    argv: list[str]
    entry: Started | None = None
    handle_port: int | None = None


def server_commands(work: Path, store: Path, zonefile: Path, cpu: int, names: list[str]) -> list[Server]:
    pin = ["taskset", "-c", str(cpu)]
    servers = []
    for name in names:
        port = free_udp_tcp_port("127.0.0.1")
        if name == "nsd":
            argv = [*pin, "nsd", "-d", "-c", str(nsd_config(work, port, zonefile))]
            servers.append(Server(name, "NSD, 1 server process", port, argv))
        elif name == "knot":
            argv = [*pin, "knotd", "-c", str(knot_config(work, port, zonefile))]
            servers.append(Server(name, "Knot DNS, 1 UDP worker", port, argv))
        elif name in ("idnode", "idnode-nomemo"):
            handle_port = free_udp_tcp_port("127.0.0.1")
            argv = [*pin, *idnode_cmd("serve", "--data", str(store), "--workers", "1", "--bind", "127.0.0.1",
                                      "--handle-port", str(handle_port), "--dns-port", str(port),
                                      "--dns-zone", ZONE)]  # fmt: skip
            if name == "idnode":
                servers.append(Server(name, "idnode DNS view, 1 worker", port, argv, handle_port=handle_port))
            else:
                argv += ["--dns-memo-mb", "0"]
                servers.append(Server(name, "idnode DNS view, 1 worker, memo off", port, argv))
        elif name == "echo":
            argv = [*pin, sys.executable, "-m", "bench.echo_server", "--port", str(port)]
            servers.append(Server(name, "Python uvloop, fixed answer", port, argv))
    return servers


# --- data -----------------------------------------------------------------------------------------------------


def idnode_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "resolver.cli", *args]


def build_data(work: Path, count: int, seed: int, log: Callable[[str], None]) -> tuple[Path, Path]:
    """The store and its exported zone, reused when the work directory already holds them for these settings."""
    store, zonefile, stamp = work / "store", work / "id.test.zone", work / "built.json"
    wanted = {"count": count, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted and zonefile.exists():
        log(f"reusing the store and zone in {work}")
        return store, zonefile
    shutil.rmtree(store, ignore_errors=True)
    ndjson = work / "ids.ndjson"
    log(f"generating and loading {count:,} identifiers")
    subprocess.run(
        idnode_cmd("gen", "--count", str(count), "--seed", str(seed), "-o", str(ndjson)), check=True
    )
    subprocess.run(idnode_cmd("load", "--quiet", "--data", str(store), str(ndjson)), check=True, cwd=ROOT)
    ndjson.unlink()
    log("exporting the zone")
    subprocess.run(idnode_cmd("export-zone", "--quiet", "--data", str(store), "--zone", ZONE, "-o", str(zonefile)),
                   check=True, cwd=ROOT)  # fmt: skip
    stamp.write_text(json.dumps(wanted))
    return store, zonefile


def write_queries(path: Path, dataset: Dataset, lines: int, missing: float, seed: int) -> dict:
    """dnsperf input: ``name TYPE`` a line; TXT and URI alike, ``missing`` of the names absent."""
    rng = random.Random(f"idnode-compare:{seed}")
    absent = round(lines * missing)
    names = [
        handle_to_name(dataset.handle_at(rng.randrange(dataset.count)), ZONE) for _ in range(lines - absent)
    ]
    names += [handle_to_name(dataset.missing_handle(rng.randrange(1 << 20)), ZONE) for _ in range(absent)]
    rng.shuffle(names)
    with path.open("w", encoding="ascii") as out:
        for i, name in enumerate(names):
            out.write(f"{name} {'TXT' if i % 2 == 0 else 'URI'}\n")
    return {"lines": lines, "missing": absent, "types": "TXT and URI alternately"}


# --- measuring ------------------------------------------------------------------------------------------------

_DNSPERF_FIELDS = {
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "answers_per_s": re.compile(r"Queries per second:\s+([\d.]+)"),
    "latency_avg_s": re.compile(r"Average Latency \(s\):\s+([\d.]+)"),
    "latency_stddev_s": re.compile(r"Latency StdDev \(s\):\s+([\d.]+)"),
}


def parse_dnsperf(text: str) -> dict:
    out: dict = {}
    for key, pattern in _DNSPERF_FIELDS.items():
        found = pattern.search(text)
        if found:
            out[key] = float(found.group(1)) if "." in found.group(1) else int(found.group(1))
    codes = re.search(r"Response codes:\s+(.*)", text)
    if codes:
        out["rcodes"] = {m.group(1): int(m.group(2)) for m in re.finditer(r"(\w+) (\d+) \(", codes.group(1))}
    if "answers_per_s" not in out:
        raise RuntimeError(f"dnsperf printed no rate:\n{text[-2000:]}")
    return out


def dnsperf_argv(settings: argparse.Namespace, port: int, queries: Path, seconds: float) -> list[str]:
    argv = ["taskset", "-c", str(settings.client_cpu), "dnsperf", "-s", "127.0.0.1", "-p", str(port),
            "-d", str(queries), "-l", f"{seconds:g}", "-c", str(settings.clients), "-q", str(settings.outstanding),
            "-t", f"{settings.query_timeout:g}"]  # fmt: skip
    if settings.edns:
        argv.append("-e")
    return argv


def run_dnsperf(server: Server, settings: argparse.Namespace, queries: Path, seconds: float) -> dict:
    """One dnsperf run against ``server``: dnsperf's figures and the CPU the server and others used."""
    argv = dnsperf_argv(settings, server.port, queries, seconds)
    watch = CpuWatch(server.entry.process.pid)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = process.communicate(timeout=seconds + settings.query_timeout + DNSPERF_GRACE_S)
    finally:
        if process.poll() is None:  # interrupted or hung: dnsperf goes with us
            process.kill()
            process.wait()
    cpu = watch.stop()
    if process.returncode != 0:
        raise RuntimeError(f"dnsperf exited with {process.returncode}:\n{out[-2000:]}")
    result = parse_dnsperf(out)
    result.update(cpu)
    return result


def unaccounted(result: dict) -> float:
    """Cores the machine was busy with beyond the server and the generator: neighbours, short-lived processes,
    and kernel work charged to no process."""
    ours = (result.get("server_cores") or 0) + (result.get("generator_cores") or 0)
    return round(max(0.0, result.get("machine_busy_cores", 0) - ours), 3)


class Measurer:
    """One measured interval of a target; the generator's CPU comes from the rusage of waited-for children."""

    def __init__(self, settings: argparse.Namespace, queries: Path):
        self.settings = settings
        self.queries = queries

    def dns(self, server: Server, seconds: float) -> dict:
        import resource

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = run_dnsperf(server, self.settings, self.queries, seconds)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result["generator_cores"] = round(used / seconds, 3)
        result["unaccounted_cores"] = unaccounted(result)
        return result

    def handle(self, server: Server, dataset: Dataset, seconds: float, warmup_s: float) -> dict:
        from bench.loadgen import DatasetSpec, run_udp_load

        spec = DatasetSpec(dataset.count, dataset.seed, dataset.prefix, dataset.enterprises)
        affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {self.settings.client_cpu})  # the generator processes inherit it
        try:
            watch = CpuWatch(server.entry.process.pid)
            result = run_udp_load("127.0.0.1", server.handle_port, spec, duration_s=seconds, warmup_s=warmup_s,
                                  processes=1, missing_ratio=self.settings.missing, seed=self.settings.seed,
                                  server_pids=[server.entry.process.pid])  # fmt: skip
            watched = watch.stop()
        finally:
            os.sched_setaffinity(0, affinity)
        cpu = result.get("server_cpu") or {}
        out = {
            "answers_per_s": result["answers_per_s"],
            "completed": result["answers"],
            "lost": result["lost"],
            "latency_avg_s": result["latency_us"]["mean"] / 1e6,
            "rcodes": result["codes"],
            "server_cores": next(iter(cpu.values()), None),
            "generator_cores": result.get("generator_cpu"),
            "other_load": watched["other_load"],
            "machine_busy_cores": watched["machine_busy_cores"],
        }
        out["unaccounted_cores"] = unaccounted(out)
        return out


# --- the run --------------------------------------------------------------------------------------------------


@dataclass
class Target:
    key: str
    label: str
    kind: str  # "dns" or "handle"
    server: Server
    rounds: list[dict] = field(default_factory=list)
    note: str = ""


def summarize(targets: list[Target], baseline: str = "nsd") -> list[dict]:
    rows = []
    base = next((t for t in targets if t.key == baseline and t.rounds), None)
    base_median = statistics.median(r["answers_per_s"] for r in base.rounds) if base else None
    for t in targets:
        if not t.rounds:
            rows.append({"key": t.key, "label": t.label, "kind": t.kind, "note": t.note})
            continue
        rates = [r["answers_per_s"] for r in t.rounds]
        median = statistics.median(rates)
        cores = [r["server_cores"] for r in t.rounds if r.get("server_cores") is not None]
        gen = [r["generator_cores"] for r in t.rounds if r.get("generator_cores") is not None]
        rows.append({
            "key": t.key, "label": t.label, "kind": t.kind, "note": t.note,
            "median_answers_per_s": round(median), "min_answers_per_s": round(min(rates)),
            "max_answers_per_s": round(max(rates)), "rounds": len(rates),
            "vs_nsd": round(median / base_median, 3) if base_median else None,
            "server_cores": round(statistics.median(cores), 2) if cores else None,
            # Answers per second of server CPU: what the server does with a core, less sensitive to neighbours.
            "answers_per_cpu_s": round(statistics.median(r["answers_per_s"] / r["server_cores"] for r in t.rounds
                                                         if r.get("server_cores"))) if cores else None,
            "generator_cores": round(statistics.median(gen), 2) if gen else None,
            "lost": sum(r.get("lost", 0) for r in t.rounds),
            "latency_avg_ms": round(statistics.median(r["latency_avg_s"] for r in t.rounds) * 1e3, 3)
            if all("latency_avg_s" in r for r in t.rounds) else None,
            "other_load_max_cores": max((r.get("unaccounted_cores", 0) for r in t.rounds), default=0),
        })  # fmt: skip
    return rows


def _fmt(n: float | None, spec: str = ",.0f") -> str:
    return "–" if n is None else format(n, spec)


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| server (one core) | protocol | answers/s (median) | min – max | vs NSD | server CPU | answers per "
        "CPU-second | generator CPU | lost | avg latency ms | others' CPU (max) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        proto = "DNS UDP (dnsperf)" if r["kind"] == "dns" else "Handle UDP (bench/loadgen.py)"
        if "median_answers_per_s" not in r:
            lines.append(f"| {r['label']} | {proto} | not measured: {r['note']} | | | | | | | | |")
            continue
        vs = f"{r['vs_nsd']:.0%}" if r["vs_nsd"] is not None else "–"
        lines.append(
            f"| {r['label']} | {proto} | **{r['median_answers_per_s']:,}** | {r['min_answers_per_s']:,} – "
            f"{r['max_answers_per_s']:,} | {vs} | {_fmt(r['server_cores'], '.2f')} | "
            f"{_fmt(r['answers_per_cpu_s'])} | {_fmt(r['generator_cores'], '.2f')} | {r['lost']:,} | {_fmt(r['latency_avg_ms'], '.2f')} | "
            f"{r['other_load_max_cores']:.2f} |"
        )
    return lines


def plot(rows: list[dict], path: Path, title: str) -> str:
    """Two panels: answers/s (median, whiskers min to max) and answers per second of server CPU. Returns "" or
    why there is no chart."""
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    measured = [r for r in rows if "median_answers_per_s" in r]
    if not measured:
        return "nothing was measured: no chart"
    labels = [
        r["label"].replace(", ", ",\n") + ("\n[Handle UDP]" if r["kind"] == "handle" else "")
        for r in measured
    ]
    colours = ["#4c72b0" if r["key"] in ("nsd", "knot") else "#dd8452" if r["key"].startswith("idnode") else
               "#55a868" if r["kind"] == "handle" else "#8c8c8c" for r in measured]  # fmt: skip
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    medians = [r["median_answers_per_s"] / 1000 for r in measured]
    lows = [r["min_answers_per_s"] / 1000 for r in measured]
    highs = [r["max_answers_per_s"] / 1000 for r in measured]
    err = [
        [m - lo for m, lo in zip(medians, lows, strict=True)],
        [h - m for m, h in zip(medians, highs, strict=True)],
    ]
    bars = left.bar(range(len(measured)), medians, yerr=err, capsize=4, color=colours)
    for bar, r, top in zip(bars, measured, highs, strict=True):
        text = f"{r['median_answers_per_s'] / 1000:,.0f}k" + (
            f"\n{r['vs_nsd']:.0%} of NSD" if r["vs_nsd"] else ""
        )
        left.annotate(text, (bar.get_x() + bar.get_width() / 2, top), ha="center", va="bottom",
                      xytext=(0, 3), textcoords="offset points", fontsize=8)  # fmt: skip
    left.set_ylim(0, max(highs) * 1.25)
    left.set_ylabel("thousands")
    left.set_title("answers/s: median of the rounds (whiskers: min – max)", fontsize=10)
    per_cpu = [(r.get("answers_per_cpu_s") or 0) / 1000 for r in measured]
    bars = right.bar(range(len(measured)), per_cpu, color=colours)
    for bar, value in zip(bars, per_cpu, strict=True):
        right.annotate(f"{value:,.0f}k", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                       xytext=(0, 3), textcoords="offset points", fontsize=8)  # fmt: skip
    right.set_ylim(0, max(per_cpu + [1]) * 1.2)
    right.set_title("answers per second of server CPU (less sensitive to a busy machine)", fontsize=10)
    for ax in (left, right):
        ax.set_xticks(range(len(measured)), labels, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return ""


def display(argv: list[str]) -> str:
    """A command line as it can be pasted: the venv's interpreter and the work directory kept as they are."""
    return shlex.join(argv)


def write_results(out_dir: Path, report: dict, rows: list[dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    m, s = report["machine"], report["settings"]
    title = (f"{s['count']:,} identifiers, server on CPU {s['server_cpu']}, load on CPU {s['client_cpu']}; "
             f"{m['nproc']} × {m['cpu_model']}")  # fmt: skip
    chart_note = plot(rows, out_dir / "compare.png", title)
    md = [
        "# DNS side by side: idnode's DNS view, NSD, Knot and a minimal Python server, one core each",
        "",
        f"Generated by `bench/compare.py` ({report['finished']}). Each server pinned to CPU {s['server_cpu']} "
        f"(`taskset -c {s['server_cpu']}`), dnsperf (and the Handle load generator) to CPU {s['client_cpu']}; all "
        "traffic on 127.0.0.1. Same identifiers for every server: a store of "
        f"{s['count']:,} generated identifiers (`idnode gen --seed {s['seed']}`: URL, EMAIL, DESC, HS_ADMIN each), "
        f"exported with `idnode export-zone` for NSD and Knot. Queries: {s['queries']['lines']:,} names, TXT and "
        f"URI alternately, {s['missing']:.0%} of them absent (NXDOMAIN); EDNS {'on' if s['edns'] else 'off'}. "
        f"{s['rounds']} rounds of {s['seconds']:g} s per server, the order rotating each round, after a "
        f"{s['warmup']:g} s warm-up run that is not counted; the table gives the median round. Before each round "
        f"the script waited up to {s['settle_s']:g} s for the machine to be nearly idle (under {s['quiet_cores']} "
        "core busy besides the idle servers): this machine may be shared.",
        "",
        *table(rows),
        "",
        f"*server CPU*: cores the server (all its processes and threads) used during a round; 1.00 = CPU "
        f"{s['server_cpu']} saturated, below it the server waited for queries, so the load generator or a busy "
        "machine set the pace. *answers per CPU-second*: answers/s divided by server CPU, the server's own cost per "
        "answer, which depends much less on neighbours than answers/s does. *generator CPU*: cores dnsperf (or the "
        "Handle load generator) used; dnsperf polls, so a high figure alone does not make it the limit. *others' "
        "CPU*: the most, in any round, that the machine was busy beyond server and generator (other processes, "
        "short-lived ones included, and kernel work charged to none; from /proc/stat): above about 0.1 the rates "
        "of that round are suspect, and min – max shows the spread. *memo off*: idnode with `--dns-memo-mb 0`, "
        "every answer read from the store and rendered afresh; by default (the row above it) a worker keeps the "
        "rendered records and whole answers of the identifiers asked for (256 MiB), and replays an answer to a "
        "query repeated byte for byte (but its id) after checking the store still holds the same values. dnsperf "
        "cycles through the query file, so after the warm-up most queries are repeats: the popular-identifier "
        "case; the memo-off row is the cost of a query for an identifier nobody asked for lately.",
        "",
        "![answers/s](compare.png)" if not chart_note else f"({chart_note})",
        "",
        "## Machine",
        "",
        f"- {m['nproc']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB, Linux {m['kernel']}",
        f"- commit `{m['commit']}`; load average at start {m['load_average_at_start']}",
        "- " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "",
        "## Commands",
        "",
        "```sh",
        report["command"],
        *report["commands"]["setup"],
        *[f"{report['commands']['servers'][k]}" for k in report["commands"]["servers"]],
        report["commands"]["dnsperf"],
        *([report["commands"]["handle"]] if report["commands"].get("handle") else []),
        "```",
        "",
        "Configurations written by the script (`nsd.conf`, `knot.conf`) are in compare.json under `configs`.",
    ]
    (out_dir / "compare.md").write_text("\n".join(md) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--count", type=int, default=100_000, help="identifiers in the store (default 100,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--servers",
        default=",".join(SERVER_NAMES),
        help="comma-separated subset of " + ",".join(SERVER_NAMES),
    )
    p.add_argument("--no-handle", action="store_true", help="skip idnode's Handle UDP run")
    p.add_argument("--rounds", type=int, default=3, help="measured rounds per server (default 3)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per round (default 10)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of the uncounted first run per server")
    p.add_argument("--clients", type=int, default=16, help="dnsperf -c: client sockets (default 16)")
    p.add_argument(
        "--outstanding",
        type=int,
        default=100,
        help="dnsperf -q: queries in flight (default 100: more overflows Knot's socket buffer)",
    )
    p.add_argument(
        "--query-timeout", type=float, default=1.0, help="dnsperf -t: seconds before a query is lost"
    )
    p.add_argument("--edns", action="store_true", help="queries with EDNS(0) (dnsperf -e)")
    p.add_argument(
        "--missing", type=float, default=0.1, help="share of queries for absent names (default 0.1)"
    )
    p.add_argument("--queries", type=int, default=200_000, help="lines of the dnsperf query file")
    p.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="before each round, wait up to this many seconds for other processes to go quiet (0: never)",
    )
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument(
        "--workdir", type=Path, help="keep store, zone and logs here (reused when count and seed match)"
    )
    p.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results", help="where compare.json/.md/.png go"
    )
    args = p.parse_args(argv)  # fmt: skip
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.server_list) - set(SERVER_NAMES)
    if unknown:
        p.error(f"unknown servers: {', '.join(sorted(unknown))}")
    if (
        not 1 <= args.rounds <= MAX_ROUNDS
        or not 0 < args.seconds <= MAX_SECONDS
        or not 0 <= args.warmup <= MAX_SECONDS
        or not 0 <= args.settle <= MAX_SECONDS
    ):
        p.error(f"rounds 1..{MAX_ROUNDS}, seconds and warm-up within {MAX_SECONDS:g}")
    if not 0 <= args.missing < 1 or args.count < 1 or args.queries < 2:
        p.error("missing within [0, 1), count ≥ 1, queries ≥ 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_tools(args.server_list)
    if missing:
        packages = sorted({APT_PACKAGES[t] for t in missing})
        print(f"bench/compare.py needs {', '.join(missing)}, which is not installed. As root:\n"
              f"    apt-get update && apt-get install -y {' '.join(packages)}", file=sys.stderr)  # fmt: skip
        return 2
    cpus = os.sched_getaffinity(0)
    if args.server_cpu not in cpus or args.client_cpu not in cpus or args.server_cpu == args.client_cpu:
        print(
            f"need two distinct CPUs for server and load; this process may use {sorted(cpus)}",
            file=sys.stderr,
        )
        return 2

    def log(text: str) -> None:
        print(f"[compare] {text}", file=sys.stderr, flush=True)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="idnode-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    processes = Processes()
    try:
        with stopped_on_exit(processes):
            return _run(args, work, processes, log)
    except (KeyboardInterrupt, Interrupted) as exc:
        log(f"interrupted ({exc or 'Ctrl-C'}): the servers are stopped")
        return 130
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path, processes: Processes, log: Callable[[str], None]) -> int:
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %z")
    info = machine()
    dataset = Dataset(args.count, args.seed)
    store, zonefile = build_data(work, args.count, args.seed, log)
    queries = work / "queries.txt"
    query_info = write_queries(queries, dataset, args.queries, args.missing, args.seed)
    servers = server_commands(work, store, zonefile, args.server_cpu, args.server_list)
    probe_name = handle_to_name(dataset.handle_at(0), ZONE)
    for server in servers:
        log(f"starting {server.name} on 127.0.0.1:{server.port}")
        server.entry = processes.start(server.name, server.argv, work / f"{server.name}.log", cwd=ROOT)
        wait_ready(server.entry, server.port, probe_name)

    targets = [Target(s.name, s.label, "dns", s) for s in servers]
    idnode_server = next((s for s in servers if s.name == "idnode"), None)
    handle_note = ""
    if idnode_server is not None and not args.no_handle:
        try:
            import bench.loadgen  # noqa: F401  (a teammate's module: use it only when it imports)

            targets.append(Target("idnode-handle", "idnode Handle, 1 worker", "handle", idnode_server))
        except Exception as exc:
            handle_note = f"bench/loadgen.py unusable: {exc}"
            log(handle_note)
    measurer = Measurer(args, queries)

    def measure(target: Target, seconds: float) -> dict:
        if target.kind == "dns":
            return measurer.dns(target.server, seconds)
        return measurer.handle(target.server, dataset, seconds, 0.0)

    for target in targets:
        if args.warmup:
            log(f"warming up {target.key} ({args.warmup:g} s)")
            try:
                measure(target, args.warmup)
            except Exception as exc:
                target.note = f"failed: {exc}"
                log(f"{target.key}: {exc}")
    for round_no in range(args.rounds):
        shift = round_no % len(targets)
        for target in targets[shift:] + targets[:shift]:
            if target.note.startswith("failed"):
                continue
            waited = wait_for_quiet(args.settle) if args.settle else 0.0
            try:
                result = measure(target, args.seconds)
                result["waited_for_quiet_s"] = waited
            except Exception as exc:
                target.note = f"failed: {exc}"
                log(f"{target.key}: {exc}")
                continue
            result["round"] = round_no + 1
            target.rounds.append(result)
            named = ", ".join(f"{o['name']} {o['cores']:.2f}" for o in result["other_load"])
            log(f"round {round_no + 1} {target.key}: {result['answers_per_s']:,.0f}/s, server CPU "
                f"{_fmt(result['server_cores'], '.2f')}, generator CPU {_fmt(result['generator_cores'], '.2f')}, "
                f"the rest {result['unaccounted_cores']:.2f}" + (f" ({named})" if named else "")
                + (f"; waited {result['waited_for_quiet_s']:g} s for quiet" if result["waited_for_quiet_s"] else ""))  # fmt: skip
    processes.stop_all()
    if handle_note:
        targets.append(
            Target("idnode-handle", "idnode Handle, 1 worker", "handle", idnode_server, note=handle_note)
        )
    rows = summarize(targets)
    print("\n".join(table(rows)))

    venv_idnode = ROOT / ".venv" / "bin" / "idnode"
    idnode = str(venv_idnode) if venv_idnode.exists() else "idnode"
    example = next(iter(servers), None)
    report = {
        "started": started_at,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": info,
        "versions": tool_versions(),
        "settings": {
            "count": args.count,
            "seed": args.seed,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "clients": args.clients,
            "outstanding": args.outstanding,
            "query_timeout_s": args.query_timeout,
            "edns": args.edns,
            "missing": args.missing,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "queries": query_info,
            "zone": ZONE,
            "settle_s": args.settle,
            "quiet_cores": QUIET_CORES,
        },  # fmt: skip
        "command": display(
            [sys.executable, "-m", "bench.compare", *(sys.argv[1:] if __name__ == "__main__" else [])]
        ),
        "commands": {
            "setup": [
                f"{idnode} gen --count {args.count} --seed {args.seed} -o ids.ndjson",
                f"{idnode} load --data store ids.ndjson",
                f"{idnode} export-zone --data store --zone {ZONE} -o id.test.zone",
            ],
            "servers": {s.name: display(s.argv).replace(str(work), "$WORK") for s in servers},
            "dnsperf": display(
                dnsperf_argv(args, example.port if example else 0, queries, args.seconds)
            ).replace(str(work), "$WORK"),
            "handle": (
                f"# in-process: bench.loadgen.run_udp_load('127.0.0.1', HANDLE_PORT, DatasetSpec({args.count}, "
                f"{args.seed}), duration_s={args.seconds:g}, processes=1, missing_ratio={args.missing:g}) "
                f"with CPU affinity {{{args.client_cpu}}} (like `{idnode} bench udp --dataset-count "
                f"{args.count} --seed {args.seed} --duration {args.seconds:g} --missing {args.missing:g}` "
                f"under `taskset -c {args.client_cpu}`)"
            )
            if any(t.kind == "handle" and t.rounds for t in targets)
            else "",
        },  # fmt: skip
        "configs": {
            name: (work / name / f"{name}.conf").read_text()
            for name in ("nsd", "knot")
            if (work / name / f"{name}.conf").exists()
        },
        "summary": rows,
        "rounds": {t.key: t.rounds for t in targets},
    }
    write_results(args.out, report, rows)
    log(f"wrote {args.out / 'compare.json'}, compare.md, compare.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
