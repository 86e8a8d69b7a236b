"""Benchmarks: speed and quality against published numbers (commands, not tests)."""
