"""The reference encoder's byte vectors (../shared/vectors, beside the checkout), loaded once for every test
module: name -> bytes."""

from __future__ import annotations

import json
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
VECTORS_PATH = SHARED / "vectors" / "handle-v2.10.json"
VECTORS: dict[str, bytes] = {v["name"]: bytes.fromhex(v["hex"]) for v in json.loads(VECTORS_PATH.read_text())}
