#!/usr/bin/env python
"""Training examples/s of the trainer's fine-tuning loop on the default small model (GPU when present).

    .venv/bin/python benchmarks/train_throughput.py                   # 3,000 examples, 3 epochs
    .venv/bin/python benchmarks/train_throughput.py --examples 500 --epochs 1

1. build    the default model as `flywheel bootstrap` does (BPE tokenizer on the synthetic corpus,
            a small GPT-2), 0.5 M parameters.
2. train    `trainer.train.fine_tune` on N synthetic examples: tokenising, batching, loss on the
            answers, AdamW, schedule. Examples/s = N x epochs / wall time; peak RSS.
3. ceiling  in the same run, on a fresh copy of the model: the same batches, already tensors,
            through forward, backward and an optimiser step and nothing else.
4. lora     the same through LoRA adapters (r=8, peft's default targets), one epoch, beside the
            bare loop over the adapted copy.
5. dpo      `trainer.preference.prefer` on pairs (the answer chosen over its words reversed), one
            epoch, beside a bare loop stepping the same pair batches with a plain NLL loss.
"""

from __future__ import annotations

import copy
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import join_throughput as jt  # noqa: E402


def run(args) -> dict:
    import torch

    from trainer import synthetic
    from trainer.model import build_default
    from trainer.train import TrainConfig, batches, encode, fine_tune

    from trainer.adapters import LoraSettings, adapted
    from trainer.examples import Pair
    from trainer.model import LoadedModel
    from trainer.preference import PreferenceConfig, _encode_pairs, _pair_batches, prefer
    from trainer.train import trainable

    def bare(model, tensors, epochs: int) -> float:
        """Seconds for forward, backward and an AdamW step over ready tensors, nothing else."""
        optimiser = torch.optim.AdamW(trainable(model), lr=config.learning_rate)
        model.train()
        started = time.perf_counter()
        for _ in range(epochs):
            for ids, mask, labels in tensors:
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        return time.perf_counter() - started

    examples = synthetic.generate(args.examples, seed=1)
    loaded = build_default(e.prompt + " " + e.target for e in examples)
    untrained = copy.deepcopy(loaded.model)
    config = TrainConfig(epochs=args.epochs)
    report = fine_tune(loaded, examples, config)
    encoded = [encode(loaded, ex, config.max_length) for ex in examples]
    tensors = list(batches(encoded, config.batch_size, loaded.tokenizer.pad_token_id, loaded.device))
    ceiling = args.examples * args.epochs / bare(copy.deepcopy(untrained), tensors, args.epochs)

    lora_model = LoadedModel(copy.deepcopy(untrained), loaded.tokenizer, loaded.device)
    with adapted(lora_model, LoraSettings(r=8, alpha=16)) as adapters:
        lora = fine_tune(lora_model, examples, TrainConfig(epochs=1))
        lora_bare = LoadedModel(copy.deepcopy(untrained), loaded.tokenizer, loaded.device)
        with adapted(lora_bare, LoraSettings(r=8, alpha=16)):
            lora_ceiling = args.examples / bare(lora_bare.model, tensors, 1)

    pairs = [Pair(e.prompt, e.target, " ".join(reversed(e.target.split()))) for e in examples]
    dpo_config = PreferenceConfig(batch_size=config.batch_size // 2)
    dpo = prefer(loaded, pairs, dpo_config)
    pair_tensors = [t for _, *t in _pair_batches(loaded, _encode_pairs(loaded, pairs, config.max_length), len(pairs),
                                                  dpo_config.batch_size, range(len(pairs)))]
    dpo_ceiling = len(pairs) / bare(copy.deepcopy(untrained), pair_tensors, 1)
    return {"machine": f"{platform.machine()}, {loaded.device}, torch {torch.__version__}, {torch.get_num_threads()} threads",
            "parameters": loaded.parameters, "examples": args.examples, "epochs": args.epochs,
            "seconds": report.seconds, "examples_per_s": report.examples_per_s, "loss_first": report.first_loss,
            "loss_final": report.final_loss, "ceiling_examples_per_s": ceiling, "ratio": report.examples_per_s / ceiling,
            "lora_trainable": adapters.trainable, "lora_examples_per_s": lora.examples_per_s,
            "lora_ceiling_examples_per_s": lora_ceiling, "lora_ratio": lora.examples_per_s / lora_ceiling,
            "dpo_pairs": len(pairs), "dpo_pairs_per_s": dpo.pairs_per_s, "dpo_ceiling_pairs_per_s": dpo_ceiling,
            "dpo_ratio": dpo.pairs_per_s / dpo_ceiling, "dpo_margin": [dpo.margin_before, dpo.margin_after],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def table(r: dict) -> str:
    return "\n".join([
        f"training on {r['machine']}: default model, {r['parameters']:,} parameters",
        f"  fine_tune: {r['examples']:,} examples x {r['epochs']} epochs in {r['seconds']:.1f} s  "
        f"-> {r['examples_per_s']:,.0f} examples/s (loss {r['loss_first']:.2f} -> {r['loss_final']:.3f})",
        f"  ceiling (bare forward/backward/step on the same batches): {r['ceiling_examples_per_s']:,.0f} examples/s"
        f"  -> fine_tune at {r['ratio']:.0%} of it",
        f"  LoRA (r=8, {r['lora_trainable']:,} trainable): {r['lora_examples_per_s']:,.0f} examples/s beside a bare loop's "
        f"{r['lora_ceiling_examples_per_s']:,.0f} -> {r['lora_ratio']:.0%}",
        f"  DPO: {r['dpo_pairs']:,} pairs at {r['dpo_pairs_per_s']:,.0f} pairs/s beside a bare loop's "
        f"{r['dpo_ceiling_pairs_per_s']:,.0f} on the same pair batches -> {r['dpo_ratio']:.0%} "
        f"(mean margin {r['dpo_margin'][0]:.1f} -> {r['dpo_margin'][1]:.1f} nats)",
        f"  peak RSS {r['peak_rss_mib']:,.0f} MiB",
    ])


def main(argv: list[str] | None = None) -> int:
    p = jt.Parser(prog="train_throughput", description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=jt.positive_int, default=3000, help="synthetic training examples (default: 3000)")
    p.add_argument("--epochs", type=jt.positive_int, default=3, help="epochs (default: 3)")
    return jt.report("train_throughput", run, table, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
