"""The trainer section: how a dataset becomes a candidate model, and when a candidate goes forward."""

from __future__ import annotations

from dataclasses import dataclass

from flywheel.policy.loader import Check, at_least, within_01

__all__ = ["PREFERENCE_METHODS", "TrainerPolicy"]

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
    # a training prompt this similar to a golden prompt (word 3-shingles) refuses the dataset
    contamination_jaccard: float = 0.8
    max_new_tokens: int = 32  # longest answer generated for a golden item
    pretrained_finetune: str = "lora"  # a pretrained base trains "lora" (adapters, merged) or "full" (every weight); lora = true forces LoRA on any base
    # full fine-tuning of a pretrained base (learning_rate is the scratch model's)
    pretrained_learning_rate: float = 0.00002
    lora_learning_rate: float = 0.0002  # LoRA on a pretrained base
    # pretrained bases: share of the optimiser steps the rate ramps up linearly (the scratch model: none)
    warmup_ratio: float = 0.03
    # pretrained bases, after warm-up: "cosine" or "linear" decay to 0 (the scratch model: linear to 5 %)
    lr_schedule: str = "cosine"
    grad_accumulation: int = 1  # batches whose gradients add up before one optimiser step
    # optimiser steps between checkpoints under the registry (a crashed cycle resumes there); 0: none
    checkpoint_steps: int = 200
    # on a GPU: forward and backward under bf16 autocast over fp32 weights; "off": fp32 throughout
    mixed_precision: str = "bf16"
    eval_batch_size: int = 16  # golden prompts answered together
    # the paired interval (candidate - incumbent) whose lower bound must clear min_improvement
    promotion_confidence: float = 0.95
    # records near a golden item are dropped; a larger share dropped refuses the dataset
    contamination_max_share: float = 0.2
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

    def check(self, bad: Check) -> None:
        if not 1 <= self.epochs <= 3:
            bad("[trainer] epochs", f"must be within 1..3 (the seed's 1-3 epochs), got {self.epochs}")
        within_01(
            bad,
            ("[trainer] min_improvement", self.min_improvement),
            ("[trainer] max_task_regression", self.max_task_regression),
            ("[trainer] contamination_jaccard", self.contamination_jaccard),
        )
        if self.learning_rate <= 0:
            bad("[trainer] learning_rate", f"must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.lora_dropout < 1.0:
            bad("[trainer] lora_dropout", f"must be within 0..1 (exclusive of 1), got {self.lora_dropout}")
        if self.preference not in PREFERENCE_METHODS:
            bad(
                "[trainer] preference",
                f"must be one of {', '.join(map(repr, PREFERENCE_METHODS))}, got {self.preference!r}",
            )
        if not 1 <= self.dpo_epochs <= 3:
            bad("[trainer] dpo_epochs", f"must be within 1..3, got {self.dpo_epochs}")
        for where, value in [
            ("[trainer] dpo_beta", self.dpo_beta),
            ("[trainer] dpo_learning_rate", self.dpo_learning_rate),
        ]:
            if value <= 0:
                bad(where, f"must be > 0, got {value}")
        at_least(bad, 0, ("[trainer] dpo_nll_weight", self.dpo_nll_weight))
        if not 0 <= self.replay_datasets <= 52:
            bad("[trainer] replay_datasets", f"must be within 0..52, got {self.replay_datasets}")
        at_least(
            bad,
            1,
            ("[trainer] batch_size", self.batch_size),
            ("[trainer] max_length", self.max_length),
            ("[trainer] max_new_tokens", self.max_new_tokens),
            ("[trainer] lora_r", self.lora_r),
            ("[trainer] lora_alpha", self.lora_alpha),
        )
