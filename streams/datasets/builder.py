"""Sealing one window: the log between recorded offsets in, a reproducible dataset directory out.

Memory stays bounded because nothing is held per record but a few small numbers: pass 1 reads the
window's candidates once (from the builder's local spool of the window when it is complete, else
from the log: `spool.py`), records each SFT candidate's dedupe key, task type and base priority
(`content.OfferLog`, 20 bytes a record), and writes each record, built but for the window's part of
its priority, to a local scratch file; when the window's statistics are complete, the selection
(duplicates, per-task caps, top K, with the window's part of the priority: changed behaviour, rare
task types) is decided; pass 2 reads the scratch file and writes what was kept. Each candidate is
decoded once.

Both passes run one partition per task, over a pool of processes (`seal_workers`, one per core by
default): decoding is the cost, and one Python thread decodes at most one core's worth. The
selection itself is one: partitions' offers are handed to it in partition order. Each partition
writes its own shards (`sft/train-p002-00000.avro`), so the bytes depend on the log and the policy,
never on how many processes wrote them: the same window from the same log gives the same bytes and
the same dataset id. The directory is written under staging and renamed into place, so a crash
leaves nothing visible and the next run writes it again from scratch.
"""

from __future__ import annotations

import array
import functools
import hashlib
import json
import logging
import marshal
import os
import shutil
import struct
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any, Callable, Iterable, Iterator, Mapping

from confluent_kafka import Consumer, TopicPartition

from flywheel.pseudonyms import fingerprint as pseudonym_fingerprint
from flywheel.settings import Settings
from schemas.codec import Codec
from schemas.datasets import Manifest
from schemas.records import TrainingCandidate
from streams.datasets import card, content, intake, spool
from streams.datasets.chat import ChatLayout
from flywheel.datastore import (
    RECORD_USERS,
    DatasetStore,
    ShardWriter,
    content_id,
    dataset_id as make_dataset_id,
    manifest_json,
    user_hash,
    user_key64,
)
from streams.datasets.windows import WindowSpan
from flywheel.policy import DatasetPolicy, GatePolicy
from streams.join.labels import pair_regenerations

log = logging.getLogger("flywheel.datasets")

BUILDER_VERSION = "5"  # 2: one shard series per partition; 3: deflate level 1; 4: window-wide selection, records in (event time, request) order, content ids; 5: keyed user pseudonyms, record-users.bin
SCRATCH_HEAD = struct.Struct("<IqQB")  # a scratch entry's size, event time, tie hash and what it holds (SCRATCH_*)
SCRATCH_SFT, SCRATCH_PREF, SCRATCH_SUCCESSOR = 1, 2, 4  # an SFT record, a preference record, a pairing successor
KEYS_FILE = "dedup-keys.bin"  # the kept records' duplicate keys (sorted little-endian uint64): later windows' prior
REGENERATED = "regenerated"
MAX_REJECTED_KEPT = 1000  # candidates a seal hands back for dead letters, per partition: past it, counted only


def source_name(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def parse_source(source: str) -> tuple[str, int]:
    topic, _, partition = source.rpartition("/")
    return topic, int(partition)


class LogReader:
    """Reads offset ranges of topic partitions, in order, without a consumer group."""

    def __init__(self, settings: Settings):
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.broker_url,
                "group.id": f"{settings.app_id}-datasets-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.max.bytes": 16 * 1024 * 1024,
                # the embedded broker answers a fetch with all it has, past fetch.max.bytes
                "receive.message.max.bytes": 1024 * 1024 * 1024,
                "queued.max.messages.kbytes": 65536,
                # fetch again only once the queue runs low: past its end, a fetch is wasted
                "queued.min.messages": 4000,
            }
        )

    def read(self, topic: str, partition: int, first: int, stop: int) -> Iterator[Any]:
        if stop <= first:
            return
        self.consumer.assign([TopicPartition(topic, partition, first)])
        try:
            while True:
                # a short wait: consume() waits out its whole timeout unless the batch fills, and the
                # last batch of a span never does
                batch = self.consumer.consume(2000, 0.05)
                if not batch:
                    continue  # the broker holds what we need: keep asking
                for m in batch:
                    if m.error():
                        if m.error().code() == -191:  # _PARTITION_EOF: stop may be past what exists
                            return
                        continue
                    if m.offset() >= stop:
                        return
                    yield m
                    if m.offset() + 1 >= stop:
                        return
        finally:
            self.consumer.unassign()

    def close(self) -> None:
        self.consumer.close()


