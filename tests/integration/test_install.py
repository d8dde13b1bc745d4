"""The distribution as a user installs it: sdist and wheel built from the tree, the wheel installed
into fresh virtual environments by pip's resolver (no --no-deps), for an app (`[sdk]`) and for every
role (`[all]`), each smoke-tested, `pip check` clean.

requirements.lock is passed as constraints (`-c`), as `make` does, so the versions are the tested
ones and pip's cache serves them; the resolver still checks every requirement. `[all]` is offered
the faust-streaming wheel of scripts/faust_wheel.py (the click cap lifted): without it no resolver
can install faust-streaming beside huggingface-hub, and a test below shows that too.

Measured on the 2-core machine shared with other jobs (load 6-7), pip cache warm: the four tests 2 min 42 s
(sdist 1.2 s, wheel 0.8 s, [sdk] install 3.1 s, [all] install 74.8 s, its smoke test about 60 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
ENV = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
ENV.pop("PYTHONPATH", None)
ENV.pop("VIRTUAL_ENV", None)

# The SDK must not drag the worker in: none of these may be installed by `[sdk]`.
NOT_IN_SDK = ["faust", "aiokafka", "mode", "redis", "torch", "transformers", "numpy", "prometheus_client", "spacy"]


def run(*cmd, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    if p.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        )
    return p


def venv(path: Path) -> Path:
    """A fresh virtual environment without pip in it (seconds saved): `pip()` drives it from outside."""
    run(sys.executable, "-m", "venv", "--without-pip", path)
    return path / "bin" / "python"


def pip(py: Path, *args) -> tuple:
    """pip of this interpreter acting on the environment of `py` (pip's --python)."""
    return (sys.executable, "-m", "pip", "--python", py, *args)


def timed(label: str, times: dict, *cmd, **kw) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    p = run(*cmd, **kw)
    times[label] = round(time.monotonic() - t0, 1)
    return p


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict:
    """sdist from the tree, then the wheel from the unpacked sdist (so the sdist is proven complete),
    by the build backend pyproject.toml names (setuptools, as in the project's environment)."""
    out = tmp_path_factory.mktemp("dist")
    times: dict = {}
    code = "import sys; from setuptools import build_meta as b; print(getattr(b, sys.argv[1])(sys.argv[2]))"
    sdist = (
        out
        / timed("sdist", times, sys.executable, "-c", code, "build_sdist", out, cwd=ROOT)
        .stdout.strip()
        .splitlines()[-1]
    )
    with tarfile.open(sdist) as tf:
        tf.extractall(out / "src", filter="data")
    (src,) = (out / "src").iterdir()
    wheel = (
        out
        / timed("wheel", times, sys.executable, "-c", code, "build_wheel", out, cwd=src)
        .stdout.strip()
        .splitlines()[-1]
    )
    return {"sdist": sdist, "wheel": wheel, "out": out, "times": times}


def test_sdist_and_wheel_hold_the_packages_and_schemas(dist):
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    for pkg in (
        "flywheel/sdk.py",
        "flywheel/cli/__init__.py",
        "flywheel/cli/base.py",
        "schemas/codec.py",
        "streams/app.py",
        "trainer/registry.py",
    ):
        assert pkg in names, pkg
    assert any(n.startswith("schemas/avro/") and n.endswith(".avsc") for n in names)
    assert not any(n.startswith("tests/") for n in names)
    meta = zipfile.ZipFile(dist["wheel"]).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for extra in ("sdk", "worker", "gate", "review", "trainer", "ingest", "embedded", "all"):
        assert f"Provides-Extra: {extra}\n" in meta, extra
    # the core (what [sdk] adds nothing to): the producer SDK's two packages, nothing else
    core = sorted(
        line.split(":", 1)[1].strip()
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    )
    assert [c.split(">")[0].split("=")[0] for c in core] == ["confluent-kafka", "fastavro"], core


SDK_SMOKE = """
import importlib.util, sys
from flywheel.sdk import FlywheelProducer
from schemas import Codec
from schemas.records import Interaction
event = Interaction(request_id="r-1", session_id="s-1", user_id="u-1", event_time=1_760_000_000_000,
                    model_version="v1", prompt="What is 2+2?", response="4", task_type="math")
with FlywheelProducer() as producer:  # FLYWHEEL_KAFKA_BOOTSTRAP: the test session's embedded broker
    data = producer.encode(event)
    producer.log_interaction(request_id="r-1", session_id="s-1", user_id="u-1", model_version="v1",
                             prompt="What is 2+2?", response="4", task_type="math")
    assert producer.flush(30) == 1  # confirmed by the broker (a failure raises)
back = Codec().decode("interaction", data)
assert back["request_id"] == "r-1" and back["response"] == "4", back
missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
assert missing == sys.argv[1:], f"installed by [sdk]: {sorted(set(sys.argv[1:]) - set(missing))}"
print("sdk ok", len(data), "bytes")
"""


def test_sdk_extra_installs_with_the_resolver_and_only_the_producer(dist, tmp_path, broker):
    py = venv(tmp_path / "sdk")
    times = dict(dist["times"])
    timed("install [sdk]", times, *pip(py, "install", "-q", "--no-compile", "-c", LOCK, f"{dist['wheel']}[sdk]"))
    assert run(*pip(py, "check")).stdout.strip() == "No broken requirements found."
    topic = f"install-test-{uuid.uuid4().hex[:8]}"
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(f"{topic}.{t}", 1, 1) for t in ("interactions", "actions")]).values():
        f.result(30)
    env = {
        "FLYWHEEL_KAFKA_BOOTSTRAP": broker.bootstrap,
        "FLYWHEEL_TOPIC_INTERACTIONS": f"{topic}.interactions",
        "FLYWHEEL_TOPIC_ACTIONS": f"{topic}.actions",
    }
    out = run(py, "-c", SDK_SMOKE, *NOT_IN_SDK, cwd=tmp_path, env=env).stdout
    assert "sdk ok" in out
    freeze = run(*pip(py, "freeze")).stdout.lower()
    assert "faust" not in freeze and "torch" not in freeze, freeze
    print(f"install times (s): {times}")


