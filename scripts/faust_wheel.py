#!/usr/bin/env python3
"""Build faust-streaming 0.15.3 with its `click` cap lifted, as the local version `0.15.3+flywheel.1`.

Why: faust-streaming 0.15.3 (the newest release) declares `click>=6.7,<8.4`, and every
huggingface-hub that transformers 5 accepts (>=1.31) declares `click>=8.4.2`: no pip resolver can
install the gate or the trainer beside the stream worker. Faust uses click only in its own command
line (`faust.cli`, the `faust` script); the flywheel starts its worker from Python (streams/app.py)
and never imports click through faust. So the wheel built here is PyPI's faust-streaming 0.15.3
byte for byte but for one line of its metadata (`Requires-Dist: click>=6.7,<8.4` becomes
`click>=6.7,<9`) and the version's local label. A local label matches `faust-streaming==0.15.3`
(PEP 440), and it sorts above 0.15.3, so pip's resolver picks this wheel whenever it is offered
(`--find-links DIR`), and `pip check` then has nothing to report.

    python scripts/faust_wheel.py DIR      # writes DIR/faust_streaming-0.15.3+flywheel.1-....whl, prints its path

Idempotent; needs pip (it downloads the original wheel, from pip's cache when it is there).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "0.15.3"
LOCAL = "0.15.3+flywheel.1"
CAP = "Requires-Dist: click<8.4,>=6.7"
LIFTED = "Requires-Dist: click<9,>=6.7"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    done = sorted(out_dir.glob(f"faust_streaming-{LOCAL}-*.whl"))
    if done:
        return done[0]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary",
                ":all:",
                f"faust-streaming=={VERSION}",
                "-d",
                tmp,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        (src,) = Path(tmp).glob("faust_streaming-*.whl")
        old_info, new_info = f"faust_streaming-{VERSION}.dist-info", f"faust_streaming-{LOCAL}.dist-info"
        dest = out_dir / src.name.replace(f"-{VERSION}-", f"-{LOCAL}-")
        partial = dest.with_suffix(".part")
        records: list[str] = []
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                name, data = info.filename, zin.read(info.filename)
                if name.startswith(old_info + "/"):
                    name = new_info + name[len(old_info) :]
                    if name.endswith("/RECORD"):
                        continue  # written last, for the new names and hashes
                    if name.endswith("/METADATA"):
                        text = data.decode("utf-8")
                        if CAP not in text:
                            raise SystemExit(f"faust_wheel: {src.name}'s METADATA has no {CAP!r}: check the release")
                        text = text.replace(CAP, LIFTED).replace(f"\nVersion: {VERSION}\n", f"\nVersion: {LOCAL}\n", 1)
                        data = text.encode("utf-8")
                out = zipfile.ZipInfo(name, date_time=info.date_time)
                out.external_attr, out.compress_type = info.external_attr, zipfile.ZIP_DEFLATED
                zout.writestr(out, data)
                records.append(f"{name},{_record_hash(data)},{len(data)}")
            records.append(f"{new_info}/RECORD,,")
            zout.writestr(f"{new_info}/RECORD", "\n".join(records) + "\n")
        os.replace(partial, dest)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: faust_wheel.py DIR")
    print(build(Path(sys.argv[1])))