@dataclass
class SealInputs:
    """Everything besides the log and the policy that decides a window's content."""

    erased: frozenset[str] = frozenset()  # keyed pseudonyms (`erased_forms`) of the users erased so far
    gold: frozenset[str] | None = None  # request ids that passed review everywhere, when review is required
    verdict_offsets: Mapping[str, int] = field(default_factory=dict)  # how far the verdicts were read
    failed: frozenset[str] = frozenset()  # request ids a reviewer failed (or found unsafe): never in a dataset
    key: bytes = field(default=b"", repr=False)  # the pseudonym key users are hashed with (not in the digest)

    def digest(self) -> str:
        h = hashlib.sha256()
        for uid in sorted(self.erased):
            h.update(uid.encode() + b"\n")
        h.update(b"gold:" + (b"-" if self.gold is None else json.dumps(sorted(self.gold)).encode()))
        if self.failed:
            h.update(b"failed:" + json.dumps(sorted(self.failed)).encode())
        return h.hexdigest()[:16]


@dataclass
class SealResult:
    dataset_id: str
    uri: str
    manifest: dict  # manifest.json's object, as written (`record` is it typed)
    written: bool  # False when the dataset existed already (a re-run after a crash)
    from_spool: int = 0  # partitions pass 1 read from the builder's spool
    from_log: int = 0  # partitions it read from the log (no complete spool)
    rejected: list[intake.Rejected] = field(default_factory=list)  # members that failed at the seal: dead letters

    @property
    def record(self) -> Manifest:
        """The manifest, typed."""
        return Manifest.from_dict(self.manifest)


# -- one partition's share of a seal (runs in a pool process; everything it gets is picklable) --------


@dataclass(frozen=True)
class PartitionRead:
    """One partition's span of a window, and how to read and admit its candidates."""

    settings: Settings
    topic: str
    partition: int
    first: int
    stop: int
    start_ms: int
    end_ms: int
    inputs: SealInputs
    spool: str = ""  # the builder's local copy of the span's members, used when complete
    members: int = -1  # how many members the window clock counted in the span
    scratch: str = ""  # where pass 1 leaves the partition's records for pass 2


@dataclass
class PartitionFacts:
    """Pass 1 of one partition: its statistics, its offers, what it dropped, its regeneration facts."""

    partition: int
    stats: content.WindowStats
    offers: content.OfferLog
    dropped: dict[str, int]
    pair_facts: list[TrainingCandidate]
    spooled: bool = False  # read from the spool, not the log
    rejected: list[intake.Rejected] = field(default_factory=list)


@dataclass(frozen=True)
class PartitionPlan:
    """What pass 2 of one partition needs from the window as a whole."""

    read: PartitionRead
    policy: DatasetPolicy
    stats: content.WindowStats
    kept: frozenset[int]  # tie hashes of the partition's SFT records the selection kept
    pairs: Mapping[str, str]  # successor request id -> the regenerated one's response
    store_url: str
    staging: str
    seed: str  # the window and policy: shard sync markers must not depend on the (content) id


@dataclass
class PartitionOutput:
    partition: int
    shards: list[dict]
    counts: dict[str, dict[str, int]]
    users: set[str]
    first_event_time: int | None
    record_users: bytes = b""  # (user key, request tie hash) uint64 pairs of the records written


@functools.cache
def _process_codec() -> Codec:
    return Codec()


def spooled(job: PartitionRead) -> bool:
    """Whether the builder's spool holds exactly the span's members (else the log is read)."""
    return spool.complete(job.spool, job.first, job.stop, job.members)


def read_candidates(
    codec: Codec, job: PartitionRead, from_spool: bool, rejected: list | None = None
) -> Iterator[TrainingCandidate]:
    """The window's candidates of one partition, in offset order. One that does not decode is
    skipped, and handed to `rejected` when given (for its dead letter): the gate writes only what
    it encoded itself, so such a record came from elsewhere, and the builder's read path (which
    takes only the event time from the bytes) could not see that its body was broken."""
    for _, _, _, c in read_frames(codec, job, from_spool, rejected):
        yield c


def read_frames(
    codec: Codec, job: PartitionRead, from_spool: bool, rejected: list | None = None
) -> Iterator[tuple[int, bytes, Mapping[str, bytes], TrainingCandidate]]:
    """`read_candidates`, each with its offset, bytes and headers."""
    if from_spool:
        frames: Iterable[tuple[int, bytes, Mapping[str, bytes]]] = (
            (offset, value, headers or {}) for offset, value, headers in spool.read(job.spool)
        )
        yield from _decoded(codec, job, frames, rejected)
        return
    reader = LogReader(job.settings)
    try:
        yield from _decoded(
            codec,
            job,
            (
                (m.offset(), m.value() or b"", message_headers(m))
                for m in reader.read(job.topic, job.partition, job.first, job.stop)
            ),
            rejected,
        )
    finally:
        reader.close()


