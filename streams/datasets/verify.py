"""`flywheel datasets verify DATASET`: seal the dataset's window again from the log, into a scratch
store, and compare what comes out with what the store holds, file by file and byte by byte.

What the seal read is in the manifest: the window (index, start, end), per source (`topic/partition`
of the gate's passed and rejected topics) the offsets it read [first, stop), how far it read the
review verdicts, and the digest and size of its erasure set. From those the rebuild takes:

- the window span (`span_from_manifest`), every source read from the log (no spool: the rebuild's
  spool directory is scratch and every source is `log_only`);
- the gold set, when review was required: the verdicts topic up to the recorded offsets;
- the erasure set: the erasure topic's requests. The manifest keeps only the set's digest, so the
  whole topic is tried first, then every prefix of it in record-time order (requests that came
  after the seal are not in its set); when none gives the recorded digest, the report says so and
  the rebuild uses the whole topic;
- the earlier windows' datasets that a seal reads from the store (their manifests and small files,
  such as the kept records' duplicate keys; never their shards or users.txt), copied into the
  scratch store as the real store holds them now.

Then the same `WindowBuilder.seal` runs against the scratch store, and the two dataset directories
are compared: every file by its bytes; a shard that differs record by record, by request id
(missing, extra, differing records and the names of the fields that differ; never a text); users.txt
by how many hashes are missing or extra; manifest.json field by field. Nothing is written to the
real store, to Redis or to any topic. The comparison functions are pure (bytes and dicts in,
differences out).

Manifest fields that may differ between two seals of the same inputs: none (`VOLATILE`, empty): the
seal writes no wall-clock time into the manifest. The fields in `CARRIED` describe what the seal
read; the rebuild takes them from the manifest, so they cannot differ and are not evidence.
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from flywheel.datastore import DatasetStore, RECORD_USERS
from flywheel.policy import GatePolicy, PolicyError
from flywheel.pseudonyms import resolve_keys
from schemas.codec import Codec
from streams.datasets import intake
from streams.datasets.builder import (
    BUILDER_VERSION,
    SealInputs,
    WindowBuilder,
    erased_forms,
    message_headers,
    read_to_end,
    review_sets,
)
from streams.datasets.windows import WindowSpan

log = logging.getLogger("flywheel.datasets.verify")

MANIFEST = "manifest.json"
USERS = "users.txt"
# manifest fields (dotted paths) two seals of the same inputs may write differently: none
VOLATILE: tuple[str, ...] = ()
# manifest fields the rebuild takes from the manifest (what the seal read): equal by construction
CARRIED: tuple[str, ...] = (
    "window.index",
    "window.start_ms",
    "window.end_ms",
    "window.decisions",
    "window.passed",
    "late_events",
    "source_offsets",
    "verdict_offsets",
    "review_required",
    "supersedes",
    "resealed",
)
# what a re-seal adds to the manifest (the rebuild carries it over): never part of the content id
RESEAL_FIELDS = ("supersedes", "resealed")
MAX_IDS = 1000  # request ids listed per kind of difference and file (the counts are always whole)


class VerifyError(RuntimeError):
    """The dataset cannot be rebuilt here (one line for `flywheel: error:`)."""


# -- the differences ------------------------------------------------------------------------------------


@dataclass
class RecordDiff:
    """Two shards' records, matched by request id (the n-th record of an id with the n-th)."""

    sealed: int  # records in the sealed file
    rebuilt: int
    missing: list[str] = field(default_factory=list)  # request ids in the sealed file, not in the rebuild
    extra: list[str] = field(default_factory=list)  # in the rebuild, not in the sealed file
    differing: list[dict] = field(default_factory=list)  # {"request_id", "fields": [dotted field names]}
    missing_count: int = 0
    extra_count: int = 0
    differing_count: int = 0
    reordered: bool = False  # the same records in another order

    @property
    def same_records(self) -> bool:
        return not (self.missing_count or self.extra_count or self.differing_count or self.reordered)


