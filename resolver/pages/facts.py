"""What an identifier page shows besides the resolved values, read from the store: the chain of references
(resolver.templates.trace, the walk `idnode trace` prints, public values only) and the template documents of
every prefix on it, for labels. The route resolves the identifier itself (counted, filtered); this adds what
a person needs to read it. Reads through the store's interface; imports no lmdb."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from resolver.handle.values import HandleValue
from resolver.templates import Template, TemplateSet, TraceNode, template_set_in, trace
from storage.keys import InvalidHandle, handle_key
from storage.store import Store


@dataclass
class IdentifierFacts:
    handle: str
    values: tuple[HandleValue, ...]
    chain: TraceNode | None = None  # None when the identifier is not a stored record (a prefix handle)
    template_sets: dict[bytes, TemplateSet | None] = field(default_factory=dict)  # by prefix key

    def template_set_of(self, handle: str) -> TemplateSet | None:
        return self.template_sets.get(prefix_key(handle))

    def template_of(self, handle: str) -> Template | None:
        template_set = self.template_set_of(handle)
        return template_set.template_for(handle[handle.find("/") + 1 :]) if template_set else None

    @property
    def template(self) -> Template | None:
        return self.template_of(self.handle)


def prefix_key(handle: str) -> bytes:
    try:
        key = handle_key(handle.encode())
    except InvalidHandle:
        return b""
    return key[: key.find(b"/")]


def walk(node: TraceNode) -> Iterator[TraceNode]:
    yield node
    for _label, child in node.links or ():
        yield from walk(child)


def gather(store: Store, handle: str, values: tuple[HandleValue, ...]) -> IdentifierFacts:
    """The facts of the page of `handle`, whose public values the route resolved as `values`."""
    chain = trace(store, handle, public_only=True)
    facts = IdentifierFacts(handle, values, None if chain.missing else chain)
    wanted = {prefix_key(node.handle) for node in walk(chain)} | {prefix_key(handle)}
    wanted.discard(b"")
    with store.env.begin() as txn:
        for key in wanted:
            facts.template_sets[key] = template_set_in(store, txn, key)
    return facts
