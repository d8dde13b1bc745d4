"""The model card: a README.md in every registered model directory, so serving systems and the
Hugging Face tools take the directory as it is.

    AutoModelForCausalLM.from_pretrained(DIR)     # config.json, weights and tokenizer are already there
    flywheel models export v0007 /srv/models/v0007

The card's YAML header holds the Hub's fields (`library_name`, `pipeline_tag`, `tags`, a `license`
left for the owner: a fine-tuned model inherits its base's licence and its data's terms) and, under
`flywheel`, what the registry knows: the version, its status, the base it was trained from, the
lineage (every dataset version its weights learned from, the bases' included), the golden set's
version, its scores with the paired 95 % interval of the change against the incumbent, and the
recipe's hyperparameters. The body says the same as tables.

Written from the registry's metadata alone (`write` after `flywheel-model.json`), so it is not one of
the model's `file_hashes` (those are the weights and tokenizer the trainer saved).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

from flywheel.frontmatter import front_matter

CARD = "README.md"


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def scores(meta: Mapping[str, Any]) -> list[dict]:
    """Each golden score (overall, task.<type>, ...) with the incumbent's, the change and its
    interval when the trainer's gate computed one (delta_low / delta_high[.<key>])."""
    metrics = meta.get("metrics") or {}
    incumbent = meta.get("incumbent_metrics") or {}
    deltas = meta.get("deltas") or {}
    out = []
    for key in [k for k in metrics if k == "overall" or k.startswith("task.") or k == "perplexity"]:
        suffix = "" if key == "overall" else f".{key}"
        row = {"metric": key, "score": metrics[key], "incumbent": incumbent.get(key), "delta": deltas.get(key)}
        low, high = metrics.get(f"delta_low{suffix}"), metrics.get(f"delta_high{suffix}")
        row["interval"] = [low, high] if low is not None and high is not None else None
        out.append(row)
    return out


def render(meta: Mapping[str, Any]) -> str:
    """The README.md of a registered model (or an imported base), from its registry metadata."""
    version = str(meta.get("version") or meta.get("name") or "")
    base = meta.get("base_model") or ""
    lineage = list(
        meta.get("lineage") or meta.get("datasets") or ([meta["dataset_id"]] if meta.get("dataset_id") else [])
    )
    rows = scores(meta)
    hyper = dict(sorted((meta.get("hyperparameters") or {}).items()))
    header = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "license": None,  # left for the owner: the base's licence and the training data's terms decide it
        "tags": ["flywheel", "causal-lm"],
        "flywheel": {
            "version": version,
            "status": meta.get("status") or ("base" if meta.get("name") and not meta.get("version") else None),
            "base_model": base or None,
            "base_kind": meta.get("base_kind"),
            "dataset_id": meta.get("dataset_id") or None,
            "lineage": lineage,
            "tainted_by_erasure": list(meta.get("tainted_by_erasure") or []),
            "golden_version": meta.get("golden_version") or None,
            "gate_passed": meta.get("gate_passed"),
            "reasons": list(meta.get("reasons") or []),
            "scores": rows,
            "confidence": (meta.get("metrics") or {}).get("confidence"),
            "recipe": hyper,
            "examples": meta.get("examples"),
            "source": meta.get("source"),
        },
    }
    score_lines = (
        "\n".join(
            f"| {r['metric']} | {_num(r['score'])} | {_num(r['incumbent'])} | {_num(r['delta'])} | "
            f"{'[' + _num(r['interval'][0]) + ', ' + _num(r['interval'][1]) + ']' if r['interval'] else ''} |"
            for r in rows
        )
        or "| (not evaluated) | | | | |"
    )
    recipe_lines = "\n".join(f"| {k} | {v} |" for k, v in hyper.items()) or "| (none recorded) | |"
    lineage_lines = (
        "\n".join(f"- `{d}`" for d in lineage) or "- (none: trained on synthetic examples only, or imported)"
    )
    conf = (meta.get("metrics") or {}).get("confidence")
    body = f"""
# flywheel model `{version}`

A causal language model of the flywheel's registry{f", fine-tuned from `{base}`" if base else ""}.
Status: {header["flywheel"]["status"] or "unknown"}.
The directory loads as it is:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{version or "DIR"}")
tokenizer = AutoTokenizer.from_pretrained("{version or "DIR"}")
```

## Golden scores

Golden set version `{meta.get("golden_version") or "-"}`; the change against the incumbent with its
paired bootstrap interval ({_num(conf, 2) if conf is not None else "-"} confidence).

| metric | score | incumbent | change | interval |
|---|---|---|---|---|
{score_lines}

## Lineage

The dataset versions its weights learned from (its own and its bases'):

{lineage_lines}

## Recipe

| hyperparameter | value |
|---|---|
{recipe_lines}

## Licence

Not set: the owner states it in `license` above (the base model's licence and the data's terms apply).
"""
    return front_matter(header) + body


def write(directory: str | Path, meta: Mapping[str, Any]) -> Path:
    path = Path(directory) / CARD
    path.write_text(render(meta), encoding="utf-8")
    return path


def export(src: str | Path, dest: str, meta: Mapping[str, Any]) -> str:
    """Copy a model directory to `dest` (a local path or an fsspec URL), its card refreshed from `meta`
    (the registry's current metadata: status and erasure flags may have changed since it was saved).
    At a URL `config.json` goes last: a copy cut short is no directory `from_pretrained` takes."""
    src = Path(src)
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src} is not a model directory (no config.json)")
    card_text = render(meta).encode("utf-8")
    if "://" not in dest:
        out = Path(dest)
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} exists and is not empty")
        shutil.copytree(src, out, dirs_exist_ok=True)
        (out / CARD).write_bytes(card_text)
        return str(out)
    import fsspec

    fs, root = fsspec.core.url_to_fs(dest)
    root = root.rstrip("/")
    if fs.exists(root) and (not fs.isdir(root) or fs.ls(root, detail=False)):
        raise FileExistsError(f"{dest} exists and is not empty")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.name != CARD)
    for f in [f for f in files if f != src / "config.json"]:
        target = f"{root}/{f.relative_to(src).as_posix()}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(f), target)
    fs.makedirs(root, exist_ok=True)
    with fs.open(f"{root}/{CARD}", "wb") as fh:
        fh.write(card_text)
    fs.put_file(str(src / "config.json"), f"{root}/config.json")
    return dest
