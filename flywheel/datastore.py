"""The dataset store: a directory tree on any fsspec filesystem, reproducible shards, atomic publish.

Layout under the store's root (a local path or an fsspec URL such as s3://bucket/datasets):

    <root>/<dataset_id>/manifest.json        what the dataset is (written last)
    <root>/<dataset_id>/sft/*.avro|*.jsonl    SFT shards
    <root>/<dataset_id>/preference/...        preference shards
    <root>/<dataset_id>/users.txt             sorted keyed pseudonyms (HMAC-SHA256 hex) of its users, one per line
    <root>/<dataset_id>/record-users.bin      (user pseudonym, request) pairs of its records, 64-bit each (erasure)
    <root>/.staging/<dataset_id>/             the same, while it is being written
    <root>/.superseded                        JSON: dataset id -> the version that replaced it, when and why

A dataset is published, and visible, once `<root>/<dataset_id>/manifest.json` exists. On a local
filesystem `publish` renames the staging directory into place (`os.replace`, atomic); elsewhere it
moves the files and the manifest last, so a crash mid-publish leaves a directory without manifest,
which `exists`/`list` ignore and the next publish replaces.

Versions: an erasure re-seals a window into a new dataset (a new content id) whose manifest names the
one it `supersedes`; the old one is recorded in `.superseded` and then deleted (`delete`: manifest
first, so it stops being published before any shard goes). Readers take `latest()`: one dataset per
window, never a superseded one, so a reader that lists between the publication of the new version
and the deletion of the old sees both and takes the new.

Shards are reproducible byte for byte: Avro object container files (codec deflate) with a sync
marker derived from the writer's seed and the shard's name and no wall-clock metadata, and JSONL
with sorted keys and compact separators. The same records in the same order give the same files
and the same sha256.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import posixpath
import time
from typing import IO, Any, Iterable, Mapping, Protocol, Sequence, cast

import fastavro
import fsspec
from fsspec.implementations.local import LocalFileSystem

from schemas.codec import Codec
from schemas.datasets import Manifest

MANIFEST = "manifest.json"
USERS = "users.txt"
RECORD_USERS = "record-users.bin"  # sorted (user pseudonym, request tie hash) uint64 pairs: whose record is whose
STAGING = ".staging"
WITHDRAWN = ".withdrawn"  # request ids people failed in review after (or before) their window was sealed
SUPERSEDED = ".superseded"  # dataset id -> {"by", "at", "reason", "mode", "users"}: versions an erasure replaced
DEFLATE_LEVEL = 1
SYNC_SIZE = 16
_USER_LINE = 65  # 64 hex characters and a newline


@functools.cache
def _codec() -> Codec:
    return Codec()


def _schema(schema_name: str) -> dict:
    return _codec().current(schema_name).raw


def user_hash(user_id: str, key: bytes) -> str:
    """What users.txt holds for a user id: HMAC-SHA256 with the flywheel's pseudonym key, hex
    (`flywheel/pseudonyms.py`; a plain hash of a known id is no pseudonym)."""
    from flywheel.pseudonyms import keyed

    return keyed(key, user_id)


def user_key64(pseudonym: str) -> int:
    """The 64 bits of a user's pseudonym that record-users.bin keeps."""
    return int(pseudonym[:16], 16)


def window_start(manifest: Mapping[str, Any]) -> int:
    return _window_start(manifest)


def users_txt(hashes: Iterable[str]) -> bytes:
    """The content of users.txt: distinct hashes, sorted, one per line."""
    return "".join(h + "\n" for h in sorted(set(hashes))).encode("ascii")


