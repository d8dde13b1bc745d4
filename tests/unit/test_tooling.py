"""The house rules that tools keep, all configured in pyproject.toml: the import layers (import-linter),
lint and format (ruff), and types on schemas/ and the ground layer (mypy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_the_import_layers_hold():
    r = run("lint-imports", "--no-cache")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "0 broken" in r.stdout


def test_ruff_finds_nothing():
    r = run("ruff", "check", "--no-cache", ".")
    assert r.returncode == 0, r.stdout[-4000:]


def test_the_tree_is_formatted():
    r = run("ruff", "format", "--check", "--no-cache", ".")
    assert r.returncode == 0, r.stdout[-4000:]


def test_mypy_passes_on_the_typed_layers():
    r = run("mypy")
    assert r.returncode == 0, r.stdout[-4000:]
