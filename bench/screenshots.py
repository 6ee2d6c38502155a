"""Screenshots of the node's pages (`make screenshots`): the demo node of the browser tests (tests/browser.py:
generated identifiers, both scenarios, a referral prefix) served on 127.0.0.1, each page taken in headless
chromium at the phone (390x844) and desktop (1280x900) sizes, in Chinese and in English, as whole-page PNGs
under bench/results/pages/ with an index (README.md) naming each. Not a test: a record for people to look at.

    python -m bench.screenshots [--out DIR] [--only NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.datagen import Dataset, generate_lines, write_ndjson

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "pages"
DEMO_COUNT = 2000  #: generated identifiers beside the scenarios (the browser tests' store)
GENERATED = Dataset(DEMO_COUNT, 1, "88.100", 8).handle_at(3)  #: one of them (tests/conftest.py's demo_ndjson)

#: (name, path, what it shows)
PAGES = (
    ("home", "/", "the home page with the search box"),
    (
        "part",
        "/88.100.101/PART-000001",
        "a scanned brake part: fields, chain part → batch → supplier, vehicle",
    ),
    ("batch", "/88.100.101/BATCH-2025-0701?noredirect", "a production batch and its supplier"),
    ("machine", "/88.100.201/EQP-CNC-0001", "a machine: its maintenance records as a timeline"),
    ("maintenance", "/88.100.201/MR-2025-0003", "a maintenance record"),
    ("generated", f"/{GENERATED}?noredirect", "a generated identifier without a template"),
    ("prefix", "/0.NA/88.100.101?noredirect", "a prefix handle: HS_SITE and HS_ADMIN in words"),
    ("not-found", "/88.100.101/PART-999999", "an identifier not registered here"),
    ("unknown-prefix", "/86.200.1/X-1", "a prefix this node does not serve"),
    ("referral", "/88.100.50/ITEM-1", "an identifier its enterprise's own node resolves"),
    ("invalid", "/not-an-identifier", "not prefix/suffix"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", action="append", help="page name (repeatable); default: every page")
    args = parser.parse_args(argv)
    import pytest

    from tests.browser import VIEWPORTS, Browser, find_browser, served_demo, start_chromium

    try:
        paths = find_browser()
    except pytest.skip.Exception as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 2
    pages = [p for p in PAGES if not args.only or p[0] in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="idnode-pages-") as tmp:
        ndjson = Path(tmp) / "ids.ndjson"
        with ndjson.open("w", encoding="utf-8") as out:
            write_ndjson(generate_lines(DEMO_COUNT, 1, "88.100", 8), out)
        driver = start_chromium(*paths)
        try:
            with served_demo(Path(tmp), ndjson) as node:
                browser = Browser(driver, node)
                for name, path, what in pages:
                    shots = []
                    for lang in ("zh", "en"):
                        for viewport in VIEWPORTS:
                            browser.use(viewport, lang).open(path)
                            file = args.out / f"{name}-{viewport.name}-{lang}.png"
                            browser.screenshot(file)
                            shots.append(f"[{viewport.name} {lang}]({file.name})")
                    rows.append(f"| {name} | `{path}` | {what} | {' · '.join(shots)} |")
                    print(f"{name}: {len(shots)} screenshots")
        finally:
            driver.quit()
    index = [
        "# The node's pages, as headless chromium draws them",
        "",
        f"`make screenshots` (bench/screenshots.py), {time.strftime('%Y-%m-%d')}: the browser tests' demo node; "
        "phone 390x844 (device emulation, mobile) and desktop 1280x900; whole-page captures.",
        "",
        "| page | path | what | screenshots |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    (args.out / "README.md").write_text("\n".join(index), encoding="utf-8")
    print(f"{len(rows) * 4} screenshots in {args.out} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
