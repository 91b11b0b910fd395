"""Offline evidence: evaluation on time splits, experiments and their replicates, off-policy estimates, simulated A/B tests. Imports jobs.refresh, jobs.daily, jobs.inputs and below."""
