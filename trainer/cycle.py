"""One trainer cycle: a sealed dataset in, a registered candidate model and a models event out.

Refuse (contaminated, no golden set, no base model, nothing to train on), else fine-tune the
production model on the dataset's SFT train split (with `replay_datasets`, joined by the train
splits of the windows before it, each at its newest version), evaluate candidate and incumbent on
the golden set (and perplexity on the validation split), gate, register. Every outcome becomes a
`ModelEvent`; the caller records it and only then commits the dataset's offset. Each cycle first
flags every registered model whose lineage an erasure has changed (`erasure_flagged`); with
`[trainer] on_erased_lineage = "retrain"` and production flagged, the candidate is fine-tuned
from the newest clean model of production's base chain instead.

Design: docs/concepts/trainer.md (A cycle; Erased lineage)
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, cast

from flywheel.datastore import DatasetReader
from schemas.datasets import PreferenceRow, SftRow
from schemas.records import ModelEvent
from flywheel.policy import TrainerPolicy
from trainer import contamination, promotion, recipe
from trainer.evaluate import evaluate
from trainer.examples import Example, Pair, chat_turns
from trainer.golden import GoldenStore
from trainer.model import file_hashes, load, save
from trainer.registry import ERASURE_POLICIES, Registry

if TYPE_CHECKING:  # annotations only
    from trainer.metrics import TrainerMetrics

log = logging.getLogger("flywheel.trainer")


class Refused(Exception):
    """A dataset the trainer will not train on; the message is the one-line reason."""


@dataclass
class CycleResult:
    outcome: str  # candidate | rejected | refused
    event: ModelEvent
    flagged: list[ModelEvent] = field(default_factory=list)  # erasure_flagged: models whose lineage an erasure reached


def superseded_of(store: DatasetReader) -> dict:
    """The store's record of dataset versions an erasure (or anything else) replaced."""
    return store.superseded() if hasattr(store, "superseded") else {}


def latest_of(store: DatasetReader) -> list[dict]:
    """The newest version of each window's dataset (every listed one for a store without versions)."""
    return store.latest() if hasattr(store, "latest") else store.list()


def now_ms() -> int:
    return int(time.time() * 1000)


def _records(store: DatasetReader, dataset_id: str, kind: str) -> Iterable[dict]:
    import fastavro

    for shard in store.manifest(dataset_id)["shards"]:
        if shard["kind"] == kind and shard["path"].endswith(".avro"):
            with store.open(f"{dataset_id}/{shard['path']}") as f:
                yield from fastavro.reader(f)


def _withdrawn(store: DatasetReader) -> frozenset[str]:
    """Request ids people failed in review (after their window was sealed, too): never trained on."""
    return store.withdrawn() if hasattr(store, "withdrawn") else frozenset()


def sft_examples(store: DatasetReader, dataset_id: str) -> tuple[list[Example], list[Example]]:
    """The dataset's SFT records from its Avro shards, less what review withdrew: (train, validation)."""
    train, validation = [], []
    withdrawn = _withdrawn(store)
    for rec in cast(Iterable[SftRow], _records(store, dataset_id, "sft")):
        if rec.get("request_id") in withdrawn:
            continue
        ex = Example(rec["prompt"], rec["target"], rec.get("task_type") or "", chat_turns(rec.get("messages")))
        (validation if rec.get("split") == "validation" else train).append(ex)
    return train, validation


def preference_pairs(store: DatasetReader, dataset_id: str) -> tuple[list[Pair], list[Pair]]:
    """The dataset's preference pairs (corrections, regenerations): (train, validation)."""
    train, validation = [], []
    withdrawn = _withdrawn(store)
    for rec in cast(Iterable[PreferenceRow], _records(store, dataset_id, "preference")):
        if rec.get("request_id") in withdrawn:
            continue
        pair = Pair(
            rec["prompt"], rec["chosen"], rec["rejected"], rec.get("task_type") or "", chat_turns(rec.get("messages"))
        )
        (validation if rec.get("split") == "validation" else train).append(pair)
    return train, validation


def replay_ids(manifests: Iterable[dict], current: dict, n: int) -> list[str]:
    """The datasets of the `n` windows before `current`'s, newest first: one per window (the last
    listed, a rebuild's), none of the current window or later."""
    start = (current.get("window") or {}).get("start_ms")
    if n <= 0 or start is None:
        return []
    by_window: dict[int, str] = {}
    for m in manifests:
        w = (m.get("window") or {}).get("start_ms")
        if w is not None and w < start:
            by_window[w] = m["dataset_id"]
    return [by_window[w] for w in sorted(by_window, reverse=True)[:n]]


def check_contamination(index: contamination.ContaminationIndex, prompts: Iterable[str]) -> None:
    report = contamination.scan(index, prompts)
    if report.hits:
        raise Refused(f"contaminated: {report.reason()}")


