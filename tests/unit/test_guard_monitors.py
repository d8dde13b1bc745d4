"""The negative-flywheel monitors on constructed counts: each fires on the shift it is for, stays
quiet on steady traffic (measured over many simulated windows), and never judges on too little data."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from schemas.records import TrainingCandidate
from flywheel.policy import MONITORS, GatePolicy, GuardPolicy, PolicyError
from streams.guards.counts import OTHER, Cap, candidate_fields
from streams.guards.monitors import chi2_sf, evaluate, merge, mix_shift, rate_above, satisfaction, two_proportions

POLICY = GuardPolicy()
ACTIONS = {"accepted": 0.5, "copied": 0.1, "corrected": 0.1, "regenerated": 0.1, "abandoned": 0.1, "none": 0.1}
TASKS = {"qa": 0.5, "sql": 0.3, "support": 0.2}


def draw(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


def traffic(
    rng: random.Random,
    n: int,
    actions=ACTIONS,
    tasks=TASKS,
    pass_rate: float = 0.7,
    dead_rate: float = 0.0,
    empty_rate: float = 0.0,
    versions=(("v1", 0.6),),
) -> dict[str, int]:
    """n joined requests as the agent counts them: actions, task types, gate decisions, dead letters,
    per-version acceptance."""
    out: dict[str, int] = {"requests": n}
    for _ in range(n):
        a, t = draw(rng, actions), draw(rng, tasks)
        version, acceptance = versions[rng.randrange(len(versions))]
        accepted = rng.random() < acceptance
        for k in (
            f"action:{a}",
            f"task:{t}",
            f"v:{version}:requests",
            "passed" if rng.random() < pass_rate else "rejected",
        ):
            out[k] = out.get(k, 0) + 1
        if accepted:
            out[f"v:{version}:accepted"] = out.get(f"v:{version}:accepted", 0) + 1
        if rng.random() < dead_rate:
            out["deadletters"] = out.get("deadletters", 0) + 1
        if rng.random() < empty_rate:
            out["empty"] = out.get("empty", 0) + 1
    return out


def signals(recent, baseline, policy=POLICY):
    return {s.monitor: s for s in evaluate(recent, baseline, policy)}


def test_every_monitor_is_judged_in_order_and_steady_traffic_fires_none():
    rng = random.Random(1)
    out = evaluate(traffic(rng, 1000), traffic(rng, 10000), POLICY)
    assert [s.monitor for s in out] == list(MONITORS)
    assert all(s.judged and not s.firing for s in out), [s.to_dict() for s in out]


def test_steady_traffic_false_alarms_stay_below_alpha_over_many_windows():
    rng = random.Random(2)
    policy = replace(POLICY, alpha=0.01)
    baseline = traffic(rng, 5000)
    fired = {m: 0 for m in MONITORS}
    runs = 300
    for _ in range(runs):
        for s in evaluate(traffic(rng, 300), baseline, policy):
            fired[s.monitor] += s.firing
    assert all(n <= 0.01 * runs + 2 for n in fired.values()), fired  # the bound and the test together: ~never


def test_deadletter_and_empty_rates_fire_only_when_shown_above_their_bounds():
    rng = random.Random(3)
    base = traffic(rng, 5000)
    s = signals(traffic(rng, 1000, dead_rate=0.10, empty_rate=0.12), base)
    assert s["deadletter_rate"].firing and s["empty_rate"].firing
    assert 0.07 < s["deadletter_rate"].value < 0.13
    near = signals({"requests": 300, "deadletters": 7}, base)["deadletter_rate"]  # 2.3 % against 2 %: not shown
    assert near.judged and near.value > POLICY.max_deadletter_rate and not near.firing
    few = signals({"requests": 50, "deadletters": 40}, base)["deadletter_rate"]
    assert not few.judged and not few.firing


def test_pass_rate_shift_fires_both_ways():
    rng = random.Random(4)
    base = traffic(rng, 5000, pass_rate=0.7)
    assert signals(traffic(rng, 1000, pass_rate=0.4), base)["pass_rate_shift"].firing  # the filter got too strict
    assert signals(traffic(rng, 1000, pass_rate=0.95), base)["pass_rate_shift"].firing  # or let everything through
    steady = signals(traffic(rng, 1000, pass_rate=0.68), base)["pass_rate_shift"]
    assert steady.judged and not steady.firing


def test_action_and_task_mix_shifts():
    rng = random.Random(5)
    base = traffic(rng, 5000)
    abandoning = {**ACTIONS, "accepted": 0.2, "abandoned": 0.4}
    s = signals(traffic(rng, 1000, actions=abandoning), base)
    assert s["action_mix_shift"].firing and not s["task_mix_shift"].firing
    assert s["action_mix_shift"].value == pytest.approx(0.3, abs=0.05)
    s = signals(traffic(rng, 1000, tasks={"qa": 0.1, "sql": 0.2, "support": 0.2, "new-task": 0.5}), base)
    assert s["task_mix_shift"].firing and not s["action_mix_shift"].firing


def test_acceptance_drop_names_the_version_that_fell_and_ignores_one_without_a_baseline():
    rng = random.Random(6)
    base = traffic(rng, 6000, versions=(("v1", 0.7), ("v2", 0.6)))
    s = signals(traffic(rng, 2000, versions=(("v1", 0.45), ("v2", 0.6), ("v3", 0.1))), base)["acceptance_drop"]
    assert s.firing and s.detail.startswith("v1:") and s.value == pytest.approx(0.25, abs=0.06)
    s = signals(traffic(rng, 2000, versions=(("v1", 0.7), ("v3", 0.1))), base)["acceptance_drop"]
    assert s.judged and not s.firing and s.detail.startswith("v1:")  # v3 is new: nothing to fall from


def test_satisfaction_per_version():
    figures = satisfaction(
        {
            "v:v1:requests": 200,
            "v:v1:accepted": 150,
            "v:v1:thumbs_up": 15,
            "v:v1:thumbs_down": 5,
            "v:ns:v2:requests": 10,
            "requests": 210,
        }
    )
    assert figures["v1"] == {"requests": 200.0, "acceptance": 0.75, "feedback": 0.1, "positive": 0.75}
    assert figures["ns:v2"]["acceptance"] == 0.0 and figures["ns:v2"]["positive"] == 0.0  # a version may hold a colon


def test_statistics():
    assert chi2_sf(3.84, 1) == pytest.approx(0.05, rel=0.1)
    assert chi2_sf(20.09, 8) == pytest.approx(0.01, rel=0.1)
    assert chi2_sf(0.0, 3) == 1.0
    assert rate_above(30, 1000, 0.02) < 0.05 < rate_above(22, 1000, 0.02)
    assert two_proportions(500, 1000, 500, 1000) == pytest.approx(1.0)
    assert two_proportions(400, 1000, 500, 1000) < 1e-4
    assert mix_shift({"a": 50, "b": 50}, {"a": 50, "b": 50}) == (0.0, pytest.approx(1.0))
    assert mix_shift({"a": 100}, {"b": 100})[0] == 1.0
    assert merge([{"a": 1}, {"a": 2, "b": 1}]) == {"a": 3, "b": 1}


def candidate(**kw) -> TrainingCandidate:
    base = dict(
        request_id="r",
        timestamp=0,
        user_id="u",
        session_id="s",
        prompt="p",
        response="fine answer",
        user_action="accepted",
        task_type="qa",
        model_version="v1",
    )
    return TrainingCandidate(**{**base, **kw})


def test_candidate_fields_and_caps():
    tasks, versions = Cap(2), Cap(2)
    f = candidate_fields(candidate(actions=["copied", "thumbs_up"]), tasks, versions)
    assert f == {
        "requests": 1,
        "action:accepted": 1,
        "task:qa": 1,
        "v:v1:requests": 1,
        "v:v1:accepted": 1,
        "v:v1:thumbs_up": 1,
    }
    f = candidate_fields(candidate(user_action="", response="  ", task_type="sql", model_version=""), tasks, versions)
    assert f["action:none"] == 1 and f["empty"] == 1 and f["v:-:empty"] == 1 and f["task:sql"] == 1
    f = candidate_fields(candidate(user_action="shrugged", task_type="poetry", model_version="v9"), tasks, versions)
    assert f["action:other"] == 1 and f[f"task:{OTHER}"] == 1 and f[f"v:{OTHER}:requests"] == 1  # past the caps


def test_guard_policy_keys_are_checked():
    p = GatePolicy.from_dict(
        {"guards": {"max_pass_rate_shift": 0.3, "actions": {"task_mix_shift": ["hold_datasets"]}}}
    )
    assert p.guards.actions["task_mix_shift"] == ("hold_datasets",)
    assert p.guards.actions["deadletter_rate"] == ("hold_datasets",)  # the other monitors keep their defaults
    assert GatePolicy.from_dict({}).to_toml() and GatePolicy.load(None).guards == GuardPolicy()
    for raw, msg in [
        ({"max_empty_rate": 1.5}, "[guards] max_empty_rate"),
        ({"bucket_s": 0}, "[guards] bucket_s"),
        ({"actions": {"vibes": []}}, "unknown monitor"),
        ({"actions": {"empty_rate": ["page"]}}, "unknown actions"),
        ({"alpha": 0}, "[guards] alpha"),
        ({"evaluate_interval_s": 0}, "[guards] evaluate_interval_s"),
    ]:
        with pytest.raises(PolicyError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            GatePolicy.from_dict({"guards": raw})
