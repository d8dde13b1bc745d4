"""Checkpoints and resume on a tiny real model: a run interrupted in the middle of a cycle, started
again with the same examples and config, resumes at its last checkpoint and ends with the very
weights and losses of a run that was never interrupted (same batches, same order, same dropout)."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from flywheel.policy import TrainerPolicy  # noqa: E402
from trainer import recipe, synthetic  # noqa: E402
from trainer.model import Architecture, build_default, load, save  # noqa: E402
from trainer.train import TrainConfig, fine_tune  # noqa: E402

TINY = Architecture(vocab_size=400, n_embd=32, n_layer=2, n_head=2, n_positions=128)
# 61 examples, batches of 8: 8 batches an epoch, the last one short; 3 batches a step: 3 steps an epoch, the
# last of 2 batches; 3 epochs: 9 steps; a checkpoint every 2
CONFIG = TrainConfig(
    epochs=3,
    learning_rate=3e-3,
    batch_size=8,
    max_length=96,
    seed=7,
    warmup_ratio=0.2,
    schedule="cosine",
    grad_accumulation=3,
    checkpoint_steps=2,
)


class Crash(Exception):
    """The process dying in the middle of the cycle, after optimiser step `at`."""


@pytest.fixture(scope="module")
def examples():
    return synthetic.generate(61, ["sql", "support", "qa"], seed=4)


@pytest.fixture(scope="module")
def initial(examples, tmp_path_factory):
    """The model every run starts from, on disk, as the cycle loads production."""
    path = tmp_path_factory.mktemp("initial")
    model = build_default((e.prompt + " " + e.target for e in examples), TINY, seed=3)
    assert model.model.config.resid_pdrop > 0  # dropout on: resume must restore the random state too
    save(model, path)
    return path


def weights(loaded) -> dict:
    return {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}


def crash_after(at: int):
    seen = []

    def progress(epoch, step, loss):
        seen.append(step)
        if step == at:
            raise Crash(at)

    return progress, seen


def uninterrupted(initial, examples, config=CONFIG):
    loaded = load(initial, prefer_gpu=False)
    steps = []
    report = fine_tune(loaded, examples, config, lambda e, s, loss: steps.append((s, loss)))
    return loaded, report, steps


@pytest.fixture(scope="module")
def reference(initial, examples):
    """The run never interrupted: (model, report, [(step, loss)])."""
    return uninterrupted(initial, examples)


@pytest.mark.parametrize("crash_at, resumes_at", [(3, 2), (5, 4), (7, 6), (9, 8)])
def test_a_run_interrupted_mid_cycle_resumes_at_its_checkpoint_and_ends_as_if_never_interrupted(
    initial, examples, reference, tmp_path, crash_at, resumes_at
):
    # the crash comes after step `crash_at`, before its checkpoint: 3: inside epoch 0 (checkpoint 2); 5: inside
    # epoch 1 (checkpoint 4: 3 batches of it skipped); 7: checkpoint 6, an epoch's last step; 9: the last step
    reference, ref_report, ref_steps = reference
    assert ref_report.steps == 9 and ref_report.resumed_from == 0

    first = load(initial, prefer_gpu=False)
    progress, seen = crash_after(crash_at)
    with pytest.raises(Crash):
        fine_tune(first, examples, CONFIG, progress, checkpoint_dir=tmp_path / "ckpt")
    assert seen == list(range(1, crash_at + 1)) and (tmp_path / "ckpt" / "checkpoint.pt").exists()

    second = load(initial, prefer_gpu=False)  # a new process: production loaded again from disk
    steps = []
    report = fine_tune(
        second, examples, CONFIG, lambda e, s, loss: steps.append((s, loss)), checkpoint_dir=tmp_path / "ckpt"
    )
    assert report.resumed_from == resumes_at
    assert [s for s, _ in steps] == list(range(resumes_at + 1, 10))  # only the steps after the checkpoint ran
    assert steps == ref_steps[resumes_at:]  # each of them with the loss the uninterrupted run had
    got, want = weights(second), weights(reference)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])][:3]
    assert report.losses == ref_report.losses and report.first_loss == ref_report.first_loss
    assert report.final_loss == ref_report.final_loss and report.tokens == ref_report.tokens
    assert not (tmp_path / "ckpt").exists()  # a completed run leaves no checkpoint behind


def test_a_checkpoint_of_other_data_or_settings_is_not_resumed(initial, examples, tmp_path):
    progress, _ = crash_after(4)
    with pytest.raises(Crash):
        fine_tune(load(initial, prefer_gpu=False), examples, CONFIG, progress, checkpoint_dir=tmp_path / "ckpt")
    other = dataclasses.replace(CONFIG, learning_rate=1e-3)
    report = fine_tune(load(initial, prefer_gpu=False), examples, other, checkpoint_dir=tmp_path / "ckpt")
    assert report.resumed_from == 0 and report.steps == 9
    with pytest.raises(Crash):
        fine_tune(
            load(initial, prefer_gpu=False), examples, CONFIG, crash_after(4)[0], checkpoint_dir=tmp_path / "ckpt"
        )
    report = fine_tune(load(initial, prefer_gpu=False), examples[:-1], CONFIG, checkpoint_dir=tmp_path / "ckpt")
    assert report.resumed_from == 0  # one example fewer: another run
    # only the interval between checkpoints may change: the run is the same
    with pytest.raises(Crash):
        fine_tune(
            load(initial, prefer_gpu=False), examples, CONFIG, crash_after(5)[0], checkpoint_dir=tmp_path / "ckpt"
        )
    report = fine_tune(
        load(initial, prefer_gpu=False),
        examples,
        dataclasses.replace(CONFIG, checkpoint_steps=3),
        checkpoint_dir=tmp_path / "ckpt",
    )
    assert report.resumed_from == 4


def test_a_checkpoint_cut_short_by_the_crash_starts_the_run_over(initial, examples, reference, tmp_path):
    with pytest.raises(Crash):
        fine_tune(
            load(initial, prefer_gpu=False), examples, CONFIG, crash_after(4)[0], checkpoint_dir=tmp_path / "ckpt"
        )
    path = tmp_path / "ckpt" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    loaded = load(initial, prefer_gpu=False)
    report = fine_tune(loaded, examples, CONFIG, checkpoint_dir=tmp_path / "ckpt")
    reference, ref_report, _ = reference
    assert report.resumed_from == 0 and report.losses == ref_report.losses
    assert all(torch.equal(a, b) for a, b in zip(weights(loaded).values(), weights(reference).values()))


def test_lora_training_resumes_too_and_its_adapters_start_alike_whatever_ran_before(initial, examples, tmp_path):
    """The adapters' random initial values come from the policy's seed, not from whatever the process
    drew before (a trainer that has run other cycles), so the same data gives the same model."""
    policy = TrainerPolicy(
        epochs=2,
        batch_size=8,
        lora=True,
        lora_r=4,
        lora_alpha=8,
        grad_accumulation=2,
        checkpoint_steps=3,
        seed=7,
        max_length=96,
    )

    def run(noise: int, crash: int = 0, directory=None):
        loaded = load(initial, prefer_gpu=False)
        torch.manual_seed(noise)
        torch.rand(noise)  # the process's random state, as earlier cycles left it
        outcome = recipe.train(loaded, examples, (), policy, crash_after(crash)[0] if crash else None, directory)
        return loaded, outcome

    a, out_a = run(1)
    b, out_b = run(12345)
    assert out_a.adapters is not None and out_a.sft.steps == 8
    assert all(torch.equal(x, y) for x, y in zip(weights(a).values(), weights(b).values()))
    with pytest.raises(Crash):
        run(99, crash=5, directory=tmp_path / "ckpt")
    c, out_c = run(7, directory=tmp_path / "ckpt")
    assert out_c.sft.resumed_from == 3 and out_c.sft.losses == out_a.sft.losses
    assert all(torch.equal(x, y) for x, y in zip(weights(c).values(), weights(a).values()))
