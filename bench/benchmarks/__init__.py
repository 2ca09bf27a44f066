"""Benchmark scripts: measured ratios printed side by side (not timed tests)."""
