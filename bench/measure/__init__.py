"""Measurement: one training step, the timed window, the telemetry sampler, annotations, FLOPs, the input pipeline, models."""