@dataclass
class FileDiff:
    path: str  # relative to the dataset's directory
    status: str  # missing (sealed, not rebuilt), extra (rebuilt, not sealed), differs
    sealed_bytes: int | None = None
    rebuilt_bytes: int | None = None
    sealed_sha256: str | None = None
    rebuilt_sha256: str | None = None
    first_difference: int | None = None  # byte offset
    # the sealed file against its own manifest entry (False: changed after the seal)
    matches_manifest: bool | None = None
    records: RecordDiff | None = None
    unreadable: str | None = None  # why records could not be compared
    users: dict | None = None  # users.txt: {"missing": n, "extra": n}
    fields: list[dict] | None = None  # manifest.json: the fields that differ


@dataclass
class Report:
    dataset_id: str
    rebuilt_id: str | None = None
    files_compared: int = 0
    records_compared: int = 0
    files: list[FileDiff] = field(default_factory=list)
    inputs: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.files and self.rebuilt_id == self.dataset_id

    def to_dict(self) -> dict:
        out = asdict(self)
        out["identical"] = self.identical
        out["carried_from_manifest"] = list(CARRIED)
        out["not_compared"] = list(VOLATILE)
        return out


# -- pure comparison ------------------------------------------------------------------------------------


def first_difference(a: bytes, b: bytes) -> int | None:
    """The first byte offset where `a` and `b` differ (the shorter one's length when one is a prefix), or None."""
    if a == b:
        return None
    n, block = min(len(a), len(b)), 1 << 16
    for at in range(0, n, block):
        x, y = a[at : at + block], b[at : at + block]
        if x != y:
            return at + next((i for i in range(min(len(x), len(y))) if x[i] != y[i]), min(len(x), len(y)))
    return n


def field_diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Dotted names of the fields where `a` and `b` differ (`messages[1].content`); never values."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                out.append(sub)
            else:
                out += field_diff(a[k], b[k], sub)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [path or "."]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += field_diff(x, y, f"{path}[{i}]")
        return out
    if type(a) is not type(b) or a != b:
        return [path or "."]
    return []


def request_id(record: Any) -> str | None:
    """A shard record's request id: the Avro records' field, the chat JSONL's metadata."""
    if not isinstance(record, Mapping):
        return None
    rid = record.get("request_id")
    if rid is None and isinstance(record.get("metadata"), Mapping):
        rid = record["metadata"].get("request_id")
    return rid if isinstance(rid, str) else None


def _keyed(records: Sequence[Any]) -> list[tuple[str, int]]:
    """(request id, occurrence) per record; a record without one is keyed by its position."""
    seen: dict[str, int] = {}
    out = []
    for i, r in enumerate(records):
        rid = request_id(r)
        key = rid if rid is not None else f"#{i}"
        out.append((key, seen.get(key, 0)))
        seen[key] = seen.get(key, 0) + 1
    return out


def compare_records(sealed: Sequence[Any], rebuilt: Sequence[Any]) -> RecordDiff:
    ks, kr = _keyed(sealed), _keyed(rebuilt)
    by_s, by_r = dict(zip(ks, sealed)), dict(zip(kr, rebuilt))
    d = RecordDiff(len(sealed), len(rebuilt))
    missing = [k for k in ks if k not in by_r]
    extra = [k for k in kr if k not in by_s]
    differing = []
    for k in ks:
        if k in by_r and by_s[k] != by_r[k]:
            differing.append({"request_id": k[0], "fields": field_diff(by_s[k], by_r[k])})
    d.missing, d.missing_count = [k[0] for k in missing[:MAX_IDS]], len(missing)
    d.extra, d.extra_count = [k[0] for k in extra[:MAX_IDS]], len(extra)
    d.differing, d.differing_count = differing[:MAX_IDS], len(differing)
    d.reordered = not (missing or extra or differing) and ks != kr
    return d


def parse_records(path: str, data: bytes) -> list[Any] | None:
    """The records of a shard (`.avro` container or `.jsonl`), or None for another kind of file.
    Raises (ValueError, OSError, ...) when the bytes are not such a file."""
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line]
    if path.endswith(".avro"):
        import fastavro

        return list(fastavro.reader(io.BytesIO(data)))
    return None


