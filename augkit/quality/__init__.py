"""Generative-quality metrics that need no downloaded weights."""
