"""How pages and models are judged: metrics, baselines, the recall frontier, held-out metrics, off-policy estimators, plots. Never imports models.ranking."""
