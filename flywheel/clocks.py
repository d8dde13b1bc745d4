"""`flywheel clocks`: the event-time clocks of the join and the dataset builder, shown, and reset
when a record dated far ahead (let through before the event-time bound existed) poisoned one.

    flywheel clocks show [--role datasets|join] [--json]
    flywheel clocks reset --role datasets|join --partition N --to ISO-TIME|MS|now [--yes]

The domain logic is in `streams/datasets/clockadmin.py` and `streams/join/clockadmin.py`, the
arguments are parsed in `flywheel/cli/clocks.py`; this module prints and refuses. `reset` prints
what it would change first and changes nothing without `--yes`; the builder, or the join, must
not be running (the builder's lease in Redis, the join's consumer group, say whether it is).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone

from flywheel.settings import Settings
from streams.datasets import clockadmin as dataset_clocks
from streams.datasets.clockadmin import ClockAdminError, iso
from streams.join import clockadmin as join_clocks

ROLES = ("datasets", "join")


def parse_time(text: str) -> int:
    """ISO 8601 (UTC when no offset is given), integer milliseconds since the epoch, or `now`."""
    # schemas loads fastavro (50 ms): `flywheel --help` imports this module (ROLES)
    from schemas.records import MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS

    text = text.strip()
    if text == "now":
        return int(time.time() * 1000)
    if text.isdigit():
        ms = int(text)
    else:
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither an ISO time nor milliseconds since the epoch"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        ms = int(dt.timestamp() * 1000)
    if not MIN_EVENT_TIME_MS <= ms < MAX_EVENT_TIME_MS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time between 1973 and 3000 (milliseconds, not seconds?)")
    return ms


def parse_partition(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def run(args, settings: Settings, out=None, err=None) -> int:
    from confluent_kafka import KafkaException
    from redis.exceptions import RedisError

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.clocks_command == "show":
            return _show(args, settings, out)
        return _reset(args, settings, out, err)
    except ClockAdminError as exc:
        print(f"flywheel: error: {exc}", file=err)
        return 2
    except RedisError as exc:
        print(
            f"flywheel: error: Redis at {settings.redis_url} did not answer ({type(exc).__name__}: {str(exc)[:200]})",
            file=err,
        )
        return 2
    except KafkaException as exc:
        print(f"flywheel: error: the broker did not answer ({str(exc)[:200]})", file=err)
        return 2


def _redis(settings: Settings):
    import redis

    return redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)


def _datasets_rows(settings: Settings, now_ms: int) -> list[dict]:
    client = _redis(settings)
    try:
        saved = dataset_clocks.load(client, settings)
        if saved is None:
            return [
                {
                    "role": "datasets",
                    "partition": None,
                    "note": "no saved builder state (has the builder run with this app id?)",
                }
            ]
        topics = {settings.topic_passed: "passed", settings.topic_rejected: "rejected"}
        rows = dataset_clocks.rows(saved.clock, topics, now_ms, settings.max_event_ahead_ms)
        lease = dataset_clocks.holder(client, settings)
        rows[-1]["builder_running"] = lease is not None
        return rows
    finally:
        client.close()


def _join_rows(settings: Settings, now_ms: int, metrics_url: str | None) -> list[dict]:
    heads, unreadable = join_clocks.read_states(settings)
    url = metrics_url or (f"http://127.0.0.1:{settings.metrics_port}/metrics" if settings.metrics_port else "")
    watermarks = join_clocks.live_watermarks(join_clocks.scrape(url)) if url else {}
    return join_clocks.rows(
        heads,
        unreadable,
        settings.settle_window_ms,
        settings.marker_horizon_ms,
        now_ms,
        settings.max_event_ahead_ms,
        watermarks,
    )


def _show(args, settings: Settings, out) -> int:
    now_ms = int(time.time() * 1000)
    rows: list[dict] = []
    if args.role in (None, "datasets"):
        rows += _datasets_rows(settings, now_ms)
    if args.role in (None, "join"):
        try:
            rows += _join_rows(settings, now_ms, args.metrics_url)
        except ClockAdminError as exc:
            if args.role == "join":
                raise
            rows.append({"role": "join", "partition": None, "note": str(exc)})
    if args.json:
        for row in rows:
            out.write(json.dumps(row, sort_keys=True) + "\n")
        return 0
    out.write(table(rows, now_ms, settings.max_event_ahead_ms))
    return 0


def table(rows: list[dict], now_ms: int, max_ahead_ms: int) -> str:
    """The rows of `show` for people: one line per source or partition, `!` marking a clock ahead."""
    bound = "off" if max_ahead_ms < 0 else f"{max_ahead_ms // 1000} s"
    lines = [
        f"now {iso(now_ms)}; event-time bound (FLYWHEEL_MAX_EVENT_AHEAD_MS) {bound}; ! marks a clock ahead of it",
        "",
    ]
    ds = [r for r in rows if r["role"] == "datasets"]
    if ds:
        lines.append("dataset builder (window clock, per source)")
        lines.append(
            f"  {'':1} {'partition':>9}  {'topic':<9} {'high (largest event time)':<26} {'ahead':>12}  {'position':>9}  idle  open windows"
        )
        for r in ds:
            if r["partition"] is None:
                if "note" in r:
                    lines.append(f"  {r['note']}")
                    continue
                opened = ", ".join(
                    f"{w['index']} ({w['start']}, {w['members']} members){' !' if w['suspect'] else ''}"
                    for w in r["open"]
                )
                lines.append(
                    f"  {'!' if r['suspect'] else ' '} watermark {r['watermark'] or '-'}; newest sealed window "
                    f"{r['newest_sealed'] if r['newest_sealed'] is not None else '-'}"
                    f"{' (' + r['newest_sealed_start'] + ')' if r['newest_sealed_start'] else ''}; "
                    f"builder {'running' if r.get('builder_running') else 'not running'}"
                )
                lines.append(f"    open windows: {opened or '-'}")
                continue
            lines.append(
                f"  {'!' if r['suspect'] else ' '} {r['partition']:>9}  {r['topic']:<9} {r['high'] or '-':<26} "
                f"{_ahead(r['ahead_s']):>12}  {r['position']:>9}  {'yes ' if r['idle'] else 'no  '}  "
                f"{', '.join(map(str, r['open_windows'])) or '-'}"
            )
        lines.append("")
    join = [r for r in rows if r["role"] == "join"]
    if join:
        lines.append("join (state in its changelog, per partition; the watermark lives in the worker)")
        lines.append(
            f"  {'':1} {'partition':>9}  {'pending':>8} {'settled':>8}  {'newest event time in state':<26} {'ahead':>12}  "
            f"{'states ahead':>12}  live watermark"
        )
        for r in join:
            if "note" in r:
                lines.append(f"  {r['note']}")
                continue
            lines.append(
                f"  {'!' if r['suspect'] else ' '} {r['partition']:>9}  {r['pending']:>8} {r['settled']:>8}  "
                f"{r['max_event_time'] or '-':<26} {_ahead(r['ahead_s']):>12}  {r['ahead_states']:>12}  "
                f"{r['watermark'] or '-'}"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def _ahead(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    sign, s = ("+" if seconds >= 0 else "-"), abs(seconds)
    if s >= 86_400:
        return f"{sign}{s / 86_400:.1f} d"
    if s >= 3600:
        return f"{sign}{s / 3600:.1f} h"
    return f"{sign}{s} s"


def _reset(args, settings: Settings, out, err) -> int:
    if args.role == "datasets":
        lines, changed, applied = _reset_datasets(args, settings)
    else:
        lines, changed, applied = _reset_join(args, settings)
    if args.json:
        out.write(
            json.dumps(
                {
                    "role": args.role,
                    "partition": args.partition,
                    "to_ms": args.to,
                    "consequences": lines,
                    "changed": changed,
                    "applied": applied,
                },
                sort_keys=True,
            )
            + "\n"
        )
    else:
        head = "reset" if applied else "a reset would do this"
        out.write(f"{head}: {args.role} partition {args.partition} to {_iso(args.to)}\n")
        for line in lines:
            out.write(f"  - {line}\n")
    out.flush()
    if changed and not applied:
        print("flywheel: error: nothing was changed: repeat with --yes to apply the reset", file=err)
        return 2
    return 0


def _iso(ms: int) -> str:
    return iso(ms) or str(ms)


def _reset_datasets(args, settings: Settings) -> tuple[list[str], bool, bool]:
    from flywheel.datastore import DatasetStore  # fastavro, fsspec: `flywheel --help` imports this module (ROLES)

    try:
        stored = [m["window"]["index"] for m in DatasetStore(settings.datasets_url).list()]
    except Exception as exc:  # the store says which windows were sealed: without it a reset could unseal some
        raise ClockAdminError(f"the dataset store {settings.datasets_url} is not readable: {exc}") from None
    client = _redis(settings)
    try:
        running = dataset_clocks.holder(client, settings)
        change, before = dataset_clocks.reset(client, settings, args.partition, args.to, stored, apply=args.yes)
        lines = dataset_clocks.consequences(change, before)
        if running and not args.yes and change.changed:
            lines.append(
                f"the dataset builder is running now (its lease: {running}): stop it before repeating with --yes"
            )
        return lines, change.changed, bool(args.yes and change.changed)
    finally:
        client.close()


def _reset_join(args, settings: Settings) -> tuple[list[str], bool, bool]:
    members = join_clocks.running_members(settings)
    heads, _ = join_clocks.read_states(settings, [args.partition])
    doomed = join_clocks.plan(heads[args.partition], args.to, settings.settle_window_ms, settings.marker_horizon_ms)
    lines = join_clocks.consequences(
        doomed, args.partition, args.to, settings.settle_window_ms, settings.marker_horizon_ms
    )
    if not doomed:
        return lines, False, False
    if members:
        if args.yes:
            raise ClockAdminError(
                f"the join is running ({', '.join(members)} in its consumer group): stop every worker first"
            )
        lines.append(f"the join is running now ({', '.join(members)}): stop every worker before repeating with --yes")
        return lines, True, False
    if not args.yes:
        return lines, True, False
    join_clocks.delete_states(settings, args.partition, [h.key for h in doomed])
    return lines, True, True
