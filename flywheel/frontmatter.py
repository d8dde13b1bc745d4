"""YAML front matter for the cards the flywheel writes (a sealed dataset's, a registered model's):
block YAML of plain data, keys in the order given and quoted unless plain names, strings as JSON
(a JSON string is a YAML double-quoted scalar), so the same data always gives the same bytes."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

__all__ = ["front_matter", "yaml_lines"]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_WORDS = ("true", "false", "null", "yes", "no", "on", "off")  # plain, they would read as booleans or null


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def _key(k: Any) -> str:
    """A mapping key: plain when it is a simple name (config_name, sft.train), else quoted."""
    k = str(k)
    return k if _PLAIN_KEY.fullmatch(k) and k.lower() not in _WORDS else json.dumps(k, ensure_ascii=False)


def yaml_lines(value: Any, indent: int = 0) -> list[str]:
    """Block YAML of plain data (dicts, lists, scalars)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(v, (Mapping, list)) and v:
                lines.append(f"{pad}{_key(k)}:")
                lines += yaml_lines(v, indent + 2)
            else:
                empty = "{}" if isinstance(v, Mapping) else "[]" if isinstance(v, list) else _scalar(v)
                lines.append(f"{pad}{_key(k)}: {empty}")
    elif isinstance(value, list):
        for item in value:
            sub = yaml_lines(item, indent + 2) if isinstance(item, (Mapping, list)) else [f"{pad}  {_scalar(item)}"]
            lines.append(f"{pad}- {sub[0].strip()}")
            lines += sub[1:]
    else:
        lines.append(pad + _scalar(value))
    return lines


def front_matter(header: Mapping[str, Any]) -> str:
    """`---`, the header as YAML, `---`: what a Hugging Face card starts with."""
    return "---\n" + "\n".join(yaml_lines(header)) + "\n---\n"
