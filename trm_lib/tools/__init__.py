"""Rank 8: command-line tools around the library — the benchmark dispatcher, cache inspection
and the feature-cache command."""
