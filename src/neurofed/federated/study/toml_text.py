"""Write plain data (tables, strings, numbers, booleans, arrays) as TOML text.

Just what studies need: nested tables become ``[a.b]`` sections, arrays may nest (tables in
arrays are written inline), ``None`` and
non-finite floats are refused (TOML has no null; studies hold no NaN). ``tomllib.loads`` reads
the output back to equal data.

Examples
--------
>>> import tomllib
>>> data = {"name": "demo", "rounds": 3, "task": {"id": "brain-age", "w": [1.5, 2.0]},
...         "train": {"lr": 1e-3, "preprocess": {"spacing": [2.0, 2.0, 2.0]}}}
>>> print(dumps(data))
name = "demo"
rounds = 3
<BLANKLINE>
[task]
id = "brain-age"
w = [1.5, 2.0]
<BLANKLINE>
[train]
lr = 0.001
<BLANKLINE>
[train.preprocess]
spacing = [2.0, 2.0, 2.0]
<BLANKLINE>
>>> tomllib.loads(dumps(data)) == data
True
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

__all__ = ["dumps", "toml_key", "toml_value"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_key(key: str) -> str:
    """``key`` bare when TOML allows it, else quoted.

    >>> toml_key("WT/dice"), toml_key("min_sites")
    ('"WT/dice"', 'min_sites')
    """
    return key if _BARE_KEY.match(key) else json.dumps(key)


def toml_value(value: Any, where: str = "value") -> str:
    """One inline TOML value (``where`` names it in errors).

    >>> toml_value([1, 2.5, "x", True])
    '[1, 2.5, "x", true]'
    >>> toml_value([{"name": "a", "n": 1}])
    '[{ name = "a", n = 1 }]'
    """
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} = {value!r}: TOML studies hold finite numbers only")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v, where) for v in value) + "]"
    if isinstance(value, Mapping):  # an inline table (e.g. in an array of tables)
        pairs = (f"{toml_key(k)} = {toml_value(v, f'{where}.{k}')}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    if value is None:
        raise ValueError(f"{where} is None: TOML has no null; leave the key out")
    raise TypeError(f"{where} = {value!r}: cannot be written as TOML ({type(value).__name__})")


def _table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    subtables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
    if path:
        if lines:
            lines.append("")
        lines.append("[" + ".".join(toml_key(p) for p in path) + "]")
    for key, value in scalars:
        lines.append(f"{toml_key(key)} = {toml_value(value, '.'.join([*path, key]))}")
    for key, value in subtables:
        _table(lines, [*path, key], value)


def dumps(data: Mapping[str, Any]) -> str:
    """``data`` as TOML text (scalars first, then one section per nested table)."""
    lines: list[str] = []
    _table(lines, [], data)
    return "\n".join(lines) + "\n"
