"""The negative-flywheel monitors (the seed's Section 08): plain functions of counts and the policy.

Counts are flat `{field: n}` maps per bucket of wall-clock time (`requests`, `empty`, `deadletters`,
`late_actions`, `passed`, `rejected`, `action:<a>`, `task:<t>`, `v:<version>:<f>`), summed over a
*recent* window (the last `recent_buckets` complete buckets) and a *baseline* (the
`baseline_buckets` before it). Each monitor (`deadletter_rate`, `empty_rate`, `pass_rate_shift`,
`action_mix_shift`, `task_mix_shift`, `acceptance_drop`) fires only when its value passes its bound
`max_<monitor>` in `[guards]` *and* a test at `alpha` shows it.

What each measures: docs/concepts/guards.md; the count fields and why the test: docs/concepts/guards.md#design-notes
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from flywheel.policy import GuardPolicy

Counts = Mapping[str, int]


@dataclass(frozen=True)
class Signal:
    monitor: str
    value: float  # what is compared with the bound
    bound: float
    firing: bool
    judged: bool  # enough data to judge; an unjudged monitor never fires
    detail: str = ""

    def to_dict(self) -> dict:
        return {
            "monitor": self.monitor,
            "value": round(self.value, 6),
            "bound": self.bound,
            "firing": self.firing,
            "judged": self.judged,
            "detail": self.detail,
        }


def merge(buckets: Iterable[Counts]) -> dict[str, int]:
    out: dict[str, int] = {}
    for b in buckets:
        for k, n in b.items():
            out[k] = out.get(k, 0) + int(n)
    return out


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for chi-square with `dof` degrees of freedom (Wilson-Hilferty; ample for a monitor)."""
    if dof < 1 or x <= 0:
        return 1.0
    k = float(dof)
    z = ((x / k) ** (1.0 / 3.0) - (1.0 - 2.0 / (9.0 * k))) / math.sqrt(2.0 / (9.0 * k))
    return normal_sf(z)


def rate_above(hits: int, n: int, bound: float) -> float:
    """p-value of 'the rate is above `bound`' (one-sided, normal approximation)."""
    if n <= 0:
        return 1.0
    return normal_sf((hits / n - bound) / math.sqrt(bound * (1.0 - bound) / n))


