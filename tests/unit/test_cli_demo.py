"""The default demo's app id: its own per data directory, so two runs of one seed at once (a test and
a manual run) never clear each other's Redis keys."""

from __future__ import annotations

import os

from flywheel.cli import main
from flywheel.cli.demo import demo_app_id


def test_the_app_id_is_the_seeds_and_the_data_dirs(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    assert demo_app_id(0, str(a)) != demo_app_id(0, str(b))
    assert demo_app_id(0, str(a)) != demo_app_id(1, str(a))
    assert demo_app_id(3, str(a)).startswith("demo-3-") and len(demo_app_id(3, str(a))) == len("demo-3-") + 8
    monkeypatch.chdir(tmp_path)  # the same directory spelled relative or absolute: the same app
    assert demo_app_id(0, "a") == demo_app_id(0, str(a)) == demo_app_id(0, os.path.join(str(tmp_path), ".", "a"))


def test_the_demo_command_runs_each_data_dir_under_its_own_app_id(tmp_path, monkeypatch):
    import flywheel.demo.run

    ran: list = []
    monkeypatch.setattr(flywheel.demo.run, "run", lambda settings, spec, **kw: ran.append(settings))
    for d in ("one", "two"):
        assert main(["demo", "--small", "--data-dir", str(tmp_path / d), "--json"]) == 0
    assert [s.app_id for s in ran] == [demo_app_id(0, str(tmp_path / d)) for d in ("one", "two")]
    assert ran[0].app_id != ran[1].app_id
