"""Label rules: precedence, explicit signals, preference pairs, and regeneration pairing."""

from __future__ import annotations

import pytest

from schemas.records import Interaction, UserAction
from streams.join.labels import build_candidate, pair_key, pair_regenerations

MIN = 60_000
T0 = 1_700_000_000_000
SETTLE = 30 * MIN


def interaction(rid="r1", t=T0, session="s1", prompt="What is 2+2?", response="4"):
    return Interaction(rid, session, "u1", t, "m1", prompt, response, task_type="math")


def act(action, dt=MIN, **kw):
    return UserAction("r1", "u1", T0 + dt, action, **kw)


def label(actions, **kw):
    return build_candidate(interaction(**kw), actions, settle_window_ms=SETTLE, settled_at=T0 + SETTLE)


@pytest.mark.parametrize(
    "actions, user_action, lab, target",
    [
        ([], "abandoned", "negative", None),
        ([act("accepted")], "accepted", "sft_positive", "4"),
        ([act("copied")], "copied", "sft_positive", "4"),
        ([act("regenerated")], "regenerated", "negative", None),
        ([act("abandoned")], "abandoned", "negative", None),
        ([act("accepted", 2 * MIN), act("copied", MIN)], "copied", "sft_positive", "4"),
        ([act("regenerated"), act("accepted", 2 * MIN)], "accepted", "sft_positive", "4"),
        ([act("copied"), act("corrected", 2 * MIN, correction="four")], "corrected", "sft_correction", "four"),
        ([act("thumbs_up")], "thumbs_up", "feedback_positive", "4"),
        ([act("thumbs_down")], "thumbs_down", "negative", None),
        ([act("rated", rating=5.0)], "rated", "feedback_positive", "4"),
        ([act("rated", rating=3.0)], "rated", "unlabeled", None),
        ([act("rated", rating=1.0)], "rated", "negative", None),
        ([act("accepted"), act("thumbs_down", 2 * MIN)], "accepted", "sft_positive", "4"),
        ([act("accepted", SETTLE + 1)], "abandoned", "negative", None),  # outside the window
    ],
)
def test_precedence_and_labels(actions, user_action, lab, target):
    c = label(actions)
    assert (c.user_action, c.label, c.target) == (user_action, lab, target)


def test_correction_makes_a_preference_pair_and_keeps_signals():
    c = label([act("corrected", correction="four"), act("thumbs_down", 2 * MIN), act("rated", 3 * MIN, rating=2.0)])
    assert (c.pair_chosen, c.pair_rejected, c.correction) == ("four", "4", "four")
    assert c.thumbs == -1 and c.rating == 2.0 and c.time_to_action_ms == MIN
    assert c.actions == ["corrected", "thumbs_down", "rated"]


def test_a_later_correction_replaces_an_earlier_one():
    c = label([act("corrected", MIN, correction="3+1"), act("corrected", 2 * MIN, correction="four")])
    assert c.target == "four"


def test_pair_key_ignores_case_and_spacing_and_needs_a_session():
    assert pair_key("s1", "What is  2+2?") == pair_key("s1", "what is 2+2? ")
    assert pair_key("s1", "a") != pair_key("s2", "a")
    assert pair_key("", "a") == ""


def _cand(rid, t, action, session="s1", prompt="What is 2+2?"):
    acts = [] if action == "abandoned" else [UserAction(rid, "u1", t + MIN, action)]
    return build_candidate(
        interaction(rid, t, session, prompt, response=f"answer {rid}"),
        acts,
        settle_window_ms=SETTLE,
        settled_at=t + SETTLE,
    )


def test_regenerated_pairs_with_the_next_accepted_response_of_the_same_session_and_prompt():
    cands = [
        _cand("a", T0, "regenerated"),
        _cand("b", T0 + MIN, "regenerated"),
        _cand("c", T0 + 2 * MIN, "accepted"),
        _cand("other-session", T0 + MIN, "accepted", session="s2"),
        _cand("other-prompt", T0 + MIN, "accepted", prompt="What is 3+3?"),
        _cand("lonely", T0, "regenerated", session="s3"),
    ]
    pairs = pair_regenerations(reversed(cands), max_gap_ms=SETTLE)  # order of arrival does not matter
    assert sorted((r.request_id, c.request_id) for r, c in pairs) == [("a", "c"), ("b", "c")]


def test_regeneration_pairing_respects_the_gap():
    cands = [_cand("a", T0, "regenerated"), _cand("c", T0 + 2 * SETTLE, "accepted")]
    assert pair_regenerations(cands, max_gap_ms=SETTLE) == []
