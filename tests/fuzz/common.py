"""What the harnesses share: a small real store to serve from, and the atheris entry point.

Each harness module has `target() -> Callable[[bytes], None]`, the function libFuzzer calls with every input:
it returns when the code under test behaved (answered or refused as documented) and raises on a finding.
`python -m tests.fuzz.fuzz_X [libFuzzer flags] CORPUS_DIR...` runs it under atheris; atheris is imported only
there, so the targets also run without it (tests/test_fuzz_corpus.py replays the seed corpus through them).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from storage.store import Store

CORPUS = Path(__file__).resolve().parent / "corpus"


def scratch_store() -> Store:
    """An empty store in a temporary directory that lives as long as the process."""
    directory = tempfile.mkdtemp(prefix="idnode-fuzz-")
    return Store(Path(directory) / "store", create=True)


def main(target: Callable[[], Callable[[bytes], None]]) -> None:
    import atheris  # only for `make fuzz`: pip install atheris

    one_input = target()  # build the store and the objects under test before instrumenting
    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
