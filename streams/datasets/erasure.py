"""Erasure that erases: the erased list, the review queue, re-sealed datasets, and where a user's data still is.

An erasure request (`flywheel datasets erase USER`, an `ErasureRequest` on the erasure topic) is read
by the dataset builder (`service.py`), which, in order, and each step idempotent:

1. adds the user's keyed pseudonyms (`builder.erased_forms`: of the id, of the gate's stand-in for it)
   to the erased list, a sorted set `<app_id>:datasets:erased` scored by when the entry may go: once
   every topic and dataset that could hold the user has passed retention (`expiry_ms`). The list
   never holds the id;
2. removes the user's items from the review queue (`remove_from_review`);
3. lists every sealed dataset whose users.txt holds one of those pseudonyms (`affected`) and adds it
   to the builder's pending re-seals, saved with its state and its erasure position in one write.

Then, before any window is sealed, each pending dataset is re-sealed (`reseal`): the same window,
from the log, under the same policy, with the erased list as it stands (so a seal of the log without
the user gives the same bytes and the same content id), its manifest naming the dataset it
`supersedes`. The new version is published (atomically, as any seal), recorded in the store's
`.superseded`, announced (one ready event), and only then is the old version deleted; readers take
the newest version of each window (`DatasetStore.latest`). When the log no longer holds the window
(retention passed) or the dataset was sealed under another policy, the dataset's own shards are
rewritten without the user's records, found through its record-users.bin (`rewrite_without`), and
the manifest says so (`resealed.mode = "shards"`).

`status` (`flywheel erasure status USER`) lists everywhere the user's data may still be: topics until
their retention, the dead-letter topic, the review queue, each dataset version, each model's lineage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import math
import posixpath
import time
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from schemas.datasets import Manifest
from flywheel.datastore import (
    DEFLATE_LEVEL,
    RECORD_USERS,
    USERS,
    _schema,
    content_id,
    manifest_json,
    sync_marker,
    user_hash,
    user_key64,
)
from flywheel.policy import GatePolicy
from flywheel.pseudonyms import fingerprint, key_source, resolve_keys
from flywheel.sdk import DEFAULT_CONFIG
from schemas.codec import Codec
from schemas.records import ErasureRequest
from streams.datasets import card, content, verify
from streams.datasets.builder import KEYS_FILE, SealResult, erased_forms, records_of
from streams.datasets.verify import VerifyError, seal_inputs, span_from_manifest
from streams.review.queue import review_prefix

log = logging.getLogger("flywheel.datasets")

NEVER = math.inf  # the score of an erased entry when the topics keep records for ever (retention -1)
RESEAL_MODES = ("log", "shards", "failed")

# one item out of the review queue (streams/review/queue.py's layout), whatever state it is in;
# `known:<id>` stays, so a replay of the candidate is not queued again
_REMOVE_ITEM = """
local p, id = ARGV[1], ARGV[2]
if redis.call('HEXISTS', p..':items', id) == 0 then return 0 end
local l = redis.call('HGET', p..':lease', id)
if l then
  local who = string.match(l, '^[^|]*|([^|]*)|')
  if who and redis.call('HGET', p..':holding', who) == id then redis.call('HDEL', p..':holding', who) end
end
for _, k in ipairs({'items', 'need', 'score', 'rounds', 'first', 'lease'}) do redis.call('HDEL', p..':'..k, id) end
redis.call('ZREM', p..':ready', id)
redis.call('ZREM', p..':leases', id)
redis.call('ZREM', p..':age', id)
redis.call('HINCRBY', p..':stats', 'erased', 1)
return 1
"""


class CannotErase(RuntimeError):
    """A dataset whose user's records cannot be removed here (the reason is one line)."""


def erased_key(settings) -> str:
    return f"{settings.app_id}:datasets:erased"


def erasures_key(settings) -> str:
    """Hash: the user's main pseudonym -> what was done for the request (JSON; pseudonyms and ids only)."""
    return f"{settings.app_id}:datasets:erasures"


