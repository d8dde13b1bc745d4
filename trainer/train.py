"""Supervised fine-tuning of a causal LM on (prompt, target) examples: a plain torch loop.

Why not `transformers.Trainer`: it needs `accelerate`, and the loop the flywheel needs is short:
loss on the target tokens only (the prompt is context, not something to learn to write),
deterministic shuffling from the seed, progress reported through a callback (logs and metrics).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from trainer.examples import Example
from trainer.model import LoadedModel

IGNORE = -100


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    learning_rate: float = 3e-3
    batch_size: int = 32
    max_length: int = 256
    weight_decay: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainReport:
    examples: int
    epochs: int
    steps: int
    seconds: float
    first_loss: float
    final_loss: float
    losses: list[float] = field(default_factory=list)  # mean loss per epoch

    @property
    def examples_per_s(self) -> float:
        return self.examples * self.epochs / self.seconds if self.seconds > 0 else 0.0


def trainable(model) -> list:
    """The parameters an optimiser updates: all of them, or only the adapters under LoRA."""
    return [p for p in model.parameters() if p.requires_grad]


def encode(loaded: LoadedModel, ex: Example, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt + target, and labels that ignore the prompt: (input_ids, labels)."""
    tok = loaded.tokenizer
    prompt = tok(loaded.prompt_text(ex.prompt), add_special_tokens=False)["input_ids"]
    target = tok(loaded.target_text(ex.target), add_special_tokens=False)["input_ids"]
    ids = (prompt + target)[:max_length]
    labels = ([IGNORE] * len(prompt) + target)[:max_length]
    return ids, labels


def batches(encoded: Sequence[tuple[list[int], list[int]]], batch_size: int, pad_id: int, device: str,
            order: Sequence[int] | None = None):
    """Right-padded tensors (input_ids, attention_mask, labels), `batch_size` examples at a time."""
    import torch

    order = list(order) if order is not None else list(range(len(encoded)))
    for start in range(0, len(order), batch_size):
        chunk = [encoded[i] for i in order[start:start + batch_size]]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
        for row, (x, y) in enumerate(chunk):
            ids[row, :len(x)] = torch.tensor(x)
            mask[row, :len(x)] = 1
            labels[row, :len(y)] = torch.tensor(y)
        yield ids.to(device), mask.to(device), labels.to(device)


def fine_tune(loaded: LoadedModel, examples: Sequence[Example], config: TrainConfig,
              progress: Callable[[int, int, float], None] | None = None) -> TrainReport:
    """Train in place. `progress(epoch, step, loss)` after every step."""
    import torch

    if not examples:
        raise ValueError("no training examples")
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = loaded.model
    pad = loaded.tokenizer.pad_token_id
    encoded = [encode(loaded, ex, config.max_length) for ex in examples]
    params = trainable(model)
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: max(0.05, 1.0 - s / max(1, total)))
    model.train()
    started = time.perf_counter()
    losses, step, first = [], 0, None
    for epoch in range(config.epochs):
        order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch)).tolist()
        epoch_loss, n = 0.0, 0
        for ids, mask, labels in batches(encoded, config.batch_size, pad, loaded.device, order):
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            optimiser.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
            step += 1
            value = float(out.loss.detach())
            first = value if first is None else first
            epoch_loss, n = epoch_loss + value, n + 1
            if progress is not None:
                progress(epoch, step, value)
        losses.append(epoch_loss / max(1, n))
    model.eval()
    return TrainReport(examples=len(encoded), epochs=config.epochs, steps=step, seconds=time.perf_counter() - started,
                       first_loss=first or 0.0, final_loss=losses[-1], losses=losses)


def perplexity(loaded: LoadedModel, examples: Sequence[Example], max_length: int = 256, batch_size: int = 64) -> float:
    """exp of the mean per-token loss on the targets: how surprised the model is by the answers."""
    import torch

    if not examples:
        return float("nan")
    encoded = [encode(loaded, ex, max_length) for ex in examples]
    total, tokens = 0.0, 0
    loaded.model.eval()
    with torch.no_grad():
        for ids, mask, labels in batches(encoded, batch_size, loaded.tokenizer.pad_token_id, loaded.device):
            logits = loaded.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                                     ignore_index=IGNORE, reduction="sum")
            total += float(loss)
            tokens += int((target != IGNORE).sum())
    return math.exp(min(50.0, total / max(1, tokens)))
