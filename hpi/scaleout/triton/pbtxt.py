"""Protobuf text format for Triton's ``config.pbtxt``, written from plain mappings (no protobuf needed to export)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


class Enum(str):
    """A protobuf enum value: written without quotes."""


def to_pbtxt(message: Mapping[str, Any], indent: int = 0) -> str:
    """A mapping as protobuf text format: nested mappings are messages, lists of mappings repeated messages (map
    fields are lists of ``{"key", "value"}``), lists of scalars repeated scalars, :class:`Enum` bare words."""
    pad = "  " * indent
    lines: list[str] = []

    def scalar(value: Any) -> str:
        if isinstance(value, Enum):
            return str(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        return json.dumps(str(value))

    for key, value in message.items():
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            lines += [f"{pad}{key} {{\n{to_pbtxt(v, indent + 1)}{pad}}}" for v in value]
        elif isinstance(value, (list, tuple)):
            lines.append(f"{pad}{key}: [ {', '.join(scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {scalar(value)}")
    return "".join(line + "\n" for line in lines)


def parameters(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A model config's ``parameters`` map (every value a ``string_value``, as Triton's backends read them)."""
    return [{"key": k, "value": {"string_value": str(v)}} for k, v in values.items()]


def tensor(name: str, dtype: str, dims: Sequence[int]) -> dict[str, Any]:
    """A ``ModelInput`` / ``ModelOutput`` message."""
    return {"name": name, "data_type": Enum(dtype), "dims": list(dims)}
