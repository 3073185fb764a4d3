"""Typed records from parsed YAML or JSON: a frozen dataclass built with every key and every value's type checked.

The dataclass is the schema: its fields' type hints say what each key holds (``int``, ``float``, ``bool``, ``str``,
``Literal[...]``, fixed-length ``tuple[...]``, ``X | None`` and nested dataclasses). Unknown keys are rejected, a
missing key is an error unless its field has a default, and every error names the source and the dotted key::

    >>> @dataclasses.dataclass(frozen=True)
    ... class Size:
    ...     width: int  # pixels
    ...     height: int | None = None  # pixels; None keeps the aspect ratio
    >>> record_from_mapping(Size, {"width": 224}, where="model.yaml")
    Size(width=224, height=None)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

from hpi.errors import HpiError, InvalidConfigError

T = TypeVar("T")


def record_from_mapping(cls: type[T], data: Any, *, where: str, error: type[HpiError] = InvalidConfigError,
                        what: str = "the record") -> T:
    """Build ``cls`` (a dataclass) from ``data`` (a mapping, as ``yaml.safe_load`` gives it).

    Args:
        cls: the dataclass that is the schema.
        data: the parsed value; nested mappings become nested dataclasses, lists of the right length tuples.
        where: prefixes every error message, usually the file the data came from.
        error: the :class:`~hpi.errors.HpiError` subclass raised for bad data.
        what: how the top level is named when it is not a mapping, e.g. "the card".

    Raises:
        error: an unknown or missing key, or a value of the wrong type; the message names ``where`` and the key.
    """
    return _build(cls, data, _Context(where, error, what), "")


def record_to_dict(record: Any) -> dict[str, Any]:
    """The record as plain data (nested records become mappings, tuples lists), keys in field order."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(record)


@dataclasses.dataclass(frozen=True)
class _Context:
    where: str
    error: type[HpiError]
    what: str

    def fail(self, message: str) -> HpiError:
        return self.error(f"{self.where}: {message}")


def _build(cls: type, data: Any, ctx: _Context, prefix: str) -> Any:
    if not isinstance(data, dict):
        what = f"key {prefix.rstrip('.')!r}" if prefix else ctx.what
        raise ctx.fail(f"{what} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ctx.fail(f"unknown key {prefix + str(unknown[0])!r}; expected one of: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    missing = [name for name, f in fields.items() if name not in data and not _has_default(f)]
    if missing:
        nullable = type(None) in typing.get_args(hints[missing[0]])
        hint = " (write null if it is unknown)" if nullable else ""
        raise ctx.fail(f"missing key {prefix + missing[0]!r}{hint}")
    values = {name: _convert(data[name], hints[name], ctx, prefix + name) for name in fields if name in data}
    return cls(**values)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _convert(value: Any, hint: Any, ctx: _Context, key: str, nullable: bool = False) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"schema: no validator for {hint!r} (key {key}); only 'X | None' unions are supported")
        if value is None and type(None) in args:
            return None
        return _convert(value, inner[0], ctx, key, nullable=type(None) in args)
    if origin is Literal:
        if value in args:
            return value
        want = "one of: " + ", ".join(map(str, args))
    elif origin is tuple:
        if isinstance(value, list) and len(value) == len(args):
            return tuple(_convert(v, a, ctx, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        want = f"a list of {len(args)} values"
    elif dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            return _build(hint, value, ctx, key + ".")
        want = "a mapping"
    elif hint is bool:
        if isinstance(value, bool):
            return value
        want = "true or false"
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        want = "an integer"
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        want = "a number"
    elif hint is str:
        if isinstance(value, str):
            return value
        want = "a string"
    else:
        raise TypeError(f"schema: no validator for {hint!r} (key {key})")
    if nullable:
        want += " or null"
    raise ctx.fail(f"key {key!r}: expected {want}, got {value!r}")
