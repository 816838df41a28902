"""Per-prompt memorization detectors, one module each; the registry is
:mod:`memaudit.scoring.detectors.registry`."""
