"""Tests for neurofed.preprocess."""
