"""Progress bars for long commands: tqdm on stderr, only when stderr is a terminal (so pipes, logs
and tests see nothing), never on stdout, which carries the command's data. The CLI's commands ask
through `Command.bar` (flywheel/cli/base.py), which also turns them off for --json and --no-progress."""

from __future__ import annotations

import sys
from typing import Any


def bar(total: int | None = None, desc: str = "", unit: str = "it", force: bool | None = None) -> Any:
    """A tqdm bar on stderr (a no-op one when stderr is not a terminal, or when tqdm is absent)."""
    show = sys.stderr.isatty() if force is None else force
    try:
        from tqdm import tqdm
    except ImportError:  # the [sdk] install has no tqdm: no bar
        show = False
    if not show:
        return _Quiet()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)


class _Quiet:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Quiet":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass
