"""Cold start (the seed's Section 07): model v1 from synthetic examples and manual labels, before
any traffic. Builds the default small model (or fine-tunes a given base directory), evaluates it on
the golden set (adding the synthetic tasks' held-out items when the set is empty), registers it
and makes it the production model."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Sequence

from schemas.records import ModelEvent
from flywheel.policy import TrainerPolicy
from trainer import recipe, synthetic
from trainer import promotion
from trainer.contamination import ContaminationIndex, TooContaminated, drop
from trainer.cycle import Refused, now_ms
from trainer.evaluate import evaluate
from trainer.examples import Example
from trainer.golden import GoldenStore
from trainer.model import build_default, file_hashes, load, save
from trainer.registry import Registry

log = logging.getLogger("flywheel.trainer")


@dataclass
class BootstrapResult:
    version: str
    event: ModelEvent
    examples_per_s: float


def bootstrap(
    registry: Registry,
    golden: GoldenStore,
    policy: TrainerPolicy,
    synthetic_n: int,
    labels: Sequence[Example] = (),
    tasks: Sequence[str] = tuple(synthetic.TASKS),
    base: str = "",
    progress=None,
) -> BootstrapResult:
    examples = synthetic.generate(synthetic_n, tasks, seed=policy.seed) + list(labels)
    if not examples:
        raise ValueError("nothing to train on: give --synthetic N > 0 or --labels FILE")
    golden_version, items = golden.current()
    if not items:
        golden_version = golden.add(synthetic.golden(tasks))
        golden_version, items = golden.current()
    try:  # examples too close to a golden item are dropped; too many refuse the cold start
        (examples,), dropped = drop(
            ContaminationIndex(items, threshold=policy.contamination_jaccard),
            (examples,),
            policy.contamination_max_share,
        )
    except TooContaminated as exc:
        raise Refused(f"contaminated: {exc}") from None
    # the tokenizer's vocabulary comes from every built-in task family, not only the ones v1 learns:
    # a later dataset with another task then finds its words whole, not in byte pieces
    corpus = examples + synthetic.generate(2_000, tuple(synthetic.TASKS), seed=policy.seed + 1)
    if base:  # an imported base by name, or a model directory: fine-tuned with the recipe of its kind
        path, kind = registry.resolve_base(base)
        loaded = load(path)
        loaded.base_kind = kind
        before = evaluate(loaded, items, (), policy.max_new_tokens, policy=policy)  # the first model meets its base
    else:
        before = None
        loaded = build_default(e.prompt + " " + e.target for e in corpus)
    trained = recipe.train(loaded, examples, (), policy, progress)
    report = trained.sft
    result = evaluate(loaded, items, examples[: max(1, len(examples) // 10)], policy.max_new_tokens, policy=policy)
    decision = promotion.decide(result, before, policy)
    if before is not None and not decision.passed:  # no confident gain over the base: production starts from the base
        log.warning(
            "bootstrap: fine-tuned model is not better than its base; the base goes to production",
            extra={"reasons": decision.reasons},
        )
        loaded, result = load(path), before
    version = registry.next_version()
    staged = registry.staging(version)
    save(loaded, staged)
    event = ModelEvent(
        event_id=uuid.uuid4().hex,
        event_type="bootstrap",
        created_at=now_ms(),
        version=version,
        base_model=base or "default-gpt2",
        gate_passed=True,
        reasons=["cold_start"] + (decision.reasons if before is not None else []),
        metrics={
            **result.metrics(),
            **decision.interval,
            "contamination_dropped": float(dropped.hits),
            "eval_seconds": result.seconds,
        },
        hyperparameters={
            **recipe.hyperparameters(policy, loaded.base_kind),
            "synthetic": str(synthetic_n),
            "labels": str(len(labels)),
            "tasks": ",".join(tasks),
        },
        file_hashes=file_hashes(staged),
        golden_version=golden_version or "",
        examples=report.examples,
        train_seconds=report.seconds,
    )
    registry.register(
        version,
        staged,
        {
            **event.to_dict(),
            "status": "production",
            **trained.summary(),
            "base_kind": loaded.base_kind,
            "base_source": base or "",
            "base_trained": before is None or decision.passed,
        },
    )
    registry.set_production(version)
    log.info(
        "bootstrap model registered",
        extra={"version": version, "overall": round(result.overall, 4), "examples": report.examples},
    )
    return BootstrapResult(version, event, report.examples_per_s)
