"""Authenticated Handle writes per second against a real `idnode serve` on loopback, over one TCP connection and
over 16, with idnode's own client (resolver/client.py):

- challenge, HS_SECKEY: every CREATE_HANDLE is challenged (402) and answered with op 200, PBKDF2-HMAC-SHA1 at
  10,000 iterations as CNRI's client does (the server derives the key again for every answer);
- challenge, RSA-2048: the same with an HS_PUBKEY signature (SHA256withRSA) verified per write;
- login, RSA-2048: one op-2001 login per connection (the national SDKs' way), then writes with no challenge.

    python -m bench.handle_admin --seconds 5 --rounds 3 --out bench/results

Each phase runs `--warmup` seconds uncounted, then `--seconds` counted; every connection sends one write, waits
for its answer (a write is answered once the node's writer applied it), and sends the next. Phases alternate
within a round, `--rounds` rounds; the Markdown quotes medians over rounds. Also measured: per-write latency
(P50/P99 of the counted writes), the server's CPU time (the serve process and its children: workers and
writer) per write, and this client's CPU per write (signing and PBKDF2 cost the client too). Every write's
answer must be SUCCESS and a sample of the created handles must resolve, or the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.compare import Processes
from bench.procstat import tree_ticks
from bench.recursion import free_port, percentiles
from bench.results_io import machine_facts
from resolver.admin.crypto import Signer, public_key_from_pem
from resolver.client import HandleClient
from resolver.handle.admin import AdminRequest
from resolver.handle.constants import OpCode, ResponseCode
from resolver.handle.keys import encode_public_key
from resolver.handle.values import HandleValue
from storage.enterprises import add_prefix, issue_credential, register_public_key
from storage.handlekeys import load_node_key
from storage.store import Store

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "88.100.9"  #: under the default node prefix 88.100, hosted by the node
IDENTITY = f"{PREFIX}/ADMIN"
RSA_INDEX = 301  #: where `idnode prefix credential --public-key` puts an RSA key by default
START_TIMEOUT_S = 60.0  #: a node opens its store and binds in about a second; slow machines get more
REQUEST_TIMEOUT_S = 30.0  #: one write on a busy shared machine; beyond this the run fails rather than waits
RESOLVE_SAMPLE = 20  #: created handles resolved after each phase, to show the writes landed
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
MODES = ("challenge-seckey", "challenge-rsa", "login-rsa")
CONNECTIONS = (1, 16)


@dataclass
class Identity:
    secret: Signer
    rsa: Signer


@dataclass
class Phase:
    """What one phase measured."""

    mode: str
    connections: int
    writes: int = 0
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    login_s: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        out = {
            "mode": self.mode, "connections": self.connections, "writes": self.writes,
            "seconds": round(self.seconds, 3), "writes_per_s": round(self.writes / self.seconds, 1),
            "server_cpu_ms_per_write": round(1000 * self.server_cpu_s / max(self.writes, 1), 3),
            "client_cpu_ms_per_write": round(1000 * self.client_cpu_s / max(self.writes, 1), 3),
            "codes": {str(k): v for k, v in sorted(self.codes.items())},
            "latency": percentiles(self.latencies_s) if self.latencies_s else None,
        }  # fmt: skip
        if self.login_s:
            out["login"] = percentiles(self.login_s)
        return out


def build_store(path: Path) -> Identity:
    """The node's store: prefix 88.100.9 with a secret key (300, encrypted with the node key, as `idnode prefix
    credential` issues it) and an RSA-2048 key (301) for 88.100.9/ADMIN."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with Store(path, create=True) as store:
        add_prefix(store, PREFIX, "Bench Co")
        _, secret = issue_credential(store, PREFIX, node_key=load_node_key(path, create=True))
        register_public_key(store, PREFIX, RSA_INDEX, encode_public_key(public_key_from_pem(public_pem)))
    return Identity(
        Signer(IDENTITY, 300, secret=secret.encode()), Signer(IDENTITY, RSA_INDEX, private_pem=private_pem)
    )


async def wait_ready(port: int, process) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"idnode serve exited with {process.returncode}")
        try:
            async with HandleClient("127.0.0.1", port, tcp=True, timeout_s=1.0) as client:
                if (await client.resolve(IDENTITY)).ok:
                    return
        except Exception:
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the node on port {port} did not answer within {START_TIMEOUT_S:g} s")


def _create(handle: str) -> AdminRequest:
    return AdminRequest(
        OpCode.CREATE_HANDLE, handle, (HandleValue(1, "URL", f"https://example.com/{handle}".encode()),)
    )


async def run_phase(port: int, server_pid: int, ids: Identity, mode: str, connections: int, tag: str,
                    warmup_s: float, seconds: float) -> tuple[Phase, list[str]]:  # fmt: skip
    """One phase: `connections` TCP connections writing back to back; only writes started and answered within
    the counted window are counted."""
    phase = Phase(mode, connections)
    signer = ids.secret if mode == "challenge-seckey" else ids.rsa
    clients = [
        HandleClient("127.0.0.1", port, tcp=True, timeout_s=REQUEST_TIMEOUT_S) for _ in range(connections)
    ]
    created: list[str] = []
    for client in clients:
        await client.open()
    try:
        if mode.startswith("login"):
            for client in clients:
                started = time.perf_counter()
                answer = await client.login(signer)
                phase.login_s.append(time.perf_counter() - started)
                if answer.header.response_code != ResponseCode.SUCCESS:
                    raise RuntimeError(f"login answered {answer.header.response_code}")
        per_write_signer = None if mode.startswith("login") else signer
        start = time.perf_counter()
        counted_from, counted_to = start + warmup_s, start + warmup_s + seconds

        async def writer(c: int, client: HandleClient) -> None:
            n = 0
            while True:
                began = time.perf_counter()
                if began >= counted_to:
                    return
                handle = f"{PREFIX}/{tag}-{c}-{n}"
                n += 1
                answer = await client.admin(_create(handle), per_write_signer)
                ended = time.perf_counter()
                code = answer.header.response_code
                if began >= counted_from and ended <= counted_to:
                    phase.codes[code] = phase.codes.get(code, 0) + 1
                    if code == ResponseCode.SUCCESS:
                        phase.writes += 1
                        phase.latencies_s.append(ended - began)
                if code == ResponseCode.SUCCESS:
                    created.append(handle)
                elif began < counted_from:  # counted ones are reported with their codes
                    raise RuntimeError(f"a warm-up write answered {code}: {answer.body[4:200]!r}")

        async def window() -> tuple[int, float]:
            await asyncio.sleep(max(0.0, counted_from - time.perf_counter()))
            return tree_ticks(server_pid), time.process_time()

        tasks = [asyncio.create_task(writer(c, client)) for c, client in enumerate(clients)]
        ticks0, cpu0 = await window()
        await asyncio.sleep(max(0.0, counted_to - time.perf_counter()))
        ticks1, cpu1 = tree_ticks(server_pid), time.process_time()
        await asyncio.gather(*tasks)
        phase.seconds = seconds
        phase.server_cpu_s = (ticks1 - ticks0) / TICKS_PER_S
        phase.client_cpu_s = cpu1 - cpu0
    finally:
        for client in clients:
            await client.close()
    return phase, created


async def check_landed(port: int, created: list[str]) -> None:
    step = max(1, len(created) // RESOLVE_SAMPLE)
    async with HandleClient("127.0.0.1", port, tcp=True, timeout_s=REQUEST_TIMEOUT_S) as client:
        for handle in created[::step]:
            resolved = await client.resolve(handle)
            if not resolved.ok:
                raise RuntimeError(f"{handle} was answered SUCCESS but resolves {resolved.response_code}")


def run(args: argparse.Namespace, work: Path, processes: Processes) -> dict:
    ids = build_store(work / "node")
    port = free_port()
    serve = [sys.executable, "-m", "resolver.cli", "serve", "--workers", str(args.workers), "--probe-interval",
             "0", "--data", str(work / "node"), "--handle-port", str(port)]  # fmt: skip
    node = processes.start("node", serve, work / "node.log", cwd=ROOT)
    asyncio.run(wait_ready(port, node.process))
    rounds = []
    for r in range(args.rounds):
        phases = []
        for mode in args.modes:
            for connections in args.connections:
                tag = f"R{r}-{mode}-{connections}".upper()
                phase, created = asyncio.run(run_phase(port, node.process.pid, ids, mode, connections, tag,
                                                       args.warmup, args.seconds))  # fmt: skip
                asyncio.run(check_landed(port, created))
                summary = phase.summary()
                print(json.dumps(summary), flush=True)
                phases.append(summary)
        rounds.append(phases)
    return {"rounds": rounds, "medians": medians(rounds)}


def medians(rounds: list[list[dict]]) -> list[dict]:
    """Per (mode, connections): the median over rounds of writes/s and of the per-write figures."""
    out = []
    for n, first in enumerate(rounds[0]):
        same = [phases[n] for phases in rounds]
        rates = [p["writes_per_s"] for p in same]
        out.append({
            "mode": first["mode"], "connections": first["connections"],
            "writes_per_s": round(statistics.median(rates), 1), "min": min(rates), "max": max(rates),
            "p50_ms": _median_ms(same, "p50_us"), "p99_ms": _median_ms(same, "p99_us"),
            "server_cpu_ms_per_write": round(statistics.median(p["server_cpu_ms_per_write"] for p in same), 3),
            "client_cpu_ms_per_write": round(statistics.median(p["client_cpu_ms_per_write"] for p in same), 3),
            "codes": _summed_codes(same),
        })  # fmt: skip
    return out


def _median_ms(phases: list[dict], name: str) -> float | None:
    """The median over phases of a latency percentile, None when a phase counted no write."""
    if any(p["latency"] is None for p in phases):
        return None
    return round(statistics.median(p["latency"][name] for p in phases) / 1000, 2)


def _summed_codes(phases: list[dict]) -> dict[str, int]:
    total: dict[str, int] = {}
    for p in phases:
        for code, count in p["codes"].items():
            total[code] = total.get(code, 0) + count
    return total


def markdown(result: dict) -> str:
    m, a = result["machine"], result["args"]
    lines = [
        "# Authenticated Handle writes per second",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}, kernel "
        f"{m['kernel']}; commit {m['commit']}; {m['date']}. The machine was shared with other work while this ran: "
        "compare medians and ratios from this one run, not absolute figures across runs.",
        "",
        f"Command: `{result['command']}`",
        "",
        f"One `idnode serve --workers {a['workers']}` on 127.0.0.1 (a worker and the writer; the client in a third "
        "process on the same 2 CPUs). Each connection sends CREATE_HANDLE (one URL value) and waits for the "
        f"answer before the next; {a['warmup']:g} s warm-up, {a['seconds']:g} s counted per phase, phases "
        f"alternated, {a['rounds']} rounds; medians over rounds (min-max of writes/s beside). Server CPU: the "
        "serve process and its children per write; client CPU: this client's per write.",
        "",
        "| mode | connections | writes/s (median) | min-max | P50 ms | P99 ms | server CPU ms/write | "
        "client CPU ms/write | answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["medians"]:
        lines.append(
            f"| {r['mode']} | {r['connections']} | {r['writes_per_s']:,} | {r['min']:,}-{r['max']:,} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['server_cpu_ms_per_write']} | {r['client_cpu_ms_per_write']} | "
            f"{r['codes']} |"
        )
    lines += ["", *reading(result["medians"]), ""]
    return "\n".join(lines)


def reading(rows: list[dict]) -> list[str]:
    """What the table says, as ratios of its own medians (the shared machine moves absolute figures)."""
    by = {(r["mode"], r["connections"]): r for r in rows}
    out = []
    for c in sorted({r["connections"] for r in rows}):
        login, rsa, sec = (by.get((m, c)) for m in MODES[::-1])
        if login and rsa and sec:
            out.append(
                f"- {c} connection(s): a login per connection writes {login['writes_per_s'] / rsa['writes_per_s']:.1f}x "
                f"as fast as an RSA challenge per write and {login['writes_per_s'] / sec['writes_per_s']:.1f}x as "
                f"fast as an HS_SECKEY one; the server spends {login['server_cpu_ms_per_write']} / "
                f"{rsa['server_cpu_ms_per_write']} / {sec['server_cpu_ms_per_write']} ms of CPU per write "
                f"(a write alone, the challenge round with an RSA check, with PBKDF2 at 10,000 iterations)."
            )
    counts = sorted({r["connections"] for r in rows})
    if len(counts) > 1:
        lo, hi = counts[0], counts[-1]
        for mode in MODES:
            if (mode, lo) in by and (mode, hi) in by:
                out.append(f"- {mode}: {hi} connections give {by[(mode, hi)]['writes_per_s'] / by[(mode, lo)]['writes_per_s']:.1f}x "
                           f"the writes/s of {lo}.")  # fmt: skip
    out += [
        "- The per-address limit of challenges and logins (AUTH_RATE_PER_S, 20/s after a burst of 60, "
        "resolver/admin/handler.py) does not apply here: 127.0.0.0/8 is in `rate_limit_exempt` by default. A "
        "client outside those networks answering a challenge per write gets at most ~20 writes/s; a login per "
        "connection costs one challenge, then writes are not limited by it.",
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.handle_admin", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="counted seconds per phase")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="uncounted seconds before each phase's count"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--connections", nargs="+", type=int, default=list(CONNECTIONS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--markdown-only", action="store_true", help="rewrite the .md from the .json in --out"
    )
    args = parser.parse_args(argv)
    if args.markdown_only:
        result = json.loads((args.out / "handle_admin.json").read_text())
        (args.out / "handle_admin.md").write_text(markdown(result))
        return 0
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="idnode-handle-admin-") as tmp:
            result = run(args, Path(tmp), processes)
    finally:
        processes.stop_all()
    result.update(machine=machine_facts(), args=vars(args) | {"out": str(args.out)},
                  command="python -m bench.handle_admin " + " ".join(argv if argv is not None else sys.argv[1:]))  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "handle_admin.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "handle_admin.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
