"""What decides a page: matrix factorisation, engagement heads, candidates, item and page policy, the carousel score. Pure numpy/pandas; may use models.evaluation.metrics."""
