"""Shared fixtures: protocol vectors, a small store built from generated identifiers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.datagen import generate_lines, write_ndjson
from storage.loader import load_files
from storage.store import Store
from tests.browser import browser, chromium, pages_node  # noqa: F401  (the browser tests' fixtures)
from tests.vectors import VECTORS


@pytest.fixture(scope="session")
def vectors() -> dict[str, bytes]:
    return VECTORS


@pytest.fixture(scope="session")
def demo_ndjson(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "ids.ndjson"
    with path.open("w", encoding="utf-8") as out:
        write_ndjson(generate_lines(2000, 1, "88.100", 8), out)
    return path


@pytest.fixture()
def store(tmp_path) -> Store:
    with Store(tmp_path / "store", create=True) as s:
        yield s


@pytest.fixture(scope="session")
def demo_store_dir(tmp_path_factory, demo_ndjson) -> Path:
    """A store of 2,000 generated identifiers over 8 prefixes, built once per session (read-only use)."""
    path = tmp_path_factory.mktemp("store") / "demo"
    with Store(path, create=True) as s:
        load_files(s, [demo_ndjson])
    return path


def copy_demo_store(demo_store_dir: Path, directory: Path) -> Path:
    """A writable copy of the session's demo store at `directory`/store (copying its data file is much quicker
    than loading the identifiers again, and leaves the shared store untouched)."""
    path = directory / "store"
    path.mkdir(parents=True)
    shutil.copyfile(demo_store_dir / "data.mdb", path / "data.mdb")
    return path


@pytest.fixture()
def demo_store_copy(tmp_path, demo_store_dir) -> Path:
    """A writable copy of the demo store for one test."""
    return copy_demo_store(demo_store_dir, tmp_path)
