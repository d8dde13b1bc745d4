"""Supervised fine-tuning of a causal LM on (prompt, target) examples: a plain torch loop.

`fine_tune` trains with the loss on the target tokens only and seeded shuffles, reporting progress
through a callback. A sequence too long for the model loses the prompt's oldest tokens, never the
target's (an example whose target alone does not fit is left out; both are counted in the report).
Warm-up then cosine or linear decay, gradient accumulation, bf16 autocast over fp32 weights on a
GPU; a checkpoint every `checkpoint_steps` optimiser steps lets a run with the same examples and
config resume on the same batches, and is removed when the run completes.

Design (why not transformers.Trainer): docs/concepts/trainer.md#the-training-loop
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
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
    warmup_ratio: float = 0.0
    schedule: str = "linear_floor"  # "linear_floor" (linear to 5 %, the scratch model's), "linear" or "cosine" (to 0)
    grad_accumulation: int = 1
    checkpoint_steps: int = 0  # 0: no checkpoints
    mixed_precision: str = "bf16"  # on a GPU only: "bf16" autocast or "off"

    def to_dict(self) -> dict:
        return asdict(self)


SCHEDULES = ("linear_floor", "linear", "cosine")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """The learning rate's multiplier before optimiser step `step` (0-based) of `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "linear_floor":
        return max(0.05, 1.0 - step / max(1, total))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


@dataclass
class TrainReport:
    examples: int
    epochs: int
    steps: int
    seconds: float
    first_loss: float
    final_loss: float
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    prompt_truncated: int = 0  # examples whose prompt lost its oldest tokens to fit max_length
    too_long: int = 0  # examples left out: the target alone does not fit
    max_length: int = 0  # the length used: the config's, at most the model's
    tokens: int = 0  # tokens (prompt + target) trained on, over all epochs
    resumed_from: int = 0  # the optimiser step a checkpoint resumed at; 0: from the start

    @property
    def examples_per_s(self) -> float:
        return self.examples * self.epochs / self.seconds if self.seconds > 0 else 0.0


def trainable(model) -> list:
    """The parameters an optimiser updates: all of them, or only the adapters under LoRA."""
    return [p for p in model.parameters() if p.requires_grad]


def fit(prompt: list[int], target: list[int], max_length: int) -> tuple[list[int], list[int], str]:
    """prompt + target in at most `max_length` tokens, and labels that ignore the prompt. The
    prompt loses its oldest tokens first ("prompt_cut"); a target that leaves no room for a prompt
    token is cut at its end ("too_long": the caller decides whether to keep such an example)."""
    status = "ok"
    if len(prompt) + len(target) > max_length:
        room = max_length - len(target)
        if room >= 1:
            prompt, status = prompt[len(prompt) - room :], "prompt_cut"
        else:
            prompt, target, status = prompt[-1:], target[: max_length - 1], "too_long"
    return prompt + target, [IGNORE] * len(prompt) + target, status


def encode_status(loaded: LoadedModel, ex: Example, max_length: int) -> tuple[list[int], list[int], str]:
    tok = loaded.tokenizer
    prompt = tok(loaded.prompt_text(ex.prompt, ex.messages), add_special_tokens=False)["input_ids"]
    target = tok(loaded.target_text(ex.target), add_special_tokens=False)["input_ids"]
    return fit(prompt, target, max_length)


