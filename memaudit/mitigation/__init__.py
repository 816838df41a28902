"""Inference-time mitigations: strategies, generation in chunks, evaluation, figures."""
