"""Probing enterprise nodes: every `probe_interval_s`, GET_SITE_INFO to each server of each prefix served by an
enterprise's own node, recording up/down, latency and the last answer.

Where it runs: in the node's writer process (one per node, restarted by the supervisor), not in the workers,
so an enterprise node gets one probe per interval whatever the worker count. How the result travels: a small
JSON state file beside the store (probes.json, written whole and renamed into place), which `idnode prefix
list`, the acceptance report and the stats read, and Prometheus gauges set by the writer process
(multiprocess mode merges them into every worker's /metrics). Not an entry of the write log: probe results
are observations of this machine, not data every member should apply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from resolver.handle.constants import ResponseCode
from resolver.handle.errors import HandleProtocolError
from resolver.handle.message import split_request_digest
from resolver.handle.values import decode_site
from resolver.recursion.upstream import Upstream, UpstreamError, endpoint_of

log = logging.getLogger(__name__)

STATE_FILE = "probes.json"  #: beside data.mdb; read by the CLI, the report and the stats
PROBE_TIMEOUT_S = 5.0  #: one probe (UDP, then TCP); a node slower than this counts as down
MAX_CONCURRENT_PROBES = 16  #: probes under way at once: 300 enterprise nodes take a few seconds, not a burst
STALE_INTERVALS = 3  #: results older than this many intervals (the writer stopped probing) count as unknown
MAX_ERROR_CHARS = 200  #: the reason a probe failed, as kept in the state file


def state_path(data_dir: Path) -> Path:
    return Path(data_dir) / STATE_FILE


def read_state(data_dir: Path) -> dict:
    """{"interval_s", "time", "prefixes": {prefix: result}} or an empty state when there is none (yet)."""
    try:
        return json.loads(state_path(data_dir).read_text())
    except (OSError, ValueError):
        return {"interval_s": 0, "time": 0, "prefixes": {}}


def fresh_results(data_dir: Path, now_s: float | None = None) -> dict[str, dict]:
    """The per-prefix results of a probe pass that is not stale (else none: nobody is probing)."""
    state = read_state(data_dir)
    now_s = time.time() if now_s is None else now_s
    if not state.get("time") or now_s - state["time"] > STALE_INTERVALS * max(state.get("interval_s", 0), 1):
        return {}
    return state.get("prefixes", {})


def annotate(listed: list[dict], data_dir: Path, now_s: float | None = None) -> list[dict]:
    """Add each enterprise's probe result (`node`: up, latency_ms, last_answer, error; None when not probed)
    to the listing of storage.enterprises.enterprises; an enterprise node that answers its probes counts
    as connected (接入企业节点), like one that authenticated recently."""
    results = fresh_results(data_dir, now_s)
    for entry in listed:
        result = results.get(entry["prefix"]) if entry["state"] == "referral" else None
        entry["node"] = result
        if result and result.get("up"):
            entry["connected"] = True
    return listed


class Prober:
    """Probes every enterprise node of `store` each `interval_s`; one per node (in the writer)."""

    def __init__(self, prefixes, data_dir: Path, interval_s: float, timeout_s: float = PROBE_TIMEOUT_S):
        """`prefixes`: a coroutine function returning the store's prefix table (the writer reads it in its
        commit thread, the only thread that uses its store)."""
        self.prefixes = prefixes
        self.data_dir = Path(data_dir)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.upstream = Upstream()
        self._previous: dict[str, dict] = read_state(data_dir).get("prefixes", {})
        self._gauges = None

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.probe_all()
            except Exception:
                log.exception("probing enterprise nodes failed; trying again next interval")
            await asyncio.sleep(max(self.interval_s - (time.monotonic() - started), 0.0))

    async def probe_all(self) -> dict[str, dict]:
        """Probe every enterprise node once; write the state file and the gauges; return the results."""
        sites = {
            info.prefix: info.site
            for info in (await self.prefixes()).values()
            if info.state == "referral" and info.site
        }
        limit = asyncio.Semaphore(MAX_CONCURRENT_PROBES)

        async def one(prefix: str, site: bytes) -> tuple[str, dict]:
            async with limit:
                return prefix, await self.probe_site(prefix, site)

        results = dict(await asyncio.gather(*(one(p, s) for p, s in sites.items())))
        self._previous = results
        self._write(results)
        self._publish(results)
        return results

    async def probe_site(self, prefix: str, site_data: bytes) -> dict:
        """One prefix: GET_SITE_INFO to each server of its site; up when any answers."""
        now = time.time()
        before = self._previous.get(prefix, {})
        result = {"up": False, "latency_ms": None, "probed": now, "servers": [], "error": "",
                  "last_answer": before.get("last_answer"), "since": before.get("since", now)}  # fmt: skip
        try:
            servers = decode_site(site_data).servers
        except HandleProtocolError as exc:
            result["error"] = f"its HS_SITE cannot be read: {exc}"[:MAX_ERROR_CHARS]
            return self._settle(result, before)
        errors = []
        for server in servers:
            endpoint = endpoint_of(server)
            started = time.monotonic()
            try:
                message = await self.upstream.ask_site_info(endpoint, self.timeout_s)
                latency_ms = round((time.monotonic() - started) * 1000, 2)
                code = message.header.response_code
                entry = {"address": endpoint.describe(), "up": True, "latency_ms": latency_ms, "code": code}
                if code == ResponseCode.SUCCESS:
                    _, body = split_request_digest(message.body, False)
                    entry["serial"] = decode_site(body).serial
            except (UpstreamError, HandleProtocolError, OSError) as exc:
                entry = {"address": endpoint.describe(), "up": False, "error": str(exc)[:MAX_ERROR_CHARS]}
                errors.append(f"{endpoint.describe()}: {exc}")
            result["servers"].append(entry)
            if entry["up"] and not result["up"]:
                result["up"], result["latency_ms"] = True, entry["latency_ms"]
                result["last_answer"] = {
                    "time": time.time(),
                    "code": entry["code"],
                    "serial": entry.get("serial"),
                }
        if not servers:
            errors.append("its HS_SITE lists no server")
        result["error"] = "" if result["up"] else "; ".join(errors)[:MAX_ERROR_CHARS]
        return self._settle(result, before)

    @staticmethod
    def _settle(result: dict, before: dict) -> dict:
        """Keep `since` (when the node last went up or down) across passes with the same state."""
        if before.get("up") != result["up"]:
            result["since"] = result["probed"]
            if before:
                log.warning("enterprise node %s", "up again" if result["up"] else f"down: {result['error']}",
                            extra={"event": "enterprise_node_up" if result["up"] else "enterprise_node_down"})  # fmt: skip
        return result

    def _write(self, results: dict[str, dict]) -> None:
        state = {"interval_s": self.interval_s, "time": time.time(), "prefixes": results}
        fd, tmp = tempfile.mkstemp(prefix=".probes.", dir=self.data_dir)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(state, out, indent=1, sort_keys=True)
            os.replace(tmp, state_path(self.data_dir))
        except OSError as exc:
            log.error("cannot write %s: %s", state_path(self.data_dir), exc)
            Path(tmp).unlink(missing_ok=True)

    def _publish(self, results: dict[str, dict]) -> None:
        from resolver import metrics

        if not metrics.enabled():
            return
        if self._gauges is None:
            from prometheus_client import Gauge

            mode = "livemostrecent"  # the writer's values while it lives; a restarted writer publishes anew
            self._gauges = (
                Gauge("idnode_enterprise_node_up", "1 if the enterprise node answered its last probe (GET_SITE_INFO)",
                      ["prefix"], multiprocess_mode=mode, registry=None),
                Gauge("idnode_enterprise_node_latency_seconds", "Time the enterprise node took to answer its last probe",
                      ["prefix"], multiprocess_mode=mode, registry=None),
                Gauge("idnode_enterprise_node_last_answer_timestamp_seconds",
                      "Unix time of the enterprise node's last answer to a probe", ["prefix"],
                      multiprocess_mode=mode, registry=None),
            )  # fmt: skip
        up, latency, last = self._gauges
        for prefix, result in results.items():
            up.labels(prefix).set(1 if result["up"] else 0)
            if result["latency_ms"] is not None:
                latency.labels(prefix).set(result["latency_ms"] / 1000)
            if result.get("last_answer"):
                last.labels(prefix).set(result["last_answer"]["time"])

    async def close(self) -> None:
        await self.upstream.close()


def start_prober(config, store, thread) -> asyncio.Task | None:
    """The node's prober as a task of the running loop (the writer's), reading the prefix table of `store`
    in `thread` (the writer's commit thread); None when probing is off. Cancel the task to stop it."""
    if not config.probe_interval_s:
        return None
    loop = asyncio.get_running_loop()

    async def prefixes() -> dict:
        return await loop.run_in_executor(thread, store.prefixes)

    prober = Prober(prefixes, config.data_dir, config.probe_interval_s)

    async def run() -> None:
        try:
            await prober.run()
        finally:
            await prober.close()

    return loop.create_task(run())
