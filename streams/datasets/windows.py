"""Tumbling event-time windows over the gate's output log, with membership decided per source.

No Kafka and no I/O in here. The dataset builder reads every partition of the candidate topics
with one consumer ("sources", e.g. "flywheel.candidates.passed/3") and feeds each record's
(source, offset, event time) to a `WindowClock`. The clock does not keep records: when a window is
sealed it hands back, per source, the offset range to re-read from the log, so the builder can
rebuild the window from the log alone.

Windows: w = event_time // window_ms covers [w*window_ms, (w+1)*window_ms); its boundary is
B_w = end + lag_ms.

Membership (decided per source, so it does not depend on how the partitions interleave):
a record with event time t in window w on source s is a *member* iff the largest event time seen
on s before it (`high`) is < B_w and w is not sealed; otherwise it is *late* (counted in
`late_counts[w]`). Out-of-order records within the lag are members. A source crosses B_w at the
first record whose event time is >= B_w: that offset is w's `stop_offset` on s, and every record
of w on s between the first member offset and the stop offset is a member, every later one late.
So re-reading [first_offset, stop_offset) of s and keeping the records whose event time falls in
w gives exactly w's members on s. A window can only be sealed once every source that is not idle
has crossed it, so "not sealed" adds nothing to the per-source rule except for sources that were
idle at seal time (their stop is their position then; what they deliver for w afterwards is late).

Watermark: the smallest `high` over the sources that are not idle (None when there is no such
source, or one of them has seen nothing yet). A window with members is ready when its boundary is
<= the watermark; when every source is idle (the end of a finite log) the largest `high` over all
sources stands in for it. Call `ready()` and `seal()` without observing records in between (or use
the span `seal()` returns): the resolved stop offsets are those of that moment.

Offsets below a source's position are replays (after a restart from older committed offsets) and
change nothing, so the state can be checkpointed (`to_json`) independently of consumer commits
as long as the consumer restarts at or before the checkpointed positions.

One record dated far ahead would move a source's `high` into the future for good: every window
counts as crossed on it, and once the other sources are idle it seals open windows early. The
builder keeps such records out (`intake.py`); `reset` repairs a clock that took one before that
(`flywheel clocks reset`): the source's `high` goes back, what lay beyond is forgotten, and the
spans the record had crossed are open again and read from the log at their seal (`log_only`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

MEMBER = "member"
LATE = "late"
REPLAY = "replay"

SEALED_KEEP = 60  # sealed indexes kept explicitly below the newest sealed one; older ones count as sealed
STATE_VERSION = 1


class Outcome(NamedTuple):
    kind: str  # MEMBER, LATE or REPLAY
    window: int


@dataclass(frozen=True)
class WindowSpan:
    """A window ready to seal (or just sealed): what to re-read from the log, per source."""

    index: int
    start_ms: int
    end_ms: int
    boundary_ms: int
    spans: dict[str, tuple[int, int]]  # source -> (first_offset, stop_offset), stop exclusive
    members: int
    first_event_time: int
    late: int
    source_members: dict[str, int] = field(default_factory=dict)  # source -> member count (to check a re-read)
    log_only: frozenset[str] = frozenset()  # sources whose span must be re-read from the log (its spool is short)


@dataclass
class _Source:
    high: int | None = None  # largest event time seen
    position: int = 0  # next offset expected
    idle: bool = False


@dataclass
class _Span:
    first: int  # smallest member offset
    stop: int | None = None  # first offset with event time >= boundary; None until seen
    count: int = 0
    log_only: bool = False  # reopened by a clock reset: records read as late before it are members again,
    # and only the log holds them (the spool has what was a member when it was read)


@dataclass(frozen=True)
class ClockReset:
    """What `WindowClock.reset` changed (or, run on a copy, would change): for the operator to read first."""

    to_ms: int
    sources: dict[str, tuple[int | None, int | None]]  # source -> (high before, high after), the sources moved back
    spans_dropped: list[tuple[int, str, int]]  # (window, source, members): members lying after to_ms, forgotten
    windows_dropped: list[int]  # open windows left with no members at all
    spans_reopened: list[tuple[int, str, int]]  # (window, source, old stop offset): no longer crossed on the source
    unsealed: list[int]  # sealed windows that start after to_ms: no longer sealed
    newest_sealed: tuple[int | None, int | None]  # before, after
    late_forgotten: int  # late counts of windows that start after to_ms, dropped

    @property
    def changed(self) -> bool:
        return bool(self.sources or self.unsealed or self.newest_sealed[0] != self.newest_sealed[1])


@dataclass
class _Window:
    members: int = 0
    first_event_time: int | None = None
    sources: dict[str, _Span] = field(default_factory=dict)


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


class WindowClock:
    def __init__(self, window_ms: int, lag_ms: int, sources: Iterable[str] = ()) -> None:
        _check_int("window_ms", window_ms)
        _check_int("lag_ms", lag_ms)
        if window_ms <= 0:
            raise ValueError(f"window_ms must be > 0, got {window_ms}")
        if lag_ms < 0:
            raise ValueError(f"lag_ms must be >= 0, got {lag_ms}")
        self.window_ms = window_ms
        self.lag_ms = lag_ms
        self._sources: dict[str, _Source] = {}
        self._open: dict[int, _Window] = {}
        self._sealed: set[int] = set()
        self._newest_sealed: int | None = None
        self.late_counts: dict[int, int] = {}
        for s in sources:
            self.add_source(s)

    # -- geometry --------------------------------------------------------------------------------

    def window_of(self, event_time: int) -> int:
        return event_time // self.window_ms

    def bounds(self, index: int) -> tuple[int, int, int]:
        """(start_ms, end_ms, boundary_ms) of window `index`."""
        start = index * self.window_ms
        end = start + self.window_ms
        return start, end, end + self.lag_ms

    # -- sources ---------------------------------------------------------------------------------

    def add_source(self, source: str) -> None:
        """Adds a source (no-op if known). A new source holds the watermark back until it is
        observed or marked idle."""
        if not isinstance(source, str) or not source:
            raise ValueError(f"source must be a non-empty string, got {source!r}")
        self._sources.setdefault(source, _Source())

    @property
    def sources(self) -> list[str]:
        return sorted(self._sources)

    def _source(self, source: str) -> _Source:
        try:
            return self._sources[source]
        except KeyError:
            raise KeyError(f"unknown source {source!r}") from None

    def mark_idle(self, source: str) -> None:
        self._source(source).idle = True

    def mark_active(self, source: str) -> None:
        self._source(source).idle = False

    def is_idle(self, source: str) -> bool:
        return self._source(source).idle

    def high(self, source: str) -> int | None:
        return self._source(source).high

    def position(self, source: str) -> int:
        return self._source(source).position

    def positions(self) -> dict[str, int]:
        return {name: s.position for name, s in sorted(self._sources.items())}

    @property
    def newest_sealed(self) -> int | None:
        return self._newest_sealed

    # -- the clock -------------------------------------------------------------------------------

    def is_sealed(self, index: int) -> bool:
        if index in self._sealed:
            return True
        return self._newest_sealed is not None and index < self._newest_sealed - SEALED_KEEP

    def skip(self, source: str, offset: int) -> None:
        """A record that is not a candidate (undecodable): the position moves past it, nothing else."""
        src = self._source(source)
        if offset >= src.position:
            src.position = offset + 1

    def observe(self, source: str, offset: int, event_time: int) -> Outcome:
        src = self._source(source)
        _check_int("offset", offset)
        _check_int("event_time", event_time)
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        w = self.window_of(event_time)
        if offset < src.position:
            return Outcome(REPLAY, w)

        boundary = self.bounds(w)[2]
        member = (src.high is None or src.high < boundary) and not self.is_sealed(w)

        # this record crosses every open window whose boundary it reaches on this source
        for x, win in self._open.items():
            span = win.sources.get(source)
            if span is not None and span.stop is None and event_time >= self.bounds(x)[2]:
                span.stop = offset

        if member:
            win = self._open.get(w)
            if win is None:
                win = self._open[w] = _Window()
            span = win.sources.get(source)
            if span is None:
                span = win.sources[source] = _Span(first=offset)
            span.count += 1
            win.members += 1
            if win.first_event_time is None or event_time < win.first_event_time:
                win.first_event_time = event_time
        else:
            self.late_counts[w] = self.late_counts.get(w, 0) + 1

        if src.high is None or event_time > src.high:
            src.high = event_time
        src.position = offset + 1
        src.idle = False
        return Outcome(MEMBER if member else LATE, w)

    @property
    def watermark(self) -> int | None:
        """min `high` over the sources that are not idle; None if there is none, or one of them
        has seen nothing yet."""
        active = [s.high for s in self._sources.values() if not s.idle]
        if not active or any(h is None for h in active):
            return None
        return min(active)  # type: ignore[type-var]

    def _threshold(self) -> int | None:
        if self._sources and all(s.idle for s in self._sources.values()):
            highs = [s.high for s in self._sources.values() if s.high is not None]
            return max(highs) if highs else None
        return self.watermark

    def pending(self) -> list[int]:
        """Open (not sealed) window indexes with members, in order."""
        return sorted(self._open)

    def span(self, index: int) -> WindowSpan | None:
        """The current view of an open window (stop offsets not yet seen resolve to the source's
        position now); None if it has no members or is sealed."""
        win = self._open.get(index)
        if win is None:
            return None
        start, end, boundary = self.bounds(index)
        spans = {}
        counts = {}
        log_only = set()
        for name in sorted(win.sources):
            sp = win.sources[name]
            stop = sp.stop if sp.stop is not None else self._sources[name].position
            spans[name] = (sp.first, stop)
            counts[name] = sp.count
            if sp.log_only:
                log_only.add(name)
        assert win.first_event_time is not None
        return WindowSpan(
            index=index,
            start_ms=start,
            end_ms=end,
            boundary_ms=boundary,
            spans=spans,
            members=win.members,
            first_event_time=win.first_event_time,
            late=self.late_counts.get(index, 0),
            source_members=counts,
            log_only=frozenset(log_only),
        )

    def ready(self) -> list[WindowSpan]:
        """Windows with members, not sealed, whose boundary the watermark has reached (or, with
        every source idle, the largest event time seen), in index order."""
        threshold = self._threshold()
        if threshold is None:
            return []
        out = []
        for index in sorted(self._open):
            if self.bounds(index)[2] <= threshold:
                span = self.span(index)
                assert span is not None
                out.append(span)
        return out

    def seal(self, index: int) -> WindowSpan | None:
        """Seals window `index` (whether ready or not: the caller decides) and returns its final
        span, or None if it had no members or was already sealed. Records for it are late from now
        on."""
        _check_int("index", index)
        if self.is_sealed(index):
            return None
        final = self.span(index)
        self._open.pop(index, None)
        self._sealed.add(index)
        if self._newest_sealed is None or index > self._newest_sealed:
            self._newest_sealed = index
            floor = index - SEALED_KEEP
            self._sealed = {i for i in self._sealed if i >= floor}
        return final

    @property
    def sealed(self) -> list[int]:
        """The sealed indexes kept explicitly (every index below newest sealed - SEALED_KEEP also
        counts as sealed)."""
        return sorted(self._sealed)

    # -- repair ----------------------------------------------------------------------------------

    def reset(self, sources: Iterable[str], to_ms: int, stored_windows: Iterable[int] | None = None) -> ClockReset:
        """Set the clock of `sources` back to `to_ms`: the repair for a clock that a record dated far
        ahead moved (what older builders let through). Nothing is re-read; per source whose `high`
        lies after `to_ms`:

        - `high` becomes `to_ms`;
        - its span in every open window that starts after `to_ms` is forgotten (all its members
          there lie after `to_ms`); a window left with no span is dropped;
        - its span in every open window whose boundary lies after `to_ms` but which it had crossed
          is reopened (no stop offset), and marked to be re-read from the log at the seal: what was
          counted late on it since the crossing is a member again.

        Then, whichever sources moved: windows that start after `to_ms` are no longer sealed, and the
        newest sealed window is the newest left, so that a far-future seal no longer makes every
        window count as sealed. `stored_windows` (the indexes of the datasets in the store) are kept
        sealed as far as they start at or before `to_ms`: the explicit list may have lost them when
        the far-future window was sealed.
        """
        _check_int("to_ms", to_ms)
        moved: dict[str, tuple[int | None, int | None]] = {}
        spans_dropped: list[tuple[int, str, int]] = []
        windows_dropped: list[int] = []
        reopened: list[tuple[int, str, int]] = []
        for name in sorted(set(sources)):
            src = self._source(name)
            if src.high is None or src.high <= to_ms:
                continue
            moved[name] = (src.high, to_ms)
            src.high = to_ms
            for index in sorted(self._open):
                win = self._open[index]
                span = win.sources.get(name)
                if span is None:
                    continue
                start, _, boundary = self.bounds(index)
                if start > to_ms:
                    del win.sources[name]
                    win.members -= span.count
                    spans_dropped.append((index, name, span.count))
                    if not win.sources:
                        del self._open[index]
                        windows_dropped.append(index)
                elif span.stop is not None and boundary > to_ms:
                    reopened.append((index, name, span.stop))
                    span.stop = None
                    span.log_only = True
        before = self._newest_sealed
        unsealed = sorted(i for i in self._sealed if self.bounds(i)[0] > to_ms)
        if before is not None and self.bounds(before)[0] > to_ms:
            keep = {i for i in self._sealed if self.bounds(i)[0] <= to_ms}
            keep |= {i for i in (stored_windows or ()) if self.bounds(i)[0] <= to_ms and i not in self._open}
            self._sealed = keep
            self._newest_sealed = max(keep) if keep else None
            if self._newest_sealed is not None:
                floor = self._newest_sealed - SEALED_KEEP
                self._sealed = {i for i in self._sealed if i >= floor}
        else:
            self._sealed -= set(unsealed)
        late = [i for i in self.late_counts if self.bounds(i)[0] > to_ms]
        forgotten = sum(self.late_counts.pop(i) for i in late)
        return ClockReset(
            to_ms, moved, spans_dropped, windows_dropped, reopened, unsealed, (before, self._newest_sealed), forgotten
        )

    # -- state -----------------------------------------------------------------------------------

    def to_json(self) -> str:
        state = {
            "v": STATE_VERSION,
            "window_ms": self.window_ms,
            "lag_ms": self.lag_ms,
            "sources": {
                name: {"high": s.high, "position": s.position, "idle": s.idle}
                for name, s in sorted(self._sources.items())
            },
            "open": {
                str(index): {
                    "members": win.members,
                    "first_event_time": win.first_event_time,
                    "sources": {
                        name: [sp.first, sp.stop, sp.count] + ([1] if sp.log_only else [])
                        for name, sp in sorted(win.sources.items())
                    },
                }
                for index, win in sorted(self._open.items())
            },
            "sealed": sorted(self._sealed),
            "newest_sealed": self._newest_sealed,
            "late": {str(index): n for index, n in sorted(self.late_counts.items())},
        }
        return json.dumps(state, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes | dict) -> WindowClock:
        state = json.loads(raw) if isinstance(raw, (str, bytes, bytearray)) else raw
        if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
            raise ValueError(f"not a window clock state (version {STATE_VERSION})")
        try:
            clock = cls(state["window_ms"], state["lag_ms"])
            for name, s in state["sources"].items():
                clock.add_source(name)
                src = clock._sources[name]
                src.high = None if s["high"] is None else _check_int("high", s["high"])
                src.position = _check_int("position", s["position"])
                src.idle = bool(s["idle"])
            for index, w in state["open"].items():
                win = _Window(members=_check_int("members", w["members"]), first_event_time=w["first_event_time"])
                for name, (first, stop, count, *rest) in w["sources"].items():
                    if name not in clock._sources:
                        raise ValueError(f"open window {index} names unknown source {name!r}")
                    win.sources[name] = _Span(first=first, stop=stop, count=count, log_only=bool(rest and rest[0]))
                clock._open[int(index)] = win
            clock._sealed = {_check_int("sealed", i) for i in state["sealed"]}
            clock._newest_sealed = state["newest_sealed"]
            clock.late_counts = {int(i): _check_int("late", n) for i, n in state["late"].items()}
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed window clock state: {e}") from e
        return clock
