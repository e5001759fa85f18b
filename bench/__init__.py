"""Benchmarks (`make bench`): measured speed, reported as figures and same-run ratios."""