def horizon_ms(settings, policy) -> float:
    """How long after an erasure the user's records can still reach a dataset: the topics' retention,
    plus a window and the lag (a record read on the retention's last day seals that much later)."""
    if settings.retention_ms < 0:
        return NEVER
    d = policy.datasets
    return settings.retention_ms + (d.window_days + d.lag_days) * 86_400_000


def expiry_ms(settings, policy, at_ms: int) -> float:
    return at_ms + horizon_ms(settings, policy)


def main_pseudonym(user_id: str, key: bytes) -> str:
    return user_hash(user_id, key)


# -- the erased list ------------------------------------------------------------------------------------


def record(client, settings, policy, pseudonyms: Iterable[str], at_ms: int) -> None:
    """Add pseudonyms to the erased list; an entry that is there already keeps the later expiry."""
    expires = expiry_ms(settings, policy, at_ms)
    mapping = {p: (float("inf") if expires == NEVER else int(expires)) for p in pseudonyms}
    if mapping:
        client.zadd(erased_key(settings), mapping, gt=True)  # adds new entries; an existing one only moves later


def current(client, settings, now_ms: int | None = None) -> frozenset[str]:
    """The erased list, less the entries whose time has passed (trimmed here, with their records)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    key = erased_key(settings)
    gone = client.zrangebyscore(key, "-inf", now_ms)
    if gone:
        client.zremrangebyscore(key, "-inf", now_ms)
        log.info("erased list trimmed: past retention", extra={"entries": len(gone)})
        client.hdel(erasures_key(settings), *gone)
    return frozenset(v.decode() if isinstance(v, bytes) else v for v in client.zrange(key, 0, -1))


def migrate(client, settings, policy, key: bytes) -> int:
    """An erased list kept as a plain set of raw ids (before keyed pseudonyms) becomes the sorted set of
    their pseudonyms, expiring a horizon from now. Returns how many ids were moved."""
    name = erased_key(settings)
    kind = client.type(name)
    if (kind.decode() if isinstance(kind, bytes) else kind) != "set":
        return 0
    raw = [v.decode() if isinstance(v, bytes) else v for v in client.smembers(name)]
    forms: set[str] = set()
    for uid in raw:  # the old set held the ids and the gate's unkeyed stand-ins ("pii-..."), as candidates carry them
        forms.add(user_hash(uid, key))
        if not uid.startswith("pii-"):
            forms |= erased_forms(uid, key)
    expires = expiry_ms(settings, policy, int(time.time() * 1000))
    pipe = client.pipeline(transaction=True)
    pipe.delete(name)
    if forms:
        pipe.zadd(name, {f: (float("inf") if expires == NEVER else int(expires)) for f in forms})
    pipe.execute()
    log.warning("erased list moved from raw ids to keyed pseudonyms", extra={"ids": len(raw)})
    return len(raw)


def note(client, settings, pseudonym: str, **fields: Any) -> dict:
    """Merge `fields` into the erasure's record (what was done for it; `flywheel erasure status` reads it)."""
    raw = client.hget(erasures_key(settings), pseudonym)
    rec = json.loads(raw) if raw else {}
    for k, v in fields.items():
        if isinstance(v, list) and isinstance(rec.get(k), list):
            rec[k] = sorted(set(rec[k]) | set(v))
        elif isinstance(v, dict) and isinstance(rec.get(k), dict):
            rec[k] = {**rec[k], **v}
        else:
            rec[k] = v
    client.hset(erasures_key(settings), pseudonym, json.dumps(rec, sort_keys=True))
    return rec


# -- the review queue -----------------------------------------------------------------------------------


def remove_from_review(client, settings, pseudonyms: frozenset[str] | set[str], key: bytes) -> list[str]:
    """Remove the review queue's items whose candidate belongs to one of these users (by pseudonym).
    Returns the request ids removed."""
    prefix = review_prefix(settings)
    script = client.register_script(_REMOVE_ITEM)
    removed = []
    for item_id, raw in client.hscan_iter(f"{prefix}:items", count=500):
        try:
            uid = (json.loads(raw).get("candidate") or {}).get("user_id") or ""
        except ValueError:
            continue
        if uid and user_hash(uid, key) in pseudonyms:
            rid = item_id.decode() if isinstance(item_id, bytes) else item_id
            if script(args=[prefix, rid]):
                removed.append(rid)
    return removed


