"""Where the flywheel stands: its phase by the seed's table, and whether it has stopped improving."""

from __future__ import annotations

# (phase, lowest quality of the phase): the seed's Section 07 table. Below 70 % is the cold start
# (synthetic data and manual labels), 90 % and above is maturity (the full production loop).
PHASES = (("cold_start", 0.0), ("bootstrap", 0.70), ("acceleration", 0.80), ("maturity", 0.90))


def phase_of(quality: float | None) -> str:
    """The phase a golden-set score (0..1) puts the flywheel in; no production model yet is the cold start."""
    current = PHASES[0][0]
    for name, floor in PHASES:
        if quality is not None and quality >= floor:
            current = name
    return current


def stagnant_cycles(models: list[dict]) -> int:
    """Training cycles in a row, up to the latest, whose overall delta against the incumbent was not
    positive (the seed's stagnation); `models` are registry metadata, in any order."""
    cycles = sorted(
        (m for m in models if m.get("event_type") in ("candidate", "rejected")), key=lambda m: m.get("created_at", 0)
    )
    n = 0
    for m in cycles:
        n = 0 if (m.get("deltas") or {}).get("overall", 0.0) > 0 else n + 1
    return n
