"""The intra-day refresh: new events and stock changes into a delta over the published export, without retraining. Imports jobs.daily and below."""
