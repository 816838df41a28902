"""Memorization scores of every prompt, in chunks: Wen et al.'s d_mem and the detectors
beside it (``scoring.detectors``)."""
