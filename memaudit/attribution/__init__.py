"""Token attribution: which tokens of a memorized prompt drive its memorization."""
