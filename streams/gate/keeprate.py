"""Keep rate: the seed keeps the top 20-30 % of logged examples. A rolling quantile does it.

Per task type, a window of the last `window` candidates' quality scores. The keep threshold is
the window's (1 - high) quantile: a candidate that passed every other filter is kept only when
its score reaches it, so at most `high` of the logged candidates pass. When the other filters
already pass fewer than `low`, the cut is not what limits the rate; the rate sits below the band
and the gate reports it (the seed's "quality filter too strict, or feedback too sparse").

The window is per worker process: candidates are spread over partitions by request id, so each
worker sees a sample of every task type, and its quantile estimates the same number. A snapshot
(`to_json`/`from_json`) lets a restarted worker start from where it was.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field


@dataclass
class _TaskWindow:
    scores: deque
    passed: deque  # 1 when the candidate passed the gate, for the realised rate
    threshold: float | None = None


@dataclass
class KeepRate:
    band: tuple[float, float] = (0.20, 0.30)
    window: int = 2_000
    min_samples: int = 100
    tasks: dict[str, _TaskWindow] = field(default_factory=dict)

    def _task(self, task: str) -> _TaskWindow:
        w = self.tasks.get(task)
        if w is None:
            w = self.tasks[task] = _TaskWindow(deque(maxlen=self.window), deque(maxlen=self.window))
        return w

    def observe(self, task: str, scores: list[float]) -> None:
        """Add a batch's scores (every candidate, passed or not) and move the threshold once."""
        w = self._task(task)
        w.scores.extend(scores)
        if len(w.scores) >= self.min_samples:
            ordered = sorted(w.scores)
            k = min(len(ordered) - 1, max(0, int((1.0 - self.band[1]) * len(ordered))))
            w.threshold = ordered[k]
        else:
            w.threshold = None

    def threshold(self, task: str) -> float | None:
        w = self.tasks.get(task)
        return w.threshold if w else None

    def keeps(self, task: str, score: float) -> bool:
        t = self.threshold(task)
        return t is None or score >= t

    def record(self, task: str, passed: list[bool]) -> None:
        self._task(task).passed.extend(1 if p else 0 for p in passed)

    def rate(self, task: str) -> float | None:
        w = self.tasks.get(task)
        if not w or not w.passed:
            return None
        return sum(w.passed) / len(w.passed)

    def position(self, task: str) -> str:
        """below | inside | above the band, or warming_up before min_samples."""
        w = self.tasks.get(task)
        r = self.rate(task)
        if r is None or w is None or len(w.passed) < self.min_samples:
            return "warming_up"
        lo, hi = self.band
        return "below" if r < lo else "above" if r > hi else "inside"

    def to_json(self) -> str:
        return json.dumps({t: {"scores": list(w.scores), "passed": list(w.passed)} for t, w in self.tasks.items()})

    def restore(self, text: str) -> None:
        for task, saved in json.loads(text).items():
            w = self._task(task)
            w.scores.extend(float(s) for s in saved.get("scores", []))
            w.passed.extend(int(p) for p in saved.get("passed", []))
            self.observe(task, [])
