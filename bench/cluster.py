"""Cluster mode end to end on one machine: three NATS JetStream servers and three idnode members on loopback.

Measures (issue 12, item 7):
1. write throughput: `idnode load` of COUNT identifiers into member a, acknowledged identifiers per second (every
   entry is acknowledged after JetStream's quorum has it and a has applied it), while members b and c apply
   the same log; their apply lag (entries, and seconds from the load's end until each has caught up);
2. HTTP batches of 2,000 into member a at full speed (bench/http_batch.py against the running member);
3. bootstrap of a new member: from an empty store by replay alone, and from a backup of a plus the replay of
   what came after it (the backup's manifest records its log position); the time until it has applied the
   whole log.

Everything runs on this machine at once (six NATS and idnode processes besides the load), so the figures are
a floor for a real cluster with a machine per member. Results: bench/results/cluster.json and cluster.md.

    .venv/bin/python -m bench.cluster --count 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.results_io import machine_facts
from resolver.cluster.status import read_status
from resolver.writer.client import SyncWriterClient
from storage.enterprises import add_prefix, issue_credential
from storage.store import Store
from tests.nats_cluster import nats_cluster
from tests.servers import REPO, RunningNode, free_port

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_S = 0.2  #: how often the members' status files are read for their lag
CAUGHT_UP_TIMEOUT_S = 1800.0  #: a member that has not caught up by then is reported as not caught up
BATCH_PREFIX = "88.100.200"  #: HTTP batches go under BATCH_PREFIX.1 (bench/http_batch.py adds the .1)


def start_member(root: Path, name: str, urls: list[str]) -> RunningNode:
    data = root / name
    if not (data / "data.mdb").exists():
        Store(data, create=True).close()
    flags = ("--http-port", str(free_port()), "--cluster-nats", ",".join(urls), "--cluster-node", name)
    return RunningNode(data, workers=1, extra=flags)


def idnode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resolver.cli", *args], capture_output=True, text=True,
                          cwd=REPO, check=True)  # fmt: skip


class LagSampler:
    """Reads the members' status files every SAMPLE_S: the largest lag each showed, and when each last had one."""

    def __init__(self, data_dirs: dict[str, Path]):
        self.data_dirs = data_dirs
        self.max_lag = dict.fromkeys(data_dirs, 0)
        self.caught_up_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            for name, data in self.data_dirs.items():
                status = read_status(data) or {}
                lag = status.get("lag", 0)
                self.max_lag[name] = max(self.max_lag[name], lag)
                if lag:
                    self.caught_up_at.pop(name, None)
                else:
                    self.caught_up_at.setdefault(name, time.monotonic())


