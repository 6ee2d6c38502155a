"""README.md's examples run as written: its NDJSON and CSV examples load into a fresh store, and every `idnode`
command of its shell examples that needs no running node runs (exit status 0) against stores built as the README
says, with the outputs the README shows (the traces, the DNS names)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import idnode

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DEMO_COUNT = 2000  #: the demo store of `make run` holds 100,000; the examples need only its shape
#: Commands the README shows that need a running node (or run one): not offline, so not run here.
NEEDS_A_NODE = {"resolve": "asks a running node", "serve": "runs a node", "bench": "drives a running node"}
PLACEHOLDERS = ("FILE", "...")  #: a line with these names files the reader supplies
_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


def code_blocks(language: str) -> list[tuple[int, str]]:
    """(line number, text) of every fenced block of `language` ("" for none), indented ones too."""
    found, lines = [], README.read_text(encoding="utf-8").splitlines()
    at = 0
    while at < len(lines):
        opening = _FENCE.match(lines[at])
        if opening is None:
            at += 1
            continue
        indent, info = opening.groups()
        end = next(n for n in range(at + 1, len(lines)) if lines[n].strip() == "```")
        if info == language:
            found.append((at + 1, "\n".join(line[len(indent) :] for line in lines[at + 1 : end])))
        at = end + 1
    return found


def block_after(marker: str, language: str) -> str:
    """The first block of `language` after the first README line containing `marker`."""
    marker_line = next(
        n for n, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1) if marker in line
    )
    return next(text for line, text in code_blocks(language) if line > marker_line)


def load_examples(directory: Path) -> Path:
    """A fresh store loaded from the README's NDJSON and CSV examples, as they are written."""
    ndjson = directory / "example.ndjson"
    ndjson.write_text(block_after("**NDJSON**", "json") + "\n", encoding="utf-8")
    csv = directory / "example.csv"
    csv.write_text(block_after("**CSV**", "csv") + "\n", encoding="utf-8")
    store = directory / "examples"
    loaded = idnode("load", "--data", str(store), str(ndjson), str(csv))
    assert loaded.returncode == 0, loaded.stderr
    assert "the store holds 3" in loaded.stderr, loaded.stderr
    return store


def test_ndjson_example_is_one_record_a_line():
    records = [json.loads(line) for line in block_after("**NDJSON**", "json").splitlines()]
    assert len(records) == 2 and all(set(r) == {"handle", "values"} for r in records)


def test_examples_load_and_trace_as_shown(tmp_path):
    store = load_examples(tmp_path)
    traced = idnode("trace", "88.100.900/ABC", "--values", "--data", str(store))
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout.rstrip("\n") == block_after("--values --data DIR` shows", "")
    assert "88.100.900/PART-1" in idnode("audit", "--data", str(store), "--json").stdout  # the CSV's record


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """`demo-data` as `make run` builds it (smaller), and `DIR`: the README's examples plus a scenario."""
    directory = tmp_path_factory.mktemp("readme")
    demo, gen = directory / "demo-data", directory / "demo.ndjson"
    assert idnode("gen", "--count", str(DEMO_COUNT), "--seed", "1", "-o", str(gen)).returncode == 0
    assert idnode("load", "--quiet", "--data", str(demo), str(gen)).returncode == 0
    scenarios = ("deploy/scenarios/automotive", "deploy/scenarios/equipment")
    assert idnode("scenario", "load", "--data", str(demo), *scenarios, cwd=REPO).returncode == 0
    examples = load_examples(directory)
    assert idnode("scenario", "load", "--data", str(examples), scenarios[0], cwd=REPO).returncode == 0
    return {"demo-data": demo, "DIR": examples}


def _commands() -> list[tuple[str, list[str], str]]:
    """(README line, its words, its comment) of every `idnode` line of the README's shell blocks."""
    out = []
    for _, text in code_blocks("sh"):
        for line in text.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] in ("idnode", ".venv/bin/idnode"):
                comment = line.split("  #", 1)[1].strip() if "  #" in line else ""
                out.append((line, words[1:], comment))
    return out


def test_command_examples_run_offline(stores):
    ran, skipped = set(), {}
    for line, words, comment in _commands():
        if words[0] in NEEDS_A_NODE:
            skipped[line] = NEEDS_A_NODE[words[0]]
            continue
        if any(p in word for word in words for p in PLACEHOLDERS):
            skipped[line] = "names a file the reader supplies"
            continue
        argv = [str(stores.get(word, word)) for word in words]
        done = subprocess.run(
            [sys.executable, "-m", "resolver.cli", *argv],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        if words[0] == "dns-name":  # the comment is what it prints
            assert done.stdout.strip() == comment, line
        ran.add(
            " ".join(words[:2]) if words[0] in ("prefix", "template", "scenario", "operator") else words[0]
        )
    assert ran >= {
        "stats", "trace", "prefix add", "prefix credential", "prefix list", "prefix disable", "operator set-secret",
        "template show", "scenario load", "audit", "dns-name",
    }, ran  # fmt: skip
    assert set(skipped.values()) <= {*NEEDS_A_NODE.values(), "names a file the reader supplies"}


def test_scenario_trace_as_shown(stores):
    traced = idnode("trace", "88.100.101/PART-000001", "--data", str(stores["demo-data"]))
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout.rstrip("\n") == block_after("`idnode trace 88.100.101/PART-000001`:", "")
