"""`flywheel datasets run` that stops at a chosen point of an erasure's re-seal (RESEAL_PAUSE), writes
`PAUSED <point>` on stderr and waits there to be killed: for the kill -9 tests (test_erasure.py).

    write      the new version's shards are in staging, its manifest not yet (nothing published)
    published  the new version is published and announced; the old one is not yet recorded or deleted
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from streams.datasets import builder, erasure  # noqa: E402

PAUSE = os.environ.get("RESEAL_PAUSE", "")


def pause(point: str) -> None:
    if PAUSE == point:
        print(f"PAUSED {point}", file=sys.stderr, flush=True)
        time.sleep(600)


_manifest_json = builder.manifest_json
_finish = erasure.finish


def manifest_json(manifest):
    if manifest.get("supersedes"):  # a re-seal's, just before it is written to staging
        pause("write")
    return _manifest_json(manifest)


def finish(store, done, at_ms=None):
    pause("published")
    return _finish(store, done, at_ms)


builder.manifest_json = manifest_json
erasure.finish = finish

if __name__ == "__main__":
    from flywheel.cli import main

    sys.exit(main(["datasets", "run"]))
