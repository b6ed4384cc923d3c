"""Server-side strategy state: named numpy arrays plus scalars, saved as safetensors.

A server optimiser (FedAdam, FedYogi) keeps moments between rounds. :class:`StrategyState` holds
them as named arrays and named scalars (``int`` or ``float``), so a coordinator checkpoints it
next to the global model and resumes exactly — never as a pickle. :meth:`StrategyState.to_arrays`
gives one flat ``dict[str, np.ndarray]`` (scalars become 0-d arrays) that
``safetensors.numpy.save`` accepts; :meth:`StrategyState.from_arrays` inverts it.

Examples
--------
>>> import numpy as np
>>> from safetensors.numpy import load, save
>>> state = StrategyState(arrays={"m/w": np.zeros(2)}, scalars={"step": 3, "lr": 0.1})
>>> StrategyState.from_arrays(load(save(state.to_arrays()))) == state
True
>>> StrategyState.empty().is_empty
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from neurofed.federated.update import Array

__all__ = ["Scalar", "StrategyState"]

#: A scalar of the state (a round counter, a running value).
Scalar = int | float

_ARRAY_PREFIX = "array/"
_SCALAR_PREFIX = "scalar/"


def _scalar(name: str, value: object) -> Scalar:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"strategy state scalar {name!r} = {value!r}: use an int or a float")
    return int(value) if isinstance(value, int | np.integer) else float(value)


@dataclass(frozen=True, eq=False)
class StrategyState:
    """What a strategy keeps on the server between rounds.

    Attributes
    ----------
    arrays
        Named arrays (e.g. ``m/<parameter>``), stored read-only and contiguous.
    scalars
        Named ``int`` / ``float`` values (e.g. ``step``).
    """

    arrays: Mapping[str, Array] = field(default_factory=dict)
    scalars: Mapping[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arrays = {}
        for name, value in self.arrays.items():
            array = np.array(value, order="C", copy=True)  # keeps 0-d arrays 0-d
            array.setflags(write=False)
            arrays[str(name)] = array
        scalars = {str(k): _scalar(str(k), v) for k, v in self.scalars.items()}
        object.__setattr__(self, "arrays", MappingProxyType(arrays))
        object.__setattr__(self, "scalars", MappingProxyType(scalars))

    @classmethod
    def empty(cls) -> StrategyState:
        """The state of a strategy that keeps nothing (and of every strategy before round 1)."""
        return cls()

    @property
    def is_empty(self) -> bool:
        """Whether the state holds nothing."""
        return not self.arrays and not self.scalars

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StrategyState):
            return NotImplemented
        return (
            self.arrays.keys() == other.arrays.keys()
            and all(
                self.arrays[k].dtype == other.arrays[k].dtype
                and np.array_equal(self.arrays[k], other.arrays[k], equal_nan=True)
                for k in self.arrays
            )
            and dict(self.scalars) == dict(other.scalars)
            and all(type(self.scalars[k]) is type(other.scalars[k]) for k in self.scalars)
        )

    def scalar(self, name: str, default: Scalar) -> Scalar:
        """Scalar ``name``, or ``default`` when the state has none."""
        return self.scalars.get(name, default)

    # -- transport ---------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, Array]:
        """Flat named arrays (``array/<name>``, ``scalar/<name>`` as 0-d int64 / float64)."""
        out: dict[str, Array] = {f"{_ARRAY_PREFIX}{k}": v for k, v in self.arrays.items()}
        for name, value in self.scalars.items():
            dtype = np.int64 if isinstance(value, int) else np.float64
            out[f"{_SCALAR_PREFIX}{name}"] = np.array(value, dtype=dtype)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.ArrayLike]) -> StrategyState:
        """Inverse of :meth:`to_arrays`.

        Raises
        ------
        ValueError
            A name without either prefix, or a scalar entry that is not a 0-d number.
        """
        values: dict[str, Array] = {}
        scalars: dict[str, Scalar] = {}
        for key, value in arrays.items():
            array = np.asarray(value)
            if key.startswith(_ARRAY_PREFIX):
                values[key.removeprefix(_ARRAY_PREFIX)] = array
            elif key.startswith(_SCALAR_PREFIX):
                if array.ndim != 0 or array.dtype.kind not in "iuf":
                    raise ValueError(
                        f"strategy state entry {key!r} must be a 0-d number; got "
                        f"{array.dtype}{array.shape}"
                    )
                scalars[key.removeprefix(_SCALAR_PREFIX)] = _scalar(key, array.item())
            else:
                raise ValueError(
                    f"strategy state entry {key!r} starts with neither {_ARRAY_PREFIX!r} nor "
                    f"{_SCALAR_PREFIX!r}; was the file written by StrategyState.save?"
                )
        return cls(arrays=values, scalars=scalars)

    def save(self, path: Path) -> Path:
        """Write the state as a safetensors file (an empty state writes an empty file)."""
        from safetensors.numpy import save_file

        path = Path(path)
        save_file(self.to_arrays(), str(path))
        return path

    @classmethod
    def load(cls, path: Path) -> StrategyState:
        """Read a state written by :meth:`save`."""
        from safetensors.numpy import load_file

        return cls.from_arrays(load_file(str(path)))
