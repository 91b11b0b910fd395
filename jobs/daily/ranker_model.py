"""The registered MLflow model: a pyfunc over a model bundle (jobs/daily/bundle.py).

`mlflow.pyfunc.load_model("models:/homepage-ranker@champion").predict(frame)` returns the
combined calibrated engagement score Σ_o w_o·P(o) of each row of (user, item) features
(models/item_features.FEATURES), placement fixed to the first slot — what the rank step
orders items by. The bundle (factors, heads, chosen w) travels as the model's artifacts.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc


class RankerModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        import os

        from models.ranking.engagement_model import EngagementModel

        self.engagement = EngagementModel.load(
            os.path.join(context.artifacts["bundle"], "engagement")
        )

    # no type hint on model_input: MLflow would try to infer a schema from it and warn
    def predict(self, context, model_input, params=None):
        preds = self.engagement.predict(model_input, position_override="first")
        return self.engagement.combined_score(preds)


def log_ranker(bundle_dir: str, pip_requirements: list[str]) -> str:
    """Log the bundle as a pyfunc model in the active run; returns its model URI."""
    info = mlflow.pyfunc.log_model(
        name="ranker",
        python_model=RankerModel(),
        artifacts={"bundle": bundle_dir},
        pip_requirements=pip_requirements,
    )
    return info.model_uri
