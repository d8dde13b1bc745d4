"""The gate policy file: defaults are the seed's numbers, mistakes are named, the stamp changes with any value."""

from __future__ import annotations

import json

import pytest

from flywheel.cli import main
from flywheel.policy import GatePolicy, PolicyError


def test_defaults_are_the_seeds_numbers():
    p = GatePolicy()
    assert p.action.allowed == ("accepted", "copied", "corrected")
    assert (p.length.min_words, p.length.min_tokens) == (20, 50)
    assert p.quality.threshold == 0.6
    assert p.toxicity.threshold == 0.1
    assert p.keep_rate.band == (0.2, 0.3)


def test_a_file_changes_only_what_it_names(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text(
        'version = "team-7"\n[quality]\nthreshold = 0.7\n[quality.action_base]\naccepted = 0.9\n'
        '[keep_rate]\nband = [0.1, 0.25]\n[pii]\nmode = "reject"\n'
    )
    p = GatePolicy.load(f)
    assert p.version == "team-7" and p.quality.threshold == 0.7 and p.pii.mode == "reject"
    assert p.quality.action_base["accepted"] == 0.9 and p.quality.action_base["corrected"] == 0.8
    assert p.keep_rate.band == (0.1, 0.25) and p.toxicity.threshold == 0.1


def test_stamp_changes_with_any_value_even_under_the_same_version():
    a = GatePolicy.from_dict({"version": "v1"})
    b = GatePolicy.from_dict({"version": "v1", "toxicity": {"threshold": 0.2}})
    assert a.stamp.startswith("v1@") and b.stamp.startswith("v1@") and a.stamp != b.stamp
    assert GatePolicy.from_dict({"version": "v1"}).stamp == a.stamp


@pytest.mark.parametrize(
    "text, message",
    [
        ("[qualty]\nthreshold = 0.5\n", "unknown key 'qualty' (did you mean 'quality'?)"),
        ("[quality]\ntreshold = 0.5\n", "[quality]: unknown key 'treshold' (did you mean 'threshold'?)"),
        ("[quality]\nthreshold = 'high'\n", "quality.threshold must be a number, got str"),
        ("[quality]\nthreshold = 1.5\n", "[quality] threshold: must be within 0..1, got 1.5"),
        ("[action]\nallowed = ['accepted', 'liked']\n", "unknown actions ['liked']"),
        ("[keep_rate]\nband = [0.4, 0.2]\n", "[keep_rate] band: must be [low, high]"),
        ("[keep_rate]\nband = [0.4]\n", "keep_rate.band must be an array of 2"),
        ("[pii]\nmode = 'mask'\n", "[pii] mode: must be 'redact' or 'reject'"),
        ("[toxicity]\nfields = ['prompt', 'title']\n", "[toxicity] fields: must be some of"),
        ("[length]\nenabled = 'yes'\n", "length.enabled must be true or false, got str"),
        ("version = ''\n", "version: must not be empty"),
        ("[quality\n", "not valid TOML"),
    ],
)
def test_mistakes_are_named(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(PolicyError) as err:
        GatePolicy.load(f)
    assert message in str(err.value) and str(f) in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_policy_show_and_check(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FLYWHEEL_GATE_POLICY", raising=False)
    assert main(["policy", "show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["stamp"] == GatePolicy().stamp and shown["quality"]["threshold"] == 0.6

    good = tmp_path / "good.toml"
    good.write_text('version = "x"\n[toxicity]\nthreshold = 0.3\n')
    assert main(["policy", "check", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["stamp"] == GatePolicy.load(good).stamp

    monkeypatch.setenv("FLYWHEEL_GATE_POLICY", str(good))
    assert main(["policy", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["toxicity"]["threshold"] == 0.3

    bad = tmp_path / "bad.toml"
    bad.write_text("[toxicity]\nthreshold = 2\n")
    assert main(["policy", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "[toxicity] threshold: must be within 0..1, got 2" in err
    assert main(["policy", "check", str(tmp_path / "missing.toml")]) == 2
    assert "no such policy file" in capsys.readouterr().err


def test_the_shipped_policy_file_names_every_key_at_its_default():
    """deploy/gate-policy.toml is the reference people copy: it must stay complete and true."""
    import tomllib
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "deploy" / "gate-policy.toml"
    shipped = GatePolicy.load(path)
    assert shipped.stamp == GatePolicy().stamp

    def keys(d, prefix=""):
        return {prefix + k for k, v in d.items()} | {
            x for k, v in d.items() if isinstance(v, dict) for x in keys(v, prefix + k + ".")
        }

    assert keys(tomllib.loads(path.read_text())) == keys(GatePolicy().to_dict())


def test_the_policys_entity_names_are_the_redactors():
    """`[pii] entities` is checked in the ground layer against the names it may hold; those must be
    exactly what the redactor's recognizers find."""
    from flywheel.policy import PII_ENTITIES
    from streams.gate.pii import SUPPORTED_ENTITIES

    assert sorted(PII_ENTITIES) == sorted(SUPPORTED_ENTITIES)
