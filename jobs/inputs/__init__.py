"""Where lakes come from: the synthetic generator and its ground truth, the importers of the real datasets. Imports jobs.core and models."""
