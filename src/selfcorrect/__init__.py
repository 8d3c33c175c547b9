"""Reproducible workflow for "Smaller Large Language Models Can Do Moral Self-Correction"."""

__version__ = "0.1.0"
