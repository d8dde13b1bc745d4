"""The flywheel's policy: every threshold and switch of every stage in one TOML file, versioned,
stamped on every decision.

A policy file only needs the keys it changes; the rest take the defaults (the seed's numbers).
Unknown keys and wrong types are errors with the file, the section and the key named, so a typo
never silently falls back to a default. `GatePolicy.stamp` (the file's `version` plus a digest of
the effective policy) goes on every decision: two policies that differ in any value never share a
stamp, even if someone forgot to bump `version`. One module per section (`gate`, `review`,
`datasets`, `trainer`, `rollout`, `guards`), each with its own checks; one `loader` for all.

    policy = GatePolicy.load("deploy/gate-policy.toml")
    policy.trainer.min_improvement, policy.stamp
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from flywheel.policy.datasets import DatasetPolicy
from flywheel.policy.gate import (
    LOCATION_MODES,
    PII_ENTITIES,
    PII_MODES,
    POSITIVE_ACTIONS,
    SECRET_MODES,
    TEXT_FIELDS,
    ActionFilter,
    DuplicateFilter,
    GroundingFilter,
    Contract,
    ContractFilter,
    KeepRateFilter,
    LengthFilter,
    PiiFilter,
    QualityFilter,
    ToxicityFilter,
)
from flywheel.policy.guards import GUARD_ACTIONS, MONITORS, GuardPolicy
from flywheel.policy.loader import PolicyError, build, plain, toml_value
from flywheel.policy.review import REVIEW_STAGES, ReviewPolicy
from flywheel.policy.rollout import RolloutPolicy
from flywheel.policy.trainer import PREFERENCE_METHODS, TrainerPolicy

__all__ = [
    "GatePolicy",
    "PolicyError",
    "ActionFilter",
    "LengthFilter",
    "QualityFilter",
    "ToxicityFilter",
    "PiiFilter",
    "GroundingFilter",
    "Contract",
    "ContractFilter",
    "DuplicateFilter",
    "KeepRateFilter",
    "ReviewPolicy",
    "DatasetPolicy",
    "TrainerPolicy",
    "RolloutPolicy",
    "GuardPolicy",
    "POSITIVE_ACTIONS",
    "TEXT_FIELDS",
    "PII_MODES",
    "SECRET_MODES",
    "LOCATION_MODES",
    "PII_ENTITIES",
    "REVIEW_STAGES",
    "PREFERENCE_METHODS",
    "MONITORS",
    "GUARD_ACTIONS",
]


@dataclass(frozen=True)
class GatePolicy:
    """The whole policy file (named for where it began: the gate's)."""

    version: str = "default-1"
    evaluate_all: bool = True  # run every content filter even after one rejected, so decisions list every reason
    action: ActionFilter = ActionFilter()
    length: LengthFilter = LengthFilter()
    quality: QualityFilter = QualityFilter()
    toxicity: ToxicityFilter = ToxicityFilter()
    pii: PiiFilter = PiiFilter()
    grounding: GroundingFilter = GroundingFilter()
    contract: ContractFilter = ContractFilter()
    duplicates: DuplicateFilter = DuplicateFilter()
    keep_rate: KeepRateFilter = KeepRateFilter()
    review: ReviewPolicy = ReviewPolicy()
    datasets: DatasetPolicy = DatasetPolicy()
    trainer: TrainerPolicy = TrainerPolicy()
    rollout: RolloutPolicy = RolloutPolicy()
    guards: GuardPolicy = GuardPolicy()

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def stamp(self) -> str:
        """What every decision carries: the version someone wrote, and what the values were."""
        return f"{self.version}@{self.digest}"

    def show(self) -> dict[str, Any]:
        return {"stamp": self.stamp, **self.to_dict()}

    def sections(self) -> list[tuple[str, Any]]:
        return [
            (f.name, getattr(self, f.name)) for f in fields(self) if dataclasses.is_dataclass(getattr(self, f.name))
        ]

    @classmethod
    def load(cls, path: str | Path | None) -> "GatePolicy":
        """The policy in `path`, or the defaults when `path` is empty."""
        if not path:
            return cls()
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PolicyError(f"{p}: no such policy file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{p}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{p}: not valid TOML: {exc}") from None
        return cls.from_dict(raw, source=str(p))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "policy") -> "GatePolicy":
        policy = build(cls, raw, source)
        policy.check(source)
        return policy

    def check(self, source: str = "policy") -> "GatePolicy":
        def bad(where: str, msg: str):
            raise PolicyError(f"{source}: {where}: {msg}")

        if not self.version.strip():
            bad("version", "must not be empty")
        for _, section in self.sections():
            section.check(bad)
        return self

    def with_version(self, version: str, **sections: Mapping[str, Any]) -> "GatePolicy":
        """A new policy: this one with `version` and some keys of some sections changed."""
        changed = {name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()}
        return dataclasses.replace(self, version=version, **changed).check("new policy")

    def to_toml(self) -> str:
        """The whole effective policy as a TOML file that `load` reads back to an equal policy."""
        lines = [f"version = {toml_value(self.version)}", f"evaluate_all = {toml_value(self.evaluate_all)}"]
        for name, section in self.sections():
            lines.append(f"\n[{name}]")
            tables = []
            for k, v in plain(dataclasses.asdict(section)).items():
                if isinstance(v, Mapping):
                    tables.append((k, v))
                else:
                    lines.append(f"{k} = {toml_value(v)}")
            for k, table in tables:
                lines.append(f"\n[{name}.{k}]")
                lines.extend(f"{toml_value(kk)} = {toml_value(vv)}" for kk, vv in table.items())
        return "\n".join(lines) + "\n"