def _decoded(
    codec: Codec,
    job: PartitionRead,
    frames: Iterable[tuple[int, bytes, Mapping[str, bytes]]],
    rejected: list | None = None,
) -> Iterator[tuple[int, bytes, Mapping[str, bytes], TrainingCandidate]]:
    for offset, value, headers in frames:
        try:
            c = intake.decode_candidate(codec, value, headers)
        except intake.RecordError as exc:
            if rejected is not None:
                _reject(rejected, intake.rejected(exc, job.topic, job.partition, offset, value, None, headers))
            continue
        if job.start_ms <= c.timestamp < job.end_ms:
            yield offset, value, headers, c


def _reject(rejected: list, r: intake.Rejected) -> None:
    """Keep a failed record for its dead letter (the first MAX_REJECTED_KEPT; all are counted in the manifest)."""
    if len(rejected) < MAX_REJECTED_KEPT:
        rejected.append(r)
    else:
        rejected.append(None)  # counted only


def prepare_entry(
    c: TrainingCandidate,
    validation_share: float,
    pair_keys: frozenset[str] = frozenset(),
    user: str | None = None,
    key: bytes = b"",
    layout: ChatLayout | None = None,
) -> tuple[bytes | None, TrainingCandidate | None]:
    """Pass 1's work on one admitted candidate that can meet its content: its scratch entry (None
    when it makes no record) and its pairing facts (None unless it may answer a regeneration).
    Pure; what it accepts, pass 2 can write (the records fit their Avro schemas)."""
    payload, _, facts = _prepare(c, validation_share, pair_keys, user, key, layout)
    return payload, facts


def _prepare(
    c: TrainingCandidate,
    validation_share: float,
    pair_keys: frozenset[str],
    user: str | None,
    key: bytes,
    layout: ChatLayout | None,
) -> tuple[bytes | None, int, TrainingCandidate | None]:
    """`prepare_entry`, and what the entry holds (SCRATCH_* flags): pass 2 reads only the entries
    that can still make a record once the selection is known."""
    facts = successor = None
    if c.pair_key in pair_keys:
        facts = _pairing_facts(c)
        successor = c.to_dict()  # may answer a regeneration: pass 2 may make a pair of it
    sft = content.sft_base_record(c, validation_share, layout=layout)
    pref = content.preference_base_record(c, validation_share, layout=layout)
    if sft is None and pref is None and successor is None:
        return None, 0, facts
    payload = marshal.dumps(
        (
            c.request_id,
            sft,
            pref,
            successor,
            c.task_type or "-",
            c.user_action,
            c.label or "-",
            user_hash(c.user_id, key) if user is None else user,
            c.timestamp,
        )
    )
    flags = (
        (SCRATCH_SFT if sft is not None else 0)
        | (SCRATCH_PREF if pref is not None else 0)
        | (SCRATCH_SUCCESSOR if successor is not None else 0)
    )
    return payload, flags, facts


def admitted(
    c: TrainingCandidate,
    inputs: SealInputs,
    seen: set[int],
    dropped: dict[str, int],
    user: str | None = None,
    tie: int | None = None,
) -> bool:
    """Not a replay (a request id seen before in this partition: ids are the key, so a replay lands
    on the same partition), not an erased user, not failed in review, in the gold set when review
    is required."""
    key = content.tie_hash(c.request_id) if tie is None else tie
    if key in seen:
        dropped["replays"] = dropped.get("replays", 0) + 1
        return False
    seen.add(key)
    if inputs.erased and (user_hash(c.user_id, inputs.key) if user is None else user) in inputs.erased:
        dropped["erased"] = dropped.get("erased", 0) + 1
        return False
    if c.request_id in inputs.failed:
        dropped["review_failed"] = dropped.get("review_failed", 0) + 1
        return False
    if inputs.gold is not None and c.request_id not in inputs.gold:
        dropped["not_gold"] = dropped.get("not_gold", 0) + 1
        return False
    return True


def observe_partition(
    job: PartitionRead,
    pair_keys: frozenset[str] = frozenset(),
    validation_share: float = 0.0,
    codec: Codec | None = None,
    layout: ChatLayout | None = None,
) -> PartitionFacts:
    """Pass 1 of one partition of the passed topic: statistics and offers, and the partition's
    records (built but for the window's part of their priority) into its scratch file."""
    codec = codec or _process_codec()
    stats, offers, dropped, facts, seen = content.WindowStats(), content.OfferLog(), {}, [], set()
    rejected: list = []
    from_spool = spooled(job)
    if job.spool and not from_spool:
        log.warning("spool incomplete, reading the log", extra={"topic": job.topic, "partition": job.partition})
    entry = SCRATCH_HEAD
    with open(job.scratch, "wb", buffering=spool.BUFFER) as scratch:
        key = job.inputs.key
        for offset, value, headers, c in read_frames(codec, job, from_spool, rejected):
            try:
                user = user_hash(c.user_id, key)
                tie = content.tie_hash(c.request_id)  # hashed once: the replay check, the offer, the entry
                if not admitted(c, job.inputs, seen, dropped, user, tie):
                    continue
                payload, flags, pairing = _prepare(c, validation_share, pair_keys, user, key, layout)
                stats.add(c)
                offers.add(c, tie)  # a few numbers per record; the window's part of the priority comes at finish
            except Exception as exc:  # one candidate's content broke the build: it fails alone
                _reject(
                    rejected,
                    intake.Rejected(
                        intake.UNPROCESSABLE,
                        f"{type(exc).__name__} while building its records",
                        job.topic,
                        job.partition,
                        offset,
                        value,
                        None,
                        dict(headers),
                    ),
                )
                continue
            if pairing is not None:
                facts.append(pairing)
            if payload is not None:
                scratch.write(entry.pack(len(payload), c.timestamp, tie, flags))
                scratch.write(payload)
    _count_rejected(dropped, rejected)
    return PartitionFacts(
        job.partition, stats, offers, dropped, facts, from_spool, [r for r in rejected if r is not None]
    )


