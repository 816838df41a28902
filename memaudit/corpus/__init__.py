"""The demo model organism's synthetic MIMIC-CXR-format corpus with planted memorized captions."""
