"""The gate pipeline: runs the stages over a batch and turns what they said into decisions.

Pure of any transport: the stream agent, `flywheel gate explain` and the benchmark all call
`Gate.decide` on plain candidates. A stage that raises is retried once; if it fails again, every
candidate it was checking is rejected with `filter_error:<stage>` (and, if the failing stage was
the redactor, loses its text), so a broken model never lets a candidate through unchecked and
never stops the worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from schemas.records import TrainingCandidate
from streams.gate.filters import FILTER_ERROR, Item, Stage, build_stages
from streams.gate.keeprate import KeepRate
from flywheel.policy import GatePolicy

log = logging.getLogger("flywheel.gate")


@dataclass
class Decision:
    candidate: TrainingCandidate  # redacted, scored, stamped with the policy
    passed: bool
    reasons: list[str]  # reason codes, in pipeline order, as written on the candidate
    why: list[tuple[str, str]]  # (stage, code) for each reason

    @property
    def removed_by(self) -> str | None:
        """The first stage that rejected it: the funnel counts this one."""
        return self.why[0][0] if self.why else None


def reason_code(stage: str, code: str) -> str:
    return f"{FILTER_ERROR}:{stage}" if code == FILTER_ERROR else code


class Gate:
    def __init__(
        self,
        policy: GatePolicy,
        stages: Sequence[Stage],
        *,
        observe_stage: Callable[[str, float, int], None] | None = None,
        retries: int = 1,
        transient: tuple[type[BaseException], ...] = (),
    ):
        self.policy = policy
        self.stages = list(stages)
        self.stamp = policy.stamp
        self.retries = retries
        # infrastructure errors (Redis unreachable) are not the candidates' fault: they propagate,
        # and the caller retries the whole batch later instead of rejecting it
        self.transient = transient
        self.observe_stage = observe_stage or (lambda stage, seconds, n: None)
        # the keep band is the dataset builder's, over a whole window; the gate only estimates the
        # band's cut and its own pass rate per task type, for the metrics and the stagnation alert
        k = policy.keep_rate
        self.keep_rate: KeepRate | None = KeepRate(k.band, k.window, k.min_samples) if k.enabled else None

    def decide(self, candidates: Sequence[TrainingCandidate]) -> list[Decision]:
        items = [Item(c) for c in candidates]
        for stage in self.stages:
            if not stage.content:
                continue
            todo = items if self.policy.evaluate_all or stage.sees_rejected else [i for i in items if not i.rejected]
            self._run(stage, todo)
        eligible = [i for i in items if not i.rejected]
        for stage in self.stages:
            if stage.content or not eligible:
                continue
            self._run(stage, eligible)
            eligible = [i for i in eligible if not i.rejected]
        if self.keep_rate is not None:
            self._observe_keep_rate(items)
        return [self._decision(item) for item in items]

    def _observe_keep_rate(self, items: list[Item]) -> None:
        scores: dict[str, list[float]] = {}
        passed: dict[str, list[bool]] = {}
        for item in items:
            task = item.candidate.task_type
            scores.setdefault(task, []).append(item.candidate.quality_score)
            passed.setdefault(task, []).append(not item.rejected)
        for task in scores:
            self.keep_rate.observe(task, scores[task])
            self.keep_rate.record(task, passed[task])

    def _run(self, stage: Stage, todo: list[Item]) -> None:
        if not todo:
            return
        started = time.perf_counter()
        for attempt in range(self.retries + 1):
            try:
                stage.run(todo)
                break
            except self.transient:
                raise
            except Exception as exc:  # a model failing: retried, then rejected, never passed
                for item in todo:  # a half-run stage may have added reasons: start the retry clean
                    item.reasons = [r for r in item.reasons if r[0] != stage.name]
                log.warning(
                    "gate stage failed",
                    extra={
                        "stage": stage.name,
                        "attempt": attempt + 1,
                        "error": type(exc).__name__,
                        "candidates": len(todo),
                    },
                )
        else:
            self._run_one_by_one(stage, todo)
        self.observe_stage(stage.name, time.perf_counter() - started, len(todo))

    def _run_one_by_one(self, stage: Stage, todo: list[Item]) -> None:
        """The batch failed twice: one candidate's content may be the cause. Each is tried alone, so
        only those the stage cannot check are rejected with `filter_error` (and, for the redactor,
        lose their text); if the model itself is broken, that is every one of them."""
        failed = []
        for item in todo:
            try:
                stage.run([item])
            except self.transient:
                raise
            except Exception:
                item.reasons = [r for r in item.reasons if r[0] != stage.name]
                failed.append(item)
        for item in failed:
            item.reject(stage.name, FILTER_ERROR)
        if failed:
            stage.on_unchecked(failed)

    def _decision(self, item: Item) -> Decision:
        c = item.candidate
        c.reasons = [reason_code(stage, code) for stage, code in item.reasons]
        c.notes = list(dict.fromkeys(item.notes))
        c.redactions = dict(item.redactions)
        c.policy_version = self.stamp
        c.included_in_training = False  # the dataset builder decides that
        return Decision(c, not item.reasons, c.reasons, list(item.reasons))


def build_gate(
    policy: GatePolicy,
    *,
    redis_client=None,
    key_prefix: str = "flywheel",
    observe_stage: Callable[[str, float, int], None] | None = None,
    spacy_cache: str | None = None,
    threads: int | None = None,
) -> Gate:
    """A gate with the real components the policy asks for. Heavy imports happen here, once."""
    p = policy
    redactor = scorer = index = tokenizer = None
    if p.pii.enabled:
        # spacy_cache: no longer used (the redactor needs no blank pipeline on disk); kept for callers
        from streams.gate.pii import DEFAULT_ENTITIES, Redactor

        redactor = Redactor(
            entities=p.pii.entities or DEFAULT_ENTITIES,
            score_threshold=p.pii.score_threshold,
            ner_model=p.pii.ner_model,
            locations=p.pii.locations,
        )
        if threads is not None and redactor.ner:
            # The NER model's matrix products run in numpy's BLAS, which starts a thread per core:
            # hold it to the gate's threads (FLYWHEEL_GATE_THREADS), as torch is, so that two
            # gate workers on two cores do not each spread over both.
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=threads, user_api="blas")
        redactor.warm_up()  # lazy loads now, not in the first batch
    if p.toxicity.enabled:
        from streams.gate.toxicity import load_scorer

        scorer = load_scorer(p.toxicity.checkpoint, p.toxicity.config_dir, device=p.toxicity.device, threads=threads)
    if p.duplicates.enabled:  # keys only: the dataset builder decides duplicates over a window
        from streams.gate.dedup import DuplicateIndex, MemoryBandStore

        index = DuplicateIndex(
            MemoryBandStore(),
            threshold=p.duplicates.jaccard,
            num_perm=p.duplicates.num_perm,
            shingle_size=p.duplicates.shingle_size,
        )
    if p.length.enabled and p.length.tokenizer:
        tokenizer = load_tokenizer(p.length.tokenizer)
    stages = build_stages(p, redactor=redactor, scorer=scorer, index=index, tokenizer=tokenizer)
    transient: tuple[type[BaseException], ...] = ()
    if redis_client is not None:
        import redis

        transient = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    return Gate(p, stages, observe_stage=observe_stage, transient=transient)


class TokenizerError(ValueError):
    pass


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TokenizerError(
            f"[length] tokenizer {path!r} does not load offline: {str(exc).splitlines()[0]}"
        ) from None