ALL_SMOKE = """
import importlib.metadata as md, subprocess, sys
import streams.app, streams.gate.agent, streams.gate.pipeline, streams.review.web, streams.datasets.service
import trainer.service, trainer.registry, flywheel.embedded, flywheel.ingest.server, flywheel.ingest.otlp
import datasets, trl, transformers, torch, faust, detoxify, spacy, presidio_analyzer
assert md.version("faust-streaming") == "0.15.3+flywheel.1", md.version("faust-streaming")
assert md.version("click").split(".")[:2] >= ["8", "4"], md.version("click")
out = subprocess.run([sys.prefix + "/bin/flywheel", "--version"], capture_output=True, text=True, check=True).stdout
assert out.strip() == "flywheel " + md.version("llm-flywheel"), out
print("all ok")
"""


def test_all_extra_installs_with_the_resolver_and_pip_check_is_clean(dist, tmp_path):
    wheels = tmp_path / "wheelhouse"
    run(sys.executable, ROOT / "scripts" / "faust_wheel.py", wheels)
    py = venv(tmp_path / "all")
    times = {}
    timed(
        "install [all]",
        times,
        *pip(py, "install", "-q", "--no-compile", "-c", LOCK, "--find-links", wheels, f"{dist['wheel']}[all]"),
    )
    assert run(*pip(py, "check")).stdout.strip() == "No broken requirements found."
    assert "all ok" in run(py, "-c", ALL_SMOKE, cwd=tmp_path, timeout=300).stdout
    print(f"install times (s): {times}")


def test_without_the_rebuilt_faust_wheel_the_resolver_reports_the_click_conflict(tmp_path):
    """Why the faust wheel exists: PyPI's faust-streaming 0.15.3 and the huggingface-hub of the lock
    cannot share an environment under pip's resolver (a dry run: metadata only, seconds)."""
    py = venv(tmp_path / "conflict")
    hub = next(line.strip() for line in LOCK.read_text().splitlines() if line.lower().startswith("huggingface"))  # noqa
    p = subprocess.run(
        [str(c) for c in pip(py, "install", "--dry-run", "-q", "faust-streaming==0.15.3", hub)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode != 0
    text = p.stdout + p.stderr
    assert "click<8.4" in text.replace(" ", "") or "click" in text and "conflict" in text.lower(), text[-2000:]
