"""The seed's three growth curves (model quality, production data volume, users) and their shape.

Why: a healthy flywheel compounds; a curve that is linear or flat means something is wrong and needs
investigating (seed Sections 08-09). Quality that levels off near the ceiling is saturation instead,
whose cure is an adjacent problem, not more of the same data. Pure: the report feeds it numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import fmean
from typing import Sequence

FLAT = 0.02  # mean relative growth per period under which a curve is flat (or, below -FLAT, shrinking)
KEPT_UP = 0.75  # compounding: the later periods' relative growth is at least this share of the earlier ones'
SATURATED = 0.9  # quality at or above which a quality curve that stopped rising is saturated
MIN_POINTS = 3


@dataclass(frozen=True)
class Growth:
    curve: str  # quality | requests | users
    points: int
    first: float | None
    last: float | None
    rate: float | None  # geometric mean growth per period, first to last
    shape: str  # compounding | linear | flat | shrinking | saturated | too_short

    @property
    def period(self) -> str:
        return "cycle" if self.curve == "quality" else "window"

    def to_dict(self) -> dict:
        return asdict(self)


def growth(curve: str, values: Sequence[float | None], ceiling: float | None = None) -> Growth:
    """`values` in period order; `ceiling`: the value at which a curve that stops rising is saturated."""
    ys = [float(y) for y in values if y is not None]
    first, last = (ys[0], ys[-1]) if ys else (None, None)
    if len(ys) < MIN_POINTS or ys[0] <= 0 or any(y < 0 for y in ys):
        return Growth(curve, len(ys), first, last, None, "too_short")
    rate = (ys[-1] / ys[0]) ** (1 / (len(ys) - 1)) - 1
    steps = [b / a - 1 for a, b in zip(ys, ys[1:]) if a > 0]
    if ceiling is not None and ys[-1] >= ceiling and steps and steps[-1] < FLAT:
        shape = "saturated"
    elif rate <= -FLAT:
        shape = "shrinking"
    elif rate < FLAT:
        shape = "flat"
    else:
        half = len(steps) // 2
        early, late = fmean(steps[:half]), fmean(steps[half:])
        shape = "compounding" if early <= 0 or late >= KEPT_UP * early else "linear"
    return Growth(curve, len(ys), first, last, rate, shape)


def diagnosis(curves: Sequence[Growth]) -> list[str]:
    """What the curves say needs a look. A flat quality curve is left to the per-cycle delta check."""
    out = []
    for g in curves:
        if g.shape == "saturated":
            out.append(f"{g.curve} saturated at {100 * g.last:.0f} %: expand into adjacent tasks or domains")
        elif g.shape == "shrinking" or (g.curve != "quality" and g.shape in ("flat", "linear")):
            out.append(f"{g.curve} growth {g.shape}: {100 * g.rate:+.1f} % a {g.period} over {g.points} {g.period}s")
    return out