def _count_rejected(dropped: dict[str, int], rejected: list) -> None:
    for r in rejected:
        key = f"invalid.{r.reason if r is not None else 'more'}"
        dropped[key] = dropped.get(key, 0) + 1


def _scratch_entries(path: str, wanted: Callable[[int, int], bool] | None = None) -> Iterator[tuple]:
    """The scratch file's entries in (event time, tie hash) order: a shard's bytes do not depend on
    the order in which the log happened to hold its records (live or backlog, one worker or two).
    `wanted(tie, flags)` leaves out entries that can make no record (SFT only, not kept): they are
    neither read nor unmarshalled. The index is read in one sequential pass; the entries are then
    read in sorted order with one pread each: a seek on a buffered file drops its buffer, and each
    read after it would refill a whole megabyte for one entry."""
    head = SCRATCH_HEAD
    index = []
    with open(path, "rb", buffering=spool.BUFFER) as f:
        pos = 0
        while True:
            raw = f.read(head.size)
            if len(raw) < head.size:
                break
            size, timestamp, tie, flags = head.unpack(raw)
            if wanted is None or wanted(tie, flags):
                index.append((timestamp, tie, pos + head.size, size))
            pos += head.size + size
            f.seek(pos)
    index.sort()
    fd = os.open(path, os.O_RDONLY)
    try:
        for _, _, at, size in index:
            yield marshal.loads(os.pread(fd, size, at))
    finally:
        os.close(fd)


def write_partition(plan: PartitionPlan) -> PartitionOutput:
    """Pass 2 of one partition: its records, into its own shards, in offset order."""
    import fsspec

    job, p = plan.read, plan.policy
    vs = p.validation_share
    fs = fsspec.core.url_to_fs(plan.store_url)[0]
    writers: dict[tuple[str, str], ShardWriter] = {}
    counts: dict[str, dict[str, int]] = {"split": {}, "task_type": {}, "user_action": {}, "label": {}}
    users: set[str] = set()
    record_users = array.array("Q")  # user key, tie hash, ... of every record written
    first_event_time = None
    context: dict = {}  # the window's part of the priority, per (task type, model version)

    def writer(kind: str, split: str, bucket: int | None) -> ShardWriter:
        name = split if bucket is None else f"{split}-b{bucket:02d}"
        if (kind, name) not in writers:
            schema = "sft_record" if kind == "sft" else "preference_record"
            writers[(kind, name)] = ShardWriter(
                fs,
                f"{plan.staging}/{kind}",
                f"{name}-p{job.partition:03d}",
                schema,
                p.shard_records,
                seed=f"{plan.seed}/{kind}/{name}",
            )
        return writers[(kind, name)]

    def count(group: str, value: str) -> None:
        counts[group][value] = counts[group].get(value, 0) + 1

    kept = plan.kept
    pair_ties = {content.tie_hash(r) for r in plan.pairs}

    def wanted(tie: int, flags: int) -> bool:
        return bool(
            flags & SCRATCH_PREF
            or (flags & SCRATCH_SFT and tie in kept)
            or (flags & SCRATCH_SUCCESSOR and tie in pair_ties)
        )

    try:
        for request_id, sft, pref, successor, task_type, user_action, label, user, timestamp in _scratch_entries(
            job.scratch, wanted
        ):
            wrote = False
            tie = content.tie_hash(request_id)
            if sft is not None and tie in kept:
                sft = content.with_context(sft, plan.stats, context)
                bucket = content.curriculum_bucket(sft["difficulty"], p.curriculum_buckets) if p.curriculum else None
                writer("sft", sft["split"], bucket).add(sft, content.chat_sft(sft))
                count("split", f"sft.{sft['split']}")
                wrote = True
            if pref is not None:
                pref = content.with_context(pref, plan.stats, context)
                writer("preference", pref["split"], None).add(pref, content.chat_preference(pref))
                count("split", f"preference.{pref['split']}")
                wrote = True
            if successor is not None and request_id in plan.pairs:
                rp = content.regeneration_pair_record(
                    plan.pairs[request_id],
                    TrainingCandidate.from_dict(successor),
                    plan.stats,
                    vs,
                    layout=ChatLayout.of(p),
                )
                if rp is not None:
                    writer("preference", rp["split"], None).add(rp, content.chat_preference(rp))
                    count("split", f"preference.{rp['split']}")
                    wrote = True
            if wrote:
                count("task_type", task_type)
                count("user_action", user_action)
                count("label", label)
                users.add(user)
                record_users.append(user_key64(user))
                record_users.append(tie)
                first_event_time = timestamp if first_event_time is None else min(first_event_time, timestamp)
        shards = []
        for kind, name in sorted(writers):
            for entry in writers.pop((kind, name)).close():
                shards.append({**entry, "kind": kind, "split": name, "partition": job.partition})
    finally:
        for w in writers.values():
            w.abort()
    return PartitionOutput(job.partition, shards, counts, users, first_event_time, record_users.tobytes())


