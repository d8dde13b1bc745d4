"""LoRA (peft): train small low-rank adapters instead of every weight, then merge them back.

Merged, because a registered model must be a plain Hugging Face directory: the next cycle fine-tunes
it and the app serves it without knowing it was adapted.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

from trainer.model import LoadedModel


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: Sequence[str] = ()  # module names; empty: peft's default for the architecture


@dataclass
class AdapterReport:
    trainable: int  # parameters the optimiser updated
    total: int


@contextmanager
def adapted(loaded: LoadedModel, settings: LoraSettings) -> Iterator[AdapterReport]:
    """Inside: `loaded.model` carries trainable adapters and nothing else trains. After: merged, plain."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        task_type="CAUSAL_LM",
        target_modules=list(settings.targets) or None,
        fan_in_fan_out=loaded.model.config.model_type == "gpt2",
    )  # GPT-2 keeps weights as Conv1D
    base = loaded.model
    loaded.model = get_peft_model(base, config)
    trainable, total = loaded.model.get_nb_trainable_parameters()
    try:
        yield AdapterReport(trainable=trainable, total=total)
    finally:
        loaded.model = loaded.model.merge_and_unload()
        loaded.model.eval()
