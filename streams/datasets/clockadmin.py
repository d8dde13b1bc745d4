"""`flywheel clocks` for the dataset builder: its window clock as saved in Redis, shown and reset.

The builder keeps its whole clock in one Redis record (`<app_id>:datasets:state`, see
`service.py`): per source (a partition of the gate's passed or rejected topic) the largest event
time seen (`high`) and the next offset to read, and the open windows with their spans. A record
dated far ahead, let through by a builder older than the event-time bound, leaves a source's `high`
in the future: from then on every window on that source counts as crossed, its records come late,
and when the other sources go idle the far-future `high` seals open windows early.

`show` reads that record and says, per source, how far ahead of the wall clock its clock stands.
`reset` sets the sources of one partition back to a given time (`WindowClock.reset` says exactly
what that changes), after printing the consequences; it holds the builder's lease meanwhile, and
refuses while a running builder holds it. The pure parts (`rows`, `plan`, `consequences`) take a
clock and return data; the rest reads and writes Redis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from flywheel.settings import Settings
from streams.datasets.windows import ClockReset, WindowClock

RESET_LEASE_MS = 120_000  # how long a reset may hold the builder's lease (it takes well under a second)


class ClockAdminError(RuntimeError):
    """Something the operator must fix first (one line for `flywheel: error:`)."""


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def partition_of(source: str) -> int:
    return int(source.rpartition("/")[2])


@dataclass(frozen=True)
class Saved:
    """The builder's saved state: the clock, and the rest of the record (kept as it is)."""

    clock: WindowClock
    record: dict


def load(redis_client: Any, settings: Settings) -> Saved | None:
    from streams.datasets.service import state_key

    raw = redis_client.get(state_key(settings))
    if not raw:
        return None
    try:
        record = json.loads(raw)
        return Saved(WindowClock.from_json(record["clock"]), record)
    except (ValueError, KeyError, TypeError) as exc:
        raise ClockAdminError(f"the dataset builder's saved state is not readable: {exc}") from None


# -- show ------------------------------------------------------------------------------------------


def rows(clock: WindowClock, topics: dict[str, str], now_ms: int, max_ahead_ms: int) -> list[dict]:
    """One row per source, then one for the clock as a whole. `topics` names the kind of each topic
    (passed, rejected); `suspect` marks a clock further ahead of now than the event-time bound."""

    def ahead(t: int | None) -> bool:
        return t is not None and max_ahead_ms >= 0 and t > now_ms + max_ahead_ms

    spans = {i: clock.span(i) for i in clock.pending()}
    out = []
    for source in clock.sources:
        high = clock.high(source)
        topic = source.rpartition("/")[0]
        windows = [i for i, span in spans.items() if span is not None and source in span.spans]
        out.append(
            {
                "role": "datasets",
                "partition": partition_of(source),
                "topic": topics.get(topic, topic),
                "source": source,
                "high_ms": high,
                "high": iso(high),
                "ahead_s": None if high is None else round((high - now_ms) / 1000),
                "position": clock.position(source),
                "idle": clock.is_idle(source),
                "open_windows": windows,
                "suspect": ahead(high),
            }
        )
    wm = clock.watermark
    open_windows = []
    for i, span in spans.items():
        start, _, boundary = clock.bounds(i)
        open_windows.append(
            {
                "index": i,
                "start": iso(start),
                "boundary": iso(boundary),
                "members": span.members if span else 0,
                "suspect": ahead(start),
            }
        )
    newest = clock.newest_sealed
    out.append(
        {
            "role": "datasets",
            "partition": None,
            "watermark_ms": wm,
            "watermark": iso(wm),
            "open": open_windows,
            "newest_sealed": newest,
            "newest_sealed_start": iso(clock.bounds(newest)[0]) if newest is not None else None,
            "suspect": ahead(wm)
            or any(w["suspect"] for w in open_windows)
            or (newest is not None and ahead(clock.bounds(newest)[0])),
        }
    )
    return out


# -- reset -----------------------------------------------------------------------------------------


def sources_of(clock: WindowClock, partition: int) -> list[str]:
    return [s for s in clock.sources if partition_of(s) == partition]