def compare_users(sealed: bytes, rebuilt: bytes) -> dict:
    """users.txt: how many user hashes one has that the other lacks (the hashes are not shown)."""
    a, b = set(sealed.split()), set(rebuilt.split())
    return {"sealed": len(a), "rebuilt": len(b), "missing": len(a - b), "extra": len(b - a)}


def _leaf(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else "…"


def _flat(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted field -> value; the shard list keyed by path (`shards[sft/train-p000-00000.avro].sha256`)."""
    out: dict[str, Any] = {}

    def walk(v: Any, path: str) -> None:
        if isinstance(v, Mapping) and v:
            for k in sorted(v, key=str):
                walk(v[k], f"{path}.{k}" if path else str(k))
        elif isinstance(v, list) and v and all(isinstance(x, Mapping) and "path" in x for x in v):
            for x in v:
                walk({k: y for k, y in x.items() if k != "path"}, f"{path}[{x['path']}]")
        else:
            out[path] = v

    walk(manifest, "")
    return out


def compare_manifests(
    sealed: Mapping[str, Any], rebuilt: Mapping[str, Any], volatile: Iterable[str] = VOLATILE
) -> list[dict]:
    """The manifest fields that differ, {"field", "sealed", "rebuilt"} (None: absent; "…": not a plain value),
    leaving out `volatile` fields and everything under them."""
    skip = tuple(volatile)
    a, b = _flat(sealed), _flat(rebuilt)
    out = []
    for k in sorted(set(a) | set(b)):
        if any(k == v or k.startswith(v + ".") or k.startswith(v + "[") for v in skip):
            continue
        if k not in a or k not in b or type(a[k]) is not type(b[k]) or a[k] != b[k]:
            out.append({"field": k, "sealed": _leaf(a.get(k)), "rebuilt": _leaf(b.get(k))})
    return out


def compare_file(
    path: str, sealed: bytes | None, rebuilt: bytes | None, entry: Mapping[str, Any] | None = None
) -> FileDiff | None:
    """One file of the dataset: None when the bytes are the same; else what differs. `entry` is the
    file's shard entry in the sealed manifest (sha256, bytes), to tell a file changed after the seal."""
    import hashlib

    if sealed is not None and sealed == rebuilt:
        return None
    d = FileDiff(path, "missing" if rebuilt is None else "extra" if sealed is None else "differs")
    if sealed is not None:
        d.sealed_bytes, d.sealed_sha256 = len(sealed), hashlib.sha256(sealed).hexdigest()
        if entry is not None and "sha256" in entry:
            d.matches_manifest = d.sealed_sha256 == entry["sha256"] and d.sealed_bytes == entry.get(
                "bytes", d.sealed_bytes
            )
    if rebuilt is not None:
        d.rebuilt_bytes, d.rebuilt_sha256 = len(rebuilt), hashlib.sha256(rebuilt).hexdigest()
    if d.status != "differs":
        return d
    d.first_difference = first_difference(sealed, rebuilt)
    if posixpath.basename(path) == MANIFEST:
        try:
            d.fields = compare_manifests(json.loads(sealed), json.loads(rebuilt))
        except ValueError as exc:
            d.unreadable = f"not JSON ({type(exc).__name__})"
        return d
    if posixpath.basename(path) == USERS:
        d.users = compare_users(sealed, rebuilt)
        return d
    try:
        a = parse_records(path, sealed)
    except Exception as exc:  # noqa: BLE001 - a damaged file: say which, and why in a word
        d.unreadable = f"the sealed file cannot be read ({type(exc).__name__})"
        return d
    try:
        b = parse_records(path, rebuilt)
    except Exception as exc:  # noqa: BLE001
        d.unreadable = f"the rebuilt file cannot be read ({type(exc).__name__})"
        return d
    if a is not None and b is not None:
        d.records = compare_records(a, b)
    return d


# -- what the seal read ---------------------------------------------------------------------------------


def span_from_manifest(manifest: Mapping[str, Any], passed_topic: str):
    """The WindowSpan the seal sealed, every source to be read from the log. Member counts per
    source are not recorded (only their sums: `window.decisions`, `window.passed`); they count
    only towards those sums (and the spool, unused here)."""
    try:
        w = manifest["window"]
        spans = {str(s): (int(o["first"]), int(o["stop"])) for s, o in sorted(manifest["source_offsets"].items())}
        start, end = int(w["start_ms"]), int(w["end_ms"])
        decisions = int(w.get("decisions", 0))
        passed = int(w.get("passed", 0))
        index, lag, late = int(w["index"]), int(manifest["lag_ms"]), int(manifest.get("late_events", 0))
        first_event = manifest.get("first_event_time")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise VerifyError(f"the manifest does not say what its seal read ({type(exc).__name__}: {exc})") from None
    members: dict[str, int] = {}
    passed_sources = [s for s in spans if s.rpartition("/")[0] == passed_topic]
    other_sources = [s for s in spans if s.rpartition("/")[0] != passed_topic]
    if passed_sources:
        members[passed_sources[0]] = passed
    if other_sources:
        members[other_sources[0]] = max(0, decisions - passed)
    return WindowSpan(
        index=index,
        start_ms=start,
        end_ms=end,
        boundary_ms=end + lag,
        spans=spans,
        members=decisions,
        first_event_time=int(first_event or 0),
        late=late,
        source_members=members,
        log_only=frozenset(spans),
    )


def match_erasures(
    requests: Sequence[tuple[int, int, int, Iterable[str]]],
    gold: frozenset[str] | None,
    digest: str,
    ids: int,
    failed: frozenset[str] = frozenset(),
) -> tuple[frozenset[str] | None, int]:
    """The erasure set whose SealInputs digest (with `gold`) is `digest`: all the requests' ids, else
    the ids of the first n requests in (time, partition, offset) order, for the n that match.
    Returns (the set, n), or (None, 0) when none does. `requests`: (time, partition, offset, forms)."""
    ordered = sorted(requests, key=lambda r: r[:3])
    everything = frozenset(x for r in ordered for x in r[3])
    if len(everything) == ids and SealInputs(everything, gold, failed=failed).digest() == digest:
        return everything, len(ordered)
    erased: set[str] = set()
    for n in range(len(ordered) + 1):
        if n:
            erased |= set(ordered[n - 1][3])
        if len(erased) == ids and SealInputs(frozenset(erased), gold, failed=failed).digest() == digest:
            return frozenset(erased), n
        if len(erased) > ids:
            break
    return None, 0


# -- I/O -----------------------------------------------------------------------------------------------


def _read(settings, topic: str, stops: Mapping[int, int] | None = None) -> Iterable[Any]:
    """A topic's records (below `stops[partition]` when given), none when the topic does not exist."""
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": settings.broker_url, "group.id": f"{settings.app_id}-datasets-verify"})
    try:
        md = probe.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            if stops:
                raise VerifyError(f"topic {topic} does not exist, and the seal read it")
            return
        for p, stop in (stops or {}).items():
            low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if low > 0 or high < stop:
                raise VerifyError(
                    f"{topic}/{p} no longer holds offsets 0..{stop} that the seal read (it holds {low}..{high})"
                )
    finally:
        probe.close()
    for m in read_to_end(settings, topic):
        if stops is None or m.offset() < stops.get(m.partition(), 0):
            yield m


def check_log(settings, span) -> None:
    """VerifyError when the log no longer holds every offset the seal of `span` read (retention passed)."""
    _check_log(settings, span)


def _check_log(settings, span) -> None:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": settings.broker_url, "group.id": f"{settings.app_id}-datasets-verify"})
    try:
        for source, (first, stop) in sorted(span.spans.items()):
            if stop <= first:
                continue
            topic, _, p = source.rpartition("/")
            low, high = c.get_watermark_offsets(TopicPartition(topic, int(p)), timeout=10)
            if low > first or high < stop:
                raise VerifyError(
                    f"the log no longer holds what the seal read from {source}: offsets {first}..{stop}, "
                    f"the log holds {low}..{high}"
                )
    finally:
        c.close()


def seal_inputs(
    settings,
    manifest: Mapping[str, Any],
    codec,
    safety_floor: int = 3,
    erased: frozenset[str] | None = None,
    key: bytes | None = None,
) -> tuple[Any, dict]:
    """SealInputs as the seal had them (gold as of the recorded verdict offsets, the erasure set that
    gives the recorded digest), and what was found, for the report. With `erased` (keyed pseudonyms:
    an erasure's re-seal), that erasure set instead of the one read from the erasure topic."""
    keys = resolve_keys(settings)
    key = keys[0] if key is None else key
    older = [k for k in keys if k != key]

    verdict_offsets = {str(k): int(v) for k, v in (manifest.get("verdict_offsets") or {}).items()}
    gold, failed = None, frozenset()
    found: dict[str, Any] = {}
    if verdict_offsets:
        verdicts = []
        for m in _read(settings, settings.topic_verdicts, {int(p): o for p, o in verdict_offsets.items()}):
            try:
                verdicts.append(intake.review_verdict(codec, m.value(), message_headers(m)))
            except intake.RecordError:
                continue  # dead-lettered by the builder; it counted for nothing
        gold, failed = review_sets(verdicts, safety_floor)
        gold = gold if manifest.get("review_required") else None
        found["gold"] = None if gold is None else len(gold)
        found["review_failed"] = len(failed)
    if erased is not None:
        found["erasure"] = {"ids": len(erased), "matched": True, "used": "the erased list"}
        return SealInputs(frozenset(erased), gold, verdict_offsets, failed, key), found
    requests = []
    for m in _read(settings, settings.topic_erasure):
        try:
            req = intake.erasure_request(codec, m.value(), message_headers(m))
        except intake.RecordError:
            continue
        kind, ts = m.timestamp()
        requests.append(
            (ts if kind and ts > 0 else 0, m.partition(), m.offset(), erased_forms(req.user_id, key, older))
        )
    want = manifest.get("erasure") or {}
    erased, n = match_erasures(requests, gold, str(want.get("digest", "")), int(want.get("ids", 0)), failed)
    found["erasure"] = {"requests": len(requests), "ids": int(want.get("ids", 0)), "matched": erased is not None}
    if erased is None:
        erased = frozenset(x for r in requests for x in r[3])
        found["erasure"]["used"] = "every request on the topic"
    else:
        found["erasure"]["used"] = "every request on the topic" if n == len(requests) else f"the first {n} requests"
    return SealInputs(erased, gold, verdict_offsets, failed, key), found


def _files(fs, root: str) -> list[str]:
    """Every file under `root`, relative to it, sorted."""
    if not fs.exists(root):
        return []
    return sorted(posixpath.relpath(p, root) for p in fs.find(root))


def copy_earlier(store, scratch_store, start_ms: int) -> int:
    """The earlier windows' datasets, as a seal reads them from the store (their manifests and small
    files: no shards, no users.txt, no record-users.bin), newest version of each window, into the
    scratch store. Returns how many."""
    n = 0
    for m in store.latest():
        w = m.get("window") or {}
        if not isinstance(w, Mapping) or int(w.get("start_ms", start_ms)) >= start_ms:
            continue
        ds = m["dataset_id"]
        shards = {sh.get("path") for sh in m.get("shards", [])}
        dest = scratch_store.path(ds)
        for rel in _files(store.fs, store.path(ds)):
            if rel in shards or rel in (USERS, MANIFEST, RECORD_USERS):
                continue
            scratch_store.fs.makedirs(posixpath.dirname(posixpath.join(dest, rel)), exist_ok=True)
            with store.open(f"{ds}/{rel}") as src, scratch_store.fs.open(posixpath.join(dest, rel), "wb") as out:
                out.write(src.read())
        with store.open(f"{ds}/{MANIFEST}") as src, scratch_store.fs.open(posixpath.join(dest, MANIFEST), "wb") as out:
            out.write(src.read())  # last: the dataset counts as published once its manifest is there
        n += 1
    return n


def _inside(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def verify(
    settings, policy, store, dataset_id: str, scratch: str | None = None, workers: int = 1, codec=None
) -> Report:
    """Rebuild `dataset_id` from the log into a scratch directory (under `scratch`, default the system's
    temporary directory; removed afterwards) and compare. Raises KeyError (no such dataset) or
    VerifyError (it cannot be rebuilt here)."""
    from fsspec.implementations.local import LocalFileSystem

    codec = codec or Codec()
    manifest = store.manifest(dataset_id)
    if str(manifest.get("builder_version")) != BUILDER_VERSION:
        raise VerifyError(
            f"{dataset_id} was sealed by builder version {manifest.get('builder_version')} and this is "
            f"version {BUILDER_VERSION}: a rebuild here differs by construction"
        )
    if manifest.get("policy_version") != policy.stamp:
        raise VerifyError(
            f"{dataset_id} was sealed under policy {manifest.get('policy_version')} and the policy here is "
            f"{policy.stamp}: give that policy's file with --policy"
        )
    span = span_from_manifest(manifest, settings.topic_passed)
    _check_log(settings, span)
    inputs, found = seal_inputs(settings, manifest, codec, policy.review.safety_floor)
    report = Report(dataset_id, inputs=found)
    if not found["erasure"]["matched"]:
        report.notes.append(
            f"no erasure set read from {settings.topic_erasure} gives the manifest's erasure digest "
            f"(it covers the erasure set and the gold set; the seal had {found['erasure']['ids']} erased "
            f"ids): rebuilt with {found['erasure']['used']}"
        )
    local = isinstance(store.fs, LocalFileSystem)
    if local and scratch is None and _inside(tempfile.gettempdir(), store.root):
        raise VerifyError(
            f"the temporary directory lies inside the store ({store.root}): give --scratch DIR outside it"
        )
    if scratch is not None and local and _inside(scratch, store.root):
        raise VerifyError(f"--scratch {scratch} lies inside the store ({store.root}): the rebuild never writes there")
    with tempfile.TemporaryDirectory(prefix="flywheel-verify-", dir=scratch) as tmp:
        rebuild = settings.replace(
            seal_spool=os.path.join(tmp, "spool"),
            dataset_store=os.path.join(tmp, "store"),
            seal_workers=max(1, workers),
        )
        scratch_store = DatasetStore(rebuild.datasets_url)
        found["earlier_datasets"] = copy_earlier(store, scratch_store, span.start_ms)
        builder_log = logging.getLogger("flywheel.datasets")
        level = builder_log.level
        builder_log.setLevel(logging.ERROR)  # "spool incomplete, reading the log": as intended here
        try:
            result = WindowBuilder(rebuild, policy, scratch_store, codec).seal(
                span, inputs, {k: manifest[k] for k in RESEAL_FIELDS if k in manifest}
            )
        finally:
            builder_log.setLevel(level)
        report.rebuilt_id = result.dataset_id
        _compare_dirs(report, store, dataset_id, scratch_store, result.dataset_id, manifest)
    return report


def _compare_dirs(
    report: Report, store, dataset_id: str, scratch_store, rebuilt_id: str, manifest: Mapping[str, Any]
) -> None:
    sealed_files = _files(store.fs, store.path(dataset_id))
    rebuilt_files = _files(scratch_store.fs, scratch_store.path(rebuilt_id))
    entries = {sh["path"]: sh for sh in manifest.get("shards", []) if isinstance(sh, Mapping) and "path" in sh}
    for rel in sorted(set(sealed_files) | set(rebuilt_files)):
        a = _bytes(store, f"{dataset_id}/{rel}") if rel in sealed_files else None
        b = _bytes(scratch_store, f"{rebuilt_id}/{rel}") if rel in rebuilt_files else None
        report.files_compared += 1
        d = compare_file(rel, a, b, entries.get(rel))
        if d is None:
            if rel in entries:
                report.records_compared += int(entries[rel].get("records", 0))
            continue
        report.files.append(d)


def _bytes(store, path: str) -> bytes:
    with store.open(path) as f:
        return f.read()


# -- the command ----------------------------------------------------------------------------------------


def summary(report: Report) -> list[str]:
    """The report as lines of text: request ids and field names, never texts."""
    head = f"{report.dataset_id}: rebuilt from the log"
    if report.identical:
        return [f"{head}: identical ({report.files_compared} files, {report.records_compared} shard records compared)"]
    lines = [f"{head}: DIFFERENT ({len(report.files)} of {report.files_compared} files differ)"]
    if report.rebuilt_id != report.dataset_id:
        lines.append(f"  the rebuild's dataset id is {report.rebuilt_id}")
    for d in report.files:
        lines.append("  " + _describe(d))
    for note in report.notes:
        lines.append(f"  note: {note}")
    return lines


def _ids(ids: list[str], count: int, limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({count - limit} more)" if count > limit else "")


def _describe(d: FileDiff) -> str:
    if d.status == "missing":
        return f"{d.path}: in the store, not in the rebuild"
    if d.status == "extra":
        return f"{d.path}: in the rebuild, not in the store"
    parts = [
        f"{d.path}: bytes differ at byte {d.first_difference} (sealed {d.sealed_bytes} bytes, rebuilt {d.rebuilt_bytes})"
    ]
    if d.matches_manifest is False:
        parts.append("the stored file no longer matches its manifest entry: it changed after the seal")
    if d.unreadable:
        parts.append(d.unreadable)
    if d.users is not None:
        parts.append(f"user hashes: {d.users['missing']} missing from the rebuild, {d.users['extra']} extra")
    if d.fields is not None:
        parts.append(
            "fields: "
            + ", ".join(f"{f['field']} (sealed {f['sealed']!r}, rebuilt {f['rebuilt']!r})" for f in d.fields[:20])
            + (f", ... ({len(d.fields) - 20} more)" if len(d.fields) > 20 else "")
        )
    r = d.records
    if r is not None:
        if r.same_records:
            parts.append(f"the same {r.sealed} records")
        else:
            if r.missing_count:
                parts.append(
                    f"{r.missing_count} records missing from the rebuild ({_ids(r.missing, r.missing_count)})"
                )
            if r.extra_count:
                parts.append(f"{r.extra_count} extra records in the rebuild ({_ids(r.extra, r.extra_count)})")
            if r.differing_count:
                parts.append(
                    f"{r.differing_count} records differ ("
                    + "; ".join(f"{x['request_id']}: {', '.join(x['fields'][:8])}" for x in r.differing[:10])
                    + (", ..." if r.differing_count > 10 else "")
                    + ")"
                )
            if r.reordered:
                parts.append("the same records in another order")
    return "; ".join(parts)


def verify_stored(
    settings: Any, dataset_id: str, policy_path: str | None = None, scratch: str | None = None, workers: int = 1
) -> Report:
    """Rebuild a dataset of the configured store under the policy at `policy_path` (default: the
    settings' gate policy) and compare: the report, identical or not. Every reason it could not be
    done (no such dataset, a bad policy, the broker away, the store unreadable) is a VerifyError of
    one line, which the CLI prints through its one error path."""
    try:
        policy = GatePolicy.load(policy_path or settings.gate_policy)
        return verify(
            settings, policy, DatasetStore(settings.datasets_url), dataset_id, scratch=scratch, workers=workers
        )
    except VerifyError:
        raise
    except KeyError as exc:
        raise VerifyError(str(exc.args[0]) if exc.args else str(exc)) from None
    except PolicyError as exc:
        raise VerifyError(str(exc)) from None
    except Exception as exc:  # the broker away, the store unreadable: say which, in one line
        raise VerifyError(f"the rebuild failed ({type(exc).__name__}: {str(exc)[:300]})") from None