class WindowBuilder:
    def __init__(self, settings: Settings, policy: GatePolicy, store: DatasetStore, codec: Codec | None = None):
        self.settings = settings
        self.policy = policy
        self.store = store
        self.codec = codec or Codec()

    def workers(self, partitions: int) -> int:
        wanted = self.settings.seal_workers or os.cpu_count() or 1
        return max(1, min(wanted, partitions))

    def _jobs(self, span: WindowSpan, topic: str, inputs: SealInputs, scratch: str = "") -> list[PartitionRead]:
        jobs = []
        copies = spool.WindowSpool(self.settings.seal_spool_dir)
        for source in sorted(span.spans, key=lambda s: parse_source(s)[1]):
            t, partition = parse_source(source)
            if t == topic:
                first, stop = span.spans[source]
                # a span a clock reset reopened is read from the log: its spool lacks what was late before the reset
                members = -1 if source in span.log_only else span.source_members.get(source, -1)
                jobs.append(
                    PartitionRead(
                        self.settings,
                        t,
                        partition,
                        first,
                        stop,
                        span.start_ms,
                        span.end_ms,
                        inputs,
                        copies.path(span.index, source),
                        members,
                        os.path.join(scratch, f"p{partition:05d}.records") if scratch else "",
                    )
                )
        return jobs

    # -- sealing -----------------------------------------------------------------------------------
    def seal(self, span: WindowSpan, inputs: SealInputs, extra: Mapping[str, Any] | None = None) -> SealResult:
        """Seal `span` from `inputs`; `extra` goes into the manifest as it is (a re-seal's `supersedes`
        and `resealed`), never into the content id."""
        if not inputs.key:
            from flywheel.pseudonyms import resolve_key

            inputs = SealInputs(
                inputs.erased, inputs.gold, inputs.verdict_offsets, inputs.failed, resolve_key(self.settings)
            )
        offsets = {s: list(span.spans[s]) for s in sorted(span.spans)}
        # what was read names the staging; what was written names the dataset (its content id)
        inputs_id = make_dataset_id(
            span.start_ms,
            span.end_ms,
            self.policy.stamp,
            {**offsets, "verdicts": dict(sorted(inputs.verdict_offsets.items()))},
            inputs.digest(),
        )
        done = self._sealed_from(inputs_id)
        if done is not None:
            return SealResult(done["dataset_id"], self.store.uri(done["dataset_id"]), done, False)
        rejected: list = []
        started = time.perf_counter()
        scratch = os.path.join(self.settings.seal_spool_dir, f".seal-{inputs_id}")  # local, whatever the store is
        shutil.rmtree(scratch, ignore_errors=True)
        os.makedirs(scratch)
        jobs = self._jobs(span, self.settings.topic_passed, inputs, scratch)
        workers = self.workers(len(jobs))
        try:
            if workers > 1:
                # spawn, not fork: the service holds librdkafka clients whose threads a fork would not copy
                with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                    manifest, spooled = self._write(span, inputs, inputs_id, offsets, jobs, pool.map, rejected, extra)
            else:
                manifest, spooled = self._write(span, inputs, inputs_id, offsets, jobs, map, rejected, extra)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        ds_id = manifest["dataset_id"]
        self.store.publish(ds_id, staged_as=inputs_id)
        log.info(
            "dataset sealed",
            extra={
                "dataset_id": ds_id,
                "window_start": span.start_ms,
                "records": manifest["counts"]["records"],
                "seconds": round(time.perf_counter() - started, 2),
                "workers": workers,
                "from_spool": spooled,
                "partitions": len(jobs),
            },
        )
        return SealResult(
            ds_id,
            self.store.uri(ds_id),
            manifest,
            True,
            spooled,
            len(jobs) - spooled,
            [r for r in rejected if r is not None],
        )

    def _sealed_from(self, inputs_id: str) -> dict | None:
        """The manifest of a dataset this builder sealed already from exactly these inputs (a re-run
        after a crash between the publish and the saved state), or None."""
        for manifest in self.store.list():
            if manifest.get("inputs_id") == inputs_id:
                return manifest
        return None

    def _prior_keys(self, span: WindowSpan):
        """The duplicate keys that the newest dataset of each earlier window within the duplicates'
        horizon kept, as one sorted uint64 array (None when dedupe is off or there are none)."""
        import numpy as np

        p = self.policy
        if not (p.datasets.dedupe or p.duplicates.enabled):
            return None
        horizon = span.start_ms - p.duplicates.ttl_days * 86_400_000
        newest: dict[int, dict] = {}
        for m in self.store.latest():  # an erasure's re-seal replaced some: their keys are gone with them
            w = m.get("window", {})
            if horizon <= w.get("start_ms", -1) < span.start_ms and KEYS_FILE in m.get("files", {}):
                newest[w["start_ms"]] = m
        parts = []
        for m in newest.values():
            with self.store.open(f"{m['dataset_id']}/{KEYS_FILE}") as f:
                parts.append(np.frombuffer(f.read(), dtype="<u8"))
        return np.unique(np.concatenate(parts)) if parts else None

    def _rejected(
        self, span: WindowSpan, inputs: SealInputs, rejected: list | None = None
    ) -> Iterator[TrainingCandidate]:
        """The window's rejected candidates (regenerations are rejected: no SFT label), read in this process."""
        for job in self._jobs(span, self.settings.topic_rejected, inputs):
            yield from read_candidates(self.codec, job, spooled(job), rejected)

    def _read_rejected(
        self,
        span: WindowSpan,
        inputs: SealInputs,
        selection: content.Selection | None,
        pairs: bool,
        rejected: list | None = None,
    ) -> dict[str, list[TrainingCandidate]]:
        """One read of the window's rejected candidates: their quality scores for the keep band
        (`selection`), and pair_key -> text-free stand-ins of the regenerated ones (`pairs`)."""
        facts: dict[str, list[TrainingCandidate]] = {}
        if selection is None and not pairs:
            return facts
        seen: set[int] = set()
        for c in self._rejected(span, inputs, rejected):
            if inputs.erased and user_hash(c.user_id, inputs.key) in inputs.erased:
                continue
            tie = content.tie_hash(c.request_id)
            if selection is not None and tie not in seen:  # a replayed copy counts once
                seen.add(tie)
                selection.log_scores(c.task_type, (c.quality_score,), (tie,))
            if pairs and c.user_action == REGENERATED and c.pair_key:
                facts.setdefault(c.pair_key, []).append(_pairing_facts(c))
        return facts

    def _regenerated_texts(self, span: WindowSpan, inputs: SealInputs, wanted: set[str]) -> dict[str, str]:
        return {c.request_id: c.response for c in self._rejected(span, inputs) if c.request_id in wanted}

    def _write(
        self,
        span: WindowSpan,
        inputs: SealInputs,
        ds_id: str,
        offsets: dict,
        jobs: list[PartitionRead],
        run: Callable[[Callable, Iterable], Iterator],
        rejected: list | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[dict, int]:
        p = self.policy.datasets

        # pass 1: statistics, the selection's facts, regeneration candidates (no texts kept)
        rejected = [] if rejected is None else rejected  # what fails to decode or build: the caller's dead letters
        band = self.policy.keep_rate
        selection = content.Selection(
            p,
            keep_band=content.KeepBand(band.band[1], band.min_samples) if band.enabled else None,
            near_duplicates=self.policy.duplicates.enabled,
            prior_keys=self._prior_keys(span),
        )
        pair_facts = self._read_rejected(
            span, inputs, selection if band.enabled else None, p.pair_regenerations, rejected
        )
        stats = content.WindowStats()
        dropped: dict[str, int] = {}
        _count_rejected(dropped, rejected)  # the rejected topic's (the passed topic's partitions count their own)
        ties_of: dict[int, Any] = {}
        spooled = 0
        for part in run(
            functools.partial(
                observe_partition,
                pair_keys=frozenset(pair_facts),
                validation_share=p.validation_share,
                layout=ChatLayout.of(p),
            ),
            jobs,
        ):
            spooled += part.spooled
            rejected += part.rejected
            stats.merge(part.stats)
            selection.offer_log(part.offers)
            ties_of[part.partition] = part.offers.ties
            for reason, n in part.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + n
            for f in part.pair_facts:
                pair_facts[f.pair_key].append(f)
        selection.finish(stats)
        successors = {
            successor.request_id: regenerated.request_id  # successor -> the regenerated request it answers
            for regenerated, successor in pair_regenerations(
                [f for group in pair_facts.values() for f in group], max_gap_ms=p.regeneration_gap_minutes * 60_000
            )
        }
        del pair_facts
        texts = self._regenerated_texts(span, inputs, set(successors.values())) if successors else {}
        pairs = {succ: texts[regen] for succ, regen in successors.items() if regen in texts}

        # pass 2: write what was kept, partition by partition, offset by offset
        staging = self.store.staging(ds_id)
        seed = f"{span.start_ms}/{span.end_ms}/{self.policy.stamp}"
        plans = [
            PartitionPlan(
                job,
                p,
                stats,
                frozenset(selection.kept_among(ties_of.pop(job.partition, ()))),
                pairs,
                self.store.url,
                staging,
                seed,
            )
            for job in jobs
        ]
        counts: dict[str, dict[str, int]] = {"split": {}, "task_type": {}, "user_action": {}, "label": {}}
        users: set[str] = set()
        shards: list[dict] = []
        record_users: list[bytes] = []
        first_event_time = None
        for out in run(write_partition, plans):
            shards += out.shards
            users |= out.users
            record_users.append(out.record_users)
            for group, values in out.counts.items():
                for value, n in values.items():
                    counts[group][value] = counts[group].get(value, 0) + n
            if out.first_event_time is not None:
                first_event_time = (
                    out.first_event_time if first_event_time is None else min(first_event_time, out.first_event_time)
                )
        shards.sort(key=lambda sh: (sh["kind"], sh["split"], sh["partition"], sh["path"]))
        fs = self.store.fs
        files = {sh["path"]: sh["sha256"] for sh in shards}
        for name, body in (
            ("users.txt", "".join(u + "\n" for u in sorted(users)).encode()),
            (KEYS_FILE, selection.kept_keys()),
            (RECORD_USERS, record_users_bin(record_users)),
        ):
            with fs.open(f"{staging}/{name}", "wb") as f:
                f.write(body)
            files[name] = hashlib.sha256(body).hexdigest()
        dropped.update({f"selection.{k}": v for k, v in selection.counts().items()})
        sealed = Manifest(
            dataset_id=content_id(span.start_ms, span.end_ms, self.policy.stamp, BUILDER_VERSION, files),
            inputs_id=ds_id,  # what was read: a re-run from the same offsets finds this dataset
            builder_version=BUILDER_VERSION,
            files=files,
            window={
                "index": span.index,
                "start_ms": span.start_ms,
                "end_ms": span.end_ms,
                "days": (span.end_ms - span.start_ms) // 86_400_000,
                # the gate's decisions in the window (collected) and those it passed: velocity per cycle
                "decisions": span.members,
                "passed": sum(
                    n
                    for source, n in span.source_members.items()
                    if parse_source(source)[0] == self.settings.topic_passed
                ),
            },
            lag_ms=self.policy.datasets.lag_days * 86_400_000,
            policy_version=self.policy.stamp,
            source_offsets={s: {"first": o[0], "stop": o[1]} for s, o in offsets.items()},
            verdict_offsets=dict(sorted(inputs.verdict_offsets.items())),
            review_required=inputs.gold is not None,
            erasure={"digest": inputs.digest(), "ids": len(inputs.erased)},
            counts={
                "records": sum(counts["split"].values()),
                **{k: dict(sorted(v.items())) for k, v in counts.items()},
            },
            dropped=dict(sorted(dropped.items())),
            late_events=span.late,
            first_event_time=first_event_time if first_event_time is not None else span.first_event_time,
            users=len(users),
            shards=shards,
            schemas={name: self.codec.current(name).fingerprint.hex() for name in ("sft_record", "preference_record")},
            curriculum=p.curriculum,
            pseudonym_key=pseudonym_fingerprint(inputs.key),  # which key users.txt and record-users.bin are under
        )
        if extra:  # a re-seal's `supersedes` and `resealed`: in the manifest as they are, never in the id
            sealed = Manifest.from_dict({**sealed.to_dict(), **extra})
        manifest = sealed.to_dict()
        card.write(fs, staging, sealed)  # README.md: the dataset card (streams/datasets/card.py), not in `files`
        with fs.open(f"{staging}/manifest.json", "wb") as f:
            f.write(manifest_json(manifest))
        return manifest, spooled


def _pairing_facts(c: TrainingCandidate) -> TrainingCandidate:
    """What the join's pairing rule reads, without the texts (a window holds many regenerations)."""
    return TrainingCandidate(
        request_id=c.request_id,
        timestamp=c.timestamp,
        user_id="",
        session_id="",
        prompt="",
        response="",
        user_action=c.user_action,
        pair_key=c.pair_key,
    )


def message_headers(message) -> dict[str, bytes]:
    """A confluent-kafka message's headers, names lower-cased."""
    return {k.lower(): v for k, v in message.headers()} if message.headers() else {}


def erased_forms(user_id: str, key: bytes, older: Iterable[bytes] = ()) -> set[str]:
    """The keyed pseudonyms (`store.user_hash`) a user's records can carry: of the id as the app sent
    it, and of the gate's stand-in for it (an id that held personal data), under the current key and,
    after a rotation, under every `older` key too (datasets sealed before it). What the erased list
    and `SealInputs.erased` hold: never the id."""
    from streams.gate.filters import pseudonymous_id

    legacy = (
        "pii-" + hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:24]
    )  # the gate's unkeyed stand-in, before builder 5
    out = set()
    for k in (key, *older):
        for form in (user_id, pseudonymous_id(user_id, k), legacy):
            out.add(user_hash(form, k))  # as users.txt sealed under k lists it
            out.add(user_hash(form, key))  # as a candidate carrying that form is hashed now
    return out


