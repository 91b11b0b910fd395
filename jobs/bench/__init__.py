"""Benchmarks on generated lakes (homepage bench ...): not part of make test. Imports anything below jobs.cli."""
