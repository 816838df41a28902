"""Detection scored against the demo's planted truth."""
