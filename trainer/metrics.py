"""The trainer's Prometheus metrics: model quality and its change per cycle, time to improvement,
training speed and progress."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from trainer.phase import PHASES, phase_of


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.cycles = Counter(
            "flywheel_trainer_cycles",
            "Datasets the trainer finished, by outcome (candidate, rejected, refused, skipped)",
            ["outcome"],
            registry=r,
        )
        self.quality = Gauge(
            "flywheel_model_quality",
            "Golden-set score of the last candidate, overall and per task type",
            ["task_type"],
            registry=r,
        )
        self.delta = Gauge(
            "flywheel_model_quality_delta",
            "Candidate minus incumbent golden score of the last cycle",
            ["task_type"],
            registry=r,
        )
        self.time_to_improvement = Gauge(
            "flywheel_time_to_improvement_seconds",
            "From the first event of the window to the last candidate that passed the gate",
            registry=r,
        )
        self.examples_per_s = Gauge(
            "flywheel_trainer_examples_per_second", "Training examples per second of the last cycle", registry=r
        )
        self.examples = Counter("flywheel_trainer_examples", "Training examples seen (times epochs)", registry=r)
        self.loss = Gauge("flywheel_trainer_loss", "Training loss of the last step", registry=r)
        self.steps = Counter("flywheel_trainer_steps", "Optimiser steps taken", registry=r)
        self.perplexity = Gauge(
            "flywheel_model_validation_perplexity",
            "Perplexity of the last candidate on the dataset's validation split",
            registry=r,
        )

        self.production_quality = Gauge(
            "flywheel_production_quality",
            "Golden-set score (overall) of the production model, as the registry recorded it",
            registry=r,
        )
        self.phase = Gauge(
            "flywheel_phase",
            "1 for the flywheel's current phase by the seed's table (from the production "
            "model's quality: cold_start < 0.7, bootstrap < 0.8, acceleration < 0.9, maturity), 0 for the others",
            ["phase"],
            registry=r,
        )
        self.stagnant = Gauge(
            "flywheel_trainer_stagnant_cycles",
            "Training cycles in a row, up to the last, whose overall "
            "quality delta was not positive (2 or more: stagnation)",
            registry=r,
        )
        self.stagnant_count = 0
        self.production(None)

    def production(self, quality: float | None) -> None:
        if quality is not None:
            self.production_quality.set(quality)
        current = phase_of(quality)
        for name, _ in PHASES:
            self.phase.labels(name).set(1.0 if name == current else 0.0)

    def step(self, _epoch: int, _step: int, loss: float) -> None:
        self.steps.inc()
        self.loss.set(loss)

    def cycle(
        self,
        outcome: str,
        metrics: dict[str, float] | None = None,
        deltas: dict[str, float] | None = None,
        examples_per_s: float | None = None,
        examples: int = 0,
        time_to_improvement_ms: int | None = None,
    ) -> None:
        self.cycles.labels(outcome).inc()
        for k, v in (metrics or {}).items():
            if k == "overall" or k.startswith("task."):
                self.quality.labels(k[5:] if k.startswith("task.") else "all").set(v)
            elif k == "perplexity":
                self.perplexity.set(v)
        for k, v in (deltas or {}).items():
            self.delta.labels(k[5:] if k.startswith("task.") else "all").set(v)
        if outcome in ("candidate", "rejected"):
            self.stagnant_count = 0 if (deltas or {}).get("overall", 0.0) > 0 else self.stagnant_count + 1
            self.stagnant.set(self.stagnant_count)
        if examples_per_s is not None:
            self.examples_per_s.set(examples_per_s)
        if examples:
            self.examples.inc(examples)
        if time_to_improvement_ms is not None:
            self.time_to_improvement.set(time_to_improvement_ms / 1000)
