"""What `flywheel datasets list` shows of the store: one row per window, its newest version.

Here rather than in the CLI so the rows' shape (what scripts read from `datasets list`) is one
function the CLI prints and tests can call."""

from __future__ import annotations

from typing import Any


def row(store: Any, manifest: dict) -> dict:
    """A sealed dataset's row: id, window, record counts, policy version, URI, and the version it
    replaced when an erasure re-sealed its window."""
    return {
        "dataset_id": manifest["dataset_id"],
        "window_start": manifest["window"]["start_ms"],
        "window_end": manifest["window"]["end_ms"],
        "records": manifest["counts"]["records"],
        "splits": manifest["counts"]["split"],
        "policy_version": manifest["policy_version"],
        "uri": store.uri(manifest["dataset_id"]),
        **({"supersedes": manifest["supersedes"]} if manifest.get("supersedes") else {}),
    }


def rows(store: Any) -> list[dict]:
    """Every window's newest version (never one an erasure replaced: it holds what was erased)."""
    return [row(store, m) for m in store.latest()]
