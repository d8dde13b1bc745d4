"""Label rules: what a request and the user actions inside its settle window make of it.

Precedence of the primary action (highest first): corrected > copied > accepted > regenerated >
abandoned. Thumbs and ratings never replace a primary action: they are kept on the candidate
(`thumbs`, `rating`) and decide the label only when there is none. `build_candidate` makes a
request's candidate (label, SFT target, preference pair, `pair_key`); `pair_regenerations` pairs a
regenerated response with the later accepted one over a window's candidates (the dataset builder
applies it, since the two requests live on different partitions).

The label table and why: docs/concepts/join.md#label-rules
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

from schemas.records import Interaction, TrainingCandidate, UserAction

PRIMARY_PRECEDENCE = ("corrected", "copied", "accepted", "regenerated", "abandoned")
_RANK = {a: i for i, a in enumerate(PRIMARY_PRECEDENCE)}
SFT_ACTIONS = frozenset({"accepted", "copied", "corrected"})

LABEL_SFT_POSITIVE = "sft_positive"
LABEL_SFT_CORRECTION = "sft_correction"
LABEL_FEEDBACK_POSITIVE = "feedback_positive"
LABEL_NEGATIVE = "negative"
LABEL_UNLABELED = "unlabeled"
LABELS = (LABEL_SFT_POSITIVE, LABEL_SFT_CORRECTION, LABEL_FEEDBACK_POSITIVE, LABEL_NEGATIVE, LABEL_UNLABELED)


def normalise_prompt(prompt: str) -> str:
    return " ".join(prompt.lower().split())


def pair_key(session_id: str, prompt: str) -> str:
    """Same session and same prompt (modulo case and spacing): a regeneration and its successor."""
    if not session_id:
        return ""
    h = hashlib.blake2b(f"{session_id}\x00{normalise_prompt(prompt)}".encode(), digest_size=12)
    return h.hexdigest()


def primary_action(actions: Sequence[UserAction]) -> UserAction | None:
    best: UserAction | None = None
    for a in actions:
        rank = _RANK.get(a.action)
        if rank is None:
            continue
        if (
            best is None
            or rank < _RANK[best.action]
            or (rank == _RANK[best.action] and a.event_time > best.event_time)
        ):
            best = a  # same kind twice: the later one wins (a second correction replaces the first)
    return best


def explicit_signals(actions: Sequence[UserAction]) -> tuple[int, float | None, UserAction | None]:
    """(thumbs up minus down, last rating, last explicit feedback action)."""
    thumbs = 0
    rating: float | None = None
    last: UserAction | None = None
    for a in actions:
        if a.action == "thumbs_up":
            thumbs += 1
        elif a.action == "thumbs_down":
            thumbs -= 1
        elif a.action == "rated":
            rating = float(a.rating) if a.rating is not None else rating
        else:
            continue
        if last is None or a.event_time >= last.event_time:
            last = a
    return thumbs, rating, last


def _feedback_label(thumbs: int, rating: float | None) -> str:
    if rating is not None:
        if rating >= 4:
            return LABEL_FEEDBACK_POSITIVE
        if rating <= 2:
            return LABEL_NEGATIVE
    if thumbs > 0:
        return LABEL_FEEDBACK_POSITIVE
    if thumbs < 0:
        return LABEL_NEGATIVE
    return LABEL_UNLABELED


def build_candidate(
    interaction: Interaction,
    actions: Iterable[UserAction],
    *,
    settle_window_ms: int,
    settled_at: int,
) -> TrainingCandidate:
    """The one candidate for a settled request. Actions after the settle window are not counted
    (the join dead-letters them as `late_action`, so the candidate never depends on arrival order)."""
    deadline = interaction.event_time + settle_window_ms
    ordered = sorted(actions, key=lambda a: (a.event_time, a.action))
    inside = [a for a in ordered if a.event_time <= deadline]

    primary = primary_action(inside)
    thumbs, rating, feedback = explicit_signals(inside)
    first_act = min((a.event_time for a in inside), default=None)

    target = pair_chosen = pair_rejected = None
    correction = ""
    if primary is not None:
        user_action = primary.action
        if user_action == "corrected":
            correction = primary.correction or ""
            label, target = LABEL_SFT_CORRECTION, correction
            pair_chosen, pair_rejected = correction, interaction.response
        elif user_action in ("accepted", "copied"):
            label, target = LABEL_SFT_POSITIVE, interaction.response
        else:
            label = LABEL_NEGATIVE
    elif feedback is not None:
        user_action = feedback.action
        label = _feedback_label(thumbs, rating)
        if label == LABEL_FEEDBACK_POSITIVE:
            target = interaction.response
    else:
        user_action, label = "abandoned", LABEL_NEGATIVE

    return TrainingCandidate(
        request_id=interaction.request_id,
        timestamp=interaction.event_time,
        user_id=interaction.user_id,
        session_id=interaction.session_id,
        prompt=interaction.prompt,
        response=interaction.response,
        user_action=user_action,
        correction=correction,
        task_type=interaction.task_type,
        model_version=interaction.model_version,
        variant=interaction.variant,
        label=label,
        target=target,
        pair_chosen=pair_chosen,
        pair_rejected=pair_rejected,
        pair_key=pair_key(interaction.session_id, interaction.prompt),
        actions=[a.action for a in inside],
        thumbs=thumbs,
        rating=rating,
        time_to_action_ms=None if first_act is None else max(0, first_act - interaction.event_time),
        retrieved_context=interaction.retrieved_context,
        uncertainty=interaction.uncertainty,
        latency_ms=interaction.latency_ms,
        metadata=dict(interaction.metadata),
        settled_at=settled_at,
        system=interaction.system,
        messages=interaction.messages,
        tools=interaction.tools,
        response_tool_calls=interaction.response_tool_calls,
    )


def pair_regenerations(
    candidates: Iterable[TrainingCandidate], *, max_gap_ms: int
) -> list[tuple[TrainingCandidate, TrainingCandidate]]:
    """(regenerated, successor) pairs: the successor is the first later request of the same session
    and prompt that the user accepted, copied or corrected, within `max_gap_ms` of event time.

    Deterministic for a given set of candidates, whatever order they arrive in.
    """
    by_key: dict[str, list[TrainingCandidate]] = {}
    for c in candidates:
        if c.pair_key:
            by_key.setdefault(c.pair_key, []).append(c)
    pairs = []
    for group in by_key.values():
        group.sort(key=lambda c: (c.timestamp, c.request_id))
        for i, c in enumerate(group):
            if c.user_action != "regenerated":
                continue
            for later in group[i + 1 :]:
                if later.timestamp - c.timestamp > max_gap_ms:
                    break
                if later.user_action in SFT_ACTIONS:
                    pairs.append((c, later))
                    break
    return pairs
