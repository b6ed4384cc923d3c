"""Tests for neurofed.predict."""
