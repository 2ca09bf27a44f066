"""Analysis: pure decisions over results (statistics, the max-batch search, recommendations, the gate, verdicts, scaling, time accounting). No torch."""
