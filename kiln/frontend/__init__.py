"""Kiln frontend."""