def wait_caught_up(data: Path, last: int, timeout_s: float = CAUGHT_UP_TIMEOUT_S) -> float | None:
    """Seconds until the member in `data` has applied position `last` (None: not within timeout_s)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        status = read_status(data) or {}
        if status.get("applied", 0) >= last:
            return time.monotonic() - started
        time.sleep(SAMPLE_S / 4)
    return None


def stream_last(data: Path) -> int:
    return (read_status(data) or {}).get("stream_last", 0)


def run(args: argparse.Namespace) -> dict:
    root = Path(tempfile.mkdtemp(prefix="idnode-cluster-bench-", dir=args.workdir))
    result: dict = {"machine": machine_facts(), "command": " ".join(sys.argv), "count": args.count}
    try:
        source = root / "load.ndjson"
        idnode("gen", "--count", str(args.count), "--seed", "1", "-o", str(source))
        with nats_cluster(root / "nats") as nats:
            members = {name: start_member(root, name, nats.urls) for name in ("a", "b", "c")}
            try:
                result.update(measure(args, root, nats.urls, members, source))
            finally:
                for node in members.values():
                    node.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


def measure(args, root: Path, urls: list[str], members: dict[str, RunningNode], source: Path) -> dict:
    out: dict = {}
    a = members["a"]
    # 1. a load through member a, b and c applying behind it
    with LagSampler({name: root / name for name in ("b", "c")}) as sampler:
        started = time.monotonic()
        idnode("load", "--quiet", "--data", str(root / "a"), str(source))
        load_s = time.monotonic() - started
        last = stream_last(root / "a")
        while stream_last(root / "a") < last or not last:
            time.sleep(SAMPLE_S)
            last = stream_last(root / "a")
        catch_up = {name: wait_caught_up(root / name, last) for name in ("b", "c")}
    out["load"] = {
        "seconds": round(load_s, 2), "identifiers_per_s": round(args.count / load_s),
        "max_lag_entries": sampler.max_lag, "log_entries": last,
        "caught_up_after_load_s": {name: round(s, 2) if s is not None else None for name, s in catch_up.items()},
    }  # fmt: skip
    print(f"load: {args.count:,} identifiers in {load_s:.1f} s = {args.count / load_s:,.0f}/s acknowledged; "
          f"b, c caught up {catch_up} s after", flush=True)  # fmt: skip

    # 2. HTTP batches of 2,000 at full speed into a
    writer = SyncWriterClient(root / "a" / "writer.sock")
    try:
        add_prefix(writer, f"{BATCH_PREFIX}.1", "Batch Co", None)
        user, secret = issue_credential(writer, f"{BATCH_PREFIX}.1")
    finally:
        writer.close()
    batch_json = root / "http-batch.json"
    subprocess.run([sys.executable, "-m", "bench.http_batch", "--server", f"http://127.0.0.1:{a.http_port}",
                    "--user", user, "--secret", secret, "--prefix", BATCH_PREFIX, "--batches", str(args.batches),
                    "--clients", "4", "--json", str(batch_json), "--out", str(root), "--name", "batch"],
                   cwd=REPO, check=True, capture_output=True)  # fmt: skip
    batches = json.loads(batch_json.read_text())
    out["http_batches"] = {key: batches[key] for key in ("identifiers_per_s", "latency_ms") if key in batches}
    print(f"http batches: {out['http_batches']}", flush=True)

    # 3. bootstrap: replay into an empty store; a backup of a plus the replay of what followed it
    last = stream_last(root / "a")
    started = time.monotonic()
    fresh = start_member(root, "d", urls)
    try:
        replay_s = wait_caught_up(root / "d", last)
        total_replay_s = time.monotonic() - started
    finally:
        fresh.stop()
    backup = root / "backup"
    started = time.monotonic()
    idnode("backup", "--data", str(root / "a"), str(backup))
    backup_s = time.monotonic() - started
    manifest = json.loads((backup / "backup.json").read_text())
    os.rename(backup, root / "e")
    started = time.monotonic()
    restored = start_member(root, "e", urls)
    try:
        restored_s = wait_caught_up(root / "e", stream_last(root / "a"))
        restored_total_s = time.monotonic() - started
    finally:
        restored.stop()
    identifiers = args.count + args.batches * 2000
    out["bootstrap"] = {
        "identifiers": identifiers, "log_entries": last,
        "replay_from_empty_s": round(total_replay_s, 2), "replay_wait_s": replay_s,
        "replay_identifiers_per_s": round(identifiers / total_replay_s),
        "backup_s": round(backup_s, 2), "backup_log_position": manifest["log_position"],
        "from_backup_s": round(restored_total_s, 2), "from_backup_wait_s": restored_s,
        "extrapolated_20m_replay_s": round(20_000_000 / (identifiers / total_replay_s)),
    }  # fmt: skip
    print(f"bootstrap: {out['bootstrap']}", flush=True)
    return out


def write_results(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cluster.json").write_text(json.dumps(result, indent=2) + "\n")
    load, boot, batches = result["load"], result["bootstrap"], result["http_batches"]
    machine = result["machine"]
    lines = [
        "# Cluster mode on one machine: 3 NATS JetStream servers, 3 idnode members (1 worker each)",
        "",
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB, Python "
        f"{machine['python']}, commit {machine['commit']}, {machine['date']}. Command: `{result['command']}`.",
        "Every process of the cluster shares these CPUs, so the figures are a floor for a member per machine.",
        "",
        "| measure | figure |",
        "|---|---|",
        f"| `idnode load` of {result['count']:,} identifiers into member a (acknowledged = quorum + a applied) | "
        f"{load['identifiers_per_s']:,} identifiers/s ({load['seconds']} s, {load['log_entries']:,} log entries) |",
        f"| apply lag of b, c during the load (largest, entries) | {load['max_lag_entries']} |",
        f"| b, c caught up after the load ended (s) | {load['caught_up_after_load_s']} |",
        f"| HTTP batches of 2,000 into a, 4 clients | {batches.get('identifiers_per_s', 0):,.0f} identifiers/s |",
        f"| new member from an empty store, replay of {boot['identifiers']:,} identifiers | "
        f"{boot['replay_from_empty_s']} s ({boot['replay_identifiers_per_s']:,} identifiers/s) |",
        f"| ... extrapolated to 20M identifiers | {boot['extrapolated_20m_replay_s']:,} s |",
        f"| backup of a (log position {boot['backup_log_position']:,}) | {boot['backup_s']} s |",
        f"| new member from that backup, caught up | {boot['from_backup_s']} s |",
        "",
    ]
    (out_dir / "cluster.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="identifiers loaded through member a")
    parser.add_argument("--batches", type=int, default=50, help="HTTP batches of 2,000 sent to member a")
    parser.add_argument("--workdir", default=None, help="where the stores and NATS data go (default: /tmp)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args)
    write_results(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
