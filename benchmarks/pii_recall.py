#!/usr/bin/env python
"""PII and secrets recall of the gate's redactor on a labelled corpus, and its false positives on clean text.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/pii_recall.py                 # the gate's default redactor
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/pii_recall.py --patterns-only # names off (ner_model = "")
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/pii_recall.py --json          # one JSON line at the end too

The corpora (benchmarks/data/*.jsonl, written for this benchmark: see benchmarks/data/README.md)
hold texts with labelled values (a type and the value as it is written in the text) and clean texts
with no label, which must come out unchanged. pii_corpus.jsonl is the one the recognizers were
developed against; pii_holdout.jsonl and pii_holdout2.jsonl were each written after a round of that
work and measured before anything was changed for them (README "Privacy" gives those first
figures). Each is reported on its own, then all together.

A labelled value counts as caught when nothing of it survives redaction: the value itself is gone,
none of its words (placeholders such as `<PRIVATE_KEY>` aside) (runs of letters or digits, two or more long) appears in the output more often
than in the text around the labelled values, and for a value holding six or more digits its digits
do not appear in the output's digits. A credential also needs the text to be flagged as holding a
secret (a secret type among the redaction's counts: that is what rejects the candidate). Recall is
caught / labelled, per type. A clean text is a false positive when anything in it was redacted.

Prints recall per type beside its target, the false-positive rate on clean texts, every miss and
every false positive (the corpus holds made-up values only), and the time per text. Exit status 0,
whether or not the targets are met (tests/unit/test_pii_recall.py holds the thresholds).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "benchmarks" / "data"
CORPUS = DATA / "pii_corpus.jsonl"
CORPORA = (CORPUS, DATA / "pii_holdout.jsonl", DATA / "pii_holdout2.jsonl")
# Types with a recall target (the issue's): credentials 0.98; names, e-mails, phones and ids 0.95.
TARGETS = {"CREDENTIAL": 0.98, "PERSON": 0.95, "EMAIL": 0.95, "PHONE": 0.95, "ID": 0.95}
FP_TARGET = 0.02  # share of clean texts with any redaction
_WORD = re.compile(r"[^\W_]{2,}", re.UNICODE)
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")


@dataclass
class Report:
    labelled: Counter = field(default_factory=Counter)
    caught: Counter = field(default_factory=Counter)
    misses: list = field(default_factory=list)  # (id, type, value, output)
    clean: int = 0
    false_positives: list = field(default_factory=list)  # (id, text, output)
    texts: int = 0
    seconds: float = 0.0

    def recall(self, kind: str) -> float:
        return self.caught[kind] / self.labelled[kind] if self.labelled[kind] else float("nan")

    @property
    def fp_rate(self) -> float:
        return len(self.false_positives) / self.clean if self.clean else 0.0

    def as_dict(self) -> dict:
        return {
            "recall": {k: round(self.recall(k), 4) for k in sorted(self.labelled)},
            "labelled": dict(sorted(self.labelled.items())),
            "caught": dict(sorted(self.caught.items())),
            "clean_texts": self.clean,
            "false_positives": len(self.false_positives),
            "fp_rate": round(self.fp_rate, 4),
            "texts": self.texts,
            "ms_per_text": round(1000 * self.seconds / max(self.texts, 1), 3),
            "misses": [{"id": i, "type": t, "value": v} for i, t, v, _ in self.misses],
            "false_positive_ids": [i for i, _, _ in self.false_positives],
        }


def load(path: Path = CORPUS) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        for e in r["entities"]:
            if e["value"] not in r["text"]:
                raise ValueError(f"{r['id']}: labelled value {e['value']!r} is not in its text")
    return rows


def survives(value: str, text: str, output: str, values: list[str]) -> bool:
    """Whether anything of `value` (labelled in `text`) is left in `output` (see the module doc)."""
    if value in output:
        return True
    output = _PLACEHOLDER.sub(" ", output)  # "<PRIVATE_KEY>" is ours, not a survivor of "PRIVATE KEY"
    background = text
    for v in sorted(values, key=len, reverse=True):
        background = background.replace(v, " ")
    for word in set(_WORD.findall(value)):
        pattern = re.compile(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])")
        if len(pattern.findall(output)) > len(pattern.findall(background)):
            return True
    digits = re.sub(r"\D", "", value)
    return len(digits) >= 6 and digits in re.sub(r"\D", "", output)


def evaluate(redactor, rows: list[dict], secret_types=frozenset()) -> Report:
    report = Report()
    started = time.perf_counter()
    redactions = redactor.redact([r["text"] for r in rows])
    report.seconds = time.perf_counter() - started
    report.texts = len(rows)
    for row, red in zip(rows, redactions, strict=True):
        if not row["entities"]:
            report.clean += 1
            if red.counts or red.text != row["text"]:
                report.false_positives.append((row["id"], row["text"], red.text))
            continue
        values = [e["value"] for e in row["entities"]]
        flagged = any(t in secret_types for t in red.counts)
        for e in row["entities"]:
            kind = e["type"]
            report.labelled[kind] += 1
            ok = not survives(e["value"], row["text"], red.text, values)
            if kind == "CREDENTIAL":
                ok = ok and flagged
            if ok:
                report.caught[kind] += 1
            else:
                report.misses.append((row["id"], kind, e["value"], red.text))
    return report


def table(report: Report, title: str) -> str:
    rows = [title, f"  {'type':<12}{'caught':>8}{'of':>6}{'recall':>9}   target"]
    for kind in sorted(report.labelled, key=lambda k: (k not in TARGETS, k)):
        target = TARGETS.get(kind)
        mark = "" if target is None else f"   >= {target:.2f} {'ok' if report.recall(kind) >= target else 'MISSED'}"
        rows.append(f"  {kind:<12}{report.caught[kind]:>8}{report.labelled[kind]:>6}{report.recall(kind):>9.3f}{mark}")
    total_l, total_c = sum(report.labelled.values()), sum(report.caught.values())
    rows.append(f"  {'all':<12}{total_c:>8}{total_l:>6}{total_c / max(total_l, 1):>9.3f}")
    ok = "ok" if report.fp_rate < FP_TARGET else "MISSED"
    rows.append(
        f"  false positives on clean texts: {len(report.false_positives)} of {report.clean}"
        f" = {report.fp_rate:.1%}   target < {FP_TARGET:.0%} {ok}"
    )
    rows.append(
        f"  {report.texts} texts in {report.seconds:.2f} s = {1000 * report.seconds / max(report.texts, 1):.2f} ms/text "
        "(one batch, after a warm-up)"
    )
    if report.misses:
        rows.append("  still missed:")
        for rid, kind, value, output in report.misses:
            shown = value if len(value) <= 60 else value[:57] + "..."
            rows.append(f"    {rid:<12}{kind:<11}{shown!r}   -> {_one_line(output)}")
    if report.false_positives:
        rows.append("  false positives:")
        for rid, _, output in report.false_positives:
            rows.append(f"    {rid:<12}{_one_line(output)}")
    return "\n".join(rows)


def _one_line(text: str, width: int = 110) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


def build_redactor(patterns_only: bool):
    from streams.gate.pipeline import build_gate
    from flywheel.policy import GatePolicy, PiiFilter

    policy = GatePolicy(pii=PiiFilter(ner_model="")) if patterns_only else GatePolicy()
    gate = build_gate(policy)
    return next(s for s in gate.stages if s.name == "pii").redactor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pii_recall", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--corpus",
        type=Path,
        action="append",
        help="a JSONL corpus; repeat for several (default: the three in benchmarks/data)",
    )
    p.add_argument("--patterns-only", action="store_true", help='the gate\'s redactor with names off (ner_model = "")')
    p.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = p.parse_args(argv)
    corpora = [(path, load(path)) for path in (args.corpus or CORPORA)]
    t = time.perf_counter()
    redactor = build_redactor(args.patterns_only)
    built = time.perf_counter() - t
    from streams.gate import pii

    secret_types = frozenset(getattr(pii, "SECRET_ENTITIES", ()))
    mode = "patterns only" if args.patterns_only else "the gate's default"
    out = {"mode": mode}
    for path, rows in corpora + (
        [(Path("all of them"), [r for _, rows in corpora for r in rows])] if len(corpora) > 1 else []
    ):
        redactor.redact([r["text"] for r in rows[:20]])  # warm-up
        redactor.clear_cache()
        report = evaluate(redactor, rows, secret_types)
        print(table(report, f"PII recall: {path.name}, {len(rows)} texts, {mode} (redactor built in {built:.1f} s)"))
        print()
        out[path.name] = report.as_dict()
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
