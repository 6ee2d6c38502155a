"""Progress of long commands (`idnode load`, `check`, `export-zone`, `bench`) on stderr, through tqdm.

A bar is drawn only when stderr is a terminal, and is cleared when the work ends, so that a log or a pipe gets
nothing but the command's final lines (no carriage returns, no half-lines). The commands call these helpers and
never print progress themselves.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

REFRESH_S = 0.5  #: a terminal is redrawn at most this often: readable, and costs nothing next to the work
UNIT = "identifiers"  #: what the store commands count


class Progress:
    """A bar counting `unit`s towards `total` (or without a total), shown only when `stream` is a terminal
    and the command wants it (`enabled`: not --quiet)."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = UNIT,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self._bar = tqdm(
            total=total,
            desc=label,
            unit=f" {unit}",
            unit_scale=True,
            file=stream if stream is not None else sys.stderr,
            disable=None if enabled else True,  # tqdm's own test: None draws only on a TTY
            leave=False,  # the final line of the command replaces the bar
            dynamic_ncols=True,
            mininterval=REFRESH_S,
        )

    @property
    def shown(self) -> bool:
        return not self._bar.disable

    def update_to(self, done: int, label: str | None = None) -> None:
        """The work done so far (a running total, as the loader and the checker report it)."""
        if self._bar.disable:
            return
        if label is not None and label != self._bar.desc:
            self._bar.set_description_str(label, refresh=False)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StatusLine:
    """One line of live status rewritten in place (the load generator's answers/s), only on a terminal."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self._bar = tqdm(
            file=stream if stream is not None else sys.stderr,
            disable=None if enabled else True,
            leave=False,
            dynamic_ncols=True,
            bar_format="{desc} [{elapsed}]",
        )

    @property
    def shown(self) -> bool:
        return not self._bar.disable

    def show(self, text: str) -> None:
        if not self._bar.disable:
            self._bar.set_description_str(text)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> StatusLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