def review_items_of(client, settings, pseudonyms: frozenset[str] | set[str], key: bytes) -> list[str]:
    out = []
    for item_id, raw in client.hscan_iter(f"{review_prefix(settings)}:items", count=500):
        try:
            uid = (json.loads(raw).get("candidate") or {}).get("user_id") or ""
        except ValueError:
            continue
        if uid and user_hash(uid, key) in pseudonyms:
            out.append(item_id.decode() if isinstance(item_id, bytes) else item_id)
    return out


# -- datasets -------------------------------------------------------------------------------------------


def legacy_hashes(user_id: str) -> set[str]:
    """What users.txt of a dataset sealed before keyed pseudonyms (builder 4) holds for the user: plain
    sha256 of the id and of the gate's unkeyed stand-in. Computed to look, never kept."""
    legacy = "pii-" + hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:24]
    return {hashlib.sha256(f.encode("utf-8")).hexdigest() for f in (user_id, legacy)}


def affected(store, pseudonyms: Iterable[str], legacy: Iterable[str] = ()) -> list[str]:
    """Every published dataset (every version) whose users.txt holds one of the pseudonyms (or, for a
    dataset sealed before keyed pseudonyms, one of the `legacy` plain hashes), oldest window first."""
    pseudonyms, legacy = list(pseudonyms), list(legacy)
    replaced = store.superseded()  # recorded as replaced, its deletion under way: its re-seal is pending already
    out = []
    for m in store.list():
        if m["dataset_id"] in replaced:
            continue
        look = pseudonyms if m.get("pseudonym_key") else pseudonyms + legacy
        if any(store.holds_user(m["dataset_id"], p) for p in look):
            out.append(m["dataset_id"])
    return out


def held_users(store, dataset_id: str, pseudonyms: Iterable[str]) -> list[str]:
    return sorted(p for p in pseudonyms if store.holds_user(dataset_id, p))


@dataclass
class Resealed:
    """What one pending re-seal came to."""

    old_id: str
    new_id: str | None = None
    mode: str = "log"  # log | shards | failed | done (found finished: a crash came after the deletion)
    reason: str = ""  # why not from the log, or why it failed
    users: list[str] = field(default_factory=list)  # the erased pseudonyms the old version held
    result: Any = None  # the SealResult of the new version
    seconds: float = 0.0


def reseal(builder, store, old_id: str, erased: frozenset[str], key: bytes, codec, safety_floor: int = 3) -> Resealed:
    """A new version of `old_id` without the erased users: sealed again from the log (same window,
    same policy, the erased list `erased`), else its shards rewritten without their records.
    Publishes the new version; the caller records, announces, deletes (`finish`). Idempotent: the
    same inputs seal the same content id, and a version published before a crash is found."""
    started = time.perf_counter()
    if not store.exists(old_id):
        entry = store.superseded().get(old_id)
        if entry is None:
            return Resealed(
                old_id, mode="failed", reason="the dataset is no longer in the store and no version replaced it"
            )
        m = store.manifest(entry["by"]) if store.exists(entry["by"]) else None
        result = SealResult(entry["by"], store.uri(entry["by"]), m, False) if m is not None else None
        return Resealed(old_id, entry["by"], "done", users=list(entry.get("users", [])), result=result)
    manifest = store.manifest(old_id)
    users = held_users(store, old_id, erased)
    if not users and manifest.get("pseudonym_key"):  # its users' entries expired: nothing to remove
        return Resealed(old_id, None, "done", "it holds none of the erased users")
    # (a dataset sealed before keyed pseudonyms cannot be checked against the erased list: sealed again all the same)
    settings = builder.settings
    why = ""
    if manifest.get("policy_version") != builder.policy.stamp:
        why = (
            f"sealed under policy {manifest.get('policy_version')}, and the builder runs {builder.policy.stamp}: "
            "the window cannot be sealed again under its own policy"
        )
    else:
        try:
            span = span_from_manifest(manifest, settings.topic_passed)
            verify.check_log(settings, span)  # through the module: a test stands in for the log's retention
            inputs, _ = seal_inputs(settings, manifest, codec, safety_floor, erased=erased, key=key)
        except VerifyError as exc:
            why = str(exc)
    extra = {
        "supersedes": old_id,
        "resealed": {
            "reason": "erasure",
            "mode": "shards" if why else "log",
            "builder_version": str(manifest.get("builder_version", "")),
        },
    }
    if not why:
        result = builder.seal(span, inputs, extra)
        return Resealed(old_id, result.dataset_id, "log", "", users, result, time.perf_counter() - started)
    log.warning(
        "erasure: the log no longer holds the window; the dataset's shards are rewritten without the user",
        extra={"dataset_id": old_id, "reason": why[:300]},
    )
    extra["resealed"]["why"] = why[:500]
    try:
        new_id, m = rewrite_without(store, manifest, erased, extra)
    except CannotErase as exc:
        return Resealed(old_id, mode="failed", reason=f"{why}; {exc}", users=users)
    return Resealed(
        old_id,
        new_id,
        "shards",
        why,
        users,
        SealResult(new_id, store.uri(new_id), m, True),
        time.perf_counter() - started,
    )