def record_users_bin(parts: Iterable[bytes]) -> bytes:
    """record-users.bin: every partition's (user key, request tie hash) pairs, sorted, little-endian uint64."""
    import numpy as np

    pairs = np.frombuffer(b"".join(parts), dtype="<u8").reshape(-1, 2)
    if len(pairs):
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return np.ascontiguousarray(pairs, dtype="<u8").tobytes()


def records_of(record_users: bytes, pseudonyms: Iterable[str]) -> set[int]:
    """The request tie hashes record-users.bin lists for any of these users' pseudonyms."""
    import numpy as np

    pairs = np.frombuffer(record_users, dtype="<u8").reshape(-1, 2)
    out: set[int] = set()
    for p in pseudonyms:
        k = np.uint64(user_key64(p))
        lo, hi = np.searchsorted(pairs[:, 0], k, "left"), np.searchsorted(pairs[:, 0], k, "right")
        out.update(int(t) for t in pairs[lo:hi, 1])
    return out


def read_to_end(settings: Settings, topic: str, idle_timeout: float = 10.0) -> Iterator[Any]:
    """Every record of `topic` up to each partition's end as of the start, without a consumer group's
    commit. Raises (the broker is away) when the ends are not reached: never a partial read."""
    import uuid

    consumer = Consumer(
        {
            "bootstrap.servers": settings.broker_url,
            "group.id": f"{settings.app_id}-datasets-scan-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            raise RuntimeError(f"topic {topic} does not exist: run `flywheel topics create`")
        ends = {}
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, -2) for p in sorted(ends)])
        last = time.monotonic()
        while ends:
            m = consumer.poll(0.2)
            if m is None:
                if time.monotonic() - last > idle_timeout:
                    raise RuntimeError(
                        f"the broker stopped answering while {topic} was read (partitions {sorted(ends)} left)"
                    )
                continue
            if m.error():
                continue
            last = time.monotonic()
            if m.offset() + 1 >= ends.get(m.partition(), 0):
                ends.pop(m.partition(), None)
            yield m
    finally:
        consumer.close()