def encode(loaded: LoadedModel, ex: Example, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt + target, and labels that ignore the prompt: (input_ids, labels). Too
    long, the prompt is cut from the left, never the target (`fit`)."""
    ids, labels, _ = encode_status(loaded, ex, max_length)
    return ids, labels


def effective_max_length(loaded: LoadedModel, max_length: int) -> int:
    """The config's length, at most what the model and its tokenizer take."""
    limit = getattr(loaded, "max_length", 0) or max_length
    return max(2, min(max_length, limit) if max_length > 0 else limit)


def batches(
    encoded: Sequence[tuple[list[int], list[int]]],
    batch_size: int,
    pad_id: int,
    device: str,
    order: Sequence[int] | None = None,
):
    """Right-padded tensors (input_ids, attention_mask, labels), `batch_size` examples at a time."""
    import torch

    order = list(order) if order is not None else list(range(len(encoded)))
    for start in range(0, len(order), batch_size):
        chunk = [encoded[i] for i in order[start : start + batch_size]]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
        for row, (x, y) in enumerate(chunk):
            ids[row, : len(x)] = torch.tensor(x)
            mask[row, : len(x)] = 1
            labels[row, : len(y)] = torch.tensor(y)
        yield ids.to(device), mask.to(device), labels.to(device)


def _fingerprint(config: TrainConfig, encoded: Sequence[tuple[list[int], list[int]]], names: Sequence[str]) -> str:
    """What a checkpoint belongs to: the config (not the checkpoint interval), the data, the trainable weights' names."""
    h = hashlib.sha256(repr(sorted((k, v) for k, v in config.to_dict().items() if k != "checkpoint_steps")).encode())
    for ids, labels in encoded:
        h.update(repr((ids, labels)).encode())
    h.update("\0".join(names).encode())
    return h.hexdigest()


def _save_checkpoint(directory: Path, state: dict) -> None:
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "checkpoint.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, directory / "checkpoint.pt")


def _load_checkpoint(directory: Path | None, fingerprint: str) -> dict | None:
    import torch

    if directory is None or not (directory / "checkpoint.pt").exists():
        return None
    try:
        state = torch.load(directory / "checkpoint.pt", map_location="cpu", weights_only=False)
    except Exception:  # a checkpoint cut short: start over
        return None
    return state if state.get("fingerprint") == fingerprint else None


def fine_tune(
    loaded: LoadedModel,
    examples: Sequence[Example],
    config: TrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainReport:
    """Train in place. `progress(epoch, step, loss)` after every optimiser step. With
    `checkpoint_dir` and `config.checkpoint_steps`, a checkpoint is written there every so many
    steps and a run with the same data and config resumes from it."""
    import torch

    if not examples:
        raise ValueError("no training examples")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {config.schedule!r}")
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = loaded.model
    pad = loaded.tokenizer.pad_token_id
    max_length = effective_max_length(loaded, config.max_length)
    encoded, cut, too_long = [], 0, 0
    for ex in examples:
        ids, labels, status = encode_status(loaded, ex, max_length)
        if status == "too_long":
            too_long += 1
            continue
        cut += status == "prompt_cut"
        encoded.append((ids, labels))
    if not encoded:
        raise ValueError(f"every training example's target is longer than {max_length} tokens")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    accumulation = max(1, config.grad_accumulation)
    batches_per_epoch = math.ceil(len(encoded) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / accumulation)
    total = steps_per_epoch * config.epochs
    warmup = int(round(config.warmup_ratio * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: lr_factor(s, total, warmup, config.schedule))
    autocast = str(loaded.device).startswith("cuda") and config.mixed_precision == "bf16"
    directory = Path(checkpoint_dir) if checkpoint_dir and config.checkpoint_steps > 0 else None
    fingerprint = _fingerprint(config, encoded, [n for n, _ in named]) if directory is not None else ""
    resume = _load_checkpoint(directory, fingerprint)
    losses, step, first, tokens = [], 0, None, 0
    start_epoch, epoch_sums = 0, (0.0, 0)
    if resume is not None:
        with torch.no_grad():
            by_name = dict(named)
            for n, value in resume["weights"].items():
                by_name[n].copy_(value.to(by_name[n].device))
        optimiser.load_state_dict(resume["optimiser"])
        schedule.load_state_dict(resume["schedule"])
        step, first, losses, tokens = resume["step"], resume["first"], resume["losses"], resume["tokens"]
        start_epoch, epoch_sums = resume["epoch"], tuple(resume["epoch_sums"])
        torch.set_rng_state(resume["rng"])
    resumed_from = step
    model.train()
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        order = torch.randperm(
            len(encoded), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch)
        ).tolist()
        epoch_loss, n = epoch_sums if epoch == start_epoch else (0.0, 0)
        skip = (step - epoch * steps_per_epoch) * accumulation  # batches of this epoch done before a resume
        group: list = []
        all_batches = list(batches(encoded, config.batch_size, pad, loaded.device, order))
        for index, batch in enumerate(all_batches):
            if index < skip:
                continue
            group.append(batch)
            if len(group) < accumulation and index < len(all_batches) - 1:
                continue
            optimiser.zero_grad(set_to_none=True)
            value = 0.0
            for ids, mask, labels in group:
                if autocast:
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                else:
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                (loss / len(group)).backward()
                value += float(loss.detach()) / len(group)
                tokens += int(mask.sum())
            group = []
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
            step += 1
            first = value if first is None else first
            epoch_loss, n = epoch_loss + value, n + 1
            if progress is not None:
                progress(epoch, step, value)
            if directory is not None and step % config.checkpoint_steps == 0 and step < total:
                done_epoch = step % steps_per_epoch == 0
                _save_checkpoint(
                    directory,
                    {
                        "fingerprint": fingerprint,
                        "step": step,
                        "first": first,
                        "tokens": tokens,
                        "losses": losses + ([epoch_loss / max(1, n)] if done_epoch else []),
                        "epoch": epoch + 1 if done_epoch else epoch,
                        "epoch_sums": (0.0, 0) if done_epoch else (epoch_loss, n),
                        "weights": {k: p.detach().cpu().clone() for k, p in named},
                        "optimiser": optimiser.state_dict(),
                        "schedule": schedule.state_dict(),
                        "rng": torch.get_rng_state(),
                    },
                )
        losses.append(epoch_loss / max(1, n))
    model.eval()
    if directory is not None and directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    return TrainReport(
        examples=len(encoded),
        epochs=config.epochs,
        steps=step,
        seconds=time.perf_counter() - started,
        first_loss=first or 0.0,
        final_loss=losses[-1],
        losses=losses,
        prompt_truncated=cut,
        too_long=too_long,
        max_length=max_length,
        tokens=tokens,
        resumed_from=resumed_from,
    )


def perplexity(loaded: LoadedModel, examples: Sequence[Example], max_length: int = 256, batch_size: int = 64) -> float:
    """exp of the mean per-token loss on the targets: how surprised the model is by the answers."""
    import torch

    if not examples:
        return float("nan")
    max_length = effective_max_length(loaded, max_length)
    encoded = [encode(loaded, ex, max_length) for ex in examples]
    total, tokens = 0.0, 0
    loaded.model.eval()
    with torch.no_grad():
        for ids, mask, labels in batches(encoded, batch_size, loaded.tokenizer.pad_token_id, loaded.device):
            logits = loaded.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE, reduction="sum"
            )
            total += float(loss)
            tokens += int((target != IGNORE).sum())
    return math.exp(min(50.0, total / max(1, tokens)))
