"""The reference encoder's byte vectors (tests/data/handle-v2.10.json, bytes recorded from the reference
software), loaded once for every test module: name -> bytes."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
VECTORS_PATH = DATA / "handle-v2.10.json"
VECTORS: dict[str, bytes] = {v["name"]: bytes.fromhex(v["hex"]) for v in json.loads(VECTORS_PATH.read_text())}
