"""The promotion gate reads a paired confidence interval, not a point delta (issue 22)."""

from __future__ import annotations

import dataclasses
import random

from flywheel.policy import TrainerPolicy
from trainer.evaluate import EvalResult
from trainer.promotion import decide, decide_paired, paired_interval

POLICY = TrainerPolicy()


def result(scores, tasks):
    return EvalResult(
        overall=sum(scores) / len(scores),
        by_task={},
        items=len(scores),
        items_by_task={},
        scores=list(scores),
        item_ids=[f"g{i}" for i in range(len(scores))],
        item_tasks=list(tasks),
    )


def test_one_item_of_58_gained_is_noise_and_refused():
    incumbent = [1.0] * 29 + [0.0] * 29
    candidate = list(incumbent)
    candidate[29] = 1.0  # +1 item: +1.7 points
    d = decide(result(candidate, ["t"] * 58), result(incumbent, ["t"] * 58), POLICY)
    assert not d.passed and d.reasons[0].startswith("overall_gain_not_confident")
    assert abs(d.deltas["overall"] - 1 / 58) < 1e-9
    assert d.interval["delta_low"] <= 0.0 < d.interval["delta_high"] and d.interval["paired_items"] == 58


def test_a_clear_gain_is_promoted_with_its_interval():
    incumbent = [1.0] * 20 + [0.0] * 38
    candidate = [1.0] * 40 + [0.0] * 18  # +20 items
    d = decide(result(candidate, ["a", "b"] * 29), result(incumbent, ["a", "b"] * 29), POLICY)
    assert d.passed, d.reasons
    assert 0.0 < d.interval["delta_low"] < d.deltas["overall"] < d.interval["delta_high"]
    assert "delta_low.task.a" in d.interval and "task.a" in d.deltas


def test_a_task_that_regresses_with_confidence_refuses_even_a_better_overall():
    tasks = ["up"] * 40 + ["down"] * 20
    incumbent = [0.0] * 40 + [1.0] * 20
    candidate = [1.0] * 40 + [0.0] * 20
    d = decide_paired(candidate, incumbent, tasks, POLICY)
    assert not d.passed and any(r.startswith("task_regressed:down") for r in d.reasons)


def test_false_promotions_under_zero_effect_stay_near_2_5_percent():
    """Simulate 1,000 golden sets of 58 items where the candidate is exactly as good as the
    incumbent (each item flips either way with the same chance): the gate promotes at most
    about 2.5 % of them (the one-sided error of a 95 % interval), with room for simulation noise."""
    rng = random.Random(7)
    promoted = 0
    runs = 1000
    for _ in range(runs):
        incumbent = [float(rng.random() < 0.5) for _ in range(58)]
        candidate = [x if rng.random() < 0.6 else float(rng.random() < 0.5) for x in incumbent]
        promoted += decide_paired(candidate, incumbent, ["t"] * 58, POLICY).passed
    rate = promoted / runs
    assert rate <= 0.025 + 3 * (0.025 * 0.975 / runs) ** 0.5, rate  # 2.5 % + 3 standard errors (about 4 %)


def test_interval_is_deterministic_and_min_improvement_is_read_off_the_lower_bound():
    d = [0.0] * 30 + [1.0] * 20
    assert paired_interval(d) == paired_interval(d)
    strict = dataclasses.replace(POLICY, min_improvement=0.5)
    assert not decide_paired([1.0] * 50, [0.0] * 30 + [1.0] * 20, ["t"] * 50, strict).passed
