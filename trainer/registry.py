"""The model registry: versioned model directories with their metadata, and pointers in Redis.

Layout: `<models_dir>/<version>/` holds the model and tokenizer files and `flywheel-model.json`
(its metadata: lineage, metrics, the gate's verdict, file hashes). Versions are `v0001`,
`v0002`, ... taken from a Redis counter, so two trainers never take the same one. Redis holds
what must be shared and changed atomically:

    {app}:models:meta          hash  version -> metadata JSON (what `flywheel models list` reads)
    {app}:models:production    string  the version in production (cold start sets it; rollout moves it)
    {app}:trainer:datasets     hash  dataset id -> {"outcome", "version", "announced"} (which datasets were trained)

A model directory is written under `.staging-<version>` and renamed into place, so a crash while
saving leaves no half model where the registry looks.

The store may be a local directory or any fsspec URL (`FLYWHEEL_MODEL_STORE=s3://bucket/models`;
`file://` URLs are local directories), so serving reads models without the trainer's volume. At a
URL the layout is the same; the trainer stages locally in the model cache (`FLYWHEEL_MODEL_CACHE`,
mirrored per store URL: `root` is that directory) and uploads the files with `flywheel-model.json`
last, then records the version in Redis: a crash mid-upload leaves a directory without its
metadata, which no listing, `show` or `set_production` takes for a model (object stores have no
atomic rename of a directory). `path(version)` downloads a version into the cache once, whole or
not at all, so `AutoModelForCausalLM.from_pretrained`, evaluation and `models export` read local
files.

Lineage: every model's metadata names the dataset versions it was trained on (`datasets`: the
cycle's dataset and every replayed one) and, in `lineage`, those of every model it was fine-tuned
from as well (its weights carry what they learned). A model whose lineage holds a dataset version
that an erasure has since replaced (the store's `.superseded`) is tainted: `tainted()` says which
versions, `flag_erasure` records it (`tainted_by_erasure`, and `retire` when the policy asks for a
clean model to replace it).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from flywheel.routing import production_key
from trainer import card

ERASURE_POLICIES = ("report", "retrain")

META_FILE = "flywheel-model.json"


class IntegrityError(ValueError):
    """A downloaded model file is not the one its metadata's `file_hashes` names: a corrupted or
    tampered store. The download is removed, so nothing loads it."""


def _check_hashes(rel: str, meta: dict | None, downloaded: Path) -> None:
    """Every file the metadata lists a sha256 for is in `downloaded` with that hash (metadata
    without hashes, as older registrations may be, is taken as it is)."""
    expected = (meta or {}).get("file_hashes") or {}
    for name, digest in sorted(expected.items()):
        f = downloaded / name
        if not f.is_file():
            raise IntegrityError(f"model {rel}: {name} is listed in {META_FILE} but missing from the store")
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != digest:
            raise IntegrityError(
                f"model {rel}: {name} does not match its sha256 in {META_FILE} "
                f"({h.hexdigest()[:12]}... != {str(digest)[:12]}...): the download was removed"
            )


def _default_cache() -> str:
    from flywheel.settings import Settings

    return Settings.from_env().model_cache_dir


class Registry:
    def __init__(self, models_dir: str, redis_client: Any, app_id: str, cache_dir: str | None = None):
        """`models_dir`: a directory or an fsspec URL. `cache_dir` (used only for a store at a URL;
        default: the settings' model cache) is where versions are downloaded and models staged."""
        self.location = models_dir
        self.fs: Any = None  # the store's filesystem when it is at a URL; None: a local directory
        if "://" not in models_dir:
            self.root = Path(models_dir)  # the local directory the registry works in: here, the store
        else:
            fs, remote = fsspec.core.url_to_fs(models_dir)
            if isinstance(fs, LocalFileSystem):
                self.root = Path(remote)
            else:
                self.fs, self.remote = fs, remote.rstrip("/") or "/"
                key = hashlib.sha256(fs.unstrip_protocol(self.remote).encode()).hexdigest()[:16]
                # one mirror per store URL, so two stores' v0001 never share a cached copy
                self.root = Path(cache_dir if cache_dir is not None else _default_cache()) / key
        self.redis = redis_client
        self.meta_key = f"{app_id}:models:meta"
        self.production_key = production_key(app_id)  # apps read it too (flywheel/routing.py)
        self.datasets_key = f"{app_id}:trainer:datasets"
        self.seq_key = f"{app_id}:models:seq"
        self.bases_key = f"{app_id}:models:bases"

    # -- versions ------------------------------------------------------------------------------------
    def next_version(self) -> str:
        return f"v{int(self.redis.incr(self.seq_key)):04d}"

    def staging(self, version: str) -> Path:
        path = self.root / f".staging-{version}"
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    # -- the store at a URL -------------------------------------------------------------------------
    def _remote(self, *parts: str) -> str:
        return posixpath.join(self.remote, *parts)

    def url(self, *parts: str) -> str:
        """Where a directory of the store is (the store for none): a path when local, else a URL."""
        if self.fs is None:
            return str(self.root.joinpath(*parts))
        return self.fs.unstrip_protocol(self._remote(*parts))

    def _publish(self, staged: Path, rel: str) -> Path:
        """Put a staged directory (its metadata written) in the store at `rel`; the local copy stays
        in the cache at `<root>/<rel>`. Remote: every file, then the metadata, last."""
        final = self.root / rel
        if self.fs is not None:
            target = self._remote(rel)
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)  # an upload that crashed before its metadata
            files = sorted(p for p in staged.rglob("*") if p.is_file())
            for f in [f for f in files if f.name != META_FILE] + [staged / META_FILE]:
                dest = self._remote(rel, f.relative_to(staged).as_posix())
                self.fs.makedirs(posixpath.dirname(dest), exist_ok=True)
                self.fs.put_file(str(f), dest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staged, final)
        return final

    def _read_meta(self, rel: str) -> dict | None:
        """The metadata file of a store directory, or None where there is none."""
        if self.fs is None:
            meta = self.root / rel / META_FILE
            return json.loads(meta.read_text()) if meta.exists() else None
        try:
            with self.fs.open(self._remote(rel, META_FILE), "rb") as fh:
                return json.loads(fh.read().decode("utf-8"))
        except FileNotFoundError:
            return None

    def _write_meta(self, rel: str, meta: dict) -> None:
        """Rewrite the metadata file of a published directory (in the store, and in the cache's copy)."""
        text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        local = self.root / rel / META_FILE
        if self.fs is not None:
            target = self._remote(rel, META_FILE)
            if self.fs.exists(target):
                self.fs.pipe_file(target, text.encode("utf-8"))
        if local.exists():
            local.write_text(text)

    def _local_copy(self, rel: str) -> Path:
        """The directory `rel` of the store on local disk: itself when local, else the cache's copy."""
        if self.fs is None:
            return self.root / rel
        from trainer.model import fetch_dir

        meta = self._read_meta(rel)
        if meta is None:
            raise FileNotFoundError(f"{self.url(rel)} is not a registered model (no {META_FILE})")
        return fetch_dir(self.fs, self._remote(rel), self.root / rel, check=lambda d: _check_hashes(rel, meta, d))

    # -- registering -----------------------------------------------------------------------------------
    def register(self, version: str, staged: Path, metadata: dict) -> Path:
        """Publish a staged model directory with its metadata."""
        metadata = {**metadata, "version": version, "path": self.url(version)}
        (staged / META_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        card.write(staged, metadata)  # README.md, the model card (trainer/card.py)
        final = self._publish(staged, version)
        self.redis.hset(self.meta_key, version, json.dumps(metadata, sort_keys=True))
        return final

    def path(self, version: str) -> Path:
        """The version's directory on local disk, to load (a store at a URL: downloaded, once)."""
        return self._local_copy(version)

    def show(self, version: str) -> dict:
        raw = self.redis.hget(self.meta_key, version)
        if raw is None:
            meta = self._read_meta(version)
            if meta is None:
                raise KeyError(f"no model {version!r} (known: {', '.join(self.versions()) or 'none'})")
            return meta
        return json.loads(raw)

    def versions(self) -> list[str]:
        return sorted(v.decode() if isinstance(v, bytes) else v for v in self.redis.hkeys(self.meta_key))

    def list(self) -> list[dict]:
        return [self.show(v) for v in self.versions()]

    # -- lineage -------------------------------------------------------------------------------------
    def summary(self, meta: dict, superseded: dict, production: str | None) -> dict:
        """A model's row in `flywheel models list`: version, status, whether it serves, its dataset and
        base, the golden score and its change, the gate's verdict, and whether an erasure tainted it."""
        return {
            "version": meta["version"],
            "status": meta.get("status"),
            "production": meta["version"] == production,
            "dataset_id": meta.get("dataset_id"),
            "base_model": meta.get("base_model"),
            "overall": meta.get("metrics", {}).get("overall"),
            "delta": meta.get("deltas", {}).get("overall"),
            "gate_passed": meta.get("gate_passed"),
            "created_at": meta.get("created_at"),
            "tainted_by_erasure": bool(self.tainted(meta["version"], superseded)),
        }

    def summaries(self, superseded: dict) -> list[dict]:
        """Every registered model's `summary`, in version order."""
        production = self.production()
        return [self.summary(m, superseded, production) for m in self.list()]

    def lineage(self, version: str | None) -> list[str]:
        """Every dataset version the model's weights learned from: its own and its base models'."""
        out: set[str] = set()
        seen: set[str] = set()
        while version and version not in seen:
            seen.add(version)
            try:
                meta = self.show(version)
            except KeyError:
                break
            if "lineage" in meta:
                return sorted(out | set(meta["lineage"]))
            out |= set(meta.get("datasets") or ([meta["dataset_id"]] if meta.get("dataset_id") else []))
            out |= set(meta.get("replayed_datasets") or [])
            version = meta.get("base_model") or None
        return sorted(out)

    def tainted(self, version: str, superseded: dict) -> list[str]:
        """The dataset versions of the model's lineage that an erasure's re-seal has replaced."""
        return sorted(d for d in self.lineage(version) if (superseded.get(d) or {}).get("reason") == "erasure")

    def with_taint(self, meta: dict, superseded: dict) -> dict:
        """`meta` with `tainted_by_erasure` as the store says now (and what replaced each version)."""
        bad = self.tainted(meta["version"], superseded)
        return {**meta, "tainted_by_erasure": bad, "erasure_replaced_by": {d: superseded[d].get("by") for d in bad}}

    def flag_erasure(self, version: str, datasets: list[str], retire: bool) -> bool:
        """Record that the model's lineage holds erased dataset versions. True when this is news."""
        meta = self.show(version)
        known, retired = sorted(set(meta.get("tainted_by_erasure") or [])), bool(meta.get("retire"))
        flagged, retire = sorted(set(known) | set(datasets)), retire or retired
        if flagged == known and retire == retired:
            return False
        meta = {**meta, "tainted_by_erasure": flagged, "retire": retire}
        self.redis.hset(self.meta_key, version, json.dumps(meta, sort_keys=True))
        self._write_meta(version, meta)
        return True

    def clean_base(self, version: str | None, superseded: dict) -> str | None:
        """The newest model in `version`'s base chain (itself first) whose lineage holds no erased
        dataset version: what a retrain fine-tunes instead of a tainted production model."""
        seen: set[str] = set()
        while version and version not in seen:
            seen.add(version)
            if not self.tainted(version, superseded):
                return version
            try:
                version = self.show(version).get("base_model") or None
            except KeyError:
                return None
        return None

    # -- imported bases (trainer/importer.py): <models_dir>/bases/<name>/ ---------------------------
    def register_base(self, name: str, staged: Path, metadata: dict) -> Path:
        """Publish an imported pretrained model as base `name` (replacing one of that name)."""
        metadata = {**metadata, "name": name, "path": self.url("bases", name)}
        (staged / META_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        card.write(staged, metadata)
        final = self._publish(staged, f"bases/{name}")
        self.redis.hset(self.bases_key, name, json.dumps(metadata, sort_keys=True))
        return final

    def base(self, name: str) -> dict:
        raw = self.redis.hget(self.bases_key, name)
        if raw is not None:
            return json.loads(raw)
        meta = self._read_meta(f"bases/{name}")
        if meta is None:
            raise KeyError(f"no imported base {name!r} (known: {', '.join(self.bases()) or 'none'})")
        return meta

    def bases(self) -> list[str]:
        return sorted(v.decode() if isinstance(v, bytes) else v for v in self.redis.hkeys(self.bases_key))

    def resolve_base(self, name_or_path: str) -> tuple[Path, str]:
        """An imported base's directory by name, or a model directory by path: (path, base_kind)."""
        from trainer.model import base_kind_of

        if "/" not in name_or_path and not Path(name_or_path).is_dir():
            meta = self.base(name_or_path)
            if self.fs is None:
                return Path(meta["path"]), "pretrained"
            return self._local_copy(f"bases/{name_or_path}"), "pretrained"
        path = Path(name_or_path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a model directory (no config.json)")
        return path, base_kind_of(path)

    # -- production pointer --------------------------------------------------------------------------
    def production(self) -> str | None:
        v = self.redis.get(self.production_key)
        return v.decode() if isinstance(v, bytes) else v

    def set_production(self, version: str) -> None:
        if self.fs is None:
            if not (self.root / version).exists():
                raise KeyError(f"no model directory for {version!r} under {self.root}")
        elif not self.fs.exists(self._remote(version, META_FILE)):
            raise KeyError(f"no model directory for {version!r} under {self.location}")
        self.redis.set(self.production_key, version)

    # -- datasets seen ---------------------------------------------------------------------------------
    def dataset_outcome(self, dataset_id: str) -> dict | None:
        raw = self.redis.hget(self.datasets_key, dataset_id)
        return json.loads(raw) if raw else None

    def record_outcome(
        self, dataset_id: str, outcome: str, version: str, event: dict, announced: bool = False
    ) -> None:
        self.redis.hset(
            self.datasets_key,
            dataset_id,
            json.dumps(
                {"outcome": outcome, "version": version, "announced": announced, "event": event}, sort_keys=True
            ),
        )

    def mark_announced(self, dataset_id: str) -> None:
        rec = self.dataset_outcome(dataset_id)
        if rec is not None:
            rec["announced"] = True
            self.redis.hset(self.datasets_key, dataset_id, json.dumps(rec, sort_keys=True))
