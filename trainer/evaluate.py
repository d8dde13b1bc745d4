"""Evaluation on the golden set: answers by greedy decoding, scored per item by its task's scorer.

The scorers are plain functions; `evaluate` asks the model and adds the scores up overall and per
task type, with the perplexity of the dataset's validation split beside them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from trainer.contamination import normalise
from trainer.examples import Example, GoldenItem
from trainer.model import LoadedModel

SQL_KEYWORDS = ("select", "from", "where", "group", "by", "order", "count", "limit", "and", "or", "as", "join", "on")


def score_exact(answer: str, expected: str) -> float:
    return 1.0 if normalise(answer) == normalise(expected) else 0.0


def score_contains(answer: str, expected: str) -> float:
    return 1.0 if normalise(expected) and normalise(expected) in normalise(answer) else 0.0


_SQL_LITERAL = re.compile(r"('(?:[^']|'')*')")
_SQL_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


def _keyword_case(m: re.Match) -> str:
    return m.group().lower() if m.group().lower() in SQL_KEYWORDS else m.group()


def normalise_sql(text: str) -> str:
    """Whitespace collapsed, keywords lower case (also when glued to punctuation, as in COUNT(*)),
    spaces around punctuation removed, no trailing ';'. String literals are compared as written:
    'Bob' and 'bob' are different answers; identifiers keep their case, as some databases do."""
    parts = _SQL_LITERAL.split(text or "")
    for i in range(0, len(parts), 2):  # the even parts are outside literals
        t = " ".join(parts[i].split())
        t = re.sub(r"\s*([(),*=<>;])\s*", r"\1", t)
        parts[i] = _SQL_WORD.sub(_keyword_case, t)
    return "".join(parts).strip().rstrip(";").strip()


def score_sql(answer: str, expected: str) -> float:
    return 1.0 if normalise_sql(answer) == normalise_sql(expected) else 0.0


SCORERS: dict[str, Callable[[str, str], float]] = {"exact": score_exact, "contains": score_contains, "sql": score_sql}


@dataclass
class EvalResult:
    """Scores in [0, 1] overall and per task type, and the validation perplexity."""

    overall: float
    by_task: dict[str, float]
    items: int
    items_by_task: dict[str, int]
    perplexity: float | None = None
    answers: list[str] = field(default_factory=list, repr=False)

    def metrics(self) -> dict[str, float]:
        """Flat metrics for the models event: overall, task.<type>, perplexity."""
        out = {"overall": self.overall, **{f"task.{t}": v for t, v in sorted(self.by_task.items())}}
        if self.perplexity is not None:
            out["perplexity"] = self.perplexity
        return out


def score(items: Sequence[GoldenItem], answers: Sequence[str]) -> EvalResult:
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} golden items but {len(answers)} answers")
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for item, answer in zip(items, answers):
        task = item.task_type or "-"
        sums[task] = sums.get(task, 0.0) + SCORERS[item.scorer](answer, item.expected)
        counts[task] = counts.get(task, 0) + 1
    by_task = {t: sums[t] / counts[t] for t in sorted(sums)}
    overall = sum(sums.values()) / len(items) if items else 0.0
    return EvalResult(overall=overall, by_task=by_task, items=len(items), items_by_task=dict(sorted(counts.items())),
                      answers=list(answers))


def answer(loaded: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 32) -> list[str]:
    """Greedy answers, batched with left padding."""
    import torch

    tok = loaded.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"
    out: list[str] = []
    loaded.model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                texts = [loaded.prompt_text(p) for p in prompts[start:start + batch_size]]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(loaded.device)
                gen = loaded.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                for row in gen[:, enc["input_ids"].shape[1]:]:
                    out.append(tok.decode(row, skip_special_tokens=True).strip())
    finally:
        tok.padding_side = side
    return out


def evaluate(loaded: LoadedModel, golden: Sequence[GoldenItem], validation: Sequence[Example] = (),
             max_new_tokens: int = 32, policy=None) -> EvalResult:
    from trainer.train import perplexity

    result = score(golden, answer(loaded, [g.prompt for g in golden], max_new_tokens))
    if validation:
        result.perplexity = perplexity(loaded, validation)
    return result
