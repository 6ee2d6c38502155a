"""The parent of `idnode serve`: starts N worker processes that share the ports through SO_REUSEPORT (or the
sockets systemd passed), restarts one that dies or hangs (with back-off), replaces them one at a time on
SIGHUP with the configuration read again, and stops them all on SIGTERM/SIGINT. It talks to systemd
(READY, RELOADING, STOPPING, STATUS, WATCHDOG) and holds the data directory lock while it serves.

A replacement never leaves a port without a listener: the new worker binds and reports READY before the
old one is told to drain (see resolver.server.lifecycle for how a draining worker loses nothing).

Beside the workers it runs the node's one writer (resolver/writer/server.py), the only process that writes the
store: started first (it opens the store read-write, so the read-only workers find every database), restarted
like a worker when it dies (workers' writes wait for it, bounded), replaced on a reload only when its own
settings changed, and stopped last, after the workers have sent it their last counts.

With a security log collector configured it also runs the exporter (`idnode seclog export`, a child process
of its own that drains the security event queue to the collector), restarts it when it exits, and stops it
after the workers so that their last events are sent; a reload reports each changed setting to the security
log (`config-changed`). The supervisor never keeps the queue open (it forks workers that open it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from resolver import logs, metrics
from resolver.config import ServeConfig
from resolver.security.events import SecurityEvents
from resolver.security.exporter import DRAIN_TIMEOUT_S, spawn_exporter
from resolver.server import shared, systemd
from resolver.server.lifecycle import HEARTBEAT, READY, DataDirLock
from resolver.server.sockets import free_udp_tcp_port
from resolver.server.worker import role_of, run_worker, worker_slots
from resolver.writer.server import run_writer, socket_path
from storage.eventqueue import QueueError

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)  #: delays before restarting a worker that keeps dying
STABLE_AFTER_S = 30.0  #: a worker that lived this long resets its back-off
START_TIMEOUT_S = (
    60.0  #: a worker opens the store and binds in well under a second; a huge store may map slowly
)
HEARTBEAT_TIMEOUT_S = 30.0  #: a ready worker silent this long has a stuck event loop and is killed
WAIT_POLL_S = 0.2  #: the longest the parent sleeps between looks at its workers
STOP_WAIT_AFTER_KILL_S = 5.0  #: SIGKILL takes effect at once; this only bounds a wait that cannot be long
EXPORTER_STOP_WAIT_S = DRAIN_TIMEOUT_S + 3.0  #: the exporter sends what is queued for 2 s after SIGTERM
WRITER_SLOT = -1  #: the slot of the writer process among the supervisor's children (workers have 0..N-1)


class SupervisorError(Exception):
    """The node cannot start (the message says why)."""


@dataclass
class WorkerProc:
    pid: int
    slot: int
    fd: int | None  # read end of the worker's pipe (READY, HEARTBEAT); None once it hit EOF
    config: ServeConfig
    failures: int = 0
    restart_on_exit: bool = True  # False while a start or a reload waits for it to become ready
    ready: bool = False
    retiring: bool = False
    hung: bool = False
    started_s: float = field(default_factory=time.monotonic)
    beat_s: float = field(default_factory=time.monotonic)
    exit_status: int | None = None

    @property
    def is_writer(self) -> bool:
        return self.slot == WRITER_SLOT


def _writer_settings(config: ServeConfig) -> tuple:
    """What the writer depends on: a reload that changes none of it keeps the running writer."""
    return (config.data_dir.resolve(), socket_path(config), config.log_retention_entries, config.log_retention_s,
            config.log_level, config.log_format, config.writer_nice, tuple(config.cluster_nats), config.cluster_node,
            config.cluster_stream, config.probe_interval_s)  # fmt: skip


def resolve_port(config: ServeConfig) -> int:
    """A concrete port for port 0: one free for both UDP and TCP on the first bind address."""
    if config.handle_port:
        return config.handle_port
    return free_udp_tcp_port(config.binds[0])


def _restart_backoff(lived_s: float, failures: int) -> tuple[int, float]:
    """(failures counted so far, seconds to wait) for a process that died after `lived_s`: one that lived long
    enough starts the count afresh, so a crash once a day is restarted at once and a crash loop slows down."""
    failures = 0 if lived_s > STABLE_AFTER_S else failures + 1
    return failures, RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]


def _describe_exit(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Supervisor:
    def __init__(self, config: ServeConfig, load_config: Callable[[], ServeConfig] | None = None):
        self.config = config
        self.load_config = load_config
        self.workers: dict[int, WorkerProc] = {}
        self.restarts: list[tuple[float, int, int]] = []  # (due, slot, failures) of workers to start again
        self.inherited = systemd.listen_fds()
        self.stop_requested = False
        self.reload_requested = False
        self.watchdog_s = systemd.watchdog_interval_s()
        self._watchdog_due = 0.0
        self._wakeup_r = self._wakeup_w = -1
        self._lock: DataDirLock | None = None
        self._metrics_tmp: str | None = None
        self._old_handlers: dict[int, object] = {}
        self.security = SecurityEvents(None)  # config-changed events; opens the queue for each append
        self.exporter: subprocess.Popen | None = None  # `idnode seclog export`, when a collector is set
        self._exporter_due: float | None = None  # when to start the exporter again after it exited
        self._exporter_failures = 0
        self._exporter_started_s = 0.0

    # -- entry ----------------------------------------------------------------------------------------------

    def run(self) -> int:
        self._lock = self._take_lock(self.config)
        try:
            self._setup_metrics()
            shared.prepare_for_workers()  # failed logins and the disk-full episode, counted once for the node
            self.security = self._open_security(self.config)
            self._install_signals()
            self._start_exporter()
            if self.inherited:
                names = ", ".join(f"{s.name}({'udp' if s.is_udp else 'tcp'})" for s in self.inherited)
                log.info("using sockets from systemd: %s", names, extra={"event": "socket_activation"})
            if not self._start_all():
                return 1
            status = f"serving with {len(self._serving())} workers"
            systemd.ready(status)
            metrics.set_workers(len(self._serving()))
            log.info("%s: %s", status, ", ".join(str(p.pid) for p in self._serving()), extra={"event": "started"})
            while not self.stop_requested:
                self._pump(WAIT_POLL_S)
                self._restart_due()
                self._restart_exporter_due()
                if self.reload_requested and not self.stop_requested:
                    self.reload_requested = False
                    self._reload()
            return 0
        finally:
            systemd.stopping()
            log.info("stopping %d workers", len(self._serving()), extra={"event": "stopping"})
            self._stop_all()
            self._stop_exporter()  # after the workers: their last events (summaries) are queued by now
            self._restore_signals()
            if self._lock is not None:
                self._lock.release()
            if self._metrics_tmp:
                metrics.cleanup(self._metrics_tmp)
            log.info("stopped", extra={"event": "stopped"})

    def _take_lock(self, config: ServeConfig) -> DataDirLock:
        lock = DataDirLock(config.data_dir)
        try:
            lock.acquire()
        except BlockingIOError as exc:
            raise SupervisorError(str(exc)) from None
        except OSError as exc:
            raise SupervisorError(f"cannot lock {lock.path}: {exc}") from None
        return lock

    # -- security log ---------------------------------------------------------------------------------------

    def _open_security(self, config: ServeConfig) -> SecurityEvents:
        """The supervisor's SecurityEvents (closed between appends); SupervisorError when the queue named by
        `config` cannot be opened, so a bad queue directory stops a start or a reload, not a worker."""
        try:
            return SecurityEvents.open(config.security_log, config.data_dir, keep_open=False)
        except QueueError as exc:
            raise SupervisorError(f"security_log: {exc}") from None

    def _start_exporter(self) -> None:
        self._exporter_due = None
        if not self.config.security_log.enabled:
            return
        try:
            self.exporter = spawn_exporter(self.config.security_log, self.config.data_dir)
        except OSError as exc:
            log.error("cannot start the security log exporter: %s", exc,
                      extra={"event": "security_exporter_failed"})  # fmt: skip
            self._exporter_failures += 1
            self._exporter_due = time.monotonic() + RESTART_BACKOFF_S[-1]
            return
        self._exporter_started_s = time.monotonic()
        log.info(
            "security log exporter %d started: %s over %s",
            self.exporter.pid,
            self.config.security_log.collector,
            self.config.security_log.transport,
            extra={"event": "security_exporter_started"},
        )

    def _exporter_exited(self, status: int) -> None:
        """The exporter exited (reaped by `_reap`): record its status, and start it again after a back-off."""
        assert self.exporter is not None
        self.exporter.returncode = os.waitstatus_to_exitcode(status)
        if self.stop_requested:
            return
        lived = time.monotonic() - self._exporter_started_s
        self._exporter_failures, delay = _restart_backoff(lived, self._exporter_failures)
        log.warning(
            "security log exporter %d exited (%s) after %.0f s; restarting in %.1f s (events wait queued)",
            self.exporter.pid,
            _describe_exit(status),
            lived,
            delay,
            extra={"event": "security_exporter_exited", "restart_in_s": delay},
        )
        self.exporter = None
        self._exporter_due = time.monotonic() + delay

    def _restart_exporter_due(self) -> None:
        due = self._exporter_due
        if due is not None and time.monotonic() >= due and not self.stop_requested:
            self._start_exporter()

    def _stop_exporter(self) -> None:
        """SIGTERM, then wait while it sends what is queued (at most DRAIN_TIMEOUT_S); SIGKILL if it hangs."""
        proc, self.exporter, self._exporter_due = self.exporter, None, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(EXPORTER_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("security log exporter %d did not stop; killing it", proc.pid,
                        extra={"event": "security_exporter_killed"})  # fmt: skip
            proc.kill()
            proc.wait()

    def _report_changes(self, old: ServeConfig, new: ServeConfig, events: SecurityEvents) -> None:
        """One config-changed event per setting a reload changed (`security_log.<name>` for the table)."""
        for key, before, after in config_changes(old, new):
            events.config_changed(key, before, after, by="reload")

    def _setup_metrics(self) -> None:
        directory = self.config.metrics_dir
        if not directory:
            directory = self._metrics_tmp = tempfile.mkdtemp(prefix="idnode-metrics-")
        metrics.enable(directory, wipe=True)

    def _install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wakeup_w)

        def on_stop(signum: int, frame: object) -> None:
            self.stop_requested = True

        def on_reload(signum: int, frame: object) -> None:
            self.reload_requested = True

        handlers = {signal.SIGTERM: on_stop, signal.SIGINT: on_stop, signal.SIGHUP: on_reload}
        handlers[signal.SIGCHLD] = lambda signum, frame: None  # only to wake the loop through the wakeup fd
        for signum, handler in handlers.items():
            self._old_handlers[signum] = signal.signal(signum, handler)

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        for fd in (self._wakeup_r, self._wakeup_w):
            if fd >= 0:
                os.close(fd)
        self._wakeup_r = self._wakeup_w = -1

    # -- workers ----------------------------------------------------------------------------------------------

    def _spawn(
        self, slot: int, config: ServeConfig, failures: int = 0, restart_on_exit: bool = True
    ) -> WorkerProc:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a worker until it is told to stop
            code = 0
            try:
                os.close(read_fd)
                signal.set_wakeup_fd(-1)
                for fd in [self._wakeup_r, self._wakeup_w] + [p.fd for p in self.workers.values() if p.fd]:
                    if fd is not None and fd >= 0:
                        os.close(fd)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the supervisor's business
                os.set_blocking(write_fd, False)
                if slot == WRITER_SLOT:
                    run_writer(config, write_fd)
                else:
                    run_worker(config, write_fd, self.inherited, role_of(slot, config))
            except BaseException:
                what = "writer" if slot == WRITER_SLOT else "worker"
                log.exception("%s %d failed", what, os.getpid(), extra={"event": f"{what}_failed"})
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        proc = WorkerProc(pid, slot, read_fd, config, failures=failures, restart_on_exit=restart_on_exit)
        self.workers[pid] = proc
        self.restarts = [r for r in self.restarts if r[1] != slot]
        return proc

    def _serving(self) -> list[WorkerProc]:
        """The workers that serve (not the writer, not those retiring), by slot."""
        return sorted(
            (p for p in self.workers.values() if not p.retiring and not p.is_writer), key=lambda p: p.slot
        )

    def _writer(self) -> WorkerProc | None:
        return next((p for p in self.workers.values() if p.is_writer and not p.retiring), None)

    def _start_writer(self, config: ServeConfig) -> WorkerProc | None:
        """Start the writer and wait until it listens; None (logged) when it does not."""
        proc = self._spawn(WRITER_SLOT, config, restart_on_exit=False)
        if not self._await_ready([proc], START_TIMEOUT_S):
            if proc.exit_status is None:
                self._kill(proc.pid, signal.SIGKILL)
                self._await_exit(proc, STOP_WAIT_AFTER_KILL_S)
            log.error("the writer did not start", extra={"event": "writer_start_failed"})
            return None
        proc.restart_on_exit = True
        log.info("writer %d listens on %s", proc.pid, socket_path(config), extra={"event": "writer_started"})
        return proc

    def _start_all(self) -> bool:
        # The writer first: it opens the store read-write (creating what a new version adds), the workers
        # then open it read-only.
        if self._start_writer(self.config) is None:
            log.error("the writer failed to start; stopping", extra={"event": "start_failed"})
            return False
        procs = [
            self._spawn(slot, self.config, restart_on_exit=False) for slot in range(worker_slots(self.config))
        ]
        if not self._await_ready(procs, START_TIMEOUT_S):
            log.error("workers failed to start; stopping", extra={"event": "start_failed"})
            return False
        for proc in procs:
            proc.restart_on_exit = True
        return True

    def _await_ready(self, procs: list[WorkerProc], timeout_s: float) -> bool:
        """Pump until every proc is ready (True), or one exits, the time runs out or a stop is asked (False)."""
        deadline = time.monotonic() + timeout_s
        while not all(p.ready for p in procs):
            if any(p.exit_status is not None for p in procs) or self.stop_requested:
                return False
            if time.monotonic() > deadline:
                log.error(
                    "a worker did not become ready in %.0f s", timeout_s, extra={"event": "start_timeout"}
                )
                return False
            self._pump(0.05)
        return True

    def _await_exit(self, proc: WorkerProc, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while proc.exit_status is None and time.monotonic() < deadline:
            self._pump(0.05)
        if proc.exit_status is None:
            log.warning(
                "worker %d did not stop in %.0f s; killing it",
                proc.pid,
                timeout_s,
                extra={"event": "worker_killed"},
            )
            self._kill(proc.pid, signal.SIGKILL)
            while proc.exit_status is None:
                self._pump(0.05)

    def _kill(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    # -- the loop ---------------------------------------------------------------------------------------------

    def _pump(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for a signal or a worker message, then handle messages, exits, hangs and
        the systemd watchdog. Every waiting loop of the supervisor goes through here."""
        fds = [
            fd
            for fd in [self._wakeup_r] + [p.fd for p in self.workers.values()]
            if fd is not None and fd >= 0
        ]
        try:
            readable, _, _ = select.select(fds, [], [], timeout_s)
        except InterruptedError:
            readable = []
        now = time.monotonic()
        if self._wakeup_r >= 0 and self._wakeup_r in readable:
            try:
                while os.read(self._wakeup_r, 512):
                    pass
            except BlockingIOError:
                pass
        for proc in list(self.workers.values()):
            if proc.fd is not None and proc.fd in readable:
                self._read_link(proc, now)
        self._reap()
        self._check_hung(now)
        if self.watchdog_s and now >= self._watchdog_due:
            systemd.watchdog_ping()
            self._watchdog_due = now + self.watchdog_s

    def _read_link(self, proc: WorkerProc, now: float) -> None:
        try:
            data = os.read(proc.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker closed its end: it is exiting
            os.close(proc.fd)
            proc.fd = None
            return
        proc.beat_s = now
        if READY in data and not proc.ready:
            proc.ready = True
            log.debug("worker %d ready", proc.pid)
        if HEARTBEAT not in data and READY not in data:
            log.debug("worker %d sent %r", proc.pid, data)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.exporter is not None and pid == self.exporter.pid:
                self._exporter_exited(status)
                continue
            proc = self.workers.pop(pid, None)
            if proc is None:
                continue
            proc.exit_status = status
            if proc.fd is not None:
                os.close(proc.fd)
                proc.fd = None
            metrics.process_dead(pid)
            if proc.retiring or self.stop_requested:
                log.debug("worker %d exited (%s)", pid, _describe_exit(status))
                continue
            what = "writer" if proc.is_writer else "worker"
            if not proc.restart_on_exit:
                log.error(
                    "%s %d exited before it was ready (%s)",
                    what,
                    pid,
                    _describe_exit(status),
                    extra={"event": "worker_start_failed"},
                )
                continue
            lived = time.monotonic() - proc.started_s
            failures, delay = _restart_backoff(lived, proc.failures)
            log.warning(
                "%s %d exited (%s) after %.0f s; restarting in %.1f s",
                what,
                pid,
                _describe_exit(status),
                lived,
                delay,
                extra={"event": f"{what}_exited", what: pid, "restart_in_s": delay},
            )
            if not proc.is_writer:
                metrics.worker_restarted("hung" if proc.hung else "exited")
            self.restarts.append((time.monotonic() + delay, proc.slot, failures))
            metrics.set_workers(len(self._serving()))

    def _check_hung(self, now: float) -> None:
        limit = max(HEARTBEAT_TIMEOUT_S, 10 * self.config.prefix_reload_interval_s)
        for proc in self.workers.values():
            if proc.ready and not proc.retiring and not proc.hung and now - proc.beat_s > limit:
                log.error(
                    "worker %d sent no heartbeat for %.0f s; killing it",
                    proc.pid,
                    now - proc.beat_s,
                    extra={"event": "worker_hung", "worker": proc.pid},
                )
                proc.hung = True
                self._kill(proc.pid, signal.SIGKILL)

    def _restart_due(self) -> None:
        now = time.monotonic()
        due = [r for r in self.restarts if r[0] <= now]
        if not due or self.stop_requested:
            return
        self.restarts = [r for r in self.restarts if r[0] > now]
        for _, slot, failures in due:
            proc = self._spawn(slot, self.config, failures)
            if slot == WRITER_SLOT:
                log.info("writer %d started again", proc.pid, extra={"event": "writer_restarted"})
            else:
                log.info("worker %d started in slot %d", proc.pid, slot, extra={"event": "worker_restarted"})
        metrics.set_workers(len(self._serving()))

    # -- reload -----------------------------------------------------------------------------------------------

    def _reload(self) -> None:
        systemd.reloading()
        log.info("reloading the configuration", extra={"event": "reload_start"})
        old_config = self.config
        try:
            new = self.load_config() if self.load_config else old_config
        except Exception as exc:  # a bad file must not take the node down: keep serving the old one
            self._reload_refused("configuration not reloaded, keeping the running one", exc)
            return
        if new.handle_port == 0:
            new.handle_port = old_config.handle_port  # port 0 was resolved once; keep the port clients know
        new_lock = None
        if new.data_dir.resolve() != old_config.data_dir.resolve():
            try:
                new_lock = self._take_lock(new)
            except SupervisorError as exc:
                self._reload_refused("configuration not reloaded", exc)
                return
        security_moved = (new.security_log, new.data_dir) != (old_config.security_log, old_config.data_dir)
        new_security = self.security
        if security_moved:
            try:
                new_security = self._open_security(new)
            except SupervisorError as exc:
                if new_lock is not None:
                    new_lock.release()
                self._reload_refused("configuration not reloaded", exc)
                return
        if (new.log_level, new.log_format) != (old_config.log_level, old_config.log_format):
            logs.setup(new.log_level, new.log_format)
        old_writer = self._replace_writer(old_config, new)
        ok = self._replace_workers(new)
        if old_writer is not None:
            # Two writers on two sockets: the one the serving workers do not use goes.
            keep = old_writer if not ok else None
            for proc in [p for p in self.workers.values() if p.is_writer and not p.retiring and p is not keep]:
                if proc is old_writer or not ok:
                    self._retire(proc)
        if ok:
            self.config = new
            if new_lock is not None and self._lock is not None:
                self._lock.release()
                self._lock = new_lock
            if security_moved and new_security.enabled:
                # The old exporter first sends what is queued to the old collector (for up to 2 s); the
                # changes then go to the new one (the queue may be the same directory).
                self._stop_exporter()
                self.security = new_security
                self._report_changes(old_config, new, self.security)
                self._start_exporter()
            elif security_moved:  # the upload stops: the old collector hears why, then its exporter stops
                self._report_changes(old_config, new, self.security)
                self.security = new_security
                self._stop_exporter()
            else:
                self._report_changes(old_config, new, self.security)
            metrics.reloaded(True)
            log.info(
                "configuration reloaded: %d workers %s",
                len(self._serving()),
                ", ".join(str(p.pid) for p in self._serving()),
                extra={"event": "reload_done"},
            )
        else:
            if new_lock is not None:
                new_lock.release()
            metrics.reloaded(False)
        metrics.set_workers(len(self._serving()))
        systemd.ready(f"serving with {len(self._serving())} workers" + ("" if ok else "; last reload failed"))

    def _reload_refused(self, what: str, exc: Exception) -> None:
        """A reload that changed nothing: log why, count it, and tell systemd the old workers serve on."""
        log.error("%s: %s", what, exc, extra={"event": "reload_failed"})
        metrics.reloaded(False)
        systemd.ready(f"serving with {len(self._serving())} workers; last reload failed: {exc}")

    def _replace_writer(self, old: ServeConfig, new: ServeConfig) -> WorkerProc | None:
        """A new writer when its settings changed: on the same socket the old one stops first (the workers'
        writes wait for the new one, bounded); on another socket the new one starts first and the old one is
        returned, to retire once the workers are replaced."""
        running = self._writer()
        if running is not None and _writer_settings(old) == _writer_settings(new):
            return None
        if running is not None and socket_path(old) == socket_path(new):
            self._retire(running)
            running = None
        if self._start_writer(new) is None:
            log.error("the writer with the new configuration did not start; restarting it with it",
                      extra={"event": "reload_partial"})  # fmt: skip
            self.restarts.append((time.monotonic() + RESTART_BACKOFF_S[0], WRITER_SLOT, 1))
        return running

    def _replace_workers(self, new: ServeConfig) -> bool:
        """One slot at a time: start a worker with `new`, wait until it is ready, then drain the old one.
        The first new worker is the canary: if it fails, nothing has changed and the reload is abandoned."""
        old = self._serving()
        for slot in range(max(len(old), worker_slots(new))):
            if self.stop_requested:
                return False
            if slot < worker_slots(new):
                proc = self._spawn(slot, new, restart_on_exit=False)
                if not self._await_ready([proc], START_TIMEOUT_S):
                    if proc.exit_status is None:
                        self._kill(proc.pid, signal.SIGKILL)
                        self._await_exit(proc, STOP_WAIT_AFTER_KILL_S)
                    if slot == 0:
                        log.error(
                            "a worker with the new configuration did not start; keeping the running workers",
                            extra={"event": "reload_failed"},
                        )
                        return False
                    log.error(
                        "a worker with the new configuration did not start in slot %d; the old one stays",
                        slot,
                        extra={"event": "reload_partial"},
                    )
                    continue
                proc.restart_on_exit = True
            if slot < len(old) and old[slot].pid in self.workers:
                self._retire(old[slot])
        return True

    def _retire(self, proc: WorkerProc) -> None:
        proc.retiring = True
        self._kill(proc.pid, signal.SIGTERM)
        self._await_exit(proc, proc.config.stop_grace_s)

    # -- stop -------------------------------------------------------------------------------------------------

    def _stop_all(self) -> None:
        self.restarts.clear()
        # Workers first: their last counts go to the writer, which stops after them.
        procs = [p for p in self.workers.values() if not p.is_writer]
        for proc in procs:
            proc.retiring = True
            self._kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + max((p.config.stop_grace_s for p in procs), default=0)
        while any(not p.is_writer for p in self.workers.values()) and time.monotonic() < deadline:
            self._pump(0.05)
        for proc in [p for p in self.workers.values() if p.is_writer]:
            proc.retiring = True
            self._kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + max((p.config.stop_grace_s for p in self.workers.values()), default=0)
        while self.workers and time.monotonic() < deadline:
            self._pump(0.05)
        for proc in list(self.workers.values()):
            log.warning(
                "worker %d did not stop in %.0f s; killing it",
                proc.pid,
                proc.config.stop_grace_s,
                extra={"event": "worker_killed"},
            )
            self._kill(proc.pid, signal.SIGKILL)
            try:
                os.waitpid(proc.pid, 0)
            except ChildProcessError:
                pass
            self.workers.pop(proc.pid, None)


def config_changes(old: ServeConfig, new: ServeConfig) -> list[tuple[str, object, object]]:
    """(key, old value, new value) of every setting that differs; the [security_log] table setting by
    setting, as `security_log.<name>`."""
    out: list[tuple[str, object, object]] = []
    for f in dataclasses.fields(ServeConfig):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(before) and dataclasses.is_dataclass(after):
            for g in dataclasses.fields(before):
                inner_before, inner_after = getattr(before, g.name), getattr(after, g.name)
                if inner_before != inner_after:
                    out.append((f"{f.name}.{g.name}", inner_before, inner_after))
        elif before != after:
            out.append((f.name, before, after))
    return out


def supervise(config: ServeConfig, load_config: Callable[[], ServeConfig] | None = None) -> int:
    """Run the node until SIGTERM/SIGINT; SIGHUP builds the configuration again with `load_config`."""
    return Supervisor(config, load_config).run()
