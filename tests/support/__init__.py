"""Helpers shared by test modules in several tiers (import as `support.<module>`)."""
