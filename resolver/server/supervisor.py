"""The parent of `idnode serve`: starts N worker processes that share the ports through SO_REUSEPORT,
restarts one that dies (with back-off), and stops them all on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time

from resolver.config import ServeConfig
from resolver.server.worker import run_worker

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)  #: delays before restarting a worker that keeps dying
STABLE_AFTER_S = 30.0  #: a worker that lived this long resets its back-off
STOP_GRACE_S = 10.0  #: how long workers get to flush and close before SIGKILL
WAIT_POLL_S = 0.2  #: how often the parent looks for exited workers and stop requests


def resolve_port(config: ServeConfig) -> int:
    """A concrete port for port 0: one free for both UDP and TCP on the first bind address."""
    if config.handle_port:
        return config.handle_port
    host = config.binds[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp, socket.socket(family, socket.SOCK_DGRAM) as udp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError("no port free for both UDP and TCP")


def _spawn(config: ServeConfig) -> int:
    pid = os.fork()
    if pid == 0:  # the child: a worker until it is told to stop
        code = 0
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            run_worker(config)
        except BaseException:
            log.exception("worker %d failed", os.getpid())
            code = 1
        finally:
            os._exit(code)
    return pid


def supervise(config: ServeConfig) -> int:
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    workers: dict[int, tuple[int, float, int]] = {}  # pid -> (slot, started at, failures in a row)
    for slot in range(config.workers):
        workers[_spawn(config)] = (slot, time.monotonic(), 0)
    log.info("serving with %d workers: %s", config.workers, ", ".join(str(p) for p in workers))
    while not stopping:
        # Poll rather than block: a blocking waitpid is resumed after the signal handler runs (PEP 475).
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            time.sleep(WAIT_POLL_S)
            continue
        if stopping or pid not in workers:
            continue
        slot, started, failures = workers.pop(pid)
        failures = 0 if time.monotonic() - started > STABLE_AFTER_S else failures + 1
        delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
        log.warning("worker %d exited (status %d); restarting in %.1f s", pid, status, delay)
        time.sleep(delay)
        if not stopping:
            workers[_spawn(config)] = (slot, time.monotonic(), failures)
    return _stop_all(workers)


def _stop_all(workers: dict[int, tuple[int, float, int]]) -> int:
    for pid in workers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE_S
    remaining = set(workers)
    while remaining and time.monotonic() < deadline:
        for pid in list(remaining):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                remaining.discard(pid)
        time.sleep(0.05)
    for pid in remaining:
        log.warning("worker %d did not stop in %.0f s; killing it", pid, STOP_GRACE_S)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return 0
