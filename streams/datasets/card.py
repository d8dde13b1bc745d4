"""The dataset card: a README.md in every sealed dataset directory, so the Hugging Face ecosystem
opens the directory as it is.

    datasets.load_dataset(DIR)                       # the "sft" config (the default): train, validation
    datasets.load_dataset(DIR, "preference")         # prompt / chosen / rejected (TRL's format)

The card's YAML header declares one config per kind of record (`sft`, `preference`) with the exact
JSONL shards of each split (the Avro shards beside them carry the same records), in the manifest's
order (with the curriculum on: easy buckets first), plus the window, the policy stamp, the filters'
funnel (decisions -> passed -> kept, and what was dropped, by reason) and a `license` left for the
dataset's owner. The body says the same in words.

The card is derived from the manifest alone, so it is as reproducible as the shards: the same window
from the same log gives the same README.md bytes (`flywheel datasets verify` compares it like every
other file). It is not one of the manifest's `files`, so adding it changed no dataset id.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Mapping

from flywheel.datastore import DatasetStore
from flywheel.frontmatter import front_matter
from schemas.datasets import Manifest

CARD = "README.md"
KINDS = ("sft", "preference")
_BUCKET = re.compile(r"-b\d+$")  # train-b03: a curriculum bucket of the train split


def _split(shard: Mapping[str, Any]) -> str:
    return _BUCKET.sub("", str(shard.get("split", "")))


def configs(manifest: Mapping[str, Any]) -> list[dict]:
    """[{"config_name", "data_files": [{"split", "path": [...]}]}, ...]: each kind with records, its
    splits (train first, then the others by name) and their JSONL shards in manifest order."""
    out: list[dict[str, Any]] = []
    for kind in KINDS:
        files: dict[str, list[str]] = {}
        for sh in manifest.get("shards", []):
            if sh.get("kind") == kind and str(sh.get("path", "")).endswith(".jsonl") and int(sh.get("records", 0)) > 0:
                files.setdefault(_split(sh), []).append(sh["path"])
        if files:
            order = sorted(files, key=lambda s: (s != "train", s))
            out.append({"config_name": kind, "data_files": [{"split": s, "path": files[s]} for s in order]})
    if out:
        out[0]["default"] = True  # load_dataset(DIR) with no config name: sft when it has records
    return out


def _iso(ms: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(int(ms) / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def funnel(manifest: Mapping[str, Any]) -> dict:
    """The filters' funnel of the window: the gate's decisions, those it passed, the records kept
    (by split), and what the builder dropped, by reason."""
    w = manifest.get("window") or {}
    counts = manifest.get("counts") or {}
    return {
        "decisions": int(w.get("decisions", 0) or 0),
        "passed": int(w.get("passed", 0) or 0),
        "records": int(counts.get("records", 0) or 0),
        "splits": dict(sorted((counts.get("split") or {}).items())),
        "dropped": dict(sorted((manifest.get("dropped") or {}).items())),
    }


def render(manifest: Manifest | Mapping[str, Any]) -> str:
    """The README.md of a dataset, from its manifest (typed, or manifest.json's object)."""
    if isinstance(manifest, Manifest):
        manifest = manifest.to_dict()
    ds = str(manifest.get("dataset_id", ""))
    w = manifest.get("window") or {}
    f = funnel(manifest)
    cfgs = configs(manifest)
    header = {
        "pretty_name": f"flywheel dataset {ds[:16]}",
        # left for the dataset's owner: the traffic's licence is theirs to state (an SPDX id, or "other")
        "license": None,
        "language": ["en"],
        "tags": ["flywheel", "sft", "preference", "chat"],
        "configs": cfgs,
        "flywheel": {
            "dataset_id": ds,
            "window": {
                "index": w.get("index"),
                "start": _iso(w.get("start_ms")),
                "end": _iso(w.get("end_ms")),
                "start_ms": w.get("start_ms"),
                "end_ms": w.get("end_ms"),
                "days": w.get("days"),
            },
            "policy_version": manifest.get("policy_version"),
            "builder_version": manifest.get("builder_version"),
            "supersedes": manifest.get("supersedes"),
            "review_required": manifest.get("review_required"),
            "users": manifest.get("users"),
            "funnel": f,
        },
    }
    rows = "\n".join(f"| {reason} | {n} |" for reason, n in f["dropped"].items()) or "| (none) | 0 |"
    splits = "\n".join(f"| {name} | {n} |" for name, n in f["splits"].items()) or "| (none) | 0 |"
    names = [c["config_name"] for c in cfgs]
    load = "\n".join(
        f'load_dataset("{ds or "DIR"}", "{n}")  # splits: {", ".join(d["split"] for d in c["data_files"])}'
        for n, c in zip(names, cfgs)
    )
    body = f"""
# flywheel dataset `{ds}`

Production traffic of one window, passed by the flywheel's quality gate, sealed by its dataset
builder after the window's lag ({_iso(w.get("start_ms"))} to {_iso(w.get("end_ms"))}, window
{w.get("index")}), under gate policy `{manifest.get("policy_version")}`. The records are chat
messages: `sft` has `messages` (the prompt side, then the answer), `preference` has TRL's
`prompt` / `chosen` / `rejected`; each record's `metadata` holds its request id, task type, split and
priority. `manifest.json` lists every file with its sha256; the Avro shards hold the same records.

## Loading

```python
from datasets import load_dataset
{load}
```

## Funnel

The gate decided {f["decisions"]} candidates in the window and passed {f["passed"]}; {f["records"]}
records were kept.

| split | records |
|---|---|
{splits}

| dropped by the builder | candidates |
|---|---|
{rows}

## Licence

Not set: the owner of the traffic states it in `license` above before sharing the dataset.
"""
    return front_matter(header) + body


def write(fs: Any, directory: str, manifest: Manifest | Mapping[str, Any]) -> str:
    """Write `directory`/README.md (an fsspec filesystem) for `manifest`; returns the card's path."""
    path = f"{directory.rstrip('/')}/{CARD}"
    with fs.open(path, "wb") as f:
        f.write(render(manifest).encode("utf-8"))
    return path


def push(store: DatasetStore, dataset_id: str, dest: str, progress: Any = None) -> dict:
    """Copy a sealed dataset, as a reader needs it, to `dest`: a directory or any fsspec URL (a Hub
    dataset repository through huggingface_hub's `hf://datasets/ORG/NAME`, s3://, ...). The card,
    every shard (JSONL and Avro, each checked against the manifest's sha256 as it is copied) and the
    manifest, last; not users.txt, record-users.bin or the selection's keys (they stay with the
    store, for erasure). Idempotent for the same dataset; refuses a destination holding another one."""
    import hashlib

    import fsspec

    manifest = store.manifest(dataset_id)
    fs, root = fsspec.core.url_to_fs(dest)
    root = root.rstrip("/")
    there = f"{root}/manifest.json"
    if fs.exists(there):
        with fs.open(there, "rb") as f:
            other = json.loads(f.read().decode("utf-8")).get("dataset_id")
        if other != dataset_id:
            raise FileExistsError(f"{dest} holds dataset {other}, not {dataset_id}")
    files = [sh["path"] for sh in manifest.get("shards", [])]
    fs.makedirs(root, exist_ok=True)
    with fs.open(f"{root}/{CARD}", "wb") as f:
        f.write(render(manifest).encode("utf-8"))
    sha = {sh["path"]: sh.get("sha256") for sh in manifest.get("shards", [])}
    copied = 0
    for rel in files:
        with store.open(f"{dataset_id}/{rel}") as f:
            body = f.read()
        if sha.get(rel) and hashlib.sha256(body).hexdigest() != sha[rel]:
            raise ValueError(f"{dataset_id}/{rel} does not match its manifest's sha256: not pushed")
        if "/" in rel:
            fs.makedirs(f"{root}/{rel.rsplit('/', 1)[0]}", exist_ok=True)
        with fs.open(f"{root}/{rel}", "wb") as f:
            f.write(body)
        copied += len(body)
        if progress is not None:
            progress.update(1)
    with store.open(f"{dataset_id}/manifest.json") as f:
        body = f.read()
    with fs.open(there, "wb") as f:  # last: the destination holds a whole dataset once it is there
        f.write(body)
    return {"dataset_id": dataset_id, "pushed_to": dest, "files": len(files) + 2, "bytes": copied + len(body)}
