"""The default demo's loop (flywheel/demo/loop.py), the parts that need no broker: how many torch threads it
gives itself and its services on loaded cores, and that the services' thread setting does not outlive their
start."""

from __future__ import annotations

import os

from flywheel.demo import loop


def test_loaded_cores_get_one_torch_thread_and_quiet_ones_torchs_default(monkeypatch):
    monkeypatch.delenv("FLYWHEEL_DEMO_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (7.5, 6.0, 5.0))
    assert loop.torch_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.3, 0.2))
    assert loop.torch_threads() == 0
    monkeypatch.setenv("FLYWHEEL_DEMO_THREADS", "2")
    monkeypatch.setattr(os, "getloadavg", lambda: (7.5, 6.0, 5.0))
    assert loop.torch_threads() == 2


def test_services_started_in_the_block_see_the_thread_count_and_the_demo_keeps_its_own(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    with loop.threads_for_children(1):
        assert os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "4"
    monkeypatch.delenv("OMP_NUM_THREADS")
    with loop.threads_for_children(1):
        assert os.environ["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in os.environ
    with loop.threads_for_children(0):  # torch's default: nothing set
        assert "OMP_NUM_THREADS" not in os.environ
