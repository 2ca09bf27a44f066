"""Orchestration: one entry per job (sweep, max batch, profile, trace, ...) that measures, analyses, stores and returns one frozen result."""