def plan(
    clock: WindowClock, partition: int, to_ms: int, stored_windows: Iterable[int] = ()
) -> tuple[WindowClock, ClockReset]:
    """The clock after the reset (a copy; `clock` is left as it is) and what changed."""
    sources = sources_of(clock, partition)
    if not sources:
        known = sorted({partition_of(s) for s in clock.sources})
        raise ClockAdminError(f"the dataset builder reads no partition {partition} (it reads {known})")
    after = WindowClock.from_json(clock.to_json())
    return after, after.reset(sources, to_ms, stored_windows)


def consequences(change: ClockReset, clock: WindowClock) -> list[str]:
    """What the reset does, in sentences for the operator (before they confirm it)."""
    t = iso(change.to_ms)
    if not change.changed:
        return [f"nothing to reset: no clock of this partition stands after {t}"]
    lines = []
    for source, (before, after) in sorted(change.sources.items()):
        lines.append(
            f"{source}: its clock goes back from {iso(before)} to {iso(after)}; nothing is re-read (its position "
            f"stays at offset {clock.position(source)})"
        )
    for index, source, members in change.spans_dropped:
        lines.append(
            f"window {index} (from {iso(clock.bounds(index)[0])}): the {members} member(s) read from {source} "
            f"all lie after {t} and are forgotten (they stay in the log; no dataset will hold them)"
        )
    for index in change.windows_dropped:
        lines.append(f"window {index} (from {iso(clock.bounds(index)[0])}) is left with no member and is dropped")
    for index, source, stop in change.spans_reopened:
        lines.append(
            f"window {index} (boundary {iso(clock.bounds(index)[2])}) is open again on {source} (it was crossed at "
            f"offset {stop}): what was counted late there since is a member again, read from the log at the seal"
        )
    if change.unsealed:
        lines.append(
            f"window(s) {change.unsealed} start after {t} and no longer count as sealed; any dataset sealed for "
            "them stays in the store (remove it by hand if it should not be trained on)"
        )
    before, after = change.newest_sealed
    if before != after:
        lines.append(
            f"the newest sealed window goes from {before} to {after}: windows before it that were sealed stay "
            "sealed (the store's datasets say which), later ones seal as the watermark reaches them"
        )
    if change.late_forgotten:
        lines.append(f"{change.late_forgotten} late record count(s) of windows after {t} are forgotten")
    lines.append(
        "records that arrive from now on are judged against the event-time bound: one dated too far ahead is "
        "dead-lettered (future_event) and moves no clock"
    )
    return lines


def _lease(settings: Settings) -> str:
    from streams.datasets.service import lease_key

    return lease_key(settings)


def holder(redis_client: Any, settings: Settings) -> str | None:
    """Who holds the builder's lease now (a running builder, or a reset), or None."""
    held = redis_client.get(_lease(settings))
    return None if held is None else held.decode(errors="replace")


def reset(
    redis_client: Any,
    settings: Settings,
    partition: int,
    to_ms: int,
    stored_windows: Iterable[int] = (),
    apply: bool = False,
) -> tuple[ClockReset, WindowClock]:
    """Plan the reset of `partition`'s clock to `to_ms`, and with `apply` write it, holding the
    builder's lease: refused (ClockAdminError) while a builder holds it. Returns what changed and
    the clock before."""
    from streams.datasets.service import _LEASE_RELEASE, RESET_MARK

    mark = RESET_MARK + json.dumps({"partition": partition, "to_ms": to_ms}).encode()
    key = _lease(settings)
    if apply and not redis_client.set(key, mark, nx=True, px=RESET_LEASE_MS):
        raise ClockAdminError(
            f"the dataset builder is running (its lease: {holder(redis_client, settings)}): stop it first "
            "(a builder that stopped without letting go holds it 30 s more)"
        )
    try:
        saved = load(redis_client, settings)
        if saved is None:
            raise ClockAdminError("the dataset builder has no saved state yet: nothing to reset")
        after, change = plan(saved.clock, partition, to_ms, stored_windows)
        if apply and change.changed:
            from streams.datasets.service import state_key

            redis_client.set(state_key(settings), json.dumps({**saved.record, "clock": after.to_json()}))
        return change, saved.clock
    finally:
        if apply:
            redis_client.eval(_LEASE_RELEASE, 1, key, mark)
