"""What the HTTP handlers of one worker share: its store, resolution service, Handle frontend, authenticator,
template checker, security events, the node's shared memory (failed logins, disk-full episodes) and where
writes go: the node's writer (a serving worker's store is read-only) or, without one (tests), this process's
store. Built once per worker by app.py and kept on the aiohttp application.
`client_source` and `actor_of` say who wrote from where, for the audit trail and the security log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from resolver.frontend import HandleFrontend
from resolver.http.auth import Authenticator, Identity
from resolver.http.storefull import StoreFullEpisodes
from resolver.metrics import WorkerHealth
from resolver.security.events import NO_EVENTS, SecurityEvents
from resolver.server.shared import SharedMemory, for_workers
from resolver.service import ResolutionService
from resolver.templates import TemplateChecker
from resolver.writer.client import WorkerWrites
from storage.audit import Actor
from storage.counters import ResolutionCounter
from storage.store import Store

T = TypeVar("T")
WRITE_THREADS = (
    8  #: writes build and submit their entries in threads (off the loop); most just wait on the writer
)


@dataclass
class HttpContext:
    store: Store
    service: ResolutionService
    frontend: HandleFrontend
    health: WorkerHealth = field(default_factory=WorkerHealth)
    events: SecurityEvents = NO_EVENTS  # the worker's (security log); disabled when the upload is off
    memory: SharedMemory = field(default_factory=for_workers)  # the node's, shared by its workers
    writer: Any = None  # the writer's WriterClient (resolver/writer/client.py); None: write into `store` here
    seen: Callable[[bytes], None] | None = (
        None  # where last-seen marks go (a worker's SeenFeed); None: `store`
    )
    auth: Authenticator = field(init=False)
    store_full: StoreFullEpisodes = field(init=False)
    checker: TemplateChecker = field(init=False)
    http_counter: ResolutionCounter = field(init=False)

    def __post_init__(self) -> None:
        self.auth = Authenticator(self.store, memory=self.memory, seen=self.seen)
        self._writes = WorkerWrites(self.store, self.writer, WRITE_THREADS, "write")
        self.store_full = StoreFullEpisodes(self.memory)
        self.checker = TemplateChecker(self.store)
        self.http_counter = self.service.counters["http"]

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(target, *args, **kwargs)` in a write thread, `target` being where this worker's writes go: a
        storage write function (`put_identifier`, `add_prefix`, ...) builds its entry there, submits it and
        returns its result or raises its refusal; WriterUnavailable when the writer cannot take it."""
        self._writes.use(self.writer)  # `writer` is a field: whoever holds the context may replace it
        return await self._writes(fn, *args, **kwargs)

    def after_write(self) -> None:
        """A write committed in this worker: make it visible to this worker's readers at once (the other
        workers renew their read transaction when their next batch starts). Ends a disk-full episode."""
        self.service.refresh()
        self.store_full.written()


def client_source(request: web.Request) -> str:
    """The client's address and port: `203.0.113.5:40122`, `[2001:db8::5]:40122` ("?" when unknown)."""
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    if not isinstance(peer, tuple) or len(peer) < 2:
        return request.remote or "?"
    host, port = str(peer[0]), peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def actor_of(identity: Identity, request: web.Request) -> Actor:
    """Who writes (the authenticated user) and from where, as the audit trail records it."""
    return Actor(identity.user, client_source(request))


CONTEXT = web.AppKey("idnode", HttpContext)
