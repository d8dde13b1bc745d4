"""`flywheel worker` whose join never finishes stopping: the Faust hang after a signal that arrives
while the worker is starting (streams/app.py StoppingWorker), on cue instead of by chance."""

from __future__ import annotations

import asyncio

from flywheel.settings import Settings
from streams.app import run_worker
from streams.join.service import JoinService


async def _never_stops(self) -> None:
    await asyncio.Event().wait()


if __name__ == "__main__":
    JoinService.on_stop = _never_stops
    run_worker(Settings.from_env())
