"""The store `make demo` builds, for benchmarks that render pages on it: 100,000 generated identifiers
(`idnode gen --count 100000 --seed 1`) and both application scenarios of deploy/scenarios."""

from __future__ import annotations

from pathlib import Path

from bench.datagen import generate_lines, write_ndjson
from resolver.cli_admin import load_scenario
from storage.loader import load_files
from storage.store import Store

DEMO_COUNT = 100_000  #: the Makefile's DEMO_COUNT
DEMO_ENTERPRISES = 32  #: `idnode gen`'s default
SCENARIOS = Path(__file__).resolve().parents[1] / "deploy" / "scenarios"


def build_demo_store(directory: Path) -> Path:
    """The demo store under `directory` (its `store` subdirectory, returned; the store is closed)."""
    source = directory / "ids.ndjson"
    with source.open("w", encoding="utf-8") as out:
        write_ndjson(generate_lines(DEMO_COUNT, 1, "88.100", DEMO_ENTERPRISES), out)
    with Store(directory / "store", create=True) as store:
        load_files(store, [source])
        for name in ("automotive", "equipment"):
            _scenario, _count, failures = load_scenario(store, SCENARIOS / name)
            assert not failures, failures
    return directory / "store"