class Cycle:
    def __init__(
        self, registry: Registry, golden: GoldenStore, policy: TrainerPolicy, metrics: TrainerMetrics | None = None
    ):
        self.registry = registry
        self.golden = golden
        self.policy = policy
        self.metrics = metrics

    def refused(self, dataset_id: str, reason: str, first_event_time: int = 0) -> CycleResult:
        log.warning("dataset refused", extra={"dataset_id": dataset_id, "reason": reason})
        if self.metrics is not None:
            self.metrics.cycle("refused")
        return CycleResult(
            "refused",
            ModelEvent(
                event_id=uuid.uuid4().hex,
                event_type="refused",
                created_at=now_ms(),
                dataset_id=dataset_id,
                reasons=[reason],
                first_event_time=first_event_time,
            ),
        )

    def flag_erased_lineage(self, superseded: dict) -> list[ModelEvent]:
        """An `erasure_flagged` event for every model whose lineage holds a dataset version an erasure
        replaced, and that the registry does not record as flagged yet (the caller announces each,
        then records it: `flagged`)."""
        retire = self.policy.on_erased_lineage == "retrain"
        out = []
        for meta in self.registry.list():
            version = meta["version"]
            bad = self.registry.tainted(version, superseded)
            if not bad or (
                set(bad) <= set(meta.get("tainted_by_erasure") or []) and bool(meta.get("retire")) >= retire
            ):
                continue
            log.warning(
                "model trained on data an erasure removed",
                extra={"version": version, "datasets": bad, "retire": retire},
            )
            out.append(
                ModelEvent(
                    event_id=uuid.uuid4().hex,
                    event_type="erasure_flagged",
                    created_at=now_ms(),
                    version=version,
                    dataset_id=meta.get("dataset_id") or "",
                    base_model=meta.get("base_model") or "",
                    gate_passed=bool(meta.get("gate_passed")),
                    reasons=[f"trained on {d}, since replaced by {superseded[d].get('by')} (an erasure)" for d in bad]
                    + [
                        "to retire: the next cycles retrain from a clean model and rollout's promotion of a clean candidate replaces it"
                        if retire
                        else "report only ([trainer] on_erased_lineage = report)"
                    ],
                    datasets=self.registry.lineage(version),
                    tainted_by_erasure=bad,
                )
            )
        return out

    def flagged(self, event: ModelEvent) -> None:
        """Record an announced `erasure_flagged` event in the registry (`tainted_by_erasure`, `retire`)."""
        self.registry.flag_erasure(event.version, event.tainted_by_erasure, self.policy.on_erased_lineage == "retrain")

    def run(self, store: DatasetReader, dataset_id: str, first_event_time: int = 0) -> CycleResult:
        superseded = superseded_of(store)
        flagged = self.flag_erased_lineage(superseded)
        result = self._run(store, dataset_id, first_event_time, superseded)
        result.flagged = flagged
        return result

    def _base(self, superseded: dict) -> tuple[str | None, str]:
        """The model to fine-tune: production, or with on_erased_lineage = "retrain" and production
        flagged, the newest clean model of its base chain. (version, why it is not production)."""
        production = self.registry.production()
        if (
            production is None
            or self.policy.on_erased_lineage != "retrain"
            or not self.registry.tainted(production, superseded)
        ):
            return production, ""
        clean = self.registry.clean_base(production, superseded)
        if clean is None:
            raise Refused(
                f"production {production} was trained on data an erasure removed, and no model of its base chain is clean"
            )
        return clean, f"retrained from {clean}: production {production} was trained on data an erasure removed"

    def _run(self, store: DatasetReader, dataset_id: str, first_event_time: int, superseded: dict) -> CycleResult:
        trained_id = dataset_id
        try:
            if self.policy.on_erased_lineage not in ERASURE_POLICIES:
                raise Refused(
                    f"[trainer] on_erased_lineage must be one of {', '.join(map(repr, ERASURE_POLICIES))}, "
                    f"got {self.policy.on_erased_lineage!r}"
                )
            base_version, retrain = self._base(superseded)
            replaced = store.manifest(dataset_id).get("supersedes") if hasattr(store, "superseded") else None
            if replaced and self.registry.dataset_outcome(replaced) is not None:
                # an erasure's re-seal of a window trained before: the erased records leave through replays
                if not retrain:
                    raise Refused(
                        f"an erasure's re-seal of {replaced}, which was trained before: the models trained on it are "
                        "flagged, and later cycles replay this version"
                        + (
                            ""
                            if self.policy.on_erased_lineage == "retrain"
                            else " ([trainer] on_erased_lineage = report: nothing is retrained)"
                        )
                    )
                newest = latest_of(store)
                trained_id = newest[-1]["dataset_id"] if newest else dataset_id  # the newest window, and its replays
            golden_version, golden = self.golden.current()
            if not golden:
                raise Refused("no golden set: add one with `flywheel golden add FILE`")
            train, validation = sft_examples(store, trained_id)
            if not train:
                raise Refused("the dataset has no SFT training records")
            pairs, pairs_validation = preference_pairs(store, trained_id)
            index = contamination.ContaminationIndex(golden, threshold=self.policy.contamination_jaccard)
            try:  # records too close to a golden item are dropped; too many of them refuse the dataset
                (train, validation, pairs, pairs_validation), dropped = contamination.drop(
                    index, (train, validation, pairs, pairs_validation), self.policy.contamination_max_share
                )
            except contamination.TooContaminated as exc:
                raise Refused(f"contaminated: {exc}") from None
            replayed = self._replay(store, trained_id, index, train)
            if base_version is None:
                raise Refused("no production model to fine-tune: run `flywheel bootstrap` first")
        except Refused as exc:
            return self.refused(dataset_id, str(exc), first_event_time)

        incumbent = load(self.registry.path(base_version))
        before = evaluate(incumbent, golden, validation, self.policy.max_new_tokens, policy=self.policy)
        log.info(
            "training",
            extra={
                "dataset_id": trained_id,
                "base_model": base_version,
                "examples": len(train),
                "pairs": len(pairs),
                "epochs": self.policy.epochs,
                "lora": self.policy.lora,
                "replayed": len(replayed),
                **({"retrain": retrain} if retrain else {}),
            },
        )
        lineage = sorted({trained_id, *replayed} | set(self.registry.lineage(base_version)))
        tainted = sorted(d for d in lineage if (superseded.get(d) or {}).get("reason") == "erasure")
        candidate = incumbent  # trained in place: the incumbent's metrics were taken before
        trained = recipe.train(
            candidate,
            train,
            pairs,
            self.policy,
            self.metrics.step if self.metrics is not None else None,
            self.registry.root / ".checkpoints" / f"{trained_id}-{base_version}",
        )
        report = trained.sft
        if report.prompt_truncated or report.too_long:
            log.warning(
                "examples longer than max_length",
                extra={
                    "dataset_id": trained_id,
                    "max_length": report.max_length,
                    "prompt_truncated": report.prompt_truncated,
                    "too_long_left_out": report.too_long,
                },
            )
        after = evaluate(candidate, golden, validation, self.policy.max_new_tokens, policy=self.policy)
        decision = promotion.decide(after, before, self.policy)  # paired, with its interval
        version = self.registry.next_version()
        staged = self.registry.staging(version)
        save(candidate, staged)
        hashes = file_hashes(staged)
        created = now_ms()
        outcome = "candidate" if decision.passed else "rejected"
        event = ModelEvent(
            event_id=uuid.uuid4().hex,
            event_type=outcome,
            created_at=created,
            version=version,
            dataset_id=trained_id,
            base_model=base_version,
            gate_passed=decision.passed,
            reasons=decision.reasons,
            metrics={
                **after.metrics(),
                **decision.interval,
                "contamination_dropped": float(dropped.hits),
                "eval_seconds": after.seconds,
                "prompt_truncated": float(report.prompt_truncated),
                "too_long": float(report.too_long),
            },
            incumbent_metrics=before.metrics(),
            deltas=decision.deltas,
            hyperparameters=recipe.hyperparameters(
                self.policy, candidate.base_kind, candidate.model.config.model_type
            ),
            file_hashes=hashes,
            golden_version=golden_version or "",
            examples=report.examples,
            train_seconds=report.seconds,
            first_event_time=first_event_time,
            time_to_improvement_ms=(created - first_event_time) if decision.passed and first_event_time else None,
            datasets=lineage,
            tainted_by_erasure=tainted,
        )
        self.registry.register(
            version,
            staged,
            {
                **event.to_dict(),
                "status": outcome,
                **trained.summary(),
                "replayed_datasets": replayed,
                "lineage": lineage,
                **({"retrained": retrain, "ready_dataset_id": dataset_id} if retrain else {}),
            },
        )
        if self.metrics is not None:
            self.metrics.cycle(
                outcome,
                after.metrics(),
                decision.deltas,
                report.examples_per_s,
                report.examples * report.epochs,
                event.time_to_improvement_ms,
            )
        log.info(
            "candidate evaluated",
            extra={
                "dataset_id": trained_id,
                "version": version,
                "outcome": outcome,
                "overall": round(after.overall, 4),
                "delta": round(decision.deltas.get("overall", 0.0), 4),
            },
        )
        return CycleResult(outcome, event)

    def _replay(
        self, store: DatasetReader, dataset_id: str, index: contamination.ContaminationIndex, train: list[Example]
    ) -> list[str]:
        """Adds the earlier windows' SFT train records to `train`; a dataset the golden set now finds
        contaminated (the set grew since) is left out. Returns the ids replayed."""
        if self.policy.replay_datasets <= 0:
            return []
        replayed = []
        # the newest version of each window: never one an erasure replaced (a reader that lists between the
        # new version's publication and the old one's deletion sees both, and takes the new)
        for old in replay_ids(latest_of(store), store.manifest(dataset_id), self.policy.replay_datasets):
            old_train, _ = sft_examples(store, old)
            try:
                check_contamination(index, [e.prompt for e in old_train])
            except Refused as exc:
                log.warning("replay left out", extra={"dataset_id": old, "reason": str(exc)})
                continue
            train += old_train
            replayed.append(old)
        return replayed
