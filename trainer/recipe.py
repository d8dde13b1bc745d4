"""What training a candidate means under the policy: SFT, then DPO on the pairs, optionally through LoRA.

One function for the cycle and the cold start, so both train the same way and record the same
hyperparameters. The recipe depends on the kind of base (`LoadedModel.base_kind`):

    base kind              method             learning rate              warm-up   decay
    scratch (default)      full               learning_rate (3e-3)       none      linear to 5 %
    pretrained             LoRA (default)     lora_learning_rate (2e-4)  3 %       cosine to 0
    pretrained             full (opt. "full") pretrained_learning_rate   3 %       cosine to 0
                                              (2e-5)

`lora = true` forces LoRA on any base (with learning_rate on the scratch model). LoRA's target
modules default by architecture (Llama-like: q_proj, k_proj, v_proj, o_proj; GPT-2: c_attn, c_proj).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from flywheel.policy import TrainerPolicy
from trainer.adapters import AdapterReport, LoraSettings, adapted
from trainer.examples import Example, Pair
from trainer.model import LoadedModel
from trainer.preference import PreferenceConfig, PreferenceReport, prefer
from trainer.train import SCHEDULES, TrainConfig, TrainReport, fine_tune

FINETUNE_METHODS = ("lora", "full")
PRECISIONS = ("bf16", "off")
TARGETS_BY_ARCHITECTURE = {  # LoRA's default target modules by config.model_type
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen3": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gemma": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gemma2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "phi3": ("qkv_proj", "o_proj"),
    "gpt2": ("c_attn", "c_proj"),
    "gpt_neox": ("query_key_value", "dense"),
}


def check(p: TrainerPolicy) -> None:
    """The trainer keys whose values are names: a bad one is a clear error, not a silent default."""
    for key, value, allowed in (
        ("pretrained_finetune", p.pretrained_finetune, FINETUNE_METHODS),
        ("lr_schedule", p.lr_schedule, ("cosine", "linear")),
        ("mixed_precision", p.mixed_precision, PRECISIONS),
    ):
        if value not in allowed:
            raise ValueError(f"[trainer] {key} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    if p.grad_accumulation < 1 or p.checkpoint_steps < 0 or not 0 <= p.warmup_ratio < 1:
        raise ValueError("[trainer] grad_accumulation must be >= 1, checkpoint_steps >= 0, warmup_ratio in [0, 1)")


def uses_lora(p: TrainerPolicy, base_kind: str) -> bool:
    return bool(p.lora) or (base_kind == "pretrained" and p.pretrained_finetune == "lora")


def train_config(p: TrainerPolicy, base_kind: str = "scratch") -> TrainConfig:
    """The SFT loop's settings for this base kind (module docstring's table)."""
    check(p)
    if base_kind == "pretrained":
        rate = p.lora_learning_rate if uses_lora(p, base_kind) else p.pretrained_learning_rate
        warmup, schedule = p.warmup_ratio, p.lr_schedule
    else:
        rate, warmup, schedule = p.learning_rate, 0.0, "linear_floor"
    assert schedule in SCHEDULES
    return TrainConfig(
        epochs=p.epochs,
        learning_rate=rate,
        batch_size=p.batch_size,
        max_length=p.max_length,
        seed=p.seed,
        warmup_ratio=warmup,
        schedule=schedule,
        grad_accumulation=p.grad_accumulation,
        checkpoint_steps=p.checkpoint_steps,
        mixed_precision=p.mixed_precision,
    )


def preference_config(p: TrainerPolicy) -> PreferenceConfig:
    return PreferenceConfig(
        epochs=p.dpo_epochs,
        learning_rate=p.dpo_learning_rate,
        beta=p.dpo_beta,
        nll_weight=p.dpo_nll_weight,
        batch_size=max(1, p.batch_size // 2),
        max_length=p.max_length,
        seed=p.seed,
    )


def lora_settings(p: TrainerPolicy, base_kind: str = "scratch", model_type: str = "") -> LoraSettings | None:
    if not uses_lora(p, base_kind):
        return None
    targets = tuple(p.lora_targets) or (
        TARGETS_BY_ARCHITECTURE.get(model_type, ()) if base_kind == "pretrained" else ()
    )
    return LoraSettings(p.lora_r, p.lora_alpha, p.lora_dropout, targets)


def hyperparameters(p: TrainerPolicy, base_kind: str = "scratch", model_type: str = "") -> dict[str, str]:
    """Everything that decided the weights, as the models event's string map."""
    out = {k: str(v) for k, v in train_config(p, base_kind).to_dict().items()}
    out["base_kind"] = base_kind
    lora = lora_settings(p, base_kind, model_type)
    out["lora"] = (
        "off"
        if lora is None
        else f"r={lora.r},alpha={lora.alpha},dropout={lora.dropout},targets={','.join(lora.targets) or 'default'}"
    )
    out["preference"] = p.preference
    out["replay_datasets"] = str(p.replay_datasets)
    if p.preference != "off":
        out.update(
            {
                f"dpo_{k}": str(v)
                for k, v in asdict(preference_config(p)).items()
                if k in ("epochs", "learning_rate", "beta", "nll_weight")
            }
        )
    return out


