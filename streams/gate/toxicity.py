"""Toxicity scoring for the gate: one interface (`ToxicityScorer`), two models behind it.

    scorer = load_scorer(checkpoint, config_dir, device="cpu")
    scorer.name                      # "detoxify" | "profanity-check", stamped on decisions
    scorer.score(texts) -> [float]   # same order, each in [0, 1]; empty or blank text -> 0.0

`DetoxifyScorer` loads a detoxify checkpoint offline (its config and tokenizer directory must be
local); `ProfanityScorer`, alt-profanity-check's linear model shipped in its wheel, is the default
when no checkpoint is configured. A checkpoint that is missing or does not load raises
`ToxicityModelError` (a ValueError) with a one-line message naming the path and the problem.
Scored text is never logged.

Design, measurements and calibration: docs/concepts/gate.md#toxicity
"""

from __future__ import annotations

import logging
import math
import os
import time
import zipfile
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

log = logging.getLogger("flywheel.gate.toxicity")

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_CHARS = 2000


class ToxicityModelError(ValueError):
    """The toxicity model cannot be loaded; the message names the path and the problem, on one line."""


@runtime_checkable
class ToxicityScorer(Protocol):
    name: str

    def score(self, texts: Sequence[str]) -> list[float]:
        """One score in [0, 1] per text, same order; an empty or blank text scores 0.0."""
        ...


