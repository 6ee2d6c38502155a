"""Page render time on the demo store (`make bench-pages`; target: an identifier page under 20 ms).

The store is the one `make demo` builds: 100,000 generated identifiers (`idnode gen --count 100000 --seed 1`)
and both application scenarios. Each case does what `GET /{handle}` does for a page, minus aiohttp: resolve
(counting off), read the reference chain and the templates (resolver/pages/facts.py), render the HTML; the
`page-http` group times the whole request through the aiohttp application in-process. Under the normal
`--benchmark-disable` each case runs once and its page is checked, so they double as a smoke test. Timings
are never asserted here; they are recorded in bench/results/pages.md.
"""

from __future__ import annotations

import pytest

from bench.datagen import Dataset
from bench.demo_store import DEMO_COUNT, DEMO_ENTERPRISES, build_demo_store
from resolver.config import ServeConfig
from resolver.handle.constants import ResponseCode
from resolver.handle.values import decode_values
from resolver.handle.wire import Reader
from resolver.pages import errors
from resolver.pages.facts import gather
from resolver.pages.identifier import render_identifier
from resolver.pages.layout import Reader as PageReader
from resolver.server.worker import node_site
from resolver.service import ResolutionService
from storage.store import Store

PART = "88.100.101/PART-000001"  #: two levels of references: batch → supplier, vehicle
MACHINE = "88.100.201/EQP-CNC-0001"  #: the longest chain of the demo: three maintenance records deep
GENERATED = Dataset(DEMO_COUNT, 1, "88.100", DEMO_ENTERPRISES).handle_at(3)  #: generated, no template


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return build_demo_store(tmp_path_factory.mktemp("pages-bench"))


@pytest.fixture(scope="module")
def service(store_dir):
    with Store(store_dir) as store:
        yield ResolutionService(store, "88.100", node_site(ServeConfig(store_dir)))


def identifier_page(service, handle: str, lang: str):
    """What resolve.browse does for a page: resolve, gather, render."""
    code, payload = service.resolve(handle.encode(), (), (), True)
    assert code == ResponseCode.SUCCESS
    values = decode_values(Reader(payload))
    return render_identifier(gather(service.store, handle, values), PageReader(lang))


@pytest.mark.benchmark(group="page-render")
@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("handle", [PART, MACHINE, GENERATED], ids=["part", "machine", "generated"])
def test_identifier_page(benchmark, service, handle, lang):
    page = benchmark(identifier_page, service, handle, lang)
    assert page.status == 200 and handle in page.html


@pytest.mark.benchmark(group="page-render")
def test_not_found_page(benchmark, service):
    def not_found():
        code, _payload = service.resolve(b"88.100.101/PART-999999", (), (), True)
        assert code == ResponseCode.HANDLE_NOT_FOUND
        return errors.not_found_page(PageReader("zh"), "88.100.101/PART-999999")

    assert benchmark(not_found).status == 404


@pytest.mark.benchmark(group="page-http")
def test_identifier_page_over_http(benchmark, store_dir, tmp_path):
    """The whole `GET /{handle}` through the aiohttp application (in-process client on 127.0.0.1), on a copy
    of the store (LMDB opens an environment once per process, and the other cases hold it)."""
    from tests.app_helpers import InProcessApp
    from tests.conftest import copy_demo_store

    app = InProcessApp(copy_demo_store(store_dir, tmp_path))
    try:
        reply = benchmark(app.call, "GET", f"/{MACHINE}", headers={"Accept-Language": "zh-CN"})
    finally:
        app.close()
    assert reply.status == 200 and MACHINE.encode() in reply.body