def finish(store, done: Resealed, at_ms: int | None = None) -> list[str]:
    """After the new version is announced: record it in `.superseded` (with any other version that an
    earlier, crashed attempt published for the same old one), then delete the old files. Returns the
    ids deleted."""
    if done.new_id is None or done.new_id == done.old_id:
        return []
    at_ms = int(time.time() * 1000) if at_ms is None else at_ms
    replaced = [done.old_id] + [
        m["dataset_id"] for m in store.list() if m.get("supersedes") == done.old_id and m["dataset_id"] != done.new_id
    ]
    deleted = []
    for old in replaced:
        if old == done.new_id:
            continue
        store.mark_superseded(
            old,
            done.new_id,
            at=at_ms,
            reason="erasure",
            mode=done.mode,
            users=done.users,
            **({"why": done.reason[:500]} if done.reason else {}),
        )
    for old in replaced:
        if old != done.new_id and store.delete(old):
            deleted.append(old)
    return deleted


def rewrite_without(
    store, manifest: Mapping[str, Any], erased: frozenset[str], extra: Mapping[str, Any]
) -> tuple[str, dict]:
    """The dataset's shards less the records of the erased users (by its record-users.bin), published
    as a new version (a new content id). Records are not re-selected: what the window's selection
    kept stays, less those records. Raises CannotErase when the dataset has no record-users.bin."""
    import fastavro
    import numpy as np

    old_id = manifest["dataset_id"]
    files = dict(manifest.get("files") or {})
    if RECORD_USERS not in files:
        raise CannotErase(
            f"{old_id} has no {RECORD_USERS} (sealed by builder version {manifest.get('builder_version')}): "
            "its records cannot be told apart by user"
        )
    users_body = _read(store, f"{old_id}/{USERS}")
    listed = set(users_body.split())
    present = sorted(p for p in erased if p.encode() in listed)
    pairs_body = _read(store, f"{old_id}/{RECORD_USERS}")
    ties = records_of(pairs_body, present)
    w = manifest["window"]
    stage_name = "erasure-" + hashlib.sha256((old_id + "\n" + "\n".join(present)).encode()).hexdigest()[:16]
    staging = store.staging(stage_name)
    fs = store.fs
    seed = f"{w['start_ms']}/{w['end_ms']}/{manifest.get('policy_version')}/erasure"
    shards, removed_keys, removed = [], set(), {}
    new_files = {k: v for k, v in files.items() if k not in {sh["path"] for sh in manifest["shards"]}}
    for sh in manifest["shards"]:
        data = _read(store, f"{old_id}/{sh['path']}")
        if sh["path"].endswith(".avro"):
            records = list(fastavro.reader(io.BytesIO(data)))
            kept = [r for r in records if content.tie_hash(r["request_id"]) not in ties]
            for r in records:
                if content.tie_hash(r["request_id"]) in ties:
                    removed.setdefault(r["request_id"], {}).update(
                        {k: r.get(k) for k in ("task_type", "user_action", "label") if r.get(k) is not None}
                    )
                    if sh["kind"] == "sft":
                        removed_keys.add(content.dedupe_key(r["prompt"], r["target"]))
            if len(kept) == len(records):
                body = data
            else:
                out = io.BytesIO()
                writer = fastavro.write.Writer(
                    out,
                    _schema("sft_record" if sh["kind"] == "sft" else "preference_record"),
                    codec="deflate",
                    validator=False,
                    compression_level=DEFLATE_LEVEL,
                    sync_marker=sync_marker(seed, sh["path"]),
                )
                for r in kept:
                    writer.write(r)
                writer.flush()
                body = out.getvalue()
        else:
            lines = [ln for ln in data.splitlines(keepends=True) if ln.strip()]
            kept = [ln for ln in lines if content.tie_hash(_jsonl_request_id(ln)) not in ties]
            body = data if len(kept) == len(lines) else b"".join(kept)
        if not kept:
            continue
        fs.makedirs(posixpath.dirname(f"{staging}/{sh['path']}"), exist_ok=True)
        with fs.open(f"{staging}/{sh['path']}", "wb") as f:
            f.write(body)
        digest = hashlib.sha256(body).hexdigest()
        shards.append({**sh, "records": len(kept), "bytes": len(body), "sha256": digest})
        new_files[sh["path"]] = digest
    remaining_users = [u for u in users_body.split() if u.decode() not in set(present)]
    pairs = np.frombuffer(pairs_body, dtype="<u8").reshape(-1, 2)
    if len(pairs) and present:
        pairs = pairs[~np.isin(pairs[:, 0], np.array([user_key64(p) for p in present], dtype="<u8"))]
    bodies = {
        USERS: b"".join(u + b"\n" for u in remaining_users),
        RECORD_USERS: np.ascontiguousarray(pairs, dtype="<u8").tobytes(),
    }
    if KEYS_FILE in files:
        keys = np.frombuffer(_read(store, f"{old_id}/{KEYS_FILE}"), dtype="<u8")
        if removed_keys:
            keys = keys[~np.isin(keys, np.array(sorted(removed_keys), dtype="<u8"))]
        bodies[KEYS_FILE] = np.ascontiguousarray(keys, dtype="<u8").tobytes()
    for name, body in bodies.items():
        with fs.open(f"{staging}/{name}", "wb") as f:
            f.write(body)
        new_files[name] = hashlib.sha256(body).hexdigest()
    for name in files:  # any other small file, as it was
        if name not in new_files and name not in {sh["path"] for sh in manifest["shards"]}:
            body = _read(store, f"{old_id}/{name}")
            with fs.open(f"{staging}/{name}", "wb") as f:
                f.write(body)
            new_files[name] = hashlib.sha256(body).hexdigest()
    counts = json.loads(json.dumps(manifest.get("counts") or {}))
    split: dict[str, int] = {}
    for sh in shards:
        if sh["path"].endswith(".avro"):
            k = f"{sh['kind']}.{'train' if sh['split'].startswith('train') else 'validation' if sh['split'].startswith('validation') else sh['split']}"
            split[k] = split.get(k, 0) + sh["records"]
    counts["split"] = dict(sorted(split.items()))
    counts["records"] = sum(split.values())
    for fields in removed.values():
        for group in ("task_type", "user_action", "label"):
            value = fields.get(group)
            if value is not None and isinstance(counts.get(group), dict) and counts[group].get(value):
                counts[group][value] -= 1
                if not counts[group][value]:
                    del counts[group][value]
    new_id = content_id(
        w["start_ms"],
        w["end_ms"],
        manifest.get("policy_version", ""),
        str(manifest.get("builder_version", "")),
        new_files,
    )
    old = Manifest.from_dict({**json.loads(json.dumps(manifest)), **dict(extra)})  # a copy: nothing shared
    sealed = dataclasses.replace(
        old,
        dataset_id=new_id,
        files=dict(sorted(new_files.items())),
        shards=shards,
        counts=counts,
        users=len(remaining_users),
        dropped=dict(sorted({**(old.dropped or {}), "erased_after_seal": len(removed)}.items())),
        extra={
            **old.extra,
            "resealed": {
                **old.extra["resealed"],
                "records_removed": len(removed),
                "note": "records not re-selected; the removed records' near-duplicate band keys stay in " + KEYS_FILE,
            },
        },
    )

    card.write(fs, staging, sealed)  # the dataset card of the new version (README.md, not in `files`)
    with fs.open(f"{staging}/manifest.json", "wb") as f:
        f.write(manifest_json(sealed.to_dict()))
    store.publish(new_id, staged_as=stage_name)
    return new_id, store.manifest(new_id)


