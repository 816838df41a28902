"""Audit chest X-ray text-to-image diffusion models for training-data memorization.

One module per workflow stage; every function is pure (no snakemake import) so it can be
unit-tested and reused outside the workflow.
"""

__version__ = "0.1.0"
