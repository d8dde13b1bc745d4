"""Preference training on a dataset's pairs (prompt, chosen, rejected): direct preference optimisation.

Why DPO written out here rather than trl's `DPOTrainer`: trl brings `datasets` (pyarrow, pandas) and
its own training loop for a loss that is a few lines. The reference model is the policy as it stands
when preference training starts (after SFT); its log-probabilities are computed once, up front, so
no second copy of the model is held in memory.

Loss (Rafailov et al., 2023): -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), where pi_x and
ref_x are the summed log-probabilities of answer x's tokens given the prompt, plus the chosen answer's
per-token negative log-likelihood times `nll_weight` (Pang et al., 2024, "RPO"; trl's `rpo_alpha`).
Why the NLL term: DPO alone only widens the gap, and on a small model it happily lowers the chosen
answer's probability too, with everything else it knew (measured here: golden score 0.43 -> 0.05 on
the integration test's data; with the term, the gap still widens and the score holds).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from trainer.examples import Example, Pair
from trainer.model import LoadedModel
from trainer.train import IGNORE, batches, encode, trainable


@dataclass(frozen=True)
class PreferenceConfig:
    epochs: int = 1
    learning_rate: float = 1e-4
    beta: float = 0.1
    nll_weight: float = 1.0  # weight of the chosen answers' per-token NLL added to the loss (RPO)
    batch_size: int = 16  # pairs per step (two sequences each)
    max_length: int = 256
    seed: int = 0


@dataclass
class PreferenceReport:
    pairs: int
    epochs: int
    steps: int
    seconds: float
    first_loss: float
    final_loss: float
    accuracy_before: float  # share of pairs whose chosen answer the model finds the more probable
    accuracy_after: float
    margin_before: float  # mean (log p(chosen) - log p(rejected)), in nats
    margin_after: float
    losses: list[float] = field(default_factory=list)

    @property
    def pairs_per_s(self) -> float:
        return self.pairs * self.epochs / self.seconds if self.seconds > 0 else 0.0


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """Mean DPO loss over a batch of summed log-probabilities (1-d tensors)."""
    import torch

    logits = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -torch.nn.functional.logsigmoid(logits).mean()


def sequence_logps(model, ids, mask, labels):
    """Summed log-probability of each row's labelled tokens (the answer, not the prompt), and how many
    tokens that is: (sums, counts)."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    keep = target != IGNORE
    picked = torch.gather(logits.log_softmax(-1), 2, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(-1), keep.sum(-1).clamp(min=1)


def _encode_pairs(loaded: LoadedModel, pairs: Sequence[Pair], max_length: int):
    """Chosen sequences first, then rejected: row i and row n + i are one pair."""
    chosen = [encode(loaded, Example(p.prompt, p.chosen, messages=p.messages), max_length) for p in pairs]
    rejected = [encode(loaded, Example(p.prompt, p.rejected, messages=p.messages), max_length) for p in pairs]
    return chosen + rejected


def _pair_batches(loaded: LoadedModel, encoded, n: int, batch_size: int, order: Sequence[int]):
    """(index chunk, ids, mask, labels) with a chunk's chosen rows followed by its rejected rows."""
    for start in range(0, len(order), batch_size):
        chunk = list(order[start : start + batch_size])
        rows = chunk + [n + i for i in chunk]
        for ids, mask, labels in batches(encoded, len(rows), loaded.tokenizer.pad_token_id, loaded.device, rows):
            yield chunk, ids, mask, labels


def pair_logps(loaded: LoadedModel, pairs: Sequence[Pair], max_length: int = 256, batch_size: int = 32, encoded=None):
    """Summed answer log-probabilities under the model as it is now: (chosen, rejected) tensors.
    `encoded`: the pairs already through `_encode_pairs`, so a caller that has them does not tokenise twice."""
    import torch

    n = len(pairs)
    encoded = encoded if encoded is not None else _encode_pairs(loaded, pairs, max_length)
    chosen, rejected = torch.zeros(n), torch.zeros(n)
    loaded.model.eval()
    with torch.no_grad():
        for chunk, ids, mask, labels in _pair_batches(loaded, encoded, n, batch_size, range(n)):
            logps = sequence_logps(loaded.model, ids, mask, labels)[0].cpu()
            chosen[chunk] = logps[: len(chunk)]
            rejected[chunk] = logps[len(chunk) :]
    return chosen, rejected


def preference_stats(chosen, rejected) -> tuple[float, float]:
    """(accuracy, mean margin): the share of pairs whose chosen answer is the more probable, and the
    mean log-probability gap between the two."""
    margins = chosen - rejected
    n = max(1, len(margins))
    return float((margins > 0).sum()) / n, float(margins.sum()) / n


def prefer(
    loaded: LoadedModel,
    pairs: Sequence[Pair],
    config: PreferenceConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> PreferenceReport:
    """Train in place on `pairs`. `progress(epoch, step, loss)` after every step."""
    import torch

    if not pairs:
        raise ValueError("no preference pairs")
    torch.manual_seed(config.seed)
    model = loaded.model
    n = len(pairs)
    encoded = _encode_pairs(loaded, pairs, config.max_length)
    ref_chosen, ref_rejected = pair_logps(loaded, pairs, config.max_length, encoded=encoded)
    accuracy_before, margin_before = preference_stats(ref_chosen, ref_rejected)
    params = trainable(model)
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate)
    model.train()
    started = time.perf_counter()
    losses, step, first = [], 0, None
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 1000 + epoch)).tolist()
        epoch_loss, k = 0.0, 0
        for chunk, ids, mask, labels in _pair_batches(loaded, encoded, n, config.batch_size, order):
            logps, counts = sequence_logps(model, ids, mask, labels)
            c = len(chunk)
            rc, rr = ref_chosen[chunk].to(logps.device), ref_rejected[chunk].to(logps.device)
            loss = dpo_loss(logps[:c], logps[c:], rc, rr, config.beta)
            if config.nll_weight:
                loss = loss - config.nll_weight * (logps[:c] / counts[:c]).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            step += 1
            value = float(loss.detach())
            first = value if first is None else first
            epoch_loss, k = epoch_loss + value, k + 1
            if progress is not None:
                progress(epoch, step, value)
        losses.append(epoch_loss / max(1, k))
    seconds = time.perf_counter() - started
    model.eval()
    chosen, rejected = pair_logps(loaded, pairs, config.max_length, encoded=encoded)
    accuracy_after, margin_after = preference_stats(chosen, rejected)
    return PreferenceReport(
        pairs=n,
        epochs=config.epochs,
        steps=step,
        seconds=seconds,
        first_loss=first or math.log(2),
        final_loss=losses[-1],
        accuracy_before=accuracy_before,
        accuracy_after=accuracy_after,
        margin_before=margin_before,
        margin_after=margin_after,
        losses=losses,
    )