def _jsonl_request_id(line: bytes) -> str:
    obj = json.loads(line)
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    rid = (meta or {}).get("request_id") if isinstance(meta, dict) else None
    return rid if isinstance(rid, str) else (obj.get("request_id", "") if isinstance(obj, dict) else "")


def _read(store, path: str) -> bytes:
    with store.open(path) as f:
        return f.read()


# -- models ---------------------------------------------------------------------------------------------


def tainted(lineage: Iterable[str], superseded: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The dataset versions of a lineage that an erasure's re-seal has since replaced."""
    return sorted(d for d in set(lineage) if (superseded.get(d) or {}).get("reason") == "erasure")


# -- `flywheel erasure status USER` ---------------------------------------------------------------------


def _iso(ms: float | None) -> str | None:
    if ms is None:
        return None
    if ms == NEVER:
        return "never (retention -1)"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _topic_retention(settings) -> dict[str, int]:
    """retention.ms of every flywheel topic as the broker has it (empty when no broker answers)."""
    if not settings.kafka_bootstrap:
        return {}
    try:
        from confluent_kafka.admin import AdminClient, ConfigResource

        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        out = {}
        resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in settings.topics.all()]
        for res, fut in admin.describe_configs(resources, request_timeout=10).items():
            try:
                entry = fut.result(timeout=10).get("retention.ms")
                if entry is not None and entry.value is not None:
                    out[res.name] = int(entry.value)
            except Exception:  # noqa: BLE001 - a topic that does not exist, a broker that does not say
                continue
        return out
    except Exception:  # noqa: BLE001 - no broker: the settings' retention is what is said
        return {}


