"""Memorization scores (d_mem) of every prompt, in chunks."""
