"""What training a candidate means under the policy: SFT, then DPO on the pairs, optionally through LoRA.

One function for the cycle and the cold start, so both train the same way and record the same
hyperparameters.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from streams.gate.policy import TrainerPolicy
from trainer.adapters import AdapterReport, LoraSettings, adapted
from trainer.examples import Example, Pair
from trainer.model import LoadedModel
from trainer.preference import PreferenceConfig, PreferenceReport, prefer
from trainer.train import TrainConfig, TrainReport, fine_tune


def train_config(p: TrainerPolicy) -> TrainConfig:
    return TrainConfig(epochs=p.epochs, learning_rate=p.learning_rate, batch_size=p.batch_size, max_length=p.max_length,
                       seed=p.seed)


def preference_config(p: TrainerPolicy) -> PreferenceConfig:
    return PreferenceConfig(epochs=p.dpo_epochs, learning_rate=p.dpo_learning_rate, beta=p.dpo_beta, nll_weight=p.dpo_nll_weight,
                            batch_size=max(1, p.batch_size // 2), max_length=p.max_length, seed=p.seed)


def lora_settings(p: TrainerPolicy) -> LoraSettings | None:
    return LoraSettings(p.lora_r, p.lora_alpha, p.lora_dropout, tuple(p.lora_targets)) if p.lora else None


def hyperparameters(p: TrainerPolicy) -> dict[str, str]:
    """Everything that decided the weights, as the models event's string map."""
    out = {k: str(v) for k, v in train_config(p).to_dict().items()}
    lora = lora_settings(p)
    out["lora"] = "off" if lora is None else f"r={lora.r},alpha={lora.alpha},dropout={lora.dropout},targets={','.join(lora.targets) or 'default'}"
    out["preference"] = p.preference
    out["replay_datasets"] = str(p.replay_datasets)
    if p.preference != "off":
        out.update({f"dpo_{k}": str(v) for k, v in asdict(preference_config(p)).items() if k in ("epochs", "learning_rate", "beta", "nll_weight")})
    return out


@dataclass
class TrainingOutcome:
    sft: TrainReport
    preference: PreferenceReport | None  # None when the policy says off or the dataset has no pairs
    adapters: AdapterReport | None  # None without LoRA

    @property
    def examples_per_s(self) -> float:
        return self.sft.examples_per_s

    def summary(self) -> dict:
        out = {"losses": self.sft.losses, "examples_per_s": self.sft.examples_per_s}
        if self.preference is not None:
            r = self.preference
            out["preference"] = {"pairs": r.pairs, "losses": r.losses, "accuracy_before": r.accuracy_before,
                                 "accuracy_after": r.accuracy_after, "margin_before": r.margin_before,
                                 "margin_after": r.margin_after, "pairs_per_s": r.pairs_per_s}
        if self.adapters is not None:
            out["lora"] = {"trainable_parameters": self.adapters.trainable, "parameters": self.adapters.total}
        return out


def train(loaded: LoadedModel, examples: Sequence[Example], pairs: Sequence[Pair], policy: TrainerPolicy,
          progress: Callable[[int, int, float], None] | None = None) -> TrainingOutcome:
    """Train `loaded` in place; with LoRA the adapters are merged before this returns."""
    lora = lora_settings(policy)
    with (adapted(loaded, lora) if lora is not None else contextlib.nullcontext()) as adapters:
        sft = fine_tune(loaded, examples, train_config(policy), progress)
        preference = None
        if policy.preference == "dpo" and pairs:
            preference = prefer(loaded, pairs, preference_config(policy), progress)
    return TrainingOutcome(sft, preference, adapters)