def manifest_json(manifest: Mapping[str, Any]) -> bytes:
    """Canonical JSON of a manifest: sorted keys, indent 2, a trailing newline, UTF-8."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dataset_id(
    window_start: int, window_end: int, policy_stamp: str, source_offsets: Mapping[str, Any], erasure_digest: str
) -> str:
    """ "ds-<YYYYMMDD of the window start, UTC>-<12 hex of sha256 over the canonical JSON of the inputs>".

    The same inputs give the same id; any change in one of them gives another."""
    day = (dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=int(window_start))).strftime(
        "%Y%m%d"
    )
    payload = json.dumps(
        {
            "window_start": int(window_start),
            "window_end": int(window_end),
            "policy": policy_stamp,
            "source_offsets": _plain(source_offsets),
            "erasure": erasure_digest,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return f"ds-{day}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def content_id(
    window_start: int, window_end: int, policy_stamp: str, builder_version: str, files: Mapping[str, str]
) -> str:
    """ "ds-<YYYYMMDD of the window start, UTC>-<12 hex of sha256 over the window, the policy, the
    builder and every file's sha256>": a dataset is named by what it holds, so the same events seal
    the same id whichever offsets, workers or crashes carried them."""
    day = (dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=int(window_start))).strftime(
        "%Y%m%d"
    )
    payload = json.dumps(
        {
            "window_start": int(window_start),
            "window_end": int(window_end),
            "policy": policy_stamp,
            "builder": builder_version,
            "files": dict(sorted(files.items())),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return f"ds-{day}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def sync_marker(seed: str, shard_name: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{shard_name}".encode("utf-8"), digest_size=SYNC_SIZE).digest()


class _HashingSink:
    """Write-through file wrapper that counts and hashes what passes."""

    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.f.write(data)
        self.sha.update(data)
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        self.size += n
        return n

    def flush(self) -> None:
        self.f.flush()

    def tell(self) -> int:
        return self.size

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


# one encoder for every JSONL line: json.dumps with options builds a new one per call
_JSONL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class ShardWriter:
    """Writes records to `<directory>/<name>-NNNNN.avro` and `.jsonl`, a new shard every `shard_records`.

    Write-through: fastavro buffers one block (about 16 KB) and JSONL lines go straight out.
    `close()` gives one entry per file, in shard order (avro, then jsonl): path (relative to
    `relative_to`, by default the parent of `directory`: "sft/train-00000.avro"), records, bytes,
    sha256. No records, no files.
    """

    def __init__(
        self,
        fs,
        directory: str,
        name: str,
        schema_name: str,
        shard_records: int,
        seed: str,
        *,
        relative_to: str | None = None,
    ):
        if shard_records < 1:
            raise ValueError(f"shard_records must be >= 1, got {shard_records}")
        self.fs = fs
        self.directory = directory.rstrip("/")
        self.name = name
        self.schema = _schema(schema_name)
        self.shard_records = shard_records
        self.seed = seed
        self.relative_to = relative_to if relative_to is not None else posixpath.dirname(self.directory)
        self.records = 0
        self._entries: list[dict] = []
        self._index = -1
        self._count = 0
        self._files: list[tuple[str, Any, _HashingSink]] = []  # (path, file, sink) of the open shard: avro, jsonl
        self._avro: fastavro.write.Writer | None = None
        self._closed = False
        fs.makedirs(self.directory, exist_ok=True)

    def _open_next(self) -> None:
        self._finish_shard()
        self._index += 1
        self._count = 0
        shard = f"{self.name}-{self._index:05d}"
        for ext in ("avro", "jsonl"):
            path = f"{self.directory}/{shard}.{ext}"
            f = self.fs.open(path, "wb")
            self._files.append((path, f, _HashingSink(f)))
        # no per-record validation (a third of the write time): content.py builds the records, its tests validate them
        # deflate level 1: half the time of the default level 6 (7 vs 14 us a record), about a quarter larger
        sink: Any = self._files[0][2]  # file-like enough for fastavro: write() and flush()
        self._avro = fastavro.write.Writer(
            sink,
            self.schema,
            codec="deflate",
            validator=False,
            compression_level=DEFLATE_LEVEL,
            sync_marker=sync_marker(self.seed, shard),
        )

    def add(self, record: Mapping[str, Any], jsonl_obj: Any = None) -> None:
        """One record: `record` into the Avro shard, `jsonl_obj` (default: the record) as a JSONL line."""
        if self._closed:
            raise RuntimeError("ShardWriter.add after close()")
        if self._avro is None or self._count >= self.shard_records:
            self._open_next()
        line = _JSONL.encode(record if jsonl_obj is None else jsonl_obj)
        assert self._avro is not None  # _open_next made it
        self._avro.write(cast(dict, record))  # a Mapping is what fastavro reads; no copy
        self._files[1][2].write((line + "\n").encode("utf-8"))
        self._count += 1
        self.records += 1

    def _finish_shard(self) -> None:
        if self._avro is None:
            return
        self._avro.flush()
        for path, f, sink in self._files:
            f.close()
            self._entries.append(
                {
                    "path": posixpath.relpath(path, self.relative_to),
                    "records": self._count,
                    "bytes": sink.size,
                    "sha256": sink.sha.hexdigest(),
                }
            )
        self._files = []
        self._avro = None

    def close(self) -> list[dict]:
        if not self._closed:
            self._finish_shard()
            self._closed = True
        return [dict(e) for e in self._entries]

    def abort(self) -> None:
        """Close open files without reporting them (the staging directory is thrown away anyway)."""
        for _, f, _ in self._files:
            try:
                f.close()
            except Exception:  # noqa: BLE001 - already failing; the caller's error is the one that matters
                pass
        self._files, self._avro, self._closed = [], None, True

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _window_start(manifest: Mapping[str, Any]) -> int:
    if "window_start" in manifest:
        return int(manifest["window_start"])
    window = manifest.get("window")
    if isinstance(window, Mapping) and "start_ms" in window:
        return int(window["start_ms"])
    return 0


Manifests = list[dict]  # (inside DatasetStore, `list` names its method)


class DatasetReader(Protocol):
    """What a reader of training data needs of a dataset store: a dataset's manifest.json object and
    its files by path ("<dataset id>/sft/train-p000-00000.avro"). `DatasetStore` is one; the trainer's
    tests hand it a few files in memory shaped like it."""

    def manifest(self, dataset_id: str) -> dict: ...

    def open(self, path: str) -> IO[bytes]: ...


class PublishedDatasets(DatasetReader, Protocol):
    """A `DatasetReader` that also says whether a dataset is published: what the trainer's service
    asks before it trains on an announced one (its fuzz tests answer with a stand-in)."""

    def exists(self, dataset_id: str) -> bool: ...


class DatasetStore:
    """Published datasets under one root; see the module docstring for the layout."""

    def __init__(self, url: str):
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/") or "/"
        self._local = isinstance(self.fs, LocalFileSystem)

    # -- paths -------------------------------------------------------------------------------------
    def _join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @staticmethod
    def _check_id(dataset_id: str) -> str:
        if not dataset_id or "/" in dataset_id or "\\" in dataset_id or dataset_id.startswith("."):
            raise ValueError(f"not a dataset id: {dataset_id!r}")
        return dataset_id

    def path(self, dataset_id: str) -> str:
        return self._join(self._check_id(dataset_id))

    def staging_path(self, dataset_id: str) -> str:
        return self._join(STAGING, self._check_id(dataset_id))

    def uri(self, dataset_id: str = "") -> str:
        """The dataset's directory (the root for ""): a plain path on a local filesystem, else a URL."""
        path = self.path(dataset_id) if dataset_id else self.root
        return path if self._local else self.fs.unstrip_protocol(path)

    # -- writing -----------------------------------------------------------------------------------
    def staging(self, dataset_id: str) -> str:
        """An empty staging directory for `dataset_id`; whatever a crashed write left there is removed."""
        path = self.staging_path(dataset_id)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
        self.fs.makedirs(path, exist_ok=True)
        return path

    def publish(self, dataset_id: str, staged_as: str | None = None) -> None:
        """Make the staged dataset visible (staged under `staged_as`, default its own id). Idempotent:
        when it is published already, the published one stays and the staging directory is removed."""
        final, stage = self.path(dataset_id), self.staging_path(staged_as or dataset_id)
        if self.exists(dataset_id):
            self._discard(stage)
            return
        if not self.fs.exists(posixpath.join(stage, MANIFEST)):
            raise FileNotFoundError(
                f"cannot publish {dataset_id!r}: {stage}/{MANIFEST} does not exist (nothing staged)"
            )
        if self._local:
            try:
                os.replace(stage, final)
            except OSError:
                if not self.exists(dataset_id):
                    raise
                self._discard(stage)  # another writer published it first
            return
        if self.fs.exists(final):
            self.fs.rm(final, recursive=True)  # a publish that crashed before its manifest
        files = sorted(self.fs.find(stage))
        manifest = posixpath.join(stage, MANIFEST)
        for src in [f for f in files if f != manifest] + [manifest]:
            dst = posixpath.join(final, posixpath.relpath(src, stage))
            self.fs.makedirs(posixpath.dirname(dst), exist_ok=True)
            self.fs.mv(src, dst)
        self._discard(stage)

    def _discard(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    # -- reading -----------------------------------------------------------------------------------
    def exists(self, dataset_id: str) -> bool:
        return self.fs.exists(posixpath.join(self.path(dataset_id), MANIFEST))

    def manifest(self, dataset_id: str) -> dict:
        path = posixpath.join(self.path(dataset_id), MANIFEST)
        try:
            with self.fs.open(path, "rb") as f:
                return json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            raise KeyError(f"no published dataset {dataset_id!r} in {self.url} ({path} does not exist)") from None

    def read_manifest(self, dataset_id: str) -> Manifest:
        """`manifest`, typed (schemas/datasets.py)."""
        return Manifest.from_dict(self.manifest(dataset_id))

    def list(self) -> list[dict]:
        """Manifests of every published dataset, every version, by window start (then id). Staging is
        not listed. Readers of training data want `latest()`."""
        if not self.fs.exists(self.root):
            return []
        out = []
        for entry in self.fs.ls(self.root, detail=False):
            name = posixpath.basename(entry.rstrip("/"))
            if not name or name.startswith(".") or not self.exists(name):
                continue
            out.append(self.manifest(name))
        return sorted(out, key=lambda m: (_window_start(m), str(m.get("dataset_id", ""))))

    def latest(self, manifests: Sequence[dict] | None = None) -> Manifests:
        """The newest version of each window's dataset, by window start: no superseded dataset (named
        in `.superseded`, or by a listed manifest's `supersedes`); of two versions of one window that
        neither supersedes, the last by id (as `list()` orders them)."""
        manifests = self.list() if manifests is None else manifests
        gone = set(self.superseded()) | {str(m["supersedes"]) for m in manifests if m.get("supersedes")}
        newest: dict[int, dict] = {}
        for m in manifests:
            if m.get("dataset_id") not in gone:
                newest[_window_start(m)] = m
        return [newest[w] for w in sorted(newest)]

    def newest_version(self, dataset_id: str) -> str | None:
        """The version that replaced `dataset_id` (following re-seals of re-seals), `dataset_id` itself
        when nothing did, or None when it is neither published nor recorded as superseded."""
        ledger = self.superseded()
        by_parent = {str(m["supersedes"]): m["dataset_id"] for m in self.list() if m.get("supersedes")}
        current, seen = dataset_id, set()
        while current not in seen:
            seen.add(current)
            following = (ledger.get(current) or {}).get("by") or by_parent.get(current)
            if not following:
                break
            current = following
        if current == dataset_id and not self.exists(dataset_id):
            return None
        return current

    def superseded(self) -> dict[str, dict]:
        """`.superseded`: dataset id -> {"by": its replacement, "at": ms, "reason", "mode", "users": [pseudonyms]}."""
        path = self._join(SUPERSEDED)
        if not self.fs.exists(path):
            return {}
        with self.fs.open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8") or "{}")

    def mark_superseded(self, dataset_id: str, by: str, **info: Any) -> None:
        """Record that `by` replaced `dataset_id` (idempotent: an existing entry keeps its time)."""
        ledger = self.superseded()
        entry = ledger.get(dataset_id)
        if entry is not None and entry.get("by") == by:
            return
        ledger[dataset_id] = {"by": by, "at": int(info.pop("at", time.time() * 1000)), **_plain(info)}
        self._replace_file(SUPERSEDED, (json.dumps(ledger, sort_keys=True, indent=1) + "\n").encode("utf-8"))

    def delete(self, dataset_id: str) -> bool:
        """Remove a published dataset's files, local directory or fsspec URL alike: the manifest first
        (it stops being published), then the rest. True when there was something to delete."""
        path = self.path(dataset_id)
        if not self.fs.exists(path):
            return False
        manifest = posixpath.join(path, MANIFEST)
        if self.fs.exists(manifest):
            self.fs.rm(manifest)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
        return True

    def _replace_file(self, name: str, body: bytes) -> None:
        path, tmp = self._join(name), self._join(f"{name}.tmp")
        self.fs.makedirs(self.root, exist_ok=True)
        with self.fs.open(tmp, "wb") as f:
            f.write(body)
        self.fs.mv(tmp, path)

    def open(self, path: str, mode: str = "rb"):
        """A file under the root, by its path relative to the root ("<dataset_id>/sft/train-00000.avro")."""
        parts = path.strip("/").split("/")
        if ".." in parts:
            raise ValueError(f"path must stay under the store's root: {path!r}")
        return self.fs.open(self._join(*parts), mode)

    def write_withdrawn(self, request_ids: Iterable[str]) -> None:
        """Replace the store's list of withdrawn request ids (what reviewers failed): readers of sealed
        datasets (the trainer's replay, exports) leave those records out."""
        body = "".join(rid + "\n" for rid in sorted(set(request_ids))).encode()
        path = self._join(WITHDRAWN)
        if self.fs.exists(path):
            with self.fs.open(path, "rb") as f:
                if f.read() == body:
                    return
        tmp = self._join(f"{WITHDRAWN}.tmp")
        self.fs.makedirs(self.root, exist_ok=True)
        with self.fs.open(tmp, "wb") as f:
            f.write(body)
        self.fs.mv(tmp, path)

    def withdrawn(self) -> frozenset[str]:
        path = self._join(WITHDRAWN)
        if not self.fs.exists(path):
            return frozenset()
        with self.fs.open(path, "rb") as f:
            return frozenset(f.read().decode().split())

    def holds_user(self, dataset_id: str, user_hash: str) -> bool:
        """Whether the dataset's users.txt lists `user_hash` (binary search over its fixed-width lines)."""
        if not self.exists(dataset_id):
            raise KeyError(f"no published dataset {dataset_id!r} in {self.url}")
        path = posixpath.join(self.path(dataset_id), USERS)
        if not self.fs.exists(path):
            return False
        needle = user_hash.strip().lower().encode("ascii")
        with self.fs.open(path, "rb") as f:
            size = self.fs.size(path)
            if size % _USER_LINE:  # not fixed width (written by hand?): read it all
                return needle in set(f.read().split())
            lo, hi = 0, size // _USER_LINE
            while lo < hi:
                mid = (lo + hi) // 2
                f.seek(mid * _USER_LINE)
                line = f.read(_USER_LINE - 1)
                if line == needle:
                    return True
                if line < needle:
                    lo = mid + 1
                else:
                    hi = mid
        return False
