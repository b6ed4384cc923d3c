"""Frozen, validated configuration objects that round-trip through JSON.

Model and task configurations are parsed once, at the boundary (a study file, a saved model
folder), into frozen dataclasses deriving from :class:`ConfigBase`. Each subclass validates its
fields in ``__post_init__`` with :func:`require`, whose errors name the class, the field, the
value and the fix.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo(ConfigBase):
...     width: int = 2
...     shape: tuple[int, int] = (4, 4)
...     def __post_init__(self) -> None:
...         require(self.width >= 1, self, "width", "use a positive integer")
>>> Demo.from_json({"width": 3, "shape": [8, 8]})
Demo(width=3, shape=(8, 8))
>>> Demo.from_json(Demo().to_json()) == Demo()
True
>>> Demo.from_json({"widht": 3})
Traceback (most recent call last):
...
ValueError: Demo: unknown field 'widht' (did you mean 'width'?); allowed fields: width, shape
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Self, TypeVar

__all__ = ["ConfigBase", "coerce_enum", "is_positive_int", "look_up", "require"]

E = TypeVar("E", bound=Enum)


def require(ok: bool, owner: object, field: str, fix: str) -> None:
    """Raise a ``ValueError`` naming ``owner``'s class, ``field``, its value and ``fix``.

    Parameters
    ----------
    ok
        The condition that must hold.
    owner
        The config object being validated (its class name and the field's value are reported).
    field
        The field being checked.
    fix
        What the user should do instead.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Box(ConfigBase):
    ...     size: int = 1
    >>> require(False, Box(size=0), "size", "use size >= 1")
    Traceback (most recent call last):
    ...
    ValueError: Box.size = 0 is invalid: use size >= 1
    """
    if not ok:
        value = getattr(owner, field, "?")
        raise ValueError(f"{type(owner).__name__}.{field} = {value!r} is invalid: {fix}")


def coerce_enum(owner: object, field: str, enum_type: type[E]) -> None:
    """Replace ``owner.field`` (a frozen dataclass field) by the ``enum_type`` member it names.

    Raises
    ------
    ValueError
        Naming the class, field and value, and listing the allowed values.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> from enum import StrEnum
    >>> class Norm(StrEnum):
    ...     INSTANCE = "instance"
    ...     BATCH = "batch"
    >>> @dataclass(frozen=True)
    ... class Net(ConfigBase):
    ...     norm: Norm = Norm.INSTANCE
    ...     def __post_init__(self) -> None:
    ...         coerce_enum(self, "norm", Norm)
    >>> Net(norm="batch").norm is Norm.BATCH
    True
    >>> Net(norm="layer")
    Traceback (most recent call last):
    ...
    ValueError: Net.norm = 'layer' is invalid: use one of instance, batch
    """
    value = getattr(owner, field)
    allowed = {str(m.value): m for m in enum_type}
    member = allowed.get(str(value)) if isinstance(value, str) else None
    require(member is not None, owner, field, f"use one of {', '.join(allowed)}")
    object.__setattr__(owner, field, member)


def is_positive_int(value: object) -> bool:
    """Whether ``value`` is an ``int`` (not a ``bool``) greater than zero.

    >>> is_positive_int(3), is_positive_int(0), is_positive_int(True), is_positive_int(2.0)
    (True, False, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def look_up(kind: str, name: str, options: Sequence[str]) -> str:
    """Return ``name`` if it is one of ``options``, else raise a "did you mean" ``ValueError``.

    Like :func:`monai.utils.look_up_option`, with the options listed in a stable order.

    Examples
    --------
    >>> look_up("model", "sfcn", ["sfcn", "dynunet"])
    'sfcn'
    >>> look_up("model", "dynunte", ["sfcn", "dynunet"])
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'dynunte' (did you mean 'dynunet'?); available: sfcn, dynunet
    """
    key = str(name)
    if key in options:
        return key
    close = difflib.get_close_matches(key, [str(o) for o in options], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown {kind} {key!r}{hint}; available: {', '.join(map(str, options))}")


def _to_json_value(value: Any) -> Any:
    if isinstance(value, ConfigBase):
        return value.to_json()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_to_json_value(v) for v in value]
    return value


def _listify_to_tuple(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_listify_to_tuple(v) for v in value)
    return value


def _from_json_value(hint: Any, value: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None:
            return None
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        return _from_json_value(arms[0], value) if len(arms) == 1 else _listify_to_tuple(value)
    if isinstance(hint, type) and issubclass(hint, ConfigBase) and isinstance(value, Mapping):
        return hint.from_json(value)
    return _listify_to_tuple(value)


@dataclass(frozen=True)
class ConfigBase:
    """Base of every frozen configuration dataclass (models, plans, tasks).

    Subclasses are ``@dataclass(frozen=True)`` with JSON-friendly fields (numbers, strings,
    ``StrEnum`` members, tuples, nested :class:`ConfigBase`) and validate in ``__post_init__``.
    """

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists, enums their values)."""
        return {f.name: _to_json_value(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """Parse a mapping (e.g. from JSON or TOML); unknown fields are an error.

        Missing fields take their defaults; lists become tuples, strings become enum members.
        """
        if not isinstance(data, Mapping):
            raise TypeError(
                f"{cls.__name__}: expected a mapping of field names to values, "
                f"got {type(data).__name__}"
            )
        names = [f.name for f in fields(cls)]
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"{cls.__name__}: unknown field {key!r}{hint}; "
                    f"allowed fields: {', '.join(names)}"
                )
        hints = typing.get_type_hints(cls)
        return cls(**{k: _from_json_value(hints[k], v) for k, v in data.items()})

    @classmethod
    def parse(cls, config: Mapping[str, Any] | ConfigBase | None) -> Self:
        """Accept an instance, a mapping or ``None`` (defaults) and return an instance.

        Raises
        ------
        TypeError
            If ``config`` is a config of another class.
        """
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, ConfigBase):
            raise TypeError(
                f"expected a {cls.__name__} (or a mapping of its fields), "
                f"got a {type(config).__name__}"
            )
        return cls.from_json(config)
