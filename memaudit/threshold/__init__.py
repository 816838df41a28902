"""The memorized set: the top of the score distribution, and marker enrichment in it."""