@dataclass
class TrainingOutcome:
    sft: TrainReport
    preference: PreferenceReport | None  # None when the policy says off or the dataset has no pairs
    adapters: AdapterReport | None  # None without LoRA

    @property
    def examples_per_s(self) -> float:
        return self.sft.examples_per_s

    base_kind: str = "scratch"

    def summary(self) -> dict:
        r = self.sft
        out = {
            "losses": r.losses,
            "examples_per_s": r.examples_per_s,
            "base_kind": self.base_kind,
            "training": {
                "max_length": r.max_length,
                "prompt_truncated": r.prompt_truncated,
                "too_long": r.too_long,
                "tokens": r.tokens,
                "steps": r.steps,
                "resumed_from_step": r.resumed_from,
                "tokens_per_s": r.tokens / r.seconds if r.seconds > 0 else 0.0,
            },
        }
        if self.preference is not None:
            r = self.preference
            out["preference"] = {
                "pairs": r.pairs,
                "losses": r.losses,
                "accuracy_before": r.accuracy_before,
                "accuracy_after": r.accuracy_after,
                "margin_before": r.margin_before,
                "margin_after": r.margin_after,
                "pairs_per_s": r.pairs_per_s,
            }
        if self.adapters is not None:
            out["lora"] = {"trainable_parameters": self.adapters.trainable, "parameters": self.adapters.total}
        return out


def train(
    loaded: LoadedModel,
    examples: Sequence[Example],
    pairs: Sequence[Pair],
    policy: TrainerPolicy,
    progress: Callable[[int, int, float], None] | None = None,
    checkpoint_dir=None,
) -> TrainingOutcome:
    """Train `loaded` in place, with the recipe of its base kind; with LoRA the adapters are merged
    before this returns. `checkpoint_dir`: where a crashed run's checkpoint is found (trainer/train.py)."""
    kind = getattr(loaded, "base_kind", "scratch")
    lora = lora_settings(policy, kind, loaded.model.config.model_type)
    if (
        lora is not None
    ):  # the adapters' random initial values: from the policy's seed, not from what the process drew before
        import torch

        torch.manual_seed(policy.seed)
    with adapted(loaded, lora) if lora is not None else contextlib.nullcontext() as adapters:
        sft = fine_tune(loaded, examples, train_config(policy, kind), progress, checkpoint_dir)
        preference = None
        if policy.preference == "dpo" and pairs:
            preference = prefer(loaded, pairs, preference_config(policy), progress)
    return TrainingOutcome(sft, preference, adapters, kind)
