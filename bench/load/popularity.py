"""Which identifiers a load asks for: every one alike (uniform), or a few very often and most rarely (Zipf).

Zipf ranks are drawn with rejection-inversion (W. Hörmann, G. Derflinger, "Rejection-inversion to generate
variates from monotone discrete distributions", ACM TOMACS 6(3), 1996; the form of Apache Commons RNG's
``RejectionInversionZipfSampler``): O(1) memory and time per draw whatever the number of identifiers, so a pool
over a 20M store costs no table. Rank r has probability proportional to ``1 / r**s``.

Rank 1 is not identifier 0: ranks are spread over the data set by a seeded affine permutation
(:class:`RankOrder`), the same in every generator process, so the popular identifiers lie under every prefix
and all processes agree on which they are. Imports nothing of the server.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from random import Random

_TAYLOR_BELOW = 1e-8  #: below this |x|, log1p(x)/x and expm1(x)/x lose precision: use their Taylor series


def _log1p_over_x(x: float) -> float:
    if abs(x) > _TAYLOR_BELOW:
        return math.log1p(x) / x
    return 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))


def _expm1_over_x(x: float) -> float:
    if abs(x) > _TAYLOR_BELOW:
        return math.expm1(x) / x
    return 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))


class ZipfSampler:
    """Ranks 1..n with P(r) proportional to r**-s, for any s > 0 (s = 1 included)."""

    __slots__ = ("_h_integral_n", "_h_integral_x1", "_s", "_threshold", "n")

    def __init__(self, n: int, s: float) -> None:
        if n < 1 or not s > 0:
            raise ValueError("a Zipf distribution needs n >= 1 and s > 0")
        self.n = n
        self._s = s
        self._h_integral_x1 = self._h_integral(1.5) - 1.0
        self._h_integral_n = self._h_integral(n + 0.5)
        self._threshold = 2.0 - self._h_integral_inverse(self._h_integral(2.5) - self._h(2.0))

    def _h(self, x: float) -> float:
        return math.exp(-self._s * math.log(x))

    def _h_integral(self, x: float) -> float:
        log_x = math.log(x)
        return _expm1_over_x((1.0 - self._s) * log_x) * log_x

    def _h_integral_inverse(self, x: float) -> float:
        t = max(-1.0, x * (1.0 - self._s))
        return math.exp(_log1p_over_x(t) * x)

    def draw(self, random: Callable[[], float]) -> int:
        """One rank; ``random`` returns floats in [0, 1) (``Random(seed).random``)."""
        while True:
            u = self._h_integral_n + random() * (self._h_integral_x1 - self._h_integral_n)
            x = self._h_integral_inverse(u)
            rank = min(self.n, max(1, int(x + 0.5)))
            # Accept at once in the region where the hat is tight, else test against the exact integral.
            if rank - x <= self._threshold or u >= self._h_integral(rank + 0.5) - self._h(rank):
                return rank


class RankOrder:
    """A seeded bijection from ranks 1..n to positions 0..n-1: ``(a * (rank - 1) + b) mod n`` with a coprime to
    n, so that every position has exactly one rank and neighbouring ranks land far apart."""

    __slots__ = ("_a", "_b", "n")

    def __init__(self, n: int, seed: int | str) -> None:
        rng = Random(f"idnode-loadgen-ranks:{seed}")
        self.n = n
        a = max(1, int(n * (math.sqrt(5) - 1) / 2)) + rng.randrange(max(1, n // 7 + 1))
        while math.gcd(a, n) != 1:
            a += 1
        self._a = a % n if n > 1 else 0
        self._b = rng.randrange(n)

    def position(self, rank: int) -> int:
        return (self._a * (rank - 1) + self._b) % self.n


def draw_positions(
    n: int, k: int, popularity: str, zipf_s: float, rng: Random, order_seed: int | str
) -> list[int]:
    """``k`` positions in 0..n-1: uniform with replacement, or Zipf-ranked through :class:`RankOrder`."""
    if popularity == "uniform":
        return [rng.randrange(n) for _ in range(k)]
    if popularity != "zipf":
        raise ValueError(f"unknown popularity {popularity!r}")
    sampler = ZipfSampler(n, zipf_s)
    order = RankOrder(n, order_seed)
    draw, random = sampler.draw, rng.random
    return [order.position(draw(random)) for _ in range(k)]
