"""Log output of the node: plain text for a terminal, or one JSON object a line for journald and log shippers.

A JSON line always has `ts` (UTC, RFC 3339 with milliseconds), `level`, `logger`, `pid` and `msg`; the
`extra={...}` fields of a log call (`event`, `worker`, `client`, ...) are added as they are, so a line can be
filtered by `event` without parsing the message. Nothing here runs per packet: the access log is sampled by
the transports (see `resolver.server.stats`). Imports only the standard library.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

ACCESS_LOGGER = "idnode.access"  #: sampled request lines; silence it alone with a logging filter if needed

# Attributes every LogRecord has; anything else on a record came from `extra=` and is written as a field.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, object] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Replace the root handlers: JSON goes to stdout (journald reads it there), text to stderr."""
    handler = logging.StreamHandler(stream or (sys.stdout if fmt == "json" else sys.stderr))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