def status(
    settings,
    user_id: str,
    redis_client,
    store,
    registry=None,
    policy=None,
    key: bytes | None = None,
    now_ms: int | None = None,
) -> dict:
    """Everywhere the user's data may still exist, what was removed, and when the rest expires."""
    policy = policy or GatePolicy()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    keys = resolve_keys(settings, redis_client)
    key = keys[0] if key is None else key
    older = [k for k in keys if k != key]
    forms = erased_forms(user_id, key, older)
    known_keys = {fingerprint(k) for k in keys}
    legacy = legacy_hashes(user_id)
    main = main_pseudonym(user_id, key)
    scores = {p: redis_client.zscore(erased_key(settings), p) for p in sorted(forms)}
    requested = any(v is not None for v in scores.values())
    raw = redis_client.hget(erasures_key(settings), main)
    rec = json.loads(raw) if raw else {}
    at = rec.get("requested_at")
    expires = max((v for v in scores.values() if v is not None), default=None)
    retention = _topic_retention(settings)
    since = at if at is not None else now_ms

    def until(topic: str) -> float:
        r = retention.get(topic, settings.retention_ms)
        return NEVER if r is None or r < 0 else since + r

    topics = []
    for role, topic, what in (
        ("interactions", settings.topic_interactions, "the app's requests and responses, with the user id as sent"),
        ("actions", settings.topic_actions, "the user's actions on them"),
        ("candidates", settings.topic_candidates, "joined candidates (user id as sent)"),
        ("passed", settings.topic_passed, "the gate's passed candidates (an id holding personal data pseudonymised)"),
        ("rejected", settings.topic_rejected, "the gate's rejected candidates"),
        ("deadletter", settings.topic_deadletter, "dead letters: the original bytes of whatever failed"),
        ("erasure", settings.topic_erasure, "the erasure request itself, with the id"),
        (
            "join-state",
            settings.changelog_topic("join-state"),
            "the join's pending requests until they settle (compacted: a settled request's state is replaced)",
        ),
    ):
        topics.append(
            {
                "topic": topic,
                "role": role,
                "holds": what,
                "retention_ms": retention.get(topic, settings.retention_ms),
                "may_hold_until": _iso(until(topic)) if role != "join-state" else "until the request settles",
            }
        )
    ledger = store.superseded()
    resealed_for_user = {entry.get("by") for entry in ledger.values() if set(entry.get("users", [])) & forms}
    datasets = []
    for m in store.list():
        ds = m["dataset_id"]
        holds = [p for p in (forms if m.get("pseudonym_key") else forms | legacy) if store.holds_user(ds, p)]
        if holds or ds in resealed_for_user:
            datasets.append(
                {
                    "dataset_id": ds,
                    "window_start": _iso(m["window"]["start_ms"]),
                    "state": "holds the user: re-seal pending" if holds else "re-sealed without the user",
                    **(
                        {"supersedes": m["supersedes"], "mode": (m.get("resealed") or {}).get("mode")}
                        if m.get("supersedes")
                        else {}
                    ),
                }
            )
    for old, entry in sorted(ledger.items()):
        if set(entry.get("users", [])) & forms:
            datasets.append(
                {
                    "dataset_id": old,
                    "state": "deleted",
                    "superseded_by": entry.get("by"),
                    "at": _iso(entry.get("at")),
                    "mode": entry.get("mode"),
                    **({"why": entry["why"]} if entry.get("why") else {}),
                }
            )
    state = redis_client.get(f"{settings.app_id}:datasets:state")
    pending, failed = [], {}
    if state:
        saved = json.loads(state)
        pending = list(saved.get("reseal", []))
        failed = dict(saved.get("reseal_failed", {}))
    for d in datasets:
        if d["dataset_id"] in failed:
            d["state"] = "holds the user: the re-seal failed"
            d["why"] = failed[d["dataset_id"]]
    models = []
    if registry is not None:
        user_versions = {old for old, entry in ledger.items() if set(entry.get("users", [])) & forms}
        held_now = {d["dataset_id"] for d in datasets if d["state"].startswith("holds")}
        production = registry.production()
        for meta in registry.list():
            lineage = set(meta.get("lineage") or meta.get("datasets") or [])
            hit = sorted(lineage & (user_versions | held_now))
            if hit:
                models.append(
                    {
                        "version": meta["version"],
                        "trained_on": hit,
                        "production": meta["version"] == production,
                        "tainted_by_erasure": tainted(lineage, ledger),
                        "retire": bool(meta.get("retire")),
                        "status": meta.get("status"),
                    }
                )
    review_left = review_items_of(redis_client, settings, forms, key)
    spool_note = "the builder's seal spool holds open windows' candidates on its local disk until each window seals"
    removed = {
        "review_items": rec.get("review_removed", []),
        "datasets_replaced": sorted(d["dataset_id"] for d in datasets if d["state"] == "deleted"),
    }
    rest = [t["may_hold_until"] for t in topics if t["may_hold_until"] and t["may_hold_until"][0].isdigit()]
    return {
        "user": main[:16],
        "pseudonym_key": key_source(settings),
        "erasure_requested": requested,
        "requested_at": _iso(at),
        "erased_list_entry_expires": _iso(expires),
        "topics": topics,
        "review_queue": {"items_left": len(review_left), "removed": len(removed["review_items"])},
        "dedup_index": "none in Redis: the gate's near-duplicate check runs in memory; datasets keep 64-bit key hashes (dedup-keys.bin)",
        "seal_spool": spool_note,
        "datasets": datasets,
        "datasets_under_other_keys": [
            m["dataset_id"] for m in store.list() if m.get("pseudonym_key") and m["pseudonym_key"] not in known_keys
        ],
        "pending_reseals": pending,
        "models": models,
        "removed": removed,
        "rest_expires_by": max(rest)
        if rest
        else ("never (retention -1)" if any(t["may_hold_until"] == "never (retention -1)" for t in topics) else None),
    }


