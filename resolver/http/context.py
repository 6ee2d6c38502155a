"""What the HTTP handlers of one worker share: its store, resolution service, Handle frontend, authenticator
and template checker. Built once per worker by app.py and kept on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from resolver.frontend import HandleFrontend
from resolver.metrics import WorkerHealth
from resolver.http.auth import Authenticator
from resolver.service import ResolutionService
from resolver.templates import TemplateChecker
from storage.counters import ResolutionCounter
from storage.store import Store


@dataclass
class HttpContext:
    store: Store
    service: ResolutionService
    frontend: HandleFrontend
    health: WorkerHealth = field(default_factory=WorkerHealth)
    auth: Authenticator = field(init=False)
    checker: TemplateChecker = field(init=False)
    http_counter: ResolutionCounter = field(init=False)

    def __post_init__(self) -> None:
        self.auth = Authenticator(self.store)
        self.checker = TemplateChecker(self.store)
        self.http_counter = self.service.counters["http"]

    def after_write(self) -> None:
        """A write committed in this worker: make it visible to this worker's readers at once (the other
        workers renew their read transaction when their next batch starts)."""
        self.service.refresh()


CONTEXT = web.AppKey("idnode", HttpContext)
