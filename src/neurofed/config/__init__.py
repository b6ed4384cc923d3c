"""Frozen, validated configuration objects (parsed once, at the boundary) and their checks."""

from neurofed.config.base import ConfigBase, coerce_enum, is_positive_int, look_up, require

__all__ = ["ConfigBase", "coerce_enum", "is_positive_int", "look_up", "require"]