def review_sets(verdicts: Iterable[Any], safety_floor: int) -> tuple[frozenset[str], frozenset[str]]:
    """(gold, failed) from verdicts: gold, the request ids every reviewer passed (the gate too);
    failed, those some reviewer failed or scored below `safety_floor` for safety. A reviewer's last
    verdict on a request counts."""
    by: dict[str, dict[str, Any]] = {}
    for v in verdicts:
        by.setdefault(v.request_id, {})[v.reviewer] = v
    failed = frozenset(
        rid for rid, r in by.items() if any(not v.passed or v.safety < safety_floor for v in r.values())
    )
    gold = frozenset(
        rid
        for rid, r in by.items()
        if rid not in failed and all(bool(v.passed) and bool(v.gate_passed) for v in r.values())
    )
    return gold, failed


def read_verdicts(
    reader_settings: Settings, codec: Codec, safety_floor: int
) -> tuple[frozenset[str], frozenset[str], dict[str, int], list[intake.Rejected]]:
    """`review_sets` over the whole verdicts topic, how far it was read, and the records that are no
    valid verdict (for their dead letters; they count for nothing)."""
    verdicts = []
    ends: dict[str, int] = {}
    rejected: list[intake.Rejected] = []
    for m in read_to_end(reader_settings, reader_settings.topic_verdicts):
        ends[str(m.partition())] = m.offset() + 1
        headers = message_headers(m)
        try:
            verdicts.append(intake.review_verdict(codec, m.value(), headers))
        except intake.RecordError as exc:
            rejected.append(intake.rejected(exc, m.topic(), m.partition(), m.offset(), m.value(), m.key(), headers))
    gold, failed = review_sets(verdicts, safety_floor)
    return gold, failed, ends, rejected


def iter_records(store: DatasetStore, dataset_id: str, kind: str, fmt: str) -> Iterable[bytes]:
    """The raw shard bytes of one kind (sft, preference) of a dataset, in manifest order."""
    for shard in store.read_manifest(dataset_id).shards_of(kind, fmt):
        with store.open(f"{dataset_id}/{shard['path']}") as f:
            yield f.read()
