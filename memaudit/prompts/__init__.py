"""Raw reports to unique prompts with de-identification marker flags."""
