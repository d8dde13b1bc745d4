"""Evaluation on the golden set: answers by greedy decoding, scored per item by its task's scorer.

The scorers are plain functions; `evaluate` asks the model and adds the scores up overall and per
task type, with the perplexity of the dataset's validation split beside them.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
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


def canonical_sql(text: str) -> str | None:
    """The statement as sqlglot prints it after parsing (keywords, spacing, quoting canonical;
    identifiers and literals as written); None when it does not parse."""
    try:
        import sqlglot
        from sqlglot.errors import SqlglotError
    except ImportError:  # pragma: no cover - sqlglot is in the lock
        return normalise_sql(text)
    text = (text or "").strip().rstrip(";").strip()
    if not text:
        return None
    try:
        tree = sqlglot.parse_one(text)
    except (SqlglotError, ValueError, RecursionError):
        return None
    return tree.sql() if tree is not None else None


def score_sql(answer: str, expected: str) -> float:
    """The same statement once parsed by sqlglot (so COUNT(*) and count( * ), AS or none, spacing
    and a trailing ';' do not matter); an answer that does not parse scores 0."""
    want, got = canonical_sql(expected), canonical_sql(answer)
    if want is None:  # a reference sqlglot cannot read: the textual comparison
        return 1.0 if normalise_sql(answer) == normalise_sql(expected) else 0.0
    return 1.0 if got == want else 0.0


_WORD = re.compile(r"\w+", re.UNICODE)


def score_f1(answer: str, expected: str) -> float:
    """Token F1 (SQuAD style): words, casefolded, punctuation ignored, counted with multiplicity."""
    a, e = _WORD.findall((answer or "").casefold()), _WORD.findall((expected or "").casefold())
    if not a or not e:
        return 1.0 if a == e else 0.0
    common = sum((Counter(a) & Counter(e)).values())
    if not common:
        return 0.0
    precision, recall = common / len(a), common / len(e)
    return 2 * precision * recall / (precision + recall)


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def first_number(text: str) -> float | None:
    m = _NUMBER.search(text or "")
    return float(m.group().replace(",", "")) if m else None


def score_numeric(answer: str, expected: str, options: dict | None = None) -> float:
    options = options or {}
    want, got = first_number(expected), first_number(answer)
    if want is None or got is None:
        return 0.0
    tolerance = max(float(options.get("tolerance", 1e-6)), float(options.get("rel_tolerance", 0.0)) * abs(want))
    return 1.0 if abs(got - want) <= tolerance else 0.0


def extract_json(text: str):
    """The answer as JSON: whole, inside a ``` fence, or its first {...} / [...]; raises ValueError."""
    text = (text or "").strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidates = [text] + ([fence.group(1)] if fence else [])
    for opener, closer in (("{", "}"), ("[", "]")):
        i, j = text.find(opener), text.rfind(closer)
        if 0 <= i < j:
            candidates.append(text[i : j + 1])
    for c in candidates:
        try:
            return json.loads(c)
        except ValueError:
            continue
    raise ValueError("no JSON in the answer")


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _subset_valid(value, schema: dict) -> bool:
    """A small JSON Schema subset (type, enum, const, properties, required, additionalProperties,
    items, minimum, maximum, minLength, maxLength, minItems, maxItems), for when jsonschema is absent."""
    if not isinstance(schema, dict):
        return True
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        ok = False
        for k in kinds:
            if k == "integer":
                ok = (
                    ok
                    or (isinstance(value, int) and not isinstance(value, bool))
                    or (isinstance(value, float) and value.is_integer())
                )
            elif k == "number":
                ok = ok or (isinstance(value, (int, float)) and not isinstance(value, bool))
            elif k in _TYPES:
                ok = ok or (isinstance(value, _TYPES[k]) and not (k != "boolean" and isinstance(value, bool)))
        if not ok:
            return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "const" in schema and value != schema["const"]:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
            return False
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", float("inf")):
            return False
    if isinstance(value, dict):
        if any(k not in value for k in schema.get("required", ())):
            return False
        props = schema.get("properties", {})
        for k, v in value.items():
            if k in props:
                if not _subset_valid(v, props[k]):
                    return False
            elif schema.get("additionalProperties") is False:
                return False
            elif isinstance(schema.get("additionalProperties"), dict) and not _subset_valid(
                v, schema["additionalProperties"]
            ):
                return False
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", float("inf")):
            return False
        if isinstance(schema.get("items"), dict) and not all(_subset_valid(v, schema["items"]) for v in value):
            return False
    return True


def json_matches(value, schema: dict) -> bool:
    try:
        import jsonschema
    except ImportError:
        return _subset_valid(value, schema)
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True


def score_json(answer: str, expected: str) -> float:
    """`expected` is a JSON Schema; the answer's JSON must match it."""
    try:
        schema = json.loads(expected)
    except ValueError:
        return 0.0
    try:
        value = extract_json(answer)
    except ValueError:
        return 0.0
    return 1.0 if json_matches(value, schema) else 0.0


def score_regex(answer: str, expected: str, options: dict | None = None) -> float:
    flags = re.IGNORECASE if "i" in str((options or {}).get("flags", "")) else 0
    try:
        return 1.0 if re.search(expected, answer or "", flags) else 0.0
    except re.error:
        return 0.0


class Judge:
    """A judge model behind an OpenAI-compatible chat completions endpoint (`url` ends in /v1 or
    names the full .../chat/completions). Asked whether the answer says what the reference says, it
    answers a score from 0 to 10; the item scores that over 10. Off unless [trainer] judge_url is set."""

    PROMPT = (
        "You grade an answer against a reference answer. Question:\n{q}\n\nReference answer:\n{e}\n\n"
        "Answer to grade:\n{a}\n\nReply with one integer from 0 (wrong) to 10 (fully correct), nothing else."
    )

    def __init__(self, url: str, model: str = "", timeout: float = 30.0, api_key: str = ""):
        self.url = (
            url.rstrip("/") if url.rstrip("/").endswith("/chat/completions") else url.rstrip("/") + "/chat/completions"
        )
        self.model, self.timeout, self.api_key = model, timeout, api_key

    def grade(self, question: str, expected: str, answer: str) -> float:
        import urllib.request

        body = json.dumps(
            {
                "model": self.model,
                "temperature": 0,
                "max_tokens": 4,
                "messages": [{"role": "user", "content": self.PROMPT.format(q=question, e=expected, a=answer)}],
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}),
        }
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            reply = json.loads(response.read())
        text = reply["choices"][0]["message"]["content"]
        value = first_number(text)
        return 0.0 if value is None else max(0.0, min(1.0, value / 10.0))


SCORERS: dict[str, Callable[[str, str], float]] = {
    "exact": score_exact,
    "contains": score_contains,
    "sql": score_sql,
    "f1": score_f1,
    "numeric": score_numeric,
    "json": score_json,
    "regex": score_regex,
}


def item_options(item: GoldenItem) -> dict:
    try:
        value = json.loads(item.options) if getattr(item, "options", "") else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def score_item(item: GoldenItem, answer: str, judge: Judge | None = None) -> float:
    options = item_options(item)
    if item.scorer == "judge":
        return judge.grade(item.prompt, item.expected, answer) if judge is not None else 0.0
    if item.scorer == "numeric":
        return score_numeric(answer, item.expected, options)
    if item.scorer == "regex":
        return score_regex(answer, item.expected, options)
    return SCORERS[item.scorer](answer, item.expected)


@dataclass
class EvalResult:
    """Scores in [0, 1] overall and per task type, and the validation perplexity."""

    overall: float
    by_task: dict[str, float]
    items: int
    items_by_task: dict[str, int]
    perplexity: float | None = None
    answers: list[str] = field(default_factory=list, repr=False)
    scores: list[float] = field(default_factory=list, repr=False)  # per item, in the golden set's order (paired gate)
    item_ids: list[str] = field(default_factory=list, repr=False)
    item_tasks: list[str] = field(default_factory=list, repr=False)
    seconds: float = 0.0  # answering and scoring

    def metrics(self) -> dict[str, float]:
        """Flat metrics for the models event: overall, task.<type>, perplexity."""
        out = {"overall": self.overall, **{f"task.{t}": v for t, v in sorted(self.by_task.items())}}
        if self.perplexity is not None:
            out["perplexity"] = self.perplexity
        return out


def score(items: Sequence[GoldenItem], answers: Sequence[str], judge: "Judge | None" = None) -> EvalResult:
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} golden items but {len(answers)} answers")
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    scores = []
    for item, answer in zip(items, answers):
        task = item.task_type or "-"
        value = float(score_item(item, answer, judge))
        scores.append(value)
        sums[task] = sums.get(task, 0.0) + value
        counts[task] = counts.get(task, 0) + 1
    by_task = {t: sums[t] / counts[t] for t in sorted(sums)}
    overall = sum(sums.values()) / len(items) if items else 0.0
    return EvalResult(
        overall=overall,
        by_task=by_task,
        items=len(items),
        items_by_task=dict(sorted(counts.items())),
        answers=list(answers),
        scores=scores,
        item_ids=[i.id for i in items],
        item_tasks=[i.task_type or "-" for i in items],
    )


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
                texts = [loaded.prompt_text(p) for p in prompts[start : start + batch_size]]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(loaded.device)
                gen = loaded.model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                )
                for row in gen[:, enc["input_ids"].shape[1] :]:
                    out.append(tok.decode(row, skip_special_tokens=True).strip())
    finally:
        tok.padding_side = side
    return out


def evaluate(
    loaded: LoadedModel,
    golden: Sequence[GoldenItem],
    validation: Sequence[Example] = (),
    max_new_tokens: int = 32,
    policy=None,
    judge: Judge | None = None,
) -> EvalResult:
    """Answer every golden item (batched; items grouped by their own max_new_tokens, else the
    default), score them, and time it. `policy` gives the batch size and the judge's URL."""
    from trainer.train import perplexity

    started = time.perf_counter()
    batch_size = getattr(policy, "eval_batch_size", 32) if policy is not None else 32
    if judge is None and policy is not None and getattr(policy, "judge_url", ""):
        judge = Judge(policy.judge_url, policy.judge_model)
    answers: list[str] = [""] * len(golden)
    groups: dict[int, list[int]] = {}
    for i, item in enumerate(golden):
        groups.setdefault(int(item_options(item).get("max_new_tokens", max_new_tokens)), []).append(i)
    for tokens, indices in sorted(groups.items()):
        for i, text in zip(indices, answer(loaded, [golden[i].prompt for i in indices], tokens, batch_size)):
            answers[i] = text
    result = score(golden, answers, judge)
    result.seconds = time.perf_counter() - started
    if validation:
        result.perplexity = perplexity(loaded, validation)
    return result