def lines(report: Mapping[str, Any]) -> list[str]:
    """The status as text: pseudonyms and ids, never the user id or any text."""
    out = [f"user {report['user']}… (keyed pseudonym; key: {report['pseudonym_key']})"]
    if report["erasure_requested"]:
        out.append(
            f"erasure requested {report['requested_at'] or '(time not recorded)'}; the erased-list entry expires "
            f"{report['erased_list_entry_expires']}"
        )
    else:
        out.append("no erasure requested (or its entry expired)")
    out.append("topics (records before the request stay until retention):")
    for t in report["topics"]:
        out.append(f"  {t['topic']:<40} {t['role']:<12} may hold until {t['may_hold_until']}: {t['holds']}")
    rq = report["review_queue"]
    out.append(f"review queue: {rq['items_left']} items left, {rq['removed']} removed")
    out.append(f"dedup index: {report['dedup_index']}")
    out.append(f"seal spool: {report['seal_spool']}")
    out.append("datasets:" if report["datasets"] else "datasets: none held the user")
    for d in report["datasets"]:
        extra = ", ".join(f"{k} {d[k]}" for k in ("supersedes", "superseded_by", "mode", "at", "why") if d.get(k))
        out.append(f"  {d['dataset_id']}: {d['state']}" + (f" ({extra})" if extra else ""))
    if report.get("datasets_under_other_keys"):
        out.append(
            "datasets whose users.txt is under a key no longer configured (cannot be checked; add the old key "
            f"after the current one in FLYWHEEL_PSEUDONYM_KEY): {', '.join(report['datasets_under_other_keys'])}"
        )
    if report["pending_reseals"]:
        out.append(f"pending re-seals: {', '.join(report['pending_reseals'])}")
    out.append("models:" if report["models"] else "models: none trained on the user's data")
    for m in report["models"]:
        out.append(
            f"  {m['version']}: trained on {', '.join(m['trained_on'])}"
            + (" (production)" if m["production"] else "")
            + (" - tainted by erasure" if m["tainted_by_erasure"] else "")
            + (", to be retired" if m["retire"] else "")
        )
    out.append(f"the rest expires by retention: {report['rest_expires_by']}")
    return out