def two_proportions(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value that two proportions differ (pooled z)."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1.0 - p) * (1.0 / n1 + 1.0 / n2))
    if se == 0:
        return 1.0 if x1 / n1 == x2 / n2 else 0.0
    return 2.0 * normal_sf(abs(x1 / n1 - x2 / n2) / se)


def distribution(counts: Counts, prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: int(n) for k, n in counts.items() if k.startswith(prefix) and int(n) > 0}


def mix_shift(recent: Mapping[str, int], baseline: Mapping[str, int]) -> tuple[float, float]:
    """(total variation distance, chi-square homogeneity p-value) of two count distributions."""
    n1, n2 = sum(recent.values()), sum(baseline.values())
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    keys = set(recent) | set(baseline)
    tvd = 0.5 * sum(abs(recent.get(k, 0) / n1 - baseline.get(k, 0) / n2) for k in keys)
    stat = 0.0
    for k in keys:
        col = recent.get(k, 0) + baseline.get(k, 0)
        for observed, n in ((recent.get(k, 0), n1), (baseline.get(k, 0), n2)):
            expected = col * n / (n1 + n2)
            stat += (observed - expected) ** 2 / expected
    return tvd, chi2_sf(stat, len(keys) - 1)


def versions(counts: Counts) -> dict[str, dict[str, int]]:
    """`v:<version>:<field>` fields as {version: {field: n}} (a version may itself hold colons)."""
    out: dict[str, dict[str, int]] = {}
    for k, n in counts.items():
        if k.startswith("v:"):
            version, _, name = k[2:].rpartition(":")
            out.setdefault(version, {})[name] = int(n)
    return out


def satisfaction(counts: Counts) -> dict[str, dict[str, float]]:
    """Per model version: requests, acceptance (accepted or copied per request), feedback rate (thumbs per
    request) and positive feedback (thumbs up per thumb)."""
    out = {}
    for version, f in versions(counts).items():
        n = f.get("requests", 0)
        if n <= 0:
            continue
        thumbs = f.get("thumbs_up", 0) + f.get("thumbs_down", 0)
        out[version] = {
            "requests": float(n),
            "acceptance": f.get("accepted", 0) / n,
            "feedback": thumbs / n,
            "positive": f.get("thumbs_up", 0) / thumbs if thumbs else 0.0,
        }
    return out


def evaluate(recent: Counts, baseline: Counts, policy: GuardPolicy) -> list[Signal]:
    """Every monitor's signal, in `MONITORS` order."""
    g = policy
    n = int(recent.get("requests", 0))
    signals = []

    def rate(monitor: str, hits: int) -> Signal:
        bound = g.bound(monitor)
        if n < g.min_recent:
            return Signal(monitor, hits / n if n else 0.0, bound, False, False, f"{n}<{g.min_recent} requests")
        value = hits / n
        p = rate_above(hits, n, bound)
        return Signal(monitor, value, bound, value > bound and p < g.alpha, True, f"p={p:.2g} n={n}")

    signals.append(rate("deadletter_rate", int(recent.get("deadletters", 0))))
    signals.append(rate("empty_rate", int(recent.get("empty", 0))))

    passed, decided = int(recent.get("passed", 0)), int(recent.get("passed", 0)) + int(recent.get("rejected", 0))
    b_passed, b_decided = (
        int(baseline.get("passed", 0)),
        int(baseline.get("passed", 0)) + int(baseline.get("rejected", 0)),
    )
    if decided < g.min_recent or b_decided < g.min_baseline:
        signals.append(
            Signal(
                "pass_rate_shift",
                0.0,
                g.max_pass_rate_shift,
                False,
                False,
                f"decisions {decided}/{b_decided} (recent/baseline)",
            )
        )
    else:
        shift = abs(passed / decided - b_passed / b_decided)
        p = two_proportions(passed, decided, b_passed, b_decided)
        signals.append(
            Signal(
                "pass_rate_shift",
                shift,
                g.max_pass_rate_shift,
                shift > g.max_pass_rate_shift and p < g.alpha,
                True,
                f"{b_passed / b_decided:.3f}->{passed / decided:.3f} p={p:.2g}",
            )
        )

    b_n = int(baseline.get("requests", 0))
    for monitor, prefix in (("action_mix_shift", "action:"), ("task_mix_shift", "task:")):
        bound = g.bound(monitor)
        if n < g.min_recent or b_n < g.min_baseline:
            signals.append(Signal(monitor, 0.0, bound, False, False, f"requests {n}/{b_n} (recent/baseline)"))
            continue
        tvd, p = mix_shift(distribution(recent, prefix), distribution(baseline, prefix))
        signals.append(Signal(monitor, tvd, bound, tvd > bound and p < g.alpha, True, f"p={p:.2g}"))

    worst = Signal("acceptance_drop", 0.0, g.max_acceptance_drop, False, False, "no version with enough requests")
    now, before = versions(recent), versions(baseline)
    for version, f in sorted(now.items()):
        r_n, b_v = f.get("requests", 0), before.get(version, {})
        if r_n < g.min_recent or b_v.get("requests", 0) < g.min_baseline:
            continue
        r_acc, b_acc = f.get("accepted", 0) / r_n, b_v.get("accepted", 0) / b_v["requests"]
        drop = b_acc - r_acc
        p = two_proportions(f.get("accepted", 0), r_n, b_v.get("accepted", 0), b_v["requests"])
        s = Signal(
            "acceptance_drop",
            drop,
            g.max_acceptance_drop,
            drop > g.max_acceptance_drop and p < g.alpha,
            True,
            f"{version}: {b_acc:.3f}->{r_acc:.3f} p={p:.2g}",
        )
        if not worst.judged or (s.firing, s.value) > (worst.firing, worst.value):
            worst = s
    signals.append(worst)
    return signals
