"""Models under audit: loading (RadEdit, diffusers, demo) and the demo model's training."""