# -- requesting one, and finding what it touches ----------------------------------------------------------
class RequestNotSent(RuntimeError):
    """The broker did not acknowledge an erasure request: nothing says it is on the log."""


def send_request(settings: Any, user_id: str, reason: str = "", timeout_s: float = 30.0) -> Any:
    """Put an erasure request for `user_id` on the erasure topic, keyed by the user id, and wait for
    the broker's acknowledgement: the dataset builder acts on what is on the log, so a request is
    only sent once acknowledged. Returns the ErasureRequest; InvalidEvent: the id or reason is not a
    valid request (nothing is sent); RequestNotSent: no acknowledgement within `timeout_s`."""
    from confluent_kafka import Producer

    req = ErasureRequest(user_id, int(time.time() * 1000), reason).check()
    conf = {k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}
    producer = Producer({**conf, "bootstrap.servers": settings.broker_url})
    producer.produce(settings.topic_erasure, key=req.user_id.encode(), value=Codec().encode("erasure", req.to_dict()))
    if producer.flush(timeout_s):
        raise RequestNotSent("the erasure request was not acknowledged by the broker")
    return req


def datasets_holding(settings: Any, store: Any, user_id: str, client: Any = None) -> list[dict]:
    """The sealed datasets (every version, replaced ones too: they still hold the records until
    deleted) whose users.txt lists one of the user's keyed pseudonyms, under the current pseudonym
    key and every older one: {dataset_id, uri, window_start} each, in the store's order. What
    `flywheel datasets affected` prints; `affected` above is the builder's own look-up by pseudonyms."""
    keys = resolve_keys(settings, client)
    hashes = erased_forms(user_id, keys[0], keys[1:])
    return [
        {"dataset_id": m["dataset_id"], "uri": store.uri(m["dataset_id"]), "window_start": m["window"]["start_ms"]}
        for m in store.list()
        if any(store.holds_user(m["dataset_id"], h) for h in hashes)
    ]
