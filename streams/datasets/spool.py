"""Local copies of each open window's members, written as the builder reads them, so a seal reads
files and not the log.

Why: reading a window back from the broker costs the broker's time and, on a broker that answers a
fetch with a partition's whole tail whatever the fetch limits say (the embedded one), memory the
size of that tail in every reader. A file streams in bounded memory. The log stays the truth: a
seal uses a source's spool only when it holds exactly the members the window clock counted there,
in offset order (`complete`); otherwise it reads the log, as it always could.

Layout: `<dir>/<window index>/<topic>@<partition>.spool`, a run of frames: a 12-byte header (payload
length, offset; little-endian) and `marshal((value, headers or None))`. Only members are written.
On start the builder cuts every file back to the frames below its saved position (`resume`): what a
crash wrote past the last saved state, a torn frame included, is read again from the log and
appended again, once.
"""

from __future__ import annotations

import logging
import marshal
import os
import shutil
import struct
from typing import Iterable, Iterator, Mapping

log = logging.getLogger("flywheel.datasets")

HEADER = struct.Struct("<IQ")
BUFFER = 1 << 20


def _file_name(source: str) -> str:
    topic, _, partition = source.rpartition("/")
    return f"{topic}@{partition}.spool"


class WindowSpool:
    """Appends members per (window, source); `flush` before the builder saves its state."""

    def __init__(self, directory: str):
        self.directory = directory
        self._files: dict[tuple[int, str], object] = {}

    def path(self, window: int, source: str) -> str:
        return os.path.join(self.directory, str(window), _file_name(source))

    def append(self, window: int, source: str, offset: int, value: bytes, headers: Mapping[str, bytes] | None) -> None:
        f = self._files.get((window, source))
        if f is None:
            path = self.path(window, source)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            f = self._files[(window, source)] = open(path, "ab", buffering=BUFFER)
        payload = marshal.dumps((value, dict(headers) if headers else None))
        f.write(HEADER.pack(len(payload), offset))
        f.write(payload)

    def flush(self) -> None:
        for f in self._files.values():
            f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def drop(self, window: int) -> None:
        """A sealed window's files go."""
        for key in [k for k in self._files if k[0] == window]:
            self._files.pop(key).close()
        shutil.rmtree(os.path.join(self.directory, str(window)), ignore_errors=True)

    def resume(self, open_windows: Iterable[int], positions: Mapping[str, int]) -> None:
        """Before appending again after a start: windows no longer open go, and every file is cut back
        to its frames below the source's saved position."""
        self.close()
        if not os.path.isdir(self.directory):
            return
        keep = {str(w) for w in open_windows}
        for name in os.listdir(self.directory):
            if name not in keep:
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
                continue
            for source, position in positions.items():
                path = self.path(int(name), source)
                if os.path.exists(path):
                    _cut(path, position)


def _cut(path: str, position: int) -> None:
    """Truncate after the last whole frame whose offset is below `position`."""
    end = 0
    with open(path, "rb") as f:
        while True:
            head = f.read(HEADER.size)
            if len(head) < HEADER.size:
                break
            length, offset = HEADER.unpack(head)
            if offset >= position:
                break
            f.seek(length, os.SEEK_CUR)
            if f.tell() > os.fstat(f.fileno()).st_size:
                break  # torn: the payload was not all written
            end = f.tell()
    if end != os.path.getsize(path):
        log.info("spool cut back", extra={"path": path, "bytes": end})
        with open(path, "r+b") as f:
            f.truncate(end)


def complete(path: str, first: int, stop: int, members: int) -> bool:
    """True when the file holds `members` frames, all in [first, stop), offsets strictly rising."""
    if not path or not os.path.exists(path):
        return False
    count, last, size = 0, first - 1, os.path.getsize(path)
    with open(path, "rb", buffering=BUFFER) as f:
        while True:
            head = f.read(HEADER.size)
            if not head:
                break
            if len(head) < HEADER.size:
                return False
            length, offset = HEADER.unpack(head)
            if offset <= last or offset >= stop:
                return False
            last = offset
            count += 1
            f.seek(length, os.SEEK_CUR)
            if f.tell() > size:
                return False
    return count == members


def read(path: str) -> Iterator[tuple[int, bytes, dict | None]]:
    """(offset, value, headers) of every frame, in order."""
    with open(path, "rb", buffering=BUFFER) as f:
        while True:
            head = f.read(HEADER.size)
            if len(head) < HEADER.size:
                return
            length, offset = HEADER.unpack(head)
            value, headers = marshal.loads(f.read(length))
            yield offset, value, headers
