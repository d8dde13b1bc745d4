"""The training recipe on a tiny real model: SFT, DPO on pairs, LoRA adapters merged back, hyperparameters."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from flywheel.policy import GatePolicy, PolicyError, TrainerPolicy  # noqa: E402
from trainer import recipe, synthetic  # noqa: E402
from trainer.adapters import LoraSettings, adapted  # noqa: E402
from trainer.cycle import replay_ids  # noqa: E402
from trainer.examples import Example, Pair  # noqa: E402
from trainer.model import Architecture, build_default, load, save  # noqa: E402
from trainer.preference import PreferenceConfig, dpo_loss, pair_logps, prefer  # noqa: E402

TINY = Architecture(vocab_size=400, n_embd=32, n_layer=1, n_head=2, n_positions=128)


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return synthetic.generate(300, ["sql", "support"], seed=3)


def tiny(examples):
    return build_default((e.prompt + " " + e.target for e in examples), TINY, seed=1)


def pairs_from(examples) -> list[Pair]:
    """The right answer chosen over a garbled one (its words reversed), as a correction would give."""
    return [Pair(e.prompt, e.target, " ".join(reversed(e.target.split())), e.task_type) for e in examples]


def test_dpo_loss_is_log2_at_the_reference_and_falls_as_the_chosen_answer_gains():
    zero = torch.zeros(4)
    assert float(dpo_loss(zero, zero, zero, zero, 0.1)) == pytest.approx(math.log(2))
    gained = float(dpo_loss(zero + 2.0, zero, zero, zero, 0.1))
    lost = float(dpo_loss(zero, zero + 2.0, zero, zero, 0.1))
    assert gained < math.log(2) < lost
    # only the change against the reference counts, not the absolute log-probabilities
    assert float(dpo_loss(zero - 5, zero - 9, zero - 5, zero - 9, 0.5)) == pytest.approx(math.log(2))


def test_preference_training_moves_probability_from_the_rejected_to_the_chosen_answer(examples):
    loaded = tiny(examples)
    pairs = pairs_from(examples[:120])
    chosen0, rejected0 = pair_logps(loaded, pairs)
    report = prefer(loaded, pairs, PreferenceConfig(epochs=2, learning_rate=3e-3, beta=0.5, batch_size=16))
    chosen1, rejected1 = pair_logps(loaded, pairs)
    assert report.steps == 2 * math.ceil(120 / 16) and report.pairs == 120
    assert report.final_loss < report.first_loss
    assert float((chosen1 - rejected1).mean()) > float((chosen0 - rejected0).mean())
    assert report.margin_after > report.margin_before and report.accuracy_after >= report.accuracy_before
    assert report.accuracy_after > 0.8
    assert float(chosen1.mean()) > float(chosen0.mean())  # the NLL term: the chosen answers became likelier too
    with pytest.raises(ValueError, match="no preference pairs"):
        prefer(loaded, [], PreferenceConfig())


def test_lora_trains_only_adapters_and_leaves_a_plain_model_that_saves_and_loads(examples, tmp_path):
    loaded = tiny(examples)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    policy = TrainerPolicy(epochs=1, learning_rate=0.01, lora=True, lora_r=4, lora_alpha=8, preference="off")
    outcome = recipe.train(loaded, examples[:100], (), policy)
    assert outcome.adapters is not None and 0 < outcome.adapters.trainable < outcome.adapters.total / 5
    assert outcome.preference is None
    state = loaded.model.state_dict()
    assert type(loaded.model).__name__ == "GPT2LMHeadModel" and not any("lora" in k for k in state)
    assert set(state) == set(before)
    changed = [k for k in state if not torch.equal(state[k], before[k])]
    assert changed and all("attn" in k for k in changed)  # peft's default for GPT-2 adapts c_attn only
    save(loaded, tmp_path / "m")
    again = load(tmp_path / "m", prefer_gpu=False)
    for k, v in again.model.state_dict().items():
        assert torch.allclose(v, state[k]), k


def test_lora_targets_from_the_policy_are_the_modules_adapted(examples):
    loaded = tiny(examples)
    with adapted(loaded, LoraSettings(r=2, alpha=4, targets=("c_fc",))) as report:
        names = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
        count = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
    assert names and all("mlp.c_fc.lora_" in n for n in names)
    assert report.trainable == count == 2 * (32 + 4 * 32)  # one layer: A (r x in) and B (out x r), r=2


def test_the_recipe_runs_dpo_only_when_the_policy_asks_and_pairs_exist(examples):
    pairs = pairs_from(examples[:40])
    on = recipe.train(tiny(examples), examples[:80], pairs, TrainerPolicy(epochs=1, preference="dpo"))
    assert on.preference is not None and on.preference.pairs == 40
    assert "preference" in on.summary() and on.summary()["losses"] == on.sft.losses
    off = recipe.train(tiny(examples), examples[:80], pairs, TrainerPolicy(epochs=1, preference="off"))
    assert off.preference is None and "preference" not in off.summary()
    none = recipe.train(tiny(examples), examples[:80], (), TrainerPolicy(epochs=1, preference="dpo"))
    assert none.preference is None
    assert TrainerPolicy().preference == "off"  # measured to cost golden score on the small default model (README)


def test_hyperparameters_record_what_decided_the_weights():
    h = recipe.hyperparameters(TrainerPolicy(epochs=2, lora=True, lora_r=16, lora_targets=("c_attn", "c_proj")))
    assert h["epochs"] == "2" and h["lora"] == "r=16,alpha=16,dropout=0.0,targets=c_attn,c_proj"
    assert h["preference"] == "off" and not any(k.startswith("dpo_") for k in h)
    h = recipe.hyperparameters(TrainerPolicy(preference="dpo"))
    assert h["dpo_beta"] == "0.1" and h["dpo_epochs"] == "1" and h["dpo_nll_weight"] == "1.0"
    off = recipe.hyperparameters(TrainerPolicy(preference="off"))
    assert off["lora"] == "off" and not any(k.startswith("dpo_") for k in off)
    assert (
        off["replay_datasets"] == "0"
        and recipe.hyperparameters(TrainerPolicy(replay_datasets=3))["replay_datasets"] == "3"
    )


def test_replay_takes_one_dataset_per_earlier_window_newest_first():
    def m(ds, week):
        return {"dataset_id": ds, "window": {"start_ms": week * 7, "end_ms": week * 7 + 7}}

    listed = [
        m("a", 0),
        m("b", 1),
        m("b-rebuilt", 1),
        m("c", 2),
        m("now", 3),
        m("later", 4),
        {"dataset_id": "no-window"},
    ]
    assert replay_ids(listed, m("now", 3), 2) == ["c", "b-rebuilt"]
    assert replay_ids(listed, m("now", 3), 10) == ["c", "b-rebuilt", "a"]
    assert replay_ids(listed, m("now", 3), 0) == [] and replay_ids(listed, m("a", 0), 5) == []
    assert replay_ids(listed, {"dataset_id": "no-window"}, 5) == []


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("preference", "ppo", "[trainer] preference"),
        ("dpo_beta", 0.0, "[trainer] dpo_beta"),
        ("dpo_nll_weight", -1.0, "[trainer] dpo_nll_weight"),
        ("dpo_epochs", 4, "[trainer] dpo_epochs"),
        ("lora_r", 0, "[trainer] lora_r"),
        ("lora_dropout", 1.0, "[trainer] lora_dropout"),
        ("replay_datasets", -1, "[trainer] replay_datasets"),
    ],
)
def test_policy_refuses_bad_training_keys(key, value, message):
    with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        GatePolicy().with_version("t", trainer={key: value})
