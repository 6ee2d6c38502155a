"""The atheris harnesses of `make fuzz` (tests/fuzz/) stay runnable: each replays its seed corpus here,
without atheris, and every input passes its invariant."""

from __future__ import annotations

import importlib

import pytest

from tests.fuzz.common import CORPUS

HARNESSES = {"handle": "tests.fuzz.fuzz_handle", "dns": "tests.fuzz.fuzz_dns", "http_json": "tests.fuzz.fuzz_http_json"}


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_the_seed_corpus_passes_its_harness(name):
    inputs = sorted((CORPUS / name).iterdir())
    assert len(inputs) >= 10, f"the {name} corpus is missing: python -m tests.fuzz.make_corpus"
    one_input = importlib.import_module(HARNESSES[name]).target()
    for path in inputs:
        one_input(path.read_bytes())
    for data in (b"", b"\x00" * 64, b"\xff" * 600):
        one_input(data)
