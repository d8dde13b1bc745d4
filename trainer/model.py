"""Models the trainer fine-tunes: any Hugging Face causal LM directory, or the project's own small one.

Nothing is downloaded: directories are loaded with `local_files_only=True`. On a machine without a
GPU the default base is a small GPT-2 the project builds itself (`build_default`): a byte-level
BPE tokenizer trained on the cold-start corpus and a randomly initialised model, a few hundred
thousand parameters, which trains on a few thousand examples in seconds. Every model is used
through its tokenizer's chat template, so prompts look the same to the default model and to an
instruction-tuned one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

USER, ASSISTANT, END, PAD = "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] in ('system', 'developer', 'tool') %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
    "{% else %}<|assistant|>{{ m['content'] }}{% for c in m.get('tool_calls') or [] %}"
    "<|call|>{{ c['function']['name'] }}({{ c['function']['arguments'] }}){% endfor %}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class Architecture:
    """The default model's shape (GPT-2)."""

    vocab_size: int = 1024
    n_embd: int = 128
    n_layer: int = 2
    n_head: int = 4
    n_positions: int = 256


BASE_KINDS = ("scratch", "pretrained")  # the project's own small model built from nothing, or a pretrained one
META_FILE = "flywheel-model.json"  # the registry's metadata beside the weights (trainer/registry.py)
MAX_LENGTH_CAP = 4096  # a model that claims more positions than this is still trained on at most this many tokens


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel (causal LM)
    tokenizer: Any  # its PreTrainedTokenizerFast
    device: str
    # "pretrained": learning rates, warm-up and LoRA default differently (trainer/recipe.py)
    base_kind: str = "scratch"

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def max_length(self) -> int:
        """The longest sequence the model and its tokenizer take: positions of the config, the
        tokenizer's model_max_length (when it is a real number), at most MAX_LENGTH_CAP."""
        cfg = self.model.config
        limits = [MAX_LENGTH_CAP]
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                limits.append(value)
                break
        tok_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_limit, int) and 0 < tok_limit < 10**9:
            limits.append(tok_limit)
        return min(limits)

    def prompt_text(self, prompt: str, messages=()) -> str:
        """The prompt as the model is asked it: the chat template with the assistant turn opened. With
        `messages` (a chat record's prompt side: system, history, the turn answered) the whole
        conversation is rendered; a template that refuses its roles (no system or tool role, strict
        alternation) gets it as one user turn, each turn's role written before its text."""
        turns = list(messages) or [{"role": "user", "content": prompt}]
        try:
            return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        except Exception:  # jinja2's TemplateError, raised by the template itself
            flat = "\n\n".join(f"{t['role']}: {t.get('content') or ''}" for t in turns)
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": flat}], tokenize=False, add_generation_prompt=True
            )

    def target_text(self, target: str) -> str:
        return target + (self.tokenizer.eos_token or "")


def device_and_dtype(prefer_gpu: bool = True):
    """cuda where a GPU is present, else cpu; the weights are float32 on both. On a GPU the training
    loop runs forward and backward under bf16 autocast (trainer/train.py): AdamW then updates fp32
    master weights, where a step of lr 2e-5 is not lost below bf16's rounding step."""
    import torch

    if prefer_gpu and torch.cuda.is_available():
        return "cuda", torch.float32
    return "cpu", torch.float32


def base_kind_of(path: str | Path) -> str:
    """What a model directory is: a registered model says in its metadata (models from before base
    kinds were recorded are the project's scratch model); a directory the registry never wrote is a
    pretrained model someone brought."""
    import json

    meta = Path(path) / META_FILE
    if not meta.exists():
        return "pretrained"
    try:
        kind = json.loads(meta.read_text()).get("base_kind") or "scratch"
    except ValueError:
        return "scratch"
    return kind if kind in BASE_KINDS else "scratch"


def build_default(corpus: Iterable[str], arch: Architecture = Architecture(), seed: int = 0) -> LoadedModel:
    """A fresh small GPT-2 and a tokenizer trained on `corpus` (the texts it will see first)."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(corpus),
        vocab_size=arch.vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[PAD, USER, ASSISTANT, END],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        pad_token=PAD,
        eos_token=END,
        bos_token=END,
        additional_special_tokens=[USER, ASSISTANT],
    )
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=arch.n_embd,
        n_layer=arch.n_layer,
        n_head=arch.n_head,
        n_positions=arch.n_positions,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    device, _ = device_and_dtype()
    return LoadedModel(model.to(device), tokenizer, device)


def load(path: str | Path, prefer_gpu: bool = True) -> LoadedModel:
    """A causal LM directory (config, weights, tokenizer), offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a model directory (no config.json)")
    device, dtype = device_and_dtype(prefer_gpu)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    return LoadedModel(model.to(device), tokenizer, device, base_kind_of(path))


def fetch_dir(fs: Any, remote: str, local: str | Path, check: Any = None) -> Path:
    """A local copy of the model directory `remote` on fsspec filesystem `fs`, at `local`, downloaded
    when it is not there yet: transformers loads from local files only. The copy is written beside
    `local` under a name of its own and renamed into place, so a crash mid-download leaves no half
    copy where a loader looks, and two processes fetching at once both end with a whole one.
    `check(downloaded_dir)`, when given, runs before the rename: what it raises leaves no copy."""
    import os
    import posixpath
    import shutil
    import uuid

    local = Path(local)
    if (local / "config.json").exists():
        return local
    remote = remote.rstrip("/")
    files = [f for f in fs.find(remote) if not posixpath.basename(f).startswith(".")]
    if not files:
        raise FileNotFoundError(f"{fs.unstrip_protocol(remote)} holds no model directory")
    tmp = local.parent / f".download-{local.name}-{uuid.uuid4().hex[:8]}"
    try:
        for f in files:
            target = tmp / posixpath.relpath(f, remote)
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f, str(target))
        if check is not None:
            check(tmp)
        if local.exists() and not (local / "config.json").exists():
            shutil.rmtree(local)  # an older copy without its config: not a model directory, replaced
        try:
            os.replace(tmp, local)
        except OSError:
            if not (local / "config.json").exists():
                raise  # not another process's whole copy in the way
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return local


def save(loaded: LoadedModel, path: str | Path) -> dict[str, str]:
    """Write the model and tokenizer; returns sha256 of every file written, by relative path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return file_hashes(path)


def file_hashes(path: str | Path) -> dict[str, str]:
    path = Path(path)
    out = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[str(f.relative_to(path))] = h.hexdigest()
    return out
