"""JSON round trip of the phantom's frozen parameter dataclasses (what ``phantom.json`` records).

Handles exactly the field types the phantom uses: numbers, strings, ``StrEnum``/``IntEnum``
members, tuples, mappings (keys written as strings), ``X | None`` and nested dataclasses.

Examples
--------
>>> from neurofed.phantom.physics import Relaxation
>>> to_json(Relaxation(800.0, 80.0, 0.7))
{'t1': 800.0, 't2': 80.0, 'pd': 0.7}
>>> from_json(Relaxation, {'t1': 800.0, 't2': 80.0, 'pd': 0.7})
Relaxation(t1=800.0, t2=80.0, pd=0.7)
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeVar

__all__ = ["from_json", "to_json"]

_T = TypeVar("_T")


def to_json(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (dataclasses become dicts, enums their values)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(to_json(k)): to_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, float):
        return float(value)
    return value


def _decode(hint: Any, data: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _decode(inner[0], data)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_json(hint, data)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(type(next(iter(hint)).value)(data))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in data)
        return tuple(_decode(a, v) for a, v in zip(args, data, strict=True))
    if origin in (Mapping, dict):
        key, val = args
        return MappingProxyType(
            {_decode(key, _key(key, k)): _decode(val, v) for k, v in data.items()}
        )
    if hint is float:
        return float(data)
    if hint is int:
        return int(data)
    if hint is bool:
        return bool(data)
    return data


def _key(hint: Any, key: str) -> Any:
    if hint is int or (isinstance(hint, type) and issubclass(hint, enum.IntEnum)):
        return int(key)
    return key


def from_json(cls: type[_T], data: Mapping[str, Any]) -> _T:
    """Rebuild a dataclass written by :func:`to_json` (unknown keys are ignored)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {name: _decode(hints[name], data[name]) for name in names if name in data}
    return cls(**kwargs)
