"""Audit chest X-ray text-to-image diffusion models for training-data memorization.

One subpackage per workflow stage (``corpus``, ``prompts``, ``model``, ``scoring``,
``threshold``, ``evaluation``, ``attribution``, ``mitigation``, ``copy_detection``) plus
``share`` and ``report``; shared building blocks beside them (``diffusion``, ``batching``,
``selection``, ``bootstrap``, ``text``, ``atomic``, ``config``, ``provenance``, ``plotting``).
Nothing here imports snakemake: the workflow's scripts are thin wrappers over these functions,
which are unit-tested directly. Functions take their inputs as arguments; those that write
files (chunk outputs, the demo corpus, figures) say so and write atomically.
See docs/architecture.md.
"""

__version__ = "0.1.0"
