"""Render time of the signed-in pages on the demo store (`python -m pytest bench/test_console.py
--benchmark-enable`): the operator's dashboard (acceptance report, four charts over every counter, the
enterprise table, templates, audit), an enterprise's identifier list, a template-field search (which decodes
records), and the template form of one identifier. Each case is a whole GET through the aiohttp application
in-process, with a session cookie, over a new connection. Under `--benchmark-disable` each runs once and its
page is checked, so they double as a smoke test; timings are never asserted, they are recorded in
bench/results/console.md."""

from __future__ import annotations

import pytest

from bench.demo_store import build_demo_store
from storage.enterprises import issue_credential, set_operator_secret
from storage.store import Store
from tests.app_helpers import InProcessApp
from tests.console_helpers import Visitor

OPERATOR_SECRET = "operator-secret-for-the-console-bench"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    path = build_demo_store(tmp_path_factory.mktemp("console-bench")).parent
    with Store(path / "store") as store:
        set_operator_secret(store, OPERATOR_SECRET)
        creds = {p: issue_credential(store, p) for p in ("88.100.101", "88.100.4")}
    running = InProcessApp(path / "store")
    running.creds = creds
    yield running
    running.close()


def _visitor(app, user: str, secret: str) -> Visitor:
    visitor = Visitor(app)
    assert visitor.login(user, secret).status == 303
    return visitor


@pytest.mark.benchmark(group="console")
def test_dashboard(benchmark, app):
    operator = _visitor(app, "operator", OPERATOR_SECRET)
    page = benchmark(operator.get, "/admin")
    assert page.status == 200 and page.text.count("<svg") == 4


@pytest.mark.benchmark(group="console")
@pytest.mark.parametrize(
    "path",
    ["/ent", "/ent?q=EQP-2025", "/ent?field=x&value=y"],
    ids=["list", "handle-search", "unknown-field"],
)
def test_identifier_list(benchmark, app, path):
    ent = _visitor(app, *app.creds["88.100.4"])
    page = benchmark(ent.get, path)
    assert page.status == 200 and "88.100.4/" in page.text


@pytest.mark.benchmark(group="console")
def test_template_field_search(benchmark, app):
    ent = _visitor(app, *app.creds["88.100.101"])
    page = benchmark(ent.get, "/ent?field=category&value=brake-pad")
    assert page.status == 200 and "/ent/edit/88.100.101/PART-" in page.text


@pytest.mark.benchmark(group="console")
def test_edit_form(benchmark, app):
    ent = _visitor(app, *app.creds["88.100.101"])
    page = benchmark(ent.get, "/ent/edit/88.100.101/PART-000001")
    assert page.status == 200 and 'name="f.partNumber"' in page.text
