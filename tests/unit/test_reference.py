"""The docs site's reference pages are generated from the code and committed: they must be current,
and each must cover what the code has (every command, setting, policy key and metric)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from flywheel import reference
from flywheel.cli import build_parser
from flywheel.settings import Settings
from flywheel.policy import GatePolicy


def test_the_committed_reference_pages_are_current():
    assert reference.stale() == [], "run `python -m flywheel.reference` and commit docs/reference/"


def test_check_fails_on_a_stale_page_and_names_it(tmp_path):
    pages = reference.pages()
    for name, text in pages.items():
        (tmp_path / name).write_text(text)
    assert reference.stale(tmp_path) == []
    (tmp_path / "policy.md").write_text(pages["policy.md"].replace("min_words", "min_wordz"))
    (tmp_path / "cli.md").unlink()
    assert reference.stale(tmp_path) == ["cli.md", "policy.md"]


def test_every_command_has_its_section_and_usage():
    page = reference.pages()["cli.md"]
    commands = list(reference._commands(build_parser()))
    assert len(commands) > 30
    for path, sub, help_ in commands:
        assert f"\n## flywheel {' '.join(path)}\n" in page
        assert help_, f"flywheel {' '.join(path)} has no help line"
        for action in sub._actions:
            for opt in action.option_strings:
                assert opt in page, f"flywheel {' '.join(path)} {opt}"


def test_every_setting_and_policy_key_is_on_its_page():
    conf, pol = reference.pages()["configuration.md"], reference.pages()["policy.md"]
    for env, default, _ in Settings.describe():
        assert f"| `{env}` | `{default}` |" in conf
    policy = GatePolicy()
    for f in dataclasses.fields(GatePolicy):
        section = getattr(policy, f.name)
        if dataclasses.is_dataclass(section):
            assert f"## `[{f.name}]`" in pol
            for g in dataclasses.fields(section):
                assert f"| `{g.name}` |" in pol, f"[{f.name}] {g.name}"
    assert policy.stamp in pol
    # the policy's own words (trailing comments) reach the page
    assert "regenerated/abandoned stay for preference pairs and metrics" in pol


def test_the_metrics_page_names_what_serves_each_metric():
    defs = reference.metric_defs()
    page = reference.pages()["metrics.md"]
    for d in defs.values():
        assert f"| `{d.name}` | {d.kind} |" in page
    served = {d.served_by for d in defs.values()}
    assert {"worker", "review page", "dataset builder", "trainer"} <= served


def test_the_site_builds_strictly(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=reference.ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").exists()


def test_the_module_runs_as_a_command():
    r = subprocess.run(
        [sys.executable, "-m", "flywheel.reference", "--check"],
        cwd=reference.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
