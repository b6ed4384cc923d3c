"""Frozen, validated configuration objects (parsed once, at the boundary) and their checks."""

from neurofed.config.base import ConfigBase, coerce_enum, is_positive_int, look_up, require
from neurofed.config.patterns import is_local

__all__ = ["ConfigBase", "coerce_enum", "is_local", "is_positive_int", "look_up", "require"]
