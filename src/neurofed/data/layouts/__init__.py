"""Readers for the community layouts a site's raw data comes in."""

from neurofed.data.layouts.base import LayoutReader, LayoutScan

__all__ = ["LayoutReader", "LayoutScan"]