def default_threads() -> int:
    """Half the CPUs this process may use, at most 4, at least 1: the gate shares the machine."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus // 2))


def _unit(x: float) -> float:
    """Clamp to [0, 1]. A NaN scores 1.0: an unscorable text must not pass the gate as clean."""
    x = float(x)
    if math.isnan(x):
        return 1.0
    return min(1.0, max(0.0, x))


def _to_score(texts: Sequence[str]) -> list[int]:
    """Indexes of the texts that need the model (the rest score 0.0)."""
    if isinstance(texts, str):
        raise TypeError("score() takes a sequence of texts, not one string")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, not str")
        if t and not t.isspace():
            out.append(i)
    return out


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())  # no newlines
    if len(msg) > 300:
        msg = msg[:297] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


class DetoxifyScorer:
    """A detoxify checkpoint, loaded through detoxify's own code, run in batches under inference mode.

    `config_dir`: a local directory with the model's config.json and tokenizer (by default the
    checkpoint's `config.arch.args.model_type`). A text's score is the max over the checkpoint's
    classes, in [0, 1]. `threads`: torch intra-op threads, set for the whole process; None takes
    `default_threads()`. `max_chars`: each text is cut to this many characters before tokenising.
    The checkpoint is unpickled (by detoxify, `weights_only=False`): load only checkpoints you trust.
    Why the max: docs/concepts/gate.md#toxicity
    """

    name = "detoxify"

    def __init__(
        self,
        checkpoint: str,
        config_dir: str = "",
        *,
        device: str = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_chars: int = DEFAULT_MAX_CHARS,
        threads: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1 or None, got {threads}")
        t0 = time.perf_counter()
        path = Path(checkpoint).expanduser()
        arch = _read_arch(path)
        cfg_dir = config_dir or str(arch.get("model_type", ""))
        where = "config_dir" if config_dir else "the checkpoint's config.arch.args.model_type"
        if not cfg_dir or not Path(cfg_dir).expanduser().is_dir():
            fix = (
                "set config_dir to a directory holding the model's config.json and tokenizer files"
                if config_dir
                else "rewrite it to a local directory holding the model's config.json and tokenizer files, or set "
                "config_dir to such a directory and have the model_type in the Hugging Face cache"
            )
            raise ToxicityModelError(
                f"toxicity checkpoint {path}: {where} {cfg_dir!r} is not a local directory; {fix}"
            )
        if not (Path(cfg_dir).expanduser() / "config.json").is_file():
            raise ToxicityModelError(f"toxicity checkpoint {path}: {where} {cfg_dir!r} has no config.json")
        cfg_dir = str(Path(cfg_dir).expanduser())

        import torch

        self._torch = torch
        model_type = str(arch.get("model_type", ""))
        hint = (
            ""
            if Path(model_type).expanduser().is_dir()
            else (
                f" (detoxify also reads the checkpoint's config.arch.args.model_type {model_type!r}, not a local "
                "directory: it must be in the Hugging Face cache, or be rewritten to a local directory)"
            )
        )
        self.model, self.tokenizer, self.classes = _load_detoxify(path, cfg_dir, device, hint)
        self.model.eval()
        self.threads = threads or default_threads()
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        self.device = device
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.max_length = _max_tokens(self.tokenizer, self.model.config)
        self.checkpoint = str(path)
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "toxicity model loaded",
            extra={
                "scorer": self.name,
                "checkpoint": self.checkpoint,
                "config_dir": cfg_dir,
                "classes": list(self.classes),
                "device": device,
                "threads": self.threads,
                "load_s": round(self.load_seconds, 3),
            },
        )

    def score(self, texts: Sequence[str]) -> list[float]:
        torch = self._torch
        out = [0.0] * len(texts)
        todo = _to_score(texts)
        # Similar lengths share a batch, so padding stays short; the results go back in place.
        todo.sort(key=lambda i: min(len(texts[i]), self.max_chars))
        with torch.inference_mode():
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                enc = self.tokenizer(
                    [texts[i][: self.max_chars] for i in chunk],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                )
                logits = self.model(**enc.to(self.device))[0]
                worst = torch.sigmoid(logits.float()).amax(dim=1).cpu().tolist()
                for i, s in zip(chunk, worst, strict=True):
                    out[i] = _unit(s)
        return out

    def __repr__(self) -> str:
        return f"DetoxifyScorer(checkpoint={self.checkpoint!r}, classes={list(self.classes)}, device={self.device!r})"


class ProfanityScorer:
    """alt-profanity-check's model (TF-IDF over words, calibrated linear SVM), shipped in its wheel.

    Fast and offline, but a bag of words: it scores words, not intent ("kill the process" scores
    about 0.37), so its raw probability puts about 11 % of ordinary requests over the seed's 0.1. The
    gate's threshold is on one scale for every scorer, so this scorer maps its probability onto it:
    the model's own decision boundary (0.5, where `predict` says "offensive") lands on 0.1, linearly
    on either side (`calibrate`). Insults without swear words ("a complete waste of space", 0.17 raw)
    then pass: use a detoxify checkpoint for intent. Measured: docs/concepts/gate.md#toxicity
    """

    name = "profanity-check"

    BOUNDARY = 0.5  # the model's decision boundary (profanity_check.predict)
    POLICY_POINT = 0.1  # where the boundary lands: the seed's threshold

    def __init__(self, calibrated: bool = True):
        self.calibrated = calibrated
        t0 = time.perf_counter()
        try:
            from profanity_check import predict_prob
        except Exception as e:  # a broken install: say so on one line
            raise ToxicityModelError(f"profanity-check model does not load: {_one_line(e)}") from None
        self._predict_prob = predict_prob
        self.load_seconds = time.perf_counter() - t0
        log.info("toxicity model loaded", extra={"scorer": self.name, "load_s": round(self.load_seconds, 3)})

    def score(self, texts: Sequence[str]) -> list[float]:
        out = [0.0] * len(texts)
        todo = _to_score(texts)
        if todo:
            for i, s in zip(todo, self._predict_prob([texts[i] for i in todo]), strict=True):
                out[i] = self.calibrate(_unit(s)) if self.calibrated else _unit(s)
        return out

    @classmethod
    def calibrate(cls, p: float) -> float:
        """Monotone, [0, 1] onto [0, 1], BOUNDARY onto POLICY_POINT."""
        b, q = cls.BOUNDARY, cls.POLICY_POINT
        return p * q / b if p <= b else q + (p - b) * (1.0 - q) / (1.0 - b)

    def __repr__(self) -> str:
        return f"ProfanityScorer(calibrated={self.calibrated})"


def load_scorer(
    checkpoint: str = "", config_dir: str = "", *, device: str = "cpu", threads: int | None = None
) -> ToxicityScorer:
    """A detoxify scorer when a checkpoint is configured, else the profanity-check model."""
    if checkpoint and checkpoint.strip():
        return DetoxifyScorer(checkpoint.strip(), config_dir.strip(), device=device, threads=threads)
    if config_dir and config_dir.strip():
        raise ToxicityModelError(
            f"toxicity config_dir {config_dir!r} is set but checkpoint is empty; "
            "set both for a detoxify model, or neither for profanity-check"
        )
    return ProfanityScorer()


def _read_arch(path: Path) -> dict:
    """Check the checkpoint file the way detoxify will read it; return its `config.arch.args`.

    Maps the file with mmap where it can (torch's zip format), so the weights are not read twice.
    """
    import torch

    if not path.exists():
        raise ToxicityModelError(f"toxicity checkpoint {path}: no such file")
    if not path.is_file():
        raise ToxicityModelError(f"toxicity checkpoint {path}: not a file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False, mmap=zipfile.is_zipfile(path))
    except Exception as e:
        raise ToxicityModelError(
            f"toxicity checkpoint {path} is not a readable torch checkpoint "
            f"(corrupt, truncated or another format): {_one_line(e)}"
        ) from None
    if not isinstance(loaded, dict) or "config" not in loaded or "state_dict" not in loaded:
        raise ToxicityModelError(
            f"toxicity checkpoint {path} is not a detoxify checkpoint: it needs the keys 'config' and 'state_dict'"
        )
    arch = _dig(loaded, "config", "arch", "args")
    classes = _dig(loaded, "config", "dataset", "args", "classes")
    for value, where in ((arch, "config.arch.args"), (classes, "config.dataset.args.classes")):
        if value is None:
            raise ToxicityModelError(f"toxicity checkpoint {path} is not a detoxify checkpoint: it has no {where}")
    if not isinstance(arch, dict) or not isinstance(classes, (list, tuple)):
        raise ToxicityModelError(
            f"toxicity checkpoint {path} is not a detoxify checkpoint: "
            "config.arch.args must be a mapping and config.dataset.args.classes a list"
        )
    missing = [k for k in ("model_type", "model_name", "tokenizer_name", "num_classes") if k not in arch]
    if missing:
        raise ToxicityModelError(f"toxicity checkpoint {path}: config.arch.args lacks {', '.join(missing)}")
    if not classes or len(classes) != arch["num_classes"]:
        raise ToxicityModelError(
            f"toxicity checkpoint {path}: {len(classes)} class names but num_classes={arch['num_classes']}"
        )
    return dict(arch)


def _dig(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _load_detoxify(path: Path, cfg_dir: str, device: str, hint: str = ""):
    """detoxify's loader, with transformers' multi-line load report caught rather than printed.

    A checkpoint whose weights do not cover the model would load with random weights and only a
    warning: here it fails, since a random toxicity model passes or rejects candidates by chance.
    """
    from transformers.utils import logging as hf_logging

    hf_log = logging.getLogger("transformers")
    caught = _Caught()
    handlers, bar = hf_log.handlers[:], hf_logging.is_progress_bar_enabled()
    hf_log.handlers = [caught]
    hf_logging.disable_progress_bar()  # "Loading weights" on stderr, once per load
    try:
        from detoxify import Detoxify

        d = Detoxify(checkpoint=str(path), huggingface_config_path=cfg_dir, device=device)
    except Exception as e:
        raise ToxicityModelError(
            f"toxicity checkpoint {path} (config {cfg_dir}) does not load on device {device!r}: {_one_line(e)}{hint}"
        ) from None
    finally:
        hf_log.handlers = handlers
        if bar:
            hf_logging.enable_progress_bar()
    missing = caught.missing()
    if missing:
        raise ToxicityModelError(
            f"toxicity checkpoint {path} lacks weights the model {d.model.__class__.__name__} "
            f"(config {cfg_dir}) needs, so they would be random: {', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}"
        )
    for text in caught.others():
        log.warning("transformers: %s", text)
    return d.model, d.tokenizer, list(d.class_names)


class _Caught(logging.Handler):
    """Collects transformers' warnings during a load."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def missing(self) -> list[str]:
        """Parameter names the load report marks MISSING (newly initialised)."""
        out = []
        for m in self.messages:
            if "LOAD REPORT" in m:
                out += [
                    line.split("|")[0].strip()
                    for line in m.splitlines()
                    if "|" in line and "MISSING" in line.split("|")[1]
                ]
        return out

    def others(self) -> list[str]:
        """Everything but the load report, one line each (the report lists only harmless keys then)."""
        return [" ".join(m.split())[:300] for m in self.messages if "LOAD REPORT" not in m]


def _max_tokens(tokenizer, config) -> int:
    """The longest input the model takes: the tokenizer's limit when it knows one, else the config's."""
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    positions = int(getattr(config, "max_position_embeddings", 512) or 512)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2  # position ids start after the padding index
    return min(limit, positions) if 0 < limit < 1_000_000 else positions
